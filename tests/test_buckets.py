"""`buckets.padded_size`: the ladder of padded batch sizes, and bad input."""

import numpy as np
import pytest

from jaxmoe.buckets import padded, padded_size


def test_ladder_covers_every_size_and_pads_little():
    sizes = np.arange(0, 1000)
    padded = np.array([padded_size(n) for n in sizes])
    assert np.all(padded >= np.maximum(sizes, 1)) and np.all(np.diff(padded) >= 0)
    # Powers of two from 8 to 64, then multiples of 64: few distinct sizes, little padding.
    assert sorted(set(padded[padded <= 64].tolist())) == [8, 16, 32, 64]
    assert np.all(padded[padded > 64] % 64 == 0)
    assert np.all(padded[sizes >= 8] < 2 * sizes[sizes >= 8]) and np.all(padded[sizes > 64] - sizes[sizes > 64] < 64)
    assert padded_size(np.int64(9)) == 16


@pytest.mark.parametrize(
    "n, error, message",
    [(-1, ValueError, "non-negative"), (2.0, TypeError, "an integer"), (True, TypeError, "not a bool"), ("8", TypeError, "an integer")],
)
def test_bad_input(n, error, message):
    with pytest.raises(error, match=message):
        padded_size(n)


def test_padded_repeats_the_last_row_and_keeps_empty_arrays():
    rows = np.arange(6.0).reshape(3, 2)
    out = padded(rows)
    assert out.shape == (8, 2) and out.dtype == rows.dtype
    np.testing.assert_array_equal(out[:3], rows)
    np.testing.assert_array_equal(out[3:], np.broadcast_to(rows[-1], (5, 2)))
    assert padded(np.zeros((0,), np.int32)).shape == (0,)
    assert padded(np.arange(64)).shape == (64,) and padded(np.arange(65)).shape == (128,)
    with pytest.raises(ValueError, match="leading axis of rows; got a scalar"):
        padded(np.float64(1.0))
