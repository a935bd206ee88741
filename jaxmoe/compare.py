"""Exact gradient flow against online SGD, seed by seed (the `jaxmoe compare` experiment).

The paper's Figure 1 (arXiv 2510.07205) was drawn with online batch SGD
standing in for gradient flow. This experiment measures how close that is and
what it costs: every seed is drawn once in d dimensions; the flow runs on its
exact coordinates in the span of teacher and student (pathwise the same
flow, `init.project_to_span`), and online SGD runs in d dimensions from the
same vectors for each (η, B). Both report on the time axis t = steps × η.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from .config import SimulationConfig
from .init import init_problem, project_to_span
from .observables import recovery
from .results import Result, save, write_atomic
from .simulation import simulate

__all__ = ["CompareRow", "compare", "DEFAULT_SETTINGS", "format_table", "headline", "plot_overlay", "write_compare"]

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
    - `recovery_time`: for k = 1 … m*, the median over seeds of each seed's
      k-th recovery time ``min{t : max_i w̄_i·w̄*_j(t) ≥ 1 − ε}`` (sorted over j).
    - `within`: ``max_deviation ≤ tolerance``.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=50, m=4, m_star=2, seeds=2, t_max=10.0, num_times=21)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        rows[1].max_deviation, rows[1].within
    """

    method: str
    learning_rate: float | None
    batch_size: int | None
    wall_time_s: float
    steps: int
    samples: int  # inputs drawn per seed
    max_deviation: float  # largest |alignment − flow's| over seeds, times, pairs (router and expert)
    recovery_time: tuple[float, ...]  # median over seeds of the k-th expert recovery, k = 1 … m*
    within: bool  # max_deviation ≤ the tolerance


