"""The escape law and "guided by the experts", measured (the `jaxmoe scaling` experiment).

arXiv 2510.07205 predicts that each teacher expert is recovered after a plateau
whose length grows like √d (information exponent 3: an overlap m obeys
ṁ ∝ m² from m ~ d^(-1/2)), and that a router aligns only after its expert.
This experiment runs many seeds at several d in reduced coordinates (exact,
at a cost independent of d), stops each seed once every teacher expert is
recovered in expert and router alignment, and reports:

- for the k-th recovery (k = 1 … m*), the exponent b of ``t_k ≈ a d^b`` by
  least squares in log–log coordinates over all seeds, with a bootstrap 95%
  interval (seeds resampled within each d);
- for every recovered pair, the delay between the expert's recovery and the
  recovery of the same student's router (`guided_delay`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .files import write_atomic, write_header
from .observables import first_crossing, recovery
from .results import Result, load, save
from .simulation import simulate

__all__ = [
    "ScalingFit",
    "fit_exponent",
    "guided_delay",
    "scaling",
    "rank_fits",
    "format_fits",
    "format_delays",
    "plot_scaling",
    "write_scaling",
    "DEFAULT_DIMENSIONS",
]

DEFAULT_DIMENSIONS = (100, 1_000, 10_000, 100_000)


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    """``t ≈ a d^b`` for one recovery rank (`fit_exponent`); the theory's b is ½.

    - `rank`: k, the k-th recovery of each seed (1 = first).
    - `exponent` b with its bootstrap 95% interval [`low`, `high`], and the
      `prefactor` a.
    - `points`: seeds that recovered, over all d; `missing`: seeds that had
      not recovered by t_max.

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        print(fits[0].exponent, (fits[0].low, fits[0].high))    # first recoveries: b and its interval
    """

    rank: int  # 1 = first recovery of each seed
    exponent: float
    low: float  # bootstrap 2.5% quantile
    high: float  # bootstrap 97.5% quantile
    prefactor: float
    points: int  # seeds that recovered, over all d
    missing: int  # seeds that had not recovered by t_max


def fit_exponent(
    dims: np.ndarray, times: list[np.ndarray], *, bootstrap: int = 1000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Least-squares slope of log t against log d, with a bootstrap 95% interval.

    Fits ``log t = log a + b log d`` over all (d, seed) points by ordinary
    least squares; `low`, `high` are the 2.5% and 97.5% quantiles of b over
    `bootstrap` resamples.

    **Arguments:** `dims` (G,), and for each d an array of times (non-finite
    or non-positive entries are ignored). Resampling draws seeds with
    replacement within each d, so the interval reflects seed-to-seed scatter.
    `seed` seeds NumPy's generator.

    **Returns:** ``(exponent, low, high, prefactor)`` = ``(b, low, high, a)``;
    all NaN when fewer than two dimensions have a finite time.

    Example::

        import jaxmoe.scaling
        times = [np.array([10.0, 11.0]), np.array([31.0, 33.0]), np.array([100.0, 105.0])]
        b, low, high, a = jaxmoe.scaling.fit_exponent(np.array([1e2, 1e3, 1e4]), times)
        assert np.allclose(b, 0.495, atol=0.005) and low <= b <= high     # t ∝ √d
    """
    groups = [np.log(t[np.isfinite(t) & (t > 0)]) for t in times]
    x_groups = [np.full(len(g), np.log(d)) for g, d in zip(groups, dims)]
    if sum(len(g) > 0 for g in groups) < 2:
        return (np.nan,) * 4

    def slope(xs, ys):
        x, y = np.concatenate(xs), np.concatenate(ys)
        b, a = np.polyfit(x, y, 1)
        return b, a

    b, a = slope(x_groups, groups)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        resampled = [g[rng.integers(0, len(g), len(g))] if len(g) else g for g in groups]
        samples.append(slope(x_groups, resampled)[0])
    low, high = np.quantile(samples, [0.025, 0.975])
    return float(b), float(low), float(high), float(np.exp(a))


