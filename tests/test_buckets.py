"""`jaxmoe.buckets`: the ladder of padded batch sizes, padding and trimming, and bad input."""

import numpy as np
import pytest

from jaxmoe.buckets import padded, padded_size, trimmed


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


def test_trimmed_undoes_padded_on_every_leaf_along_its_axis():
    rows = np.arange(10.0).reshape(5, 2)
    seeds = {"router": padded(rows), "steps": padded(np.arange(5))}
    back = trimmed(seeds, 5)
    np.testing.assert_array_equal(back["router"], rows)
    np.testing.assert_array_equal(back["steps"], np.arange(5))
    # Saved times on the second axis, after the seeds: the first axis is untouched.
    saved = np.stack([padded(np.arange(3.0))] * 2)  # (2 seeds, 8 times)
    np.testing.assert_array_equal(trimmed(saved, 3, axis=1), [[0.0, 1.0, 2.0]] * 2)
    assert trimmed((np.zeros((2, 8, 4)),), 3, axis=1)[0].shape == (2, 3, 4)