def _interpolate(values: np.ndarray, times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values[:, T, ...]`` from `times` to `at` (axis 1)."""
    k = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 2)
    w = (at - times[k]) / (times[k + 1] - times[k])
    w = w.reshape((1, -1) + (1,) * (values.ndim - 2))
    return (1 - w) * values[:, k] + w * values[:, k + 1]


def _deviation(result: Result, flow: Result) -> float:
    worst = 0.0
    for name in ("expert_alignment", "router_alignment"):
        reference = _interpolate(getattr(flow, name), flow.times, result.times)
        worst = max(worst, float(np.nanmax(np.abs(getattr(result, name) - reference))))
    return worst


def _recovery_median(result: Result, epsilon: float) -> tuple[float, ...]:
    times, _ = recovery(result.expert_alignment, result.times, epsilon)
    ordered = np.sort(times, axis=1)  # k-th recovery of each seed
    return tuple(float(v) for v in np.median(ordered, axis=0))


def _timed(config: SimulationConfig, initial, seed_index, warm_config: SimulationConfig) -> tuple[Result, float]:
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
    log=print,
) -> tuple[list[CompareRow], dict[str, Result]]:
    """Run gradient flow and online SGD from the same seeds; tabulate cost and fidelity.

    **Arguments:**

    - `config`: the problem (d, m, m*, seeds, t_max, num_times, tolerances);
      its method, mode, time grid and loss threshold are ignored.
    - `settings`: ``(η, B)`` pairs for online SGD.
    - `epsilon`: recovery means alignment ≥ 1 − ε.
    - `tolerance`: a run is "within" when its alignment curves stay within
      this distance of the flow's at every saved time.

    - `log`: where progress lines go (default `print`).

    The flow runs on the exact span coordinates of the same d-dimensional draw
    (`init.project_to_span`), SGD in d dimensions; both save on a linear grid
    of times t (t = steps·η for SGD; DESIGN §4) and never stop early. Each run is timed
    after a short warm-up run of the same shapes, so compilation is excluded.

    **Returns:** ``(rows, results)``: one `CompareRow` per method (the flow
    first) and the `Result` of each, keyed ``"flow"`` and ``"online-eta…-B…"``.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=50, m=4, m_star=2, seeds=2, t_max=10.0, num_times=21)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        print(jaxmoe.compare.format_table(rows))
    """
    settings = [(float(eta), int(batch)) for eta, batch in settings]
    if not settings:
        raise ValueError("settings must name at least one (learning rate, batch size) pair")
    for eta, batch in settings:
        SimulationConfig(learning_rate=eta, batch_size=batch)  # validates both
    base = config.replace(mode="full", method="flow", time_grid="linear", loss_threshold=None)
    seed_index = np.arange(base.seeds)
    with jax.enable_x64(base.state_dtype == "float64"):
        teacher, student = init_problem(base, seed_index.astype(np.int32))
        span = project_to_span(teacher, student)
    rows, results = [], {}

    log(f"gradient flow ({base.seeds} seeds, t_max = {base.t_max:g}) ...")
    flow, wall = _timed(base, span, seed_index, base.replace(t_max=base.t_max * 1e-3))
    results["flow"] = flow
    rows.append(
        CompareRow("flow", None, None, wall, int(np.max(flow.num_steps)), 0, 0.0, _recovery_median(flow, epsilon), True)
    )
    for eta, batch in settings:
        log(f"online SGD η = {eta:g}, B = {batch} ...")
        online = base.replace(method="online", learning_rate=eta, batch_size=batch)
        result, wall = _timed(online, (teacher, student), seed_index, online.replace(t_max=eta))
        deviation = _deviation(result, flow)
        steps = int(result.num_steps[0])
        results[f"online-eta{eta:g}-B{batch}"] = result
        rows.append(
            CompareRow(
                "online", eta, batch, wall, steps, steps * batch, deviation,
                _recovery_median(result, epsilon), deviation <= tolerance,
            )
        )
    return rows, results


def headline(rows: list[CompareRow]) -> str:
    """The wall-time ratio of the cheapest SGD run within tolerance to the flow."""
    flow = rows[0]
    within = [r for r in rows[1:] if r.within]
    if not within:
        slowest = max(rows[1:], key=lambda r: r.wall_time_s)
        return (
            f"no online SGD run stayed within tolerance; the most expensive tried "
            f"(η = {slowest.learning_rate:g}, B = {slowest.batch_size}) took "
            f"{slowest.wall_time_s / flow.wall_time_s:.0f}× the flow's wall time"
        )
    cheapest = min(within, key=lambda r: r.wall_time_s)
    return (
        f"cheapest online SGD within tolerance: η = {cheapest.learning_rate:g}, B = {cheapest.batch_size}, "
        f"{cheapest.wall_time_s / flow.wall_time_s:.0f}× the wall time of exact gradient flow"
    )


def format_table(rows: list[CompareRow]) -> str:
    """A markdown table of the rows: one line per `CompareRow`, one recovery column per teacher expert.

    Example::

        import jaxmoe.compare
        config = jaxmoe.SimulationConfig(d=50, m=4, m_star=2, seeds=2, t_max=10.0, num_times=21)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        print(jaxmoe.compare.format_table(rows))
    """
    m_star = len(rows[0].recovery_time)
    head = ["method", "η", "B", "wall time (s)", "steps", "samples/seed", "max Δ alignment", "within"]
    head += [f"recovery {k + 1} (median t)" for k in range(m_star)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.method,
            "—" if r.learning_rate is None else f"{r.learning_rate:g}",
            "—" if r.batch_size is None else str(r.batch_size),
            f"{r.wall_time_s:.2f}",
            str(r.steps),
            f"{r.samples:.3g}",
            f"{r.max_deviation:.3f}",
            "yes" if r.within else "no",
        ] + [f"{t:.1f}" for t in r.recovery_time]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(rows: list[CompareRow]) -> str:
    out = io.StringIO()
    fields = [f.name for f in dataclasses.fields(CompareRow)]
    out.write(",".join(fields) + "\n")
    for r in rows:
        values = dataclasses.asdict(r)
        values["recovery_time"] = " ".join(f"{t:.6g}" for t in r.recovery_time)
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
        config = jaxmoe.SimulationConfig(d=50, m=4, m_star=2, seeds=1, t_max=10.0)
        rows, results = jaxmoe.compare.compare(config, [(0.05, 128)])
        fig = jaxmoe.compare.plot_overlay(results)
    """
    from matplotlib.lines import Line2D

    from .plot import _colors, _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    flow = results["flow"]
    best = np.argmax(flow.expert_alignment[seed, -1], axis=0)  # (m*,)
    colors = _colors(len(best))
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for n, (name, r) in enumerate(results.items()):
        style = "-" if name == "flow" else styles[(n - 1) % len(styles)]
        width = 2.0 if name == "flow" else 1.0
        for j, color in enumerate(colors):
            ax[0].plot(r.times, r.expert_alignment[seed, :, best[j], j], color=color, ls=style, lw=width)
        ax[1].plot(r.times, r.loss[seed], ls=style, lw=width, color="k" if name == "flow" else None, label=name)
    # The alignment panel's key: line styles name the runs, colours the teacher experts.
    keys = [Line2D([], [], color="0.3", ls="-" if name == "flow" else styles[(n - 1) % len(styles)],
                   lw=2.0 if name == "flow" else 1.0, label=name) for n, name in enumerate(results)]
    keys += [Line2D([], [], color=color, lw=2.0, label=f"teacher {j + 1}") for j, color in enumerate(colors)]
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
        config = jaxmoe.SimulationConfig(d=50, m=4, m_star=2, seeds=2, t_max=10.0, num_times=21)
        rows, results = jaxmoe.compare.compare(config, settings=((0.05, 64),))
        jaxmoe.compare.write_compare(rows, results, "runs/compare")
    """
    from .plot import _write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        save(result, folder / name)
    table = format_table(rows) + "\n\n" + headline(rows) + "\n"
    write_atomic(folder / "compare.md", table.encode())
    write_atomic(folder / "compare.csv", _csv(rows).encode())
    header = {"format": "jaxmoe.compare", "version": 1, "config": results["flow"].config.to_dict(),
              "settings": [[r.learning_rate, r.batch_size] for r in rows[1:]]}
    write_atomic(folder / "config.json", (json.dumps(header, indent=2) + "\n").encode())
    _write_png(plot_overlay(results), folder / "overlay.png")
    return [folder / "compare.md", folder / "compare.csv", folder / "overlay.png"]