def guided_delay(result: Result, epsilon: float = 0.05, level: float | None = None) -> np.ndarray:
    """Router alignment time minus expert alignment time, for every recovered pair.

    For teacher expert j, let i be the student expert that recovers it (first
    ``w̄_i·w̄*_j ≥ 1 − ε``). With ``ℓ = level`` (default 1 − ε), t_w is the
    first time ``w̄_i·w̄*_j ≥ ℓ`` and t_v the first time the same student's
    router reaches ``v̄_i·v̄*_j ≥ ℓ``. A positive delay t_v − t_w is the
    router following its expert ("guided by the experts", arXiv 2510.07205).
    A lower level (say 0.5) times the rise of each curve rather than its
    last approach to 1, which an expert that stalls just below 1 − ε (while
    another teacher expert is being recovered) would delay. NaN where either
    never happens.

    **Arguments:** a `Result` (alignments ``(S, T, m, m*)``), `epsilon`,
    `level` in (0, 1).

    **Returns:** ``(S, m*)``.

    Example::

        import jaxmoe.scaling
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        delay = jaxmoe.scaling.guided_delay(result)      # NaN where not recovered
        assert delay.shape == (2, 2)                     # (S, m*)
        halfway = jaxmoe.scaling.guided_delay(result, level=0.5)   # the same pairs, timed at alignment 0.5
    """
    level = 1.0 - epsilon if level is None else float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    _, student = recovery(result.expert_alignment, result.times, epsilon)
    safe = np.maximum(student, 0)

    def crossing(alignment):
        own = np.take_along_axis(alignment, safe[:, None, None, :], axis=2)[:, :, 0, :]  # (S, T, m*)
        return first_crossing(np.moveaxis(own, 1, -1), result.times, level)  # (S, m*)

    t_expert, t_router = crossing(result.expert_alignment), crossing(result.router_alignment)
    ok = (student >= 0) & np.isfinite(t_expert) & np.isfinite(t_router)
    return np.where(ok, np.where(ok, t_router, 0.0) - np.where(ok, t_expert, 0.0), np.nan)


def default_t_max(d: int) -> float:
    """A horizon long enough for every recovery at dimension d (the slowest
    ones at d = 10³ come near t = 300; escape times grow like √d)."""
    return float(3000.0 * max(1.0, np.sqrt(d / 1000.0)))


