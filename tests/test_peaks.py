"""Peak suggestions and rendering, on compositions we write by hand."""

import pytest

from memtamer import peaks, render

MiB = 1024**2


def code_group(line, temporary, kept=0, function=None, blocks=2):
    return {"origin": "code", "line": line, "text": None, "function": function, "file": None,
            "function_line": 2 if function else None, "blocks": blocks,
            "bytes": temporary + kept, "kept": kept, "temporary": temporary}


@pytest.mark.parametrize("source, line, expected", [
    ("b = a * 2 + 1", 1, "`a * 2` is a temporary of 256 MiB: `b = a * 2; b += 1` finishes in place"),
    ("x = 1\nfor p in parts:\n    acc = np.concatenate([acc, p])", 3,
     "`acc` is copied whole by concatenate on every pass of the loop"),
    ("while more():\n    acc = np.append(acc, next_piece())", 2, "copied whole by append"),
    ("total = x.astype(np.float32).sum()", 1,
     "`.astype` copies `x` only to drop it: `x.sum(dtype=np.float32)` converts as it goes"),
    ("t = (z * 2).astype(np.float32).mean()", 1, "`(z * 2).mean(dtype=np.float32)`"),
])
def test_recognised_shapes(source, line, expected):
    advice = peaks.suggest(source, code_group(line, 256 * MiB, 256 * MiB))
    assert advice is not None and expected in advice


def test_frame_apply_needs_no_temporary_of_its_own():
    # The frame it replaces was made by an earlier cell: only the new one is counted.
    advice = peaks.suggest("df = df.apply(np.sqrt)", code_group(1, 0, 256 * MiB, blocks=1))
    assert advice.startswith("`df.apply` builds a second frame")


@pytest.mark.parametrize("source, line, temporary", [
    ("b = a * 2 + 1", 1, 0),                      # numpy reused the temporary: nothing to cut
    ("acc = np.concatenate([acc, p])", 1, 1),     # not in a loop
    ("for p in parts:\n    out = np.concatenate([a, p])", 2, 1),  # does not grow itself
    ("b = a * 2 + b", 1, 1),                      # the right side reads the target
    ("y = x.astype(np.float32)", 1, 1),           # kept, not dropped
    ("df2 = df.apply(f)", 1, 0),                  # a new name: both frames are wanted
    ("%time b = a * 2 + 1", 1, 1),                # not Python: not recognised
    ("def f():\n    b = a * 2 + 1", 2, 1),        # a definition, not what ran in the cell
    ("b = a * 2 / 3", 1, 1),                      # /= on integers fails: not suggested
])
def test_no_guessing(source, line, temporary):
    assert peaks.suggest(source, code_group(line, temporary)) is None


def test_no_advice_for_lines_inside_functions():
    assert peaks.suggest("b = f(a) * 2 + 1", code_group(1, MiB, function="f")) is None


def composition(groups, at):
    return {"block_threshold": MiB, "at": at, "attributed": sum(g["bytes"] for g in groups),
            "untracked": 0, "groups": groups}


def test_notice_names_the_line_with_most_temporaries():
    groups = [code_group(1, 0, 2048 * MiB, blocks=1), code_group(3, 2048 * MiB, 0),
              code_group(2, 512 * MiB, 0)]
    record = {"cell": 7, "peak_increment": 4096 * MiB, "retained": 2048 * MiB,
              "peak_composition": composition(groups, 4608 * MiB)}
    line = render.notice(record, {"rss": 5 * 1024 * MiB, "limit": 16 * 1024 * MiB})
    assert line.startswith("cell 7: peak +4.0 GiB, 2.0 GiB of it temporaries from line 3, "
                           "retained +2.0 GiB")
    del record["peak_composition"]
    assert "temporaries" not in render.notice(record, {})


def test_peak_table_text_and_html():
    inner = code_group(1, 256 * MiB, 0, function="scale")
    inner.update(text="s = scale(a)", function_cell=4, suggestion=None)
    loop = code_group(4, 96 * MiB, 128 * MiB)
    loop.update(text="acc = np.concatenate([acc, p])", suggestion="collect the pieces")
    thread = {"origin": "native/worker thread", "line": None, "text": None, "function": None,
              "file": None, "function_line": None, "blocks": 1, "bytes": 8 * MiB, "kept": 8 * MiB,
              "temporary": 0}
    record = {"cell": 9, "peak_increment": 490 * MiB,
              "peak_composition": composition([inner, loop, thread], 488 * MiB)}
    text = render.PeakReport(record).text().splitlines()
    assert text[0] == ("peak of cell 9: +490 MiB (RSS), +488 MiB counted at its highest, "
                       "488 MiB of it in blocks of 1.0 MiB or more; "
                       "2.0 MiB outside Python's and numpy's allocators")
    assert text[2].split() == ["scale", "(In[4])", "line", "2,", "called", "by", "line", "1",
                               "256", "MiB", "256", "MiB", "0", "B", "2", "s", "=", "scale(a)"]
    assert text[4].split()[:2] == ["native/worker", "thread"]
    assert text[5] == "  · line 4: collect the pieces"
    page = render.PeakReport(record)._repr_html_()
    assert "<code>acc = np.concatenate([acc, p])</code></td>" in page and "<li>line 4: collect" in page
