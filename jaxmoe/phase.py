"""Recovery probability against over-parameterization and d: the phase diagram (`jaxmoe phase`).

arXiv 2510.07205 states its guarantees for "moderate over-parameterization"
(m a multiple of m*). This experiment measures, at each m/m* and d, the share
of seeds that recover *every* teacher expert by the horizon:

    full recovery at t  ⇔  for every j:  max_i w̄_i·w̄*_j ≥ 1 − ε  and  max_i v̄_i·v̄*_j ≥ 1 − ε

(each seed stops there, `SimulationConfig.recovery_epsilon`), with Wilson 95%
intervals on the share, and the Kaplan–Meier median of the time to full
recovery (seeds not recovered by the horizon are censored there). The grid
runs as a sweep (`jaxmoe.sweep`): one resumable result folder per point.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .files import write_atomic
from .results import Result, load
from .stats import wilson_interval
from .survival import km_median
from .sweep import Point

__all__ = ["DEFAULT_RATIOS", "DEFAULT_DIMS", "phase_points", "full_recovery", "phase_row", "format_phase", "plot_phase", "write_phase", "run_phase"]

DEFAULT_RATIOS = (1, 2, 3, 5, 8)
DEFAULT_DIMS = (100, 1_000, 10_000)


def phase_points(config: SimulationConfig, ratios=DEFAULT_RATIOS, dims=DEFAULT_DIMS, *, t_max=None, epsilon: float = 0.05) -> list[Point]:
    """The grid: m = ratio·m* for each ratio, at each d; each seed stops at full recovery.

    **Arguments:** `config` (m*, seeds, solver, …; m, d, t_max and the stop
    rules are set per point); `ratios` (integers ≥ 1); `dims`; `t_max`, one
    horizon for every point (default `jaxmoe.scaling.default_t_max` of d:
    escapes take ~√d); `epsilon`.

    **Returns:** `jaxmoe.sweep.Point` objects named ``<k>-ratio=<r>-d=<d>``.

    Example::

        points = jaxmoe.phase.phase_points(jaxmoe.SimulationConfig(m_star=2, seeds=2), (1, 2), (100,), t_max=200.0)
        [p.name for p in points]      # ['000-ratio=1-d=100', '001-ratio=2-d=100']
    """
    from .scaling import default_t_max

    ratios, dims = [int(r) for r in ratios], [int(d) for d in dims]
    if not ratios or not dims or min(ratios) < 1 or len(set(ratios)) != len(ratios) or len(set(dims)) != len(dims):
        raise ValueError(f"ratios must be distinct integers ≥ 1 and dims distinct; got {ratios} and {dims}")
    points = []
    for ratio in ratios:
        for d in dims:
            run = config.replace(
                m=ratio * config.m_star,
                d=d,
                t_max=float(t_max) if t_max is not None else default_t_max(d),
                time_grid="log",
                num_times=max(config.num_times, 400),
                t_first=1e-4,
                loss_threshold=None,
                recovery_epsilon=epsilon,
                method="flow",
            )
            values = {"ratio": ratio, "m": run.m, "d": d}
            points.append(Point(f"{len(points):03d}-ratio={ratio}-d={d}", values, run))
    return points


def full_recovery(result: Result, epsilon: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The time each seed first recovers every teacher expert (expert and router), or its censoring time.

    The first saved time at which every j has ``max_i w̄_i·w̄*_j ≥ 1 − ε`` and
    ``max_i v̄_i·v̄*_j ≥ 1 − ε``; a seed stopped at that event (saved values
    after a stop repeat the final state) gets its stop time ``t_final``.

    **Returns:** ``(times, observed)``, each ``(S,)``: where not `observed`
    the time is ``t_final`` (the seed had not recovered when its run stopped).
    """
    level = 1.0 - epsilon
    expert = np.nan_to_num(result.expert_alignment, nan=-1.0).max(axis=2)  # (S, T, m*)
    router = np.nan_to_num(result.router_alignment, nan=-1.0).max(axis=2)
    done = np.all((expert >= level) & (router >= level), axis=2)  # (S, T)
    observed = done.any(axis=1)
    first = np.asarray(result.times)[np.argmax(done, axis=1)]
    t_final = np.asarray(result.t_final, float)
    return np.where(observed, np.minimum(first, t_final), t_final), observed


