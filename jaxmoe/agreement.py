"""How close two runs of the same seeds are: pairwise and matched deviations, parting time, recovery distributions.

`jaxmoe compare` holds online SGD to the flow with these; they take any two
`Result`s whose seeds correspond (the second one is the reference).
"""

from __future__ import annotations

import math

import numpy as np

from .observables import first_crossing, quartiles, recovery
from .results import Result
from .stats import ks_2samp

__all__ = ["best_alignment", "interpolate_times", "kth_recoveries", "lower_median", "matched_gap", "measures",
           "pairwise_deviation", "recovery_distributions"]


def interpolate_times(values: np.ndarray, times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values[:, T, ...]`` from `times` to `at` (axis 1)."""
    k = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 2)
    w = (at - times[k]) / (times[k + 1] - times[k])
    w = w.reshape((1, -1) + (1,) * (values.ndim - 2))
    return (1 - w) * values[:, k] + w * values[:, k + 1]


def pairwise_deviation(result: Result, flow: Result) -> float:
    worst = 0.0
    for name in ("expert_alignment", "router_alignment"):
        reference = interpolate_times(getattr(flow, name), flow.times, result.times)
        worst = max(worst, float(np.nanmax(np.abs(getattr(result, name) - reference))))
    return worst


def best_alignment(result: Result) -> np.ndarray:
    """For each teacher expert j, the best alignment over student experts, at every saved time.

    ``b_j(t) = max_i w̄_i·w̄*_j(t)`` (experts) and ``max_i v̄_i·v̄*_j(t)``
    (routers). Taking the maximum at each time, rather than following one
    student chosen once, keeps the curve continuous and independent of how
    the student experts are numbered: on the plateau every overlap is of
    order d^(−1/2) and which one is largest changes from time to time.

    **Arguments:** a `Result` with alignments ``(S, T, m, m*)``.

    **Returns:** ``(S, T, m*, 2)``: ``[..., 0]`` experts, ``[..., 1]`` routers.
    """
    curves = [np.nanmax(getattr(result, name), axis=2) for name in ("expert_alignment", "router_alignment")]
    return np.stack(curves, axis=-1)


def matched_gap(result: Result, flow: Result) -> np.ndarray:
    """The matched gap at each of `result`'s saved times: ``max_{j, kind} |b_j(t) − b^flow_j(t)|``.

    `best_alignment` of both, the flow's linearly interpolated to `result`'s
    times (SGD saves at multiples of η). Invariant under any relabelling of
    either run's student experts.

    **Returns:** ``(S, T)``.
    """
    reference = interpolate_times(best_alignment(flow), flow.times, result.times)
    return np.max(np.abs(best_alignment(result) - reference), axis=(2, 3))


def kth_recoveries(result: Result, epsilon: float) -> np.ndarray:
    times, _ = recovery(result.expert_alignment, result.times, epsilon)
    return np.sort(times, axis=1)  # (S, m*): the k-th recovery of each seed


def measures(result: Result, flow: Result, *, epsilon: float = 0.05, tolerance: float = 0.05) -> dict:
    """Per-seed agreement of a run with the flow from the same seeds (both on linear time grids).

    **Arguments:** `result` (e.g. online SGD) and `flow` with the same seeds;
    `epsilon` (recovery: alignment ≥ 1 − ε); `tolerance` (parting).

    **Returns:** a dict of NumPy arrays over seeds ``(S,)`` unless said:

    - ``pairwise``: ``max_{t,i,j} |a_ij − a^flow_ij|`` (routers and experts);
    - ``matched``: ``max_t`` of the matched gap (`matched_gap`);
    - ``escape``: the same over ``t ≤ t₁``, t₁ the flow's first recovery in
      the seed (``min_j`` of `observables.recovery`; the whole run if none);
    - ``parting``: the first time the matched gap reaches `tolerance`
      (linearly interpolated, `observables.first_crossing`; ``inf``: never);
    - ``loss``: ``max_t |L(t) − L^flow(t)|``;
    - ``first_recovery_flow``: t₁; ``recovery``, ``recovery_flow``: the k-th
      recovery times ``(S, m*)`` of each run.
    """
    gap = matched_gap(result, flow)
    recovered = kth_recoveries(result, epsilon)
    recovered_flow = kth_recoveries(flow, epsilon)
    first = recovered_flow[:, 0]
    before = result.times[None, :] <= first[:, None]
    pairwise = np.zeros(result.num_seeds)
    for name in ("expert_alignment", "router_alignment"):
        reference = interpolate_times(getattr(flow, name), flow.times, result.times)
        pairwise = np.maximum(pairwise, np.nanmax(np.abs(getattr(result, name) - reference), axis=(1, 2, 3)))
    loss_flow = interpolate_times(flow.loss[..., None], flow.times, result.times)[..., 0]
    return {
        "pairwise": pairwise,
        "matched": np.max(gap, axis=1),
        "escape": np.max(np.where(before, gap, 0.0), axis=1),
        "parting": first_crossing(gap, result.times, tolerance),
        "loss": np.nanmax(np.abs(result.loss - loss_flow), axis=1),
        "first_recovery_flow": first,
        "recovery": recovered,
        "recovery_flow": recovered_flow,
    }


def lower_median(values: np.ndarray) -> float:
    return float(quartiles(values)["median"])  # an actual entry: inf counts as larger than all


def recovery_distributions(recovered: np.ndarray, recovered_flow: np.ndarray):
    """Per recovery rank k: ``(D, p, ratio of medians)`` of the seeds' k-th recovery times, SGD against flow.

    `jaxmoe.stats.ks_2samp` on the two samples (``inf``: not recovered);
    the ratio is ``median(SGD) / median(flow)`` (``nan`` when both are inf).

    **Arguments:** ``(S, m*)`` and ``(S', m*)`` sorted recovery times (`measures`).

    **Returns:** three tuples of m* floats.
    """
    stat, pvalue, ratio = [], [], []
    for k in range(recovered.shape[1]):
        d, p = ks_2samp(recovered[:, k], recovered_flow[:, k])
        a, b = lower_median(recovered[:, k]), lower_median(recovered_flow[:, k])
        stat.append(d)
        pvalue.append(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio.append(float(np.divide(a, b)) if not (np.isinf(a) and np.isinf(b)) else math.nan)
    return tuple(stat), tuple(pvalue), tuple(ratio)
