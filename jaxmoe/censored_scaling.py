"""The escape law fitted with the censored seeds kept in (part of `jaxmoe scaling`).

A seed that has not made its k-th recovery by the time its run stopped (the
horizon, or a solver stop) has a k-th recovery time later than that time:
it is right-censored. `jaxmoe.scaling.fit_exponent` leaves such seeds out,
which biases the exponent down when more of them sit at larger d. Here they
enter through methods made for censored data (`jaxmoe.survival`):

- a censored normal (Tobit) regression of ``log t_k`` on ``log d`` by
  maximum likelihood: ``log t_k = log a + b log d + σ ε``;
- the Kaplan–Meier median (and lower quartile) of t_k at each d, and the
  least-squares slope of their logarithms against ``log d`` (a second view
  that assumes no shape of the distribution);

both with bootstrap 95% intervals (seeds resampled within each d), and the
number of censored seeds per d and rank.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from .agreement import kth_recoveries
from .files import read_header, write_atomic
from .results import Result, load
from .survival import km_quantile, tobit_fit

__all__ = [
    "CensoredFit",
    "censored_recoveries",
    "censored_exponent",
    "km_exponent",
    "censored_fits",
    "format_censored_fits",
    "write_censored",
    "load_scaling",
]


@dataclasses.dataclass(frozen=True)
class CensoredFit:
    """The exponent of the k-th recovery time against d, censored seeds included.

    - `rank`: k (1 = first recovery of each seed).
    - `exponent` b of the Tobit fit ``log t = log a + b log d + σ ε``, its
      bootstrap 95% interval [`low`, `high`], `prefactor` a, `sigma` σ.
    - `km_exponent` [`km_low`, `km_high`]: the slope through the
      Kaplan–Meier medians (NaN when fewer than two d have one).
    - per d, in the order of `dims`: `seeds`, `censored` (seeds without a
      k-th recovery when their run stopped) and `km_medians` (``inf``: more
      than half censored, so only a lower bound).
    - `q25_exponent` [`q25_low`, `q25_high`]: the slope through the
      Kaplan–Meier lower quartiles (the fast bulk of the seeds).
    """

    rank: int
    exponent: float
    low: float
    high: float
    prefactor: float
    sigma: float
    km_exponent: float
    km_low: float
    km_high: float
    dims: tuple[int, ...]
    seeds: tuple[int, ...]
    censored: tuple[int, ...]
    km_medians: tuple[float, ...]
    q25_exponent: float = math.nan
    q25_low: float = math.nan
    q25_high: float = math.nan


def censored_recoveries(result: Result, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """The k-th recovery time of each seed, or its censoring time.

    **Returns:** ``(times, observed)``, both ``(S, m*)``: the sorted recovery
    times ``w̄_i·w̄*_j ≥ 1 − ε`` (`jaxmoe.agreement.kth_recoveries`) where
    `observed`, else the seed's ``t_final`` (its run stopped there without
    the k-th recovery).
    """
    ordered = kth_recoveries(result, epsilon)
    observed = np.isfinite(ordered)
    return np.where(observed, ordered, np.asarray(result.t_final, float)[:, None]), observed


def _groups(dims, times, observed):
    """Per d: (log t, observed) of the usable seeds (a censoring time of 0 carries nothing)."""
    out = []
    for d, t, o in zip(dims, times, observed):
        t, o = np.asarray(t, float), np.asarray(o, bool)
        keep = np.isfinite(t) & (t > 0)
        out.append((np.full(keep.sum(), math.log(d)), np.log(t[keep]), o[keep]))
    return out


def _resample(groups, rng):
    picks = [rng.integers(0, len(y), len(y)) for _, y, _ in groups]
    return [(x[p], y[p], o[p]) for (x, y, o), p in zip(groups, picks)]


def _interval(samples) -> tuple[float, float]:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if samples.size < 10:
        return math.nan, math.nan
    low, high = np.quantile(samples, [0.025, 0.975])
    return float(low), float(high)


def censored_exponent(dims, times, observed, *, bootstrap: int = 1000, seed: int = 0):
    """Tobit fit of ``log t`` on ``log d`` with censored seeds, and a bootstrap 95% interval of its slope.

    **Arguments:** `dims` (G,); per d, arrays of `times` (event or censoring
    time) and `observed` (bools); `bootstrap` resamples of seeds within each
    d (each refit starts from the full fit); `seed` for NumPy's generator.

    **Returns:** ``(b, low, high, a, σ)``; NaN where the fit does not exist
    (`jaxmoe.survival.tobit_fit`), and NaN bounds when fewer than 10
    resamples have a fit.

    Example::

        import jaxmoe.censored_scaling as cs
        dims = [1e2, 1e3, 1e4]
        times = [np.array([10.0, 12.0]), np.array([31.0, 36.0]), np.array([99.0, 300.0])]
        observed = [np.array([True, True]), np.array([True, True]), np.array([True, False])]
        cs.censored_exponent(dims, times, observed, bootstrap=100)   # b above the 0.5 of the observed seeds
    """
    groups = _groups(dims, times, observed)
    stack = lambda gs: [np.concatenate(v) for v in zip(*gs)]  # noqa: E731
    alpha, beta, sigma = tobit_fit(*stack(groups))
    if not math.isfinite(beta):
        return (math.nan,) * 5
    rng = np.random.default_rng(seed)
    samples = [tobit_fit(*stack(_resample(groups, rng)), start=(alpha, beta, sigma))[1] for _ in range(bootstrap)]
    return (beta, *_interval(samples), math.exp(alpha), sigma)


def km_exponent(dims, times, observed, *, q: float = 0.5, bootstrap: int = 1000, seed: int = 0):
    """Least-squares slope of ``log`` (Kaplan–Meier q-quantile) against ``log d``, with a bootstrap 95% interval.

    Uses the d whose quantile exists (at most a share 1 − q censored); a
    resample with fewer than two such d has no slope and is left out. A low
    quantile (q = ¼) follows the fast bulk of the seeds, unmoved by a slow
    tail of seeds that linger near a saddle.

    **Returns:** ``(b, low, high, quantiles)``, the quantiles per d (``inf``: none).
    """
    groups = _groups(dims, times, observed)

    def slope(gs):
        values = np.array([km_quantile(np.exp(y), o, q) if len(y) else math.inf for _, y, o in gs])
        ok = np.isfinite(values)
        if ok.sum() < 2:
            return math.nan, values
        return float(np.polyfit(np.log(np.asarray(dims, float)[ok]), np.log(values[ok]), 1)[0]), values

    b, values = slope(groups)
    rng = np.random.default_rng(seed)
    samples = [slope(_resample(groups, rng))[0] for _ in range(bootstrap)]
    return (b, *_interval(samples), tuple(float(v) for v in values))


def censored_fits(results: dict[int, Result], epsilon: float, *, bootstrap: int = 1000) -> list[CensoredFit]:
    """One `CensoredFit` per recovery rank k = 1 … m*, from the `Result` of each d.

    Example::

        import jaxmoe.scaling, jaxmoe.censored_scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        print(jaxmoe.censored_scaling.format_censored_fits(jaxmoe.censored_scaling.censored_fits(results, 0.05)))
    """
    dims = list(results)
    per_d = [censored_recoveries(results[d], epsilon) for d in dims]
    fits = []
    for k in range(per_d[0][0].shape[1]):
        times = [t[:, k] for t, _ in per_d]
        observed = [o[:, k] for _, o in per_d]
        b, low, high, a, sigma = censored_exponent(dims, times, observed, bootstrap=bootstrap, seed=k)
        kb, klow, khigh, medians = km_exponent(dims, times, observed, bootstrap=bootstrap, seed=100 + k)
        qb, qlow, qhigh, _ = km_exponent(dims, times, observed, q=0.25, bootstrap=bootstrap, seed=200 + k)
        counts = dict(seeds=tuple(len(o) for o in observed), censored=tuple(int(np.sum(~o)) for o in observed))
        fits.append(
            CensoredFit(
                rank=k + 1,
                exponent=b,
                low=low,
                high=high,
                prefactor=a,
                sigma=sigma,
                km_exponent=kb,
                km_low=klow,
                km_high=khigh,
                dims=tuple(int(d) for d in dims),
                **counts,
                km_medians=medians,
                q25_exponent=qb,
                q25_low=qlow,
                q25_high=qhigh,
            )
        )
    return fits


def format_censored_fits(fits: list[CensoredFit]) -> str:
    """Two markdown tables: the exponents per rank, and per (d, rank) the censored seeds and KM medians."""
    lines = [
        "| recovery | Tobit exponent b | 95% bootstrap interval | σ of log t | prefactor | KM-median exponent "
        "| 95% bootstrap interval | KM lower-quartile exponent | 95% bootstrap interval | censored seeds (all d) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        lines.append(
            f"| {f.rank} | {f.exponent:.3f} | [{f.low:.3f}, {f.high:.3f}] | {f.sigma:.3f} | {f.prefactor:.3g} "
            f"| {f.km_exponent:.3f} | [{f.km_low:.3f}, {f.km_high:.3f}] | {f.q25_exponent:.3f} "
            f"| [{f.q25_low:.3f}, {f.q25_high:.3f}] | {sum(f.censored)} of {sum(f.seeds)} |"
        )
    if not fits:
        return "\n".join(lines)
    lines += ["", "| d | " + " | ".join(f"recovery {f.rank}: censored, KM median" for f in fits) + " |", "|---|" + "---|" * len(fits)]
    for g, d in enumerate(fits[0].dims):
        cells = [f"{f.censored[g]} of {f.seeds[g]}, {f.km_medians[g]:.4g}" for f in fits]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_CSV_FIELDS = (
    "rank",
    "exponent",
    "low",
    "high",
    "prefactor",
    "sigma",
    "km_exponent",
    "km_low",
    "km_high",
    "q25_exponent",
    "q25_low",
    "q25_high",
    "dims",
    "seeds",
    "censored",
    "km_medians",
)


def write_censored(fits: list[CensoredFit], folder: str | Path) -> list[Path]:
    """``censored_fit.csv`` (one row per rank; per-d fields joined by ``;``) and ``censored_fit.md`` in `folder`."""
    folder = Path(folder)

    def cell(value) -> str:
        if isinstance(value, tuple):
            return ";".join(cell(v) for v in value)
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    text = ",".join(_CSV_FIELDS) + "\n" + "".join(",".join(cell(getattr(f, k)) for k in _CSV_FIELDS) + "\n" for f in fits)
    write_atomic(folder / "censored_fit.csv", text.encode())
    write_atomic(folder / "censored_fit.md", (format_censored_fits(fits) + "\n").encode())
    return [folder / "censored_fit.csv", folder / "censored_fit.md"]


def load_scaling(folder: str | Path) -> tuple[dict[int, Result], float]:
    """The `Result` of each d and the ε of a `jaxmoe scaling` folder (``config.json`` and ``d<d>/``).

    **Raises:** `ValueError` (one line) if `folder` is not a finished scaling folder.
    """
    folder = Path(folder)
    try:
        header = read_header(folder / "config.json", "jaxmoe.scaling", 1)
        dims, epsilon = [int(d) for d in header["dims"]], float(header["epsilon"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder} is not a finished jaxmoe scaling folder (no readable config.json)") from None
    missing = [d for d in dims if not (folder / f"d{d}" / "result.npz").is_file()]
    if missing:
        raise ValueError(f"{folder} lacks the results of d = {missing}")
    return {d: load(folder / f"d{d}") for d in dims}, epsilon
