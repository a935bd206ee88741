"""The linear convergence rate of the fine-tuning loss."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._defaults import DEFAULT_FLOOR

# ---------------------------------------------------------------------------
# 3. Linear convergence rate


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """A least-squares fit ``log L(t) = intercept − rate · t`` per curve.

    Arrays of the curves' batch shape: `rate`, `intercept`, the window
    `t_start`, `t_end` and `num_points` used (NaN rate where fewer than 3
    points qualify).

    Example::

        import jaxmoe.prune
        t = np.linspace(0.0, 50.0, 101)
        fit = jaxmoe.prune.fit_linear_rate(t, np.stack([np.exp(-0.5 * t), np.exp(-t)]))
        assert np.allclose(fit.rate, [0.5, 1.0])
        print(fit.t_end)           # where each curve met the floor
    """

    rate: np.ndarray
    intercept: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    num_points: np.ndarray


def fit_linear_rate(times, loss, *, floor: float = DEFAULT_FLOOR, fraction: float = 0.5) -> LinearFit:
    """The linear convergence rate r of ``L(t) ≈ e^{a − r t}`` over the final phase.

    The window, per curve: take the saved points from the start up to (not
    including) the first one whose loss is at or below `floor` or not finite
    — below the floor the loss is rounding noise, not the flow — and keep the
    last `fraction` of them (at least 3). Early points are left out because
    the decay is a sum of modes ``e^{−2λ t}``; only late does the slowest mode
    alone remain, and it is this mode's rate, ``2 λ_min``, that the fit
    measures. ``log L`` is then fitted by least squares against t.

    **Arguments:** `times` (T,), `loss` (..., T); `floor` > 0; `fraction` in (0, 1].

    **Returns:** a `LinearFit` of the batch shape of `loss`.

    Example::

        import jaxmoe.prune
        t = np.linspace(0, 50, 101)
        assert np.allclose(jaxmoe.prune.fit_linear_rate(t, 3 * np.exp(-0.7 * t)).rate, 0.7)
    """
    times = np.asarray(times, dtype=float)
    loss = np.asarray(loss, dtype=float)
    if times.ndim != 1 or loss.shape[-1:] != times.shape:
        raise ValueError(f"loss must have shape (..., {times.size}) to match times; got {loss.shape}")
    if not floor > 0:
        raise ValueError(f"floor must be > 0; got {floor!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    batch = loss.shape[:-1]
    flat = loss.reshape(-1, times.size)
    out = {name: np.full(flat.shape[0], np.nan) for name in ("rate", "intercept", "t_start", "t_end")}
    count = np.zeros(flat.shape[0], dtype=np.int64)
    for c, curve in enumerate(flat):
        usable = np.isfinite(curve) & (curve > floor)
        end = int(np.argmin(usable)) if not usable.all() else times.size
        n = max(3, math.ceil(fraction * end))
        if end < 3:
            continue
        window = slice(end - min(n, end), end)
        t, y = times[window], np.log(curve[window])
        slope, intercept = np.polyfit(t, y, 1)
        out["rate"][c], out["intercept"][c] = -slope, intercept
        out["t_start"][c], out["t_end"][c] = t[0], t[-1]
        count[c] = t.size
    return LinearFit(**{k: v.reshape(batch) for k, v in out.items()}, num_points=count.reshape(batch))
