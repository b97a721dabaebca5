"""What the codec tests share: the transform's block and chunk sizes, the
odd float64 values every form must give back bit for bit, and a round trip
through _core.compress and _core.restore."""

import numpy as np

from memtamer import _core

# Values per transform block (frames.c) and per chunk: test arrays are made
# longer than one so that every form fills whole blocks and crosses their edges.
BLOCK = _core.codecs()["block"]
CHUNK = _core.codecs()["chunk"]

NAN_PAYLOAD = np.array([0x7FF8000000012345, 0xFFF0000000000001], dtype=np.uint64).view(np.float64)
ODD = np.concatenate([NAN_PAYLOAD, [-0.0, np.inf, -np.inf, 5e-324, -2.2250738585072014e-308,
                                    1e300, 0.1 + 0.2]])


def round_trip(a, **how):
    """(compressed_info, the restored array) of a compressed with how."""
    proxy = _core.compress(a, "a", **how)
    info = _core.compressed_info(proxy)
    return info, _core.restore(proxy)
