"""Padded sizes, so that one compiled program serves many sizes.

A jitted function compiles once per argument shape. Where a size is only a
batch of independent rows (seeds, saved times), the caller pads it to the
next size of a short ladder, runs the padded batch and trims the result:
changing the number of seeds or of saved times in a notebook, or from one
test to the next, then reuses the compiled program instead of compiling a
new one (a solve compiles in 5–20 s on a CPU, a draw in 1–3 s). The ladder
is the powers of two from 8 to 64, then the multiples of 64, so the padding
is at most 7 rows below 8, under double up to 64, and under 64 rows above.
"""

from __future__ import annotations

import operator

import jax
import numpy as np

__all__ = ["padded", "padded_size", "trimmed"]

_SMALLEST = 8
_STEP = 64


def padded_size(n: int) -> int:
    """The size a batch of `n` rows is padded to: a power of two from 8 to 64, then a multiple of 64.

    Example::

        sizes = [jaxmoe.buckets.padded_size(n) for n in (1, 8, 9, 41, 64, 65, 301)]
        assert sizes == [8, 8, 16, 64, 64, 128, 320]
    """
    if isinstance(n, bool):
        raise TypeError(f"a batch size must be an integer, not a bool; got {n!r}")
    try:
        n = operator.index(n)  # Python and NumPy integers
    except TypeError:
        raise TypeError(f"a batch size must be an integer; got {n!r}") from None
    if n < 0:
        raise ValueError(f"a batch size must be a non-negative integer; got {n!r}")
    if n <= _STEP:
        return max(_SMALLEST, 1 << max(n - 1, 0).bit_length())
    return -(-n // _STEP) * _STEP


def padded(rows) -> np.ndarray:
    """`rows` (a NumPy array, rows first) padded to `padded_size` rows with its last row repeated.

    The repeated row is work done twice, never a new value: the caller trims the
    result to ``len(rows)``. An empty array stays empty.

    Example::

        times = jaxmoe.buckets.padded(np.array([0.0, 0.5, 1.0]))
        assert times.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    rows = np.asarray(rows)
    if rows.ndim == 0:
        raise ValueError(f"padded needs an array with a leading axis of rows; got a scalar {rows!r}")
    if len(rows) == 0:
        return rows
    return np.concatenate([rows, np.repeat(rows[-1:], padded_size(len(rows)) - len(rows), axis=0)])


def trimmed(tree, n: int, *, axis: int = 0):
    """Every array in `tree` (a PyTree) cut back to its first `n` entries along `axis`: the inverse of `padded`.

    A padded batch goes in rows first (``axis=0``: seeds); what comes back
    from it may carry the padded size on another axis (``axis=1``: saved
    times after the seed axis).

    Example::

        saved = {"loss": np.zeros((3, 8)), "alignment": np.zeros((3, 8, 2))}
        out = jaxmoe.buckets.trimmed(saved, 5, axis=1)
        assert out["loss"].shape == (3, 5) and out["alignment"].shape == (3, 5, 2)
    """
    cut = (slice(None),) * axis + (slice(None, n),)
    return jax.tree_util.tree_map(lambda x: x[cut], tree)
