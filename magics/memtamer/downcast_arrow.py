"""%shrink downcast of Arrow data: pyarrow tables, record batches, chunked
arrays and arrays, and the Arrow-backed columns of pandas and polars.

Numbers go by the same plan as numpy arrays (_core.downcast_plan), read in
place from each chunk's values buffer; the chunk's validity bitmap tells the
plan which values count (Arrow leaves any value under a null).  Strings and
binaries go to a dictionary where that is smaller, proven by decoding every
chunk back equal before anything is replaced.  Planning converts nothing:
a dry run or a refusal costs no memory beyond the distinct values of a
string column."""

import sys

from . import _core

# Rows of a string column whose distinct values decide whether a dictionary
# can pay before all of them are collected: the distinct share of a prefix
# is rarely lower than the whole column's.
DICTIONARY_SAMPLE_ROWS = 1 << 16


def is_arrow(value):
    """A pyarrow table, record batch, chunked array or array."""
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(value, (pa.Table, pa.RecordBatch, pa.ChunkedArray,
                                                 pa.Array))


def _chunks(column):
    pa = sys.modules["pyarrow"]
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _values(chunk):
    """The chunk's values as numpy reads them in place (its offset applied),
    and its validity bitmap when it has nulls."""
    import numpy as np

    validity, data = chunk.buffers()[:2]
    dtype = np.dtype(chunk.type.to_pandas_dtype())
    values = np.frombuffer(data, dtype, count=chunk.offset + len(chunk))[chunk.offset:]
    return values, validity if chunk.null_count else None


def number_plan(column, options, plan_call):
    """(target Arrow type, the plan's figures) for a numeric column (an
    Array or a ChunkedArray), or (None, why not).  Each chunk is planned on
    its own; the column takes the widest chunk's target."""
    import numpy as np
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None, f"{column.type} is not an integer or float type downcast narrows"
    to = options["to"]
    if pa.types.is_integer(column.type) and to in ("float32", "float16"):
        to = "auto"
    targets, max_error, warning = [], 0.0, None
    for chunk in _chunks(column):
        if not len(chunk):
            continue
        values, valid = _values(chunk)
        plan = plan_call(_core.downcast_plan, values, to=to, rtol=options["rtol"],
                         narrow=options["narrow"], valid=valid, valid_offset=chunk.offset)
        if not plan["target"]:
            return None, plan["reason"]
        targets.append(np.dtype(plan["target"]))
        max_error = max(max_error, plan["max_rel_error"])
        warning = plan["warning"]
    if not targets:
        return None, "it has no values"
    target = max(targets, key=lambda dtype: dtype.itemsize)
    if target.itemsize * 8 >= column.type.bit_width:
        return None, (f"its chunks need {target} (one chunk's values), no smaller than "
                      f"{column.type}")
    return pa.from_numpy_dtype(target), {"target": str(target), "max_rel_error": max_error,
                                         "warning": warning}


def _is_text(arrow_type):
    import pyarrow as pa

    return any(test(arrow_type) for test in (pa.types.is_string, pa.types.is_large_string,
                                            pa.types.is_binary, pa.types.is_large_binary))


def _index_type(distinct):
    import pyarrow as pa

    for index_type in (pa.int8(), pa.int16(), pa.int32()):
        if distinct <= 2 ** (index_type.bit_width - 1):
            return index_type
    return pa.int64()


def _encoded_bytes(length, nulls, dictionary):
    """A dictionary column's bytes: its indices, their validity, the values."""
    index_type = _index_type(len(dictionary))
    return length * index_type.bit_width // 8 + ((length + 7) // 8 if nulls else 0) + \
        dictionary.nbytes


def dictionary_plan(column):
    """(the dictionary, the bytes the column would have) for a string or
    binary column a dictionary makes smaller, or (None, why not); None,
    None for other columns."""
    import pyarrow.compute as pc

    if not _is_text(column.type) or not len(column):
        return None, None
    before = column.nbytes
    head = column.slice(0, DICTIONARY_SAMPLE_ROWS)
    distinct = pc.unique(head).drop_null()
    if _encoded_bytes(len(head), head.null_count, distinct) >= head.nbytes:
        return None, (f"its first {len(head)} rows have {len(distinct)} distinct values: a "
                      f"dictionary would not be smaller")
    dictionary = pc.unique(column).drop_null()
    after = _encoded_bytes(len(column), column.null_count, dictionary)
    if after >= before:
        return None, (f"its {len(dictionary)} distinct values would take {after} bytes as a "
                      f"dictionary, no fewer than its {before}")
    return dictionary, after


def encode(column, dictionary):
    """The column dictionary-encoded over dictionary, as a ChunkedArray,
    each chunk decoded back and compared first; ValueError when one would
    not come back equal."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index_type = _index_type(len(dictionary))
    encoded = []
    for chunk in _chunks(column):
        indices = pc.index_in(chunk, value_set=dictionary).cast(index_type)
        if not indices.null_count:  # index_in gives a bitmap of all ones: not kept
            indices = pa.Array.from_buffers(index_type, len(indices),
                                            [None, indices.buffers()[1]], 0, indices.offset)
        chunk_encoded = pa.DictionaryArray.from_arrays(indices, dictionary)
        if not chunk_encoded.cast(chunk.type).equals(chunk):
            raise ValueError("its dictionary would not decode to the same values")
        encoded.append(chunk_encoded)
    return pa.chunked_array(encoded, type=pa.dictionary(index_type, column.type))


def cast(column, target):
    """The column's chunks cast to target (the plan proved they fit)."""
    import pyarrow as pa

    return pa.chunked_array([chunk.cast(target) for chunk in _chunks(column)], type=target)


def columns_of(value):
    """(name, column) of an Arrow object; one unnamed column for arrays."""
    import pyarrow as pa

    if isinstance(value, (pa.Table, pa.RecordBatch)):
        return list(zip(value.schema.names, value.columns))
    return [(None, value)]


def rebuilt(value, converted):
    """value with columns replaced: {position: ChunkedArray}, same kind of
    object, names, nullability and metadata."""
    import pyarrow as pa

    if isinstance(value, (pa.ChunkedArray, pa.Array)):
        (column,) = converted.values()
        return column if isinstance(value, pa.ChunkedArray) else column.chunk(0)
    for position, column in sorted(converted.items()):
        field = value.schema.field(position).with_type(column.type)
        if isinstance(value, pa.RecordBatch):
            column = column.chunk(0)
        value = value.set_column(position, field, column)
    return value
