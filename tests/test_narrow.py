"""The float64 -> float32 downcast's fast scan and in-place conversion (the
path of every dense array: vector loops, blocks, a few threads) against
ground truth computed with numpy on a copy taken before."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from memtamer import _core

# Past a block (32768 values) and past two threads' worth (2**20 values
# each), with a length that is no multiple of either or of a vector.
LONG = 5 * 2**20 + 12345
TINY32 = 2.0**-149  # float32's smallest subnormal


def truth(a):
    """(largest relative error of rounding to float32 over finite nonzero
    values that stay finite, how many finite values would overflow)."""
    x = a.view(np.float64).ravel() if a.dtype == np.complex128 else a.ravel()
    with np.errstate(all="ignore"):
        y = x.astype(np.float32).astype(np.float64)
        finite = np.isfinite(x)
        overflow = int((finite & np.isinf(y)).sum())
        measured = finite & (x != 0) & np.isfinite(y)
        errors = np.abs(y[measured] - x[measured]) / np.abs(x[measured])
    return (float(errors.max()) if errors.size else 0.0), overflow


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check(values, rtol):
    """The outcome truth predicts for downcasting the array that values()
    makes (nothing else may hold it): converted bit for bit as astype
    does, or refused for the right reason with every bit unchanged."""
    ns = {"a": values()}
    before = ns["a"].copy(order="K")
    max_err, overflow = truth(before)
    row = _core.downcast(ns, "a", rtol=rtol)
    after = ns["a"]
    assert row["max_rel_error"] == max_err, (row, max_err)
    if overflow:
        assert row["status"] == "refused", row
        assert f"{overflow} finite value" in row["reason"], row
        assert same_bits(after, before)
    else:
        if max_err > rtol:
            assert row["status"] == "refused" and "relative error" in row["reason"], row
            assert same_bits(after, before)
        else:
            assert row["status"] == "done" and row["in_place"], row
            assert after.flags.f_contiguous == before.flags.f_contiguous
            with np.errstate(invalid="ignore"):  # NaN payloads
                expect = before.astype(np.complex64 if before.dtype.kind == "c" else np.float32)
            assert same_bits(after, expect)
    return row


def random_values(n, seed=0, at=(), value=None):
    """A maker of n random values in [0, 1), value put at the places at."""
    def make():
        a = np.random.default_rng(seed).random(n)
        a[list(at)] = value
        return a
    return make


def test_long_array_converts_like_astype_on_every_thread():
    row = check(random_values(LONG), rtol=1e-3)
    assert row["status"] == "done" and 0 < row["max_rel_error"] <= 2.0**-24


def test_long_complex_array_converts_both_components():
    def make():
        rng = np.random.default_rng(1)
        a = np.empty(LONG, np.complex128)
        a.real, a.imag = rng.random(LONG), -1e-20 * rng.random(LONG)
        return a
    assert check(make, rtol=1e-3)["status"] == "done"


@pytest.mark.parametrize("step", [1, -1])
def test_creeping_largest_error_is_still_exact(step):
    """A linspace's largest error grows block after block (in one of the
    two directions): many places where the exact measure must step in."""
    assert check(lambda: np.linspace(0, 1, LONG)[::step].copy(), rtol=1e-3)["status"] == "done"


def test_fortran_order_stays_fortran():
    row = check(lambda: np.asfortranarray(random_values(LONG - 1)().reshape(-1, 8)), rtol=1e-3)
    assert row["status"] == "done"


def test_rtol_exactly_met_converts_and_just_missed_refuses():
    max_err, _ = truth(random_values(LONG, 2)())
    assert check(random_values(LONG, 2), rtol=max_err)["status"] == "done"
    assert check(random_values(LONG, 2), rtol=np.nextafter(max_err, 0))["status"] == "refused"


# The first and last values of blocks, the second thread's share, the tail.
PLACES = [0, 1, 32767, 32768, LONG // 2, LONG - 5, LONG - 1]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value, rtol, status", [
    (1e39, 1.0, "refused"),              # over float32's range: overflow
    (-3.5e38, 1.0, "refused"),           # rounds to -inf
    (3.4028235e38, 1e-3, "done"),        # rounds down to float32's largest
    (float("inf"), 1e-3, "done"),
    (float("-inf"), 1e-3, "done"),
    (-0.0, 1e-3, "done"),
    (1e-44, 1e-3, "refused"),            # a float32 subnormal: 2% off
    (1e-44, 0.1, "done"),
    (5e-324, 0.99, "refused"),           # a float64 subnormal becomes 0: error 1
    (5e-324, 1.0, "done"),
])
def test_one_special_value_anywhere_decides(place, value, rtol, status):
    assert check(random_values(LONG, 3, [place], value), rtol)["status"] == status


def test_nan_payloads_convert_as_astype_does():
    payloads = np.array([0x7FF8000000000001, 0xFFF0000000000001, 0x7FF4000000000000,
                         0x7FFFFFFFFFFFFFFF, 0xFFF8000000000000], dtype=np.uint64).view(np.float64)

    def make():
        a = random_values(LONG, 4)()
        for place in (0, 7, 40000, LONG - 5):
            a[place:place + len(payloads)] = payloads
        return a
    assert check(make, rtol=1e-3)["status"] == "done"


def test_a_larger_error_after_a_moderate_one_is_not_missed():
    """The fast test compares without dividing; it must still see an error
    of 1 (a float64 subnormal becoming 0) after 0.9 set the maximum, where
    the products round in the subnormal range.  One thread (under 2**21
    values) scans the blocks back to front: the 0.9 first."""
    def make():
        a = np.ones(2**20 + 3)
        a[-1] = TINY32 / 1.9  # rounds up to TINY32: error 0.9
        a[0] = 5e-324
        return a
    row = check(make, rtol=0.95)
    assert row["status"] == "refused" and row["max_rel_error"] == 1.0


def test_many_overflows_are_all_counted():
    assert check(random_values(LONG, 5, range(0, LONG, 1000), 1e300), 1e-3)["status"] == "refused"


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
                   st.sampled_from([TINY32 / 1.9, TINY32, 3.4028235677973366e38,
                                    3.4028235677973362e38, 1e-45, -0.0]))


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 70000), elements=floats, fill=floats),
       st.sampled_from([0.0, 2.0**-24, 1e-3, 0.5, 1.0]))
def test_any_values_give_the_true_error_and_outcome(a, rtol):
    check(a.copy, rtol)
