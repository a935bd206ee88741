"""Exact gradient flow against online SGD, seed by seed (the `jaxmoe compare` experiment).

The paper's Figure 1 (arXiv 2510.07205) was drawn with online batch SGD
standing in for gradient flow. This experiment measures how close that is and
what it costs: every seed is drawn once in d dimensions; the flow runs on its
exact coordinates in the span of teacher and student (pathwise the same
flow, `init.project_to_span`), and online SGD runs in d dimensions from the
same vectors for each (η, B). Both report on the time axis t = steps × η.

Pathwise agreement over a whole run is rare: the flow leaves each plateau at
a time set by its distance from the saddle's stable manifold, and gradient
noise far smaller than the signal moves that time. So beside the pairwise
deviation the comparison measures what can agree (`measures`): the matched
(permutation-invariant) deviation over the whole run and up to the flow's
first recovery, the time at which the two part, the per-rank recovery-time
distributions over seeds (two-sample Kolmogorov–Smirnov test, ratio of
medians) and the loss curves' deviation.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from pathlib import Path

import jax
import numpy as np

from .agreement import (
    best_alignment,
    kth_recoveries,
    lower_median,
    matched_gap,
    measures,
    recovery_distributions,
)
from .config import SimulationConfig
from .files import write_atomic, write_header
from .init import init_problem, project_to_span
from .results import Result, save
from .simulation import simulate

__all__ = [
    "CompareRow", "compare", "DEFAULT_SETTINGS", "MEASURES", "best_alignment", "format_distributions",
    "format_table", "headline", "matched_gap", "measures", "plot_overlay", "write_compare",
]

# What `--tolerance` can apply to (`CompareRow.within`): the pairwise
# alignment deviation, the matched deviation over the whole run or up to the
# flow's first recovery, the loss deviation (each ≤ tolerance), or the
# recovery-time distributions (every rank's KS p-value > tolerance).
MEASURES = ("pairwise", "matched", "escape", "loss", "distribution")

# (learning rate η, batch size B) pairs tried by default: from cheap and noisy
# to expensive and close to the flow.
DEFAULT_SETTINGS = ((0.05, 256), (0.02, 1024), (0.01, 4096), (0.005, 16384))


@dataclasses.dataclass(frozen=True)
class CompareRow:
    """One method's line in the comparison table (`compare`, `format_table`).

    - `method`: ``"flow"`` or ``"online"``; `learning_rate` η and `batch_size`
      B (``None`` for the flow).
    - `wall_time_s`: the run's wall time, compilation excluded; `steps`: solver
      steps (the most over seeds) or SGD steps t_max/η; `samples`: inputs
      drawn per seed, steps·B.
    - `max_deviation`: ``max_{s,t,i,j} |a_ij(t) − a^flow_ij(t)|`` over router
      and expert alignments, the flow's linearly interpolated to the SGD times.
    - `recovery_time`: for k = 1 … m*, the median over seeds (the lower
      median, an actual seed's value: ``inf`` counts as later than all) of each seed's
      k-th recovery time ``min{t : max_i w̄_i·w̄*_j(t) ≥ 1 − ε}`` (sorted over j).
    - `matched_deviation`: the (lower) median over seeds of each seed's matched
      deviation ``max_{t,j} |b_j(t) − b^flow_j(t)|``, b_j the best alignment
      with teacher j over student experts, for experts and for routers
      (`matched_gap`): permutation-invariant; `escape_deviation`: the same
      for t up to the flow's first recovery in that seed (the whole run if
      the flow recovers nothing).
    - `parting_time`: the median over seeds of the first time the matched
      gap reaches the tolerance (``inf``: never).
    - `loss_deviation`: the median over seeds of ``max_t |L(t) − L^flow(t)|``.
    - `ks_statistic`, `ks_pvalue`, `median_ratio`: for k = 1 … m*, the
      two-sample Kolmogorov–Smirnov test (`jaxmoe.stats.ks_2samp`) of the
      seeds' k-th recovery times against the flow's (``inf`` for a recovery
      that did not happen), and the ratio of their medians (SGD / flow).
    - `retract`: norm-preserving SGD (`SimulationConfig.retract`).
    - `within`: the `measure` the comparison was asked for is within
      tolerance (`MEASURES`); for the flow, always.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        assert [row.method for row in rows] == ["flow", "online"]
        print(rows[1].max_deviation, rows[1].within)
    """

    method: str
    learning_rate: float | None
    batch_size: int | None
    wall_time_s: float
    steps: int
    samples: int  # inputs drawn per seed
    max_deviation: float  # largest |alignment − flow's| over seeds, times, pairs (router and expert)
    recovery_time: tuple[float, ...]  # median over seeds of the k-th expert recovery, k = 1 … m*
    within: bool  # the chosen measure within tolerance
    matched_deviation: float = 0.0  # median over seeds, whole run
    escape_deviation: float = 0.0  # median over seeds, up to the flow's first recovery
    parting_time: float = math.inf  # median over seeds of the first time the matched gap reaches the tolerance
    loss_deviation: float = 0.0  # median over seeds of max_t |ΔL|
    ks_statistic: tuple[float, ...] = ()  # per recovery rank k
    ks_pvalue: tuple[float, ...] = ()
    median_ratio: tuple[float, ...] = ()  # median k-th recovery time, SGD / flow
    retract: bool = False


def _within(measure: str, row: CompareRow, tolerance: float) -> bool:
    if measure == "distribution":
        return all(p > tolerance for p in row.ks_pvalue)
    value = {"pairwise": row.max_deviation, "matched": row.matched_deviation, "escape": row.escape_deviation,
             "loss": row.loss_deviation}[measure]
    return bool(value <= tolerance)


def _recovery_median(result: Result, epsilon: float) -> tuple[float, ...]:
    ordered = kth_recoveries(result, epsilon)
    return tuple(lower_median(ordered[:, k]) for k in range(ordered.shape[1]))


def timed_run(config: SimulationConfig, initial, seed_index, warm_config: SimulationConfig) -> tuple[Result, float]:
    # The first call compiles; the same shapes at a tiny horizon make the
    # timed call reuse it, so wall times compare running, not compiling.
    simulate(warm_config, initial=initial, seed_index=seed_index)
    start = time.perf_counter()
    result = simulate(config, initial=initial, seed_index=seed_index)
    return result, time.perf_counter() - start


def compare(
    config: SimulationConfig,
    settings=DEFAULT_SETTINGS,
    *,
    epsilon: float = 0.05,
    tolerance: float = 0.05,
    measure: str = "pairwise",
    retract: bool = False,
    log=print,
) -> tuple[list[CompareRow], dict[str, Result]]:
    """Run gradient flow and online SGD from the same seeds; tabulate cost and fidelity.

    **Arguments:**

    - `config`: the problem (d, m, m*, seeds, t_max, num_times, tolerances);
      its method, mode, time grid and loss threshold are ignored.
    - `settings`: ``(η, B)`` pairs for online SGD.
    - `epsilon`: recovery means alignment ≥ 1 − ε.
    - `tolerance`: the bound `measure` is held to (`MEASURES`): a deviation
      ≤ tolerance, or for ``"distribution"`` every rank's KS p-value >
      tolerance; also the matched gap at which the runs part.
    - `measure`: one of `MEASURES` (default ``"pairwise"``: every alignment
      curve within tolerance of the flow's at every saved time).
    - `retract`: norm-preserving online SGD (`SimulationConfig.retract`).
    - `log`: where progress lines go (default `print`).

    The flow runs on the exact span coordinates of the same d-dimensional draw
    (`init.project_to_span`), SGD in d dimensions; both save on a linear grid
    of times t (t = steps·η for SGD; docs/model.md §4) and never stop early. Each run is timed
    after a short warm-up run of the same shapes, so compilation is excluded.

    **Returns:** ``(rows, results)``: one `CompareRow` per method (the flow
    first) and the `Result` of each, keyed ``"flow"`` and ``"online-eta…-B…"``
    (``…-retract`` for norm-preserving runs).

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),), measure="escape")
        print(jaxmoe.compare.format_table(rows))
    """
    settings = [(float(eta), int(batch)) for eta, batch in settings]
    if not settings:
        raise ValueError("settings must name at least one (learning rate, batch size) pair")
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; allowed: {', '.join(MEASURES)}")
    for name, value in (("epsilon", epsilon), ("tolerance", tolerance)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1); got {value!r}")
    for eta, batch in settings:
        SimulationConfig(learning_rate=eta, batch_size=batch)  # validates both
    base = config.replace(mode="full", method="flow", time_grid="linear", loss_threshold=None, retract=False)
    seed_index = np.arange(base.seeds)
    with jax.enable_x64(base.state_dtype == "float64"):
        teacher, student = init_problem(base, seed_index.astype(np.int32))
        span = project_to_span(teacher, student)
    rows, results = [], {}

    log(f"gradient flow ({base.seeds} seeds, t_max = {base.t_max:g}) ...")
    flow, wall = timed_run(base, span, seed_index, base.replace(t_max=base.t_max * 1e-3))
    results["flow"] = flow
    m_star = base.m_star
    rows.append(
        CompareRow("flow", None, None, wall, int(np.max(flow.num_steps)), 0, 0.0, _recovery_median(flow, epsilon), True,
                   ks_statistic=(0.0,) * m_star, ks_pvalue=(1.0,) * m_star, median_ratio=(1.0,) * m_star)
    )
    for eta, batch in settings:
        log(f"online SGD η = {eta:g}, B = {batch}{' (norm-preserving)' if retract else ''} ...")
        online = base.replace(method="online", learning_rate=eta, batch_size=batch, retract=retract)
        result, wall = timed_run(online, (teacher, student), seed_index, online.replace(t_max=eta))
        found = measures(result, flow, epsilon=epsilon, tolerance=tolerance)
        stat, pvalue, ratio = recovery_distributions(found["recovery"], found["recovery_flow"])
        steps = int(result.num_steps[0])
        results[f"online-eta{eta:g}-B{batch}" + ("-retract" if retract else "")] = result
        row = CompareRow(
            "online", eta, batch, wall, steps, steps * batch, float(np.max(found["pairwise"])),
            _recovery_median(result, epsilon), False,
            matched_deviation=lower_median(found["matched"]), escape_deviation=lower_median(found["escape"]),
            parting_time=lower_median(found["parting"]), loss_deviation=lower_median(found["loss"]),
            ks_statistic=stat, ks_pvalue=pvalue, median_ratio=ratio, retract=retract,
        )
        rows.append(dataclasses.replace(row, within=_within(measure, row, tolerance)))
    return rows, results


def _name(row: CompareRow) -> str:
    return f"η = {row.learning_rate:g}, B = {row.batch_size}" + (", norm-preserving" if row.retract else "")


def headline(rows: list[CompareRow]) -> str:
    """The wall-time ratio of the cheapest SGD run within tolerance to the flow."""
    flow = rows[0]
    within = [r for r in rows[1:] if r.within]
    if not within:
        slowest = max(rows[1:], key=lambda r: r.wall_time_s)
        return (
            f"no online SGD run stayed within tolerance; the most expensive tried "
            f"({_name(slowest)}) took {slowest.wall_time_s / flow.wall_time_s:.0f}× the flow's wall time"
        )
    cheapest = min(within, key=lambda r: r.wall_time_s)
    return (
        f"cheapest online SGD within tolerance: {_name(cheapest)}, "
        f"{cheapest.wall_time_s / flow.wall_time_s:.0f}× the wall time of exact gradient flow"
    )


def _method(row: CompareRow) -> str:
    return row.method + (", retracted" if row.retract else "")


def format_table(rows: list[CompareRow]) -> str:
    """A markdown table of the rows: cost, every deviation measure, one recovery column per teacher expert.

    The deviations: ``max Δ`` pairwise (the largest over seeds); matched
    over the whole run and up to the flow's first recovery, the parting
    time and the loss deviation (medians over seeds; `CompareRow`).

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        print(jaxmoe.compare.format_table(rows))
    """
    m_star = len(rows[0].recovery_time)
    head = ["method", "η", "B", "wall time (s)", "steps", "samples/seed", "max Δ alignment", "matched Δ",
            "matched Δ to 1st recovery", "parting t", "Δ loss", "within"]
    head += [f"recovery {k + 1} (median t)" for k in range(m_star)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            _method(r),
            "—" if r.learning_rate is None else f"{r.learning_rate:g}",
            "—" if r.batch_size is None else str(r.batch_size),
            f"{r.wall_time_s:.2f}",
            str(r.steps),
            f"{r.samples:.3g}",
            f"{r.max_deviation:.3f}",
            f"{r.matched_deviation:.3f}",
            f"{r.escape_deviation:.3f}",
            "—" if r.method == "flow" else f"{r.parting_time:.1f}",
            f"{r.loss_deviation:.3g}",
            "yes" if r.within else "no",
        ] + [f"{t:.1f}" for t in r.recovery_time]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_distributions(rows: list[CompareRow]) -> str:
    """A markdown table of the recovery-time distributions: per SGD run and rank, KS D, p and the ratio of medians.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        print(jaxmoe.compare.format_distributions(rows))
    """
    lines = ["| method | η | B | recovery | median t (SGD) | median t (flow) | KS D | KS p | median ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        for k, (d, p, q) in enumerate(zip(r.ks_statistic, r.ks_pvalue, r.median_ratio)):
            lines.append(f"| {_method(r)} | {r.learning_rate:g} | {r.batch_size} | {k + 1} | {r.recovery_time[k]:.1f} | "
                         f"{rows[0].recovery_time[k]:.1f} | {d:.3f} | {p:.3g} | {q:.3g} |")
    return "\n".join(lines)


def _csv(rows: list[CompareRow]) -> str:
    out = io.StringIO()
    fields = [f.name for f in dataclasses.fields(CompareRow)]
    out.write(",".join(fields) + "\n")
    for r in rows:
        values = dataclasses.asdict(r)
        for name, value in values.items():
            if isinstance(value, tuple):
                values[name] = " ".join(f"{t:.6g}" for t in value)
        out.write(",".join("" if values[f] is None else str(values[f]) for f in fields) + "\n")
    return out.getvalue()


def plot_overlay(results: dict[str, Result], seed: int = 0):
    """Expert alignments (best student per teacher) and loss: flow solid, SGD dashed.

    Left: ``w̄_i·w̄*_j(t)`` for each teacher expert j (one colour each) and
    the student i that the flow aligns best with it at the end, one line
    style per run; right: the population loss of each run.

    **Arguments:** `results` keyed by run name, with ``"flow"`` among them
    (as `compare` returns); `seed`, a position in the results.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, [(0.05, 64)])
        fig = jaxmoe.compare.plot_overlay(results)
    """
    from matplotlib.lines import Line2D

    from .plot import colors, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    flow = results["flow"]
    best = np.argmax(flow.expert_alignment[seed, -1], axis=0)  # (m*,)
    palette = colors(len(best))
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for n, (name, r) in enumerate(results.items()):
        style = "-" if name == "flow" else styles[(n - 1) % len(styles)]
        width = 2.0 if name == "flow" else 1.0
        for j, color in enumerate(palette):
            ax[0].plot(r.times, r.expert_alignment[seed, :, best[j], j], color=color, ls=style, lw=width)
        ax[1].plot(r.times, r.loss[seed], ls=style, lw=width, color="k" if name == "flow" else None, label=name)
    # The alignment panel's key: line styles name the runs, colours the teacher experts.
    keys = [Line2D([], [], color="0.3", ls="-" if name == "flow" else styles[(n - 1) % len(styles)],
                   lw=2.0 if name == "flow" else 1.0, label=name) for n, name in enumerate(results)]
    keys += [Line2D([], [], color=color, lw=2.0, label=f"teacher {j + 1}") for j, color in enumerate(palette)]
    ax[0].legend(handles=keys, fontsize=7, loc="best")
    ax[0].set_title(f"expert alignment of the flow's best student per teacher (seed {seed})")
    ax[0].set_ylabel("$\\bar w_i\\cdot\\bar w^*_j$")
    ax[1].set_yscale("log")
    ax[1].set_title("population loss")
    ax[1].legend(fontsize=7)
    for a in ax:
        a.set_xlabel("time t (flow time; steps × η for SGD)")
        a.grid(alpha=0.3)
    return fig


def write_compare(rows, results, folder: str | os.PathLike) -> list[Path]:
    """Write each run's result folder, the table (markdown, CSV) and the overlay figure.

    **Arguments:** `rows`, `results` from `compare`; `folder` (created if needed).
    Writes ``folder/<name>/`` per run (`jaxmoe.save`), ``compare.md`` (table
    and headline), ``compare.csv``, ``config.json`` and ``overlay.png``.

    **Returns:** the paths of ``compare.md``, ``compare.csv`` and ``overlay.png``.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        paths = jaxmoe.compare.write_compare(rows, results, "runs/compare")
        assert [path.name for path in paths] == ["compare.md", "compare.csv", "overlay.png"]
    """
    from .plot import write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        save(result, folder / name)
    table = format_table(rows) + "\n\n" + format_distributions(rows) + "\n\n" + headline(rows) + "\n"
    write_atomic(folder / "compare.md", table.encode())
    write_atomic(folder / "compare.csv", _csv(rows).encode())
    write_header(folder / "config.json", "jaxmoe.compare", 1, config=results["flow"].config.to_dict(),
                 settings=[[r.learning_rate, r.batch_size] for r in rows[1:]], retract=rows[-1].retract)
    write_png(plot_overlay(results), folder / "overlay.png")
    return [folder / "compare.md", folder / "compare.csv", folder / "overlay.png"]