def scaling(
    config: SimulationConfig,
    dims=DEFAULT_DIMENSIONS,
    *,
    epsilon: float = 0.05,
    bootstrap: int = 1000,
    t_max=None,
    log=print,
    progress: bool = False,
    folder: str | os.PathLike | None = None,
    chunk: int | None = None,
    overwrite: bool = False,
) -> tuple[list[ScalingFit], dict[int, Result]]:
    """Recovery times against d, seeds vmapped at each d, with fitted exponents.

    **Arguments:**

    - `config`: the problem (m, m*, seeds, tolerances, …); d, t_max and the
      stopping rules are set here per dimension.
    - `dims`: the dimensions.
    - `epsilon`: recovery means alignment ≥ 1 − ε.
    - `t_max`: horizon per d (default `default_t_max`).
    - `bootstrap`: resamples for the intervals (`fit_exponent`).
    - `log`, `progress`: progress lines (default `print`) and the solver's bar.
    - `folder`: if given, each d runs into ``folder/d<d>`` by
      `jaxmoe.chunks.run_chunked` (`chunk` seeds at a time), so a stopped
      experiment resumes: finished dimensions and chunks are kept (and a
      grid can grow by new dimensions). With `overwrite`, a ``d<d>/`` holding
      another configuration is replaced instead of refused.

    Every d runs gradient flow (in reduced coordinates unless `config` says
    ``mode="full"``) on a log time grid of
    at least 400 points, each seed stopping once ``max_i w̄_i·w̄*_j ≥ 1 − ε``
    and ``max_i v̄_i·v̄*_j ≥ 1 − ε`` for every j. The k-th recovery times,
    sorted within each seed, are fitted to ``t_k ≈ a d^b`` by `fit_exponent`.

    **Returns:** ``(fits, results)``: one `ScalingFit` per recovery rank and
    the `Result` of each d (a dict keyed by d).

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        print(jaxmoe.scaling.format_fits(fits))
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or len(set(dims)) != len(dims):
        raise ValueError(f"dims must hold at least two distinct dimensions; got {dims}")
    results = {}
    for d in dims:
        horizon = float(t_max) if t_max is not None else default_t_max(d)
        run = config.replace(
            d=d, t_max=horizon, time_grid="log", num_times=max(config.num_times, 400), t_first=1e-4,
            loss_threshold=None, recovery_epsilon=epsilon, method="flow",
        )
        log(f"d = {d}: {run.seeds} seeds, t_max = {horizon:g} ...")
        if folder is None:
            results[d] = simulate(run, progress=progress)
        else:
            from .chunks import FolderConflict, run_chunked

            try:
                results[d] = run_chunked(run, Path(folder) / f"d{d}", chunk=chunk, progress=progress, log=log)
            except FolderConflict:
                if not overwrite:
                    raise
                log(f"{Path(folder) / f'd{d}'} holds another run: replaced")
                shutil.rmtree(Path(folder) / f"d{d}")
                results[d] = run_chunked(run, Path(folder) / f"d{d}", chunk=chunk, progress=progress, log=log)
    return rank_fits(results, epsilon, bootstrap=bootstrap), results


def rank_fits(results: dict[int, Result], epsilon: float, *, bootstrap: int = 1000) -> list[ScalingFit]:
    """One `ScalingFit` per recovery rank from the `Result` of each d (`fit_exponent`: recovered seeds only)."""
    fits = []
    dims = list(results)
    m_star = results[dims[0]].config.m_star
    ordered = {d: np.sort(recovery(r.expert_alignment, r.times, epsilon)[0], axis=1) for d, r in results.items()}
    for k in range(m_star):
        times = [ordered[d][:, k] for d in dims]
        b, low, high, a = fit_exponent(np.array(dims, float), times, bootstrap=bootstrap, seed=k)
        missing = int(sum(np.sum(~np.isfinite(t)) for t in times))
        points = int(sum(np.sum(np.isfinite(t)) for t in times))
        fits.append(ScalingFit(k + 1, b, low, high, a, points, missing))
    return fits


def format_fits(fits: list[ScalingFit]) -> str:
    """The fitted exponents as a markdown table, one row per recovery rank.

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        print(jaxmoe.scaling.format_fits(fits))
    """
    lines = ["| recovery | exponent b (t ∝ d^b) | 95% bootstrap interval | prefactor | seeds used | not recovered |",
             "|---|---|---|---|---|---|"]
    for f in fits:
        lines.append(f"| {f.rank} | {f.exponent:.3f} | [{f.low:.3f}, {f.high:.3f}] | {f.prefactor:.3g} | {f.points} | {f.missing} |")
    return "\n".join(lines)


def format_delays(results: dict[int, Result], epsilon: float) -> str:
    """Per d: recovered pairs, the share whose router aligned after its expert, and delay quartiles.

    A markdown table of `guided_delay` over seeds and teacher experts, at
    alignment 1 − ε, and the share of positive delays timed at alignment 0.5.

    **Arguments:** `results` keyed by d (from `scaling`), `epsilon`.

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        print(jaxmoe.scaling.format_delays(results, epsilon=0.05))
    """
    lines = ["| d | pairs | router after expert | median delay | q25 | q75 | router after expert, timed at 0.5 |",
             "|---|---|---|---|---|---|---|"]
    for d, r in results.items():
        delay = guided_delay(r, epsilon)
        delay = delay[np.isfinite(delay)]
        half = guided_delay(r, epsilon, level=0.5)
        half = half[np.isfinite(half)]
        after_half = f"{np.mean(half > 0):.0%} of {half.size}" if half.size else "—"
        if delay.size == 0:
            lines.append(f"| {d} | 0 | — | — | — | — | {after_half} |")
            continue
        q25, q50, q75 = np.quantile(delay, [0.25, 0.5, 0.75])
        lines.append(f"| {d} | {delay.size} | {np.mean(delay > 0):.0%} | {q50:.3g} | {q25:.3g} | {q75:.3g} | {after_half} |")
    return "\n".join(lines)


def plot_scaling(fits: list[ScalingFit], results: dict[int, Result], epsilon: float):
    """Recovery times against d with the fitted lines and √d (left); delays per d (right).

    **Arguments:** `fits`, `results` from `scaling`; the `epsilon` they used.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        fig = jaxmoe.scaling.plot_scaling(fits, results, epsilon=0.05)
    """
    from .plot import colors, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    dims = np.array(list(results), dtype=float)
    palette = colors(len(fits))
    for f, color in zip(fits, palette):
        for d, r in results.items():
            t = np.sort(recovery(r.expert_alignment, r.times, epsilon)[0], axis=1)[:, f.rank - 1]
            jitter = d * np.exp(0.04 * (f.rank - (len(fits) + 1) / 2))
            ax[0].scatter(np.full(t.shape, jitter), t, s=6, color=color, alpha=0.35)
            # Seeds without this recovery when their run stopped: a hollow triangle at that time (censored).
            late = ~np.isfinite(t)
            if late.any():
                ax[0].scatter(np.full(late.sum(), jitter), np.asarray(r.t_final)[late], s=14, marker="^",
                              facecolors="none", edgecolors=color, alpha=0.6)
        grid = np.geomspace(dims.min(), dims.max(), 50)
        ax[0].plot(grid, f.prefactor * grid**f.exponent, color=color,
                   label=f"recovery {f.rank}: b = {f.exponent:.2f} [{f.low:.2f}, {f.high:.2f}]")
    ax[0].plot(grid, grid**0.5 * (fits[0].prefactor * dims.min() ** fits[0].exponent) / dims.min() ** 0.5,
               color="k", ls=":", label="√d (theory)")
    ax[0].set_xscale("log")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("dimension d")
    ax[0].set_ylabel(f"recovery time (alignment ≥ {1 - epsilon:g})")
    ax[0].scatter([], [], s=14, marker="^", facecolors="none", edgecolors="gray", label="not recovered when its run stopped")
    ax[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2)  # below: the data fill the axes
    ax[0].grid(alpha=0.3, which="both")
    delays = [guided_delay(r, epsilon) for r in results.values()]
    data = [x[np.isfinite(x)] for x in delays]
    ax[1].boxplot(data)
    ax[1].set_xticks(range(1, len(dims) + 1), [f"{int(d):g}" for d in dims])
    ax[1].axhline(0, color="k", lw=0.5)
    # A few pairs switch students late, with delays of thousands; symlog keeps
    # the bulk (a few time units) readable beside them.
    ax[1].set_yscale("symlog", linthresh=10.0)
    ax[1].set_xlabel("dimension d")
    ax[1].set_ylabel("router recovery − expert recovery (time)")
    ax[1].set_title("guided by the experts: the router follows its expert", fontsize=9)
    ax[1].grid(alpha=0.3)
    return fig


def write_scaling(
    fits, results, folder: str | os.PathLike, epsilon: float, config: SimulationConfig, *, censored=None, bootstrap: int = 1000
) -> list[Path]:
    """Result folder per d, fits and delays (markdown, CSV), figure, config.json.

    Writes ``folder/d<d>/`` per dimension (`jaxmoe.save`, unless it holds
    that result already), ``scaling.csv`` (per seed: sorted recovery times
    and delays), ``fit.csv``, ``scaling.md``, ``config.json``,
    ``scaling.png``, and the fits with censored seeds kept in
    (`jaxmoe.censored_scaling`: `censored`, or computed with `bootstrap`
    resamples): ``censored_fit.csv``, ``censored_fit.md`` and a section of
    ``scaling.md``.

    **Returns:** the paths of ``scaling.md``, ``scaling.csv``, ``fit.csv`` and ``scaling.png``.

    Example::

        import jaxmoe.scaling
        config = jaxmoe.SimulationConfig(m=4, m_star=2, seeds=2)
        fits, results = jaxmoe.scaling.scaling(config, dims=(100, 400), t_max=300.0, bootstrap=100)
        jaxmoe.scaling.write_scaling(fits, results, "runs/scaling", 0.05, config)
    """
    from .plot import write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for d, result in results.items():
        if not (folder / f"d{d}" / "result.npz").is_file() or load(folder / f"d{d}").config != result.config:
            save(result, folder / f"d{d}")
    out = io.StringIO()
    out.write("d,seed," + ",".join(f"recovery_{k + 1}" for k in range(config.m_star)) + ","
              + ",".join(f"delay_teacher_{j + 1}" for j in range(config.m_star)) + "\n")
    for d, r in results.items():
        ordered = np.sort(recovery(r.expert_alignment, r.times, epsilon)[0], axis=1)
        delay = guided_delay(r, epsilon)
        for s in range(r.num_seeds):
            out.write(f"{d},{r.seed_index[s]}," + ",".join(f"{t:.6g}" for t in ordered[s]) + ","
                      + ",".join(f"{t:.6g}" for t in delay[s]) + "\n")
    write_atomic(folder / "scaling.csv", out.getvalue().encode())
    fit_csv = "rank,exponent,low,high,prefactor,points,missing\n" + "".join(
        f"{f.rank},{f.exponent:.6g},{f.low:.6g},{f.high:.6g},{f.prefactor:.6g},{f.points},{f.missing}\n" for f in fits
    )
    write_atomic(folder / "fit.csv", fit_csv.encode())
    from .censored_scaling import censored_fits, format_censored_fits, write_censored

    censored = censored_fits(results, epsilon, bootstrap=bootstrap) if censored is None else censored
    write_censored(censored, folder)
    report = "## Recovery time against d\n\n" + format_fits(fits) + "\n\n## Guided by the experts\n\n" + format_delays(results, epsilon) + "\n"
    report += ("\n## Censored seeds kept in\n\nSeeds without the k-th recovery when their run stopped enter as "
               "censored at that time: a censored normal (Tobit) fit of log t on log d, and the slope through the "
               "Kaplan–Meier medians per d.\n\n" + format_censored_fits(censored) + "\n")
    write_atomic(folder / "scaling.md", report.encode())
    write_header(folder / "config.json", "jaxmoe.scaling", 1, config=config.to_dict(), dims=list(results), epsilon=epsilon)
    write_png(plot_scaling(fits, results, epsilon), folder / "scaling.png")
    return [folder / n for n in ("scaling.md", "scaling.csv", "fit.csv", "scaling.png")]