def phase_row(point: Point, result: Result, epsilon: float = 0.05) -> dict:
    """One point of the diagram: its grid values, the recovered share with its Wilson interval, KM median time."""
    times, observed = full_recovery(result, epsilon)
    n, k = result.num_seeds, int(observed.sum())
    low, high = wilson_interval(k, n)
    return {
        **point.values,
        "seeds": n,
        "recovered": k,
        "share": k / n,
        "low": low,
        "high": high,
        "median_time": km_median(times, observed),
        "horizon": point.config.t_max,
        "wall_time_s": float(result.run.get("wall_time_s", math.nan)),
    }


def format_phase(rows: list[dict]) -> str:
    """The diagram as a markdown table, one line per (m/m*, d)."""
    lines = [
        "| m/m* | m | d | seeds | fully recovered | share | Wilson 95% | KM median time to full recovery | horizon |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ratio']} | {r['m']} | {r['d']} | {r['seeds']} | {r['recovered']} | {r['share']:.2f} "
            f"| [{r['low']:.2f}, {r['high']:.2f}] | {r['median_time']:.4g} | {r['horizon']:g} |"
        )
    return "\n".join(lines)


def plot_phase(rows: list[dict]):
    """Left: the share fully recovered over (m/m*, d), annotated k/n; right: the share against m/m* per d, Wilson bars."""
    from .plot import colors, pyplot

    plt = pyplot()
    ratios = sorted({r["ratio"] for r in rows})
    dims = sorted({r["d"] for r in rows})
    grid = np.full((len(dims), len(ratios)), np.nan)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for r in rows:
        i, j = dims.index(r["d"]), ratios.index(r["ratio"])
        grid[i, j] = r["share"]
        ax[0].text(j, i, f"{r['recovered']}/{r['seeds']}", ha="center", va="center", fontsize=8, color="white" if r["share"] < 0.5 else "black")
    image = ax[0].imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax[0].set_xticks(range(len(ratios)), [str(r) for r in ratios])
    ax[0].set_yticks(range(len(dims)), [f"{d:g}" for d in dims])
    ax[0].set_xlabel("over-parameterization m/m*")
    ax[0].set_ylabel("dimension d")
    fig.colorbar(image, ax=ax[0], label="share of seeds recovering every teacher expert")
    for d, color in zip(dims, colors(len(dims))):
        mine = sorted((r for r in rows if r["d"] == d), key=lambda r: r["ratio"])
        x = np.array([r["ratio"] for r in mine], float)
        y = np.array([r["share"] for r in mine])
        err = np.array([[r["share"] - r["low"] for r in mine], [r["high"] - r["share"] for r in mine]])
        ax[1].errorbar(x, y, yerr=err, color=color, marker="o", capsize=3, label=f"d = {d:g}")
    ax[1].set_xscale("log")
    ax[1].set_xticks(ratios, [str(r) for r in ratios])
    ax[1].set_xticks([], minor=True)  # the log axis would label 4×10⁰, 6×10⁰ between the ratios
    ax[1].set_ylim(-0.03, 1.03)
    ax[1].set_xlabel("over-parameterization m/m*")
    ax[1].set_ylabel("fully recovered by the horizon (Wilson 95%)")
    ax[1].grid(alpha=0.3)
    ax[1].legend(fontsize=8)
    return fig


def write_phase(rows: list[dict], folder: str | Path) -> list[Path]:
    """``phase.md``, ``phase.csv`` and ``phase.png`` in `folder`."""
    from .plot import write_png

    folder = Path(folder)
    keys = list(rows[0]) if rows else []
    out = io.StringIO()
    out.write(",".join(keys) + "\n")
    for r in rows:
        out.write(",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n")
    write_atomic(folder / "phase.csv", out.getvalue().encode())
    write_atomic(folder / "phase.md", (format_phase(rows) + "\n").encode())
    write_png(plot_phase(rows), folder / "phase.png")
    return [folder / n for n in ("phase.md", "phase.csv", "phase.png")]


def run_phase(
    points: list[Point],
    folder: str | Path,
    *,
    epsilon: float = 0.05,
    chunk: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log=print,
) -> list[dict] | None:
    """Run the grid as a resumable sweep into `folder`, then write the diagram.

    **Returns:** the rows (process 0; ``None`` on other processes).

    Example::

        points = jaxmoe.phase.phase_points(jaxmoe.SimulationConfig(m_star=2, seeds=2), (1, 2), (100,), t_max=200.0)
        rows = jaxmoe.phase.run_phase(points, "runs/phase", progress=False)
        print(jaxmoe.phase.format_phase(rows))
    """
    from .sweep import sweep

    if sweep(points, folder, chunk=chunk, progress=progress, overwrite=overwrite, figure_seeds=0, log=log) is None:
        return None
    rows = [phase_row(p, load(Path(folder) / p.name), epsilon) for p in points]
    write_phase(rows, folder)
    return rows
