"""Benchmark: cost of one gradient-flow trajectory against the input dimension d.

Run as ``python benchmarks/dimension.py``. In the paper's Figure 1 setting
(m* = 5 teacher experts, m = 25 student experts) it integrates the gradient
flow to a fixed time t = 50 at fixed tolerances (Tsit5, rtol 1e-6, atol 1e-9,
no early stop), for d = 10², 10³, 10⁴, 10⁵, 10⁶, in

* reduced mode (the default; 2(m + m*) = 60 coordinates, docs/model.md §3), and
* full mode (d coordinates), as far as it fits in the time budget: full mode
  at d is skipped when its d/10 run, scaled by 10 (the cost of a step is
  linear in d), predicts more than ``--full-limit-s`` seconds per trajectory.

Each seed is one `jaxmoe.simulate` call with one seed (the same seeds for every
d and mode), so the time of a call is the time of one trajectory. Calls are
timed warm: the first call at each (d, mode) compiles and is not counted.
Two times are reported:

* ``simulate``: the whole call, ``simulate(config, seed_index=[s])``, which
  draws the initialisation and integrates;
* ``solve``: ``simulate(config, initial=…)`` with the initialisation drawn
  beforehand — the flow alone.

The number of solver steps changes with d, because the dynamics change (the
escape from the initial saddle takes time of order √d, so at large d little
happens before t = 50 and the solver takes fewer, longer steps). The cost of
the method at fixed work is therefore the time *per solver step*
(``Result.num_steps``), reported beside the time per trajectory.

Each time is the best of ``--repeats`` calls per seed (one call where the first
call took over 20 s), then the mean over seeds; the repeats go round-robin over
all (d, mode), so that a change in the machine's load touches every d alike
(the best of several calls is the least disturbed by other processes). The
markdown table is printed and written atomically to
``benchmarks/results/dimension-<machine>.md``, with a log-log plot
``dimension-<machine>.png``. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np

# The script lives in benchmarks/; make the repository importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

import jaxmoe  # noqa: E402
from jaxmoe import SimulationConfig  # noqa: E402
from jaxmoe.init import init_problem, reduced_dimension, uses_reduced  # noqa: E402

DIMENSIONS = (10**2, 10**3, 10**4, 10**5, 10**6)
SEEDS = (0, 1)
# The paper's Figure 1 setting, integrated to a fixed time at fixed tolerances.
CONFIG = SimulationConfig(
    m=25, m_star=5, t_max=50.0, num_times=101, rtol=1e-6, atol=1e-9, loss_threshold=None, max_steps=200_000
)
# (d, mode) whose first call takes longer than this are timed once, not `--repeats` times.
SLOW_CALL_S = 20.0
# Target (printed, not asserted): reduced-mode cost at d = 10⁶ over d = 10².
TARGET_RATIO = 1.2

RESULTS_DIR = RESULTS


# ---------------------------------------------------------------------------
# Measurements


@dataclasses.dataclass
class Row:
    """One (d, mode): seconds per trajectory and per solver step, or why it was skipped."""

    d: int
    mode: str
    coordinates: int = 0
    steps: float = math.nan  # mean over seeds of Result.num_steps
    simulate_s: float = math.nan  # whole simulate call, per trajectory
    solve_s: float = math.nan  # flow alone (initialisation given), per trajectory
    compile_s: float = math.nan  # first call (compiles), per trajectory
    skipped: str = ""
    # Per seed: the best time so far of each kind of call, and what it needs.
    best: dict = dataclasses.field(default_factory=dict, repr=False)
    initial: dict = dataclasses.field(default_factory=dict, repr=False)
    slow: bool = False

    @property
    def config(self) -> SimulationConfig:
        return CONFIG.replace(d=self.d, mode=self.mode, seeds=1)

    @property
    def solve_per_step_ms(self) -> float:
        return 1e3 * self.solve_s / self.steps


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _calls(row: Row, seed: int) -> dict:
    index = np.array([seed])
    return {
        "simulate": lambda: jaxmoe.simulate(row.config, seed_index=index),
        "solve": lambda: jaxmoe.simulate(row.config, seed_index=index, initial=row.initial[seed]),
    }


def _time_once(row: Row) -> None:
    """One timed call of each kind per seed; keep the best time."""
    for seed in SEEDS:
        for kind, call in _calls(row, seed).items():
            seconds, _ = _timed(call)
            key = (seed, kind)
            row.best[key] = min(row.best.get(key, math.inf), seconds)


def prepare(d: int, mode: str) -> Row:
    """The compiling first call, the step counts, the initialisations, one timing."""
    row = Row(d=d, mode=mode)
    steps = []
    for seed in SEEDS:
        index = np.array([seed])
        first_s, result = _timed(lambda: jaxmoe.simulate(row.config, seed_index=index))
        if seed == SEEDS[0]:
            row.compile_s = first_s
        if result.status[0] != 0:
            raise RuntimeError(f"d = {d}, {mode}: seed {seed} ended with status {result.status_names()[0]}")
        row.coordinates = result.run["coordinates"]
        steps.append(int(result.num_steps[0]))
        # The same initialisation, drawn once: the "solve" call is the flow alone.
        row.initial[seed] = jax.block_until_ready(init_problem(row.config, index))
        row.slow = row.slow or first_s > SLOW_CALL_S
    row.steps = float(np.mean(steps))
    _time_once(row)
    return row


def finish(row: Row) -> None:
    row.simulate_s = float(np.mean([row.best[(s, "simulate")] for s in SEEDS]))
    row.solve_s = float(np.mean([row.best[(s, "solve")] for s in SEEDS]))
    row.initial.clear()
    print(
        f"d = {row.d:>9,}  {row.mode:<7} {row.coordinates} coordinates, {row.steps:.0f} steps, "
        f"simulate {row.simulate_s:.3f} s, solve {row.solve_s:.3f} s ({row.solve_per_step_ms:.3f} ms/step), "
        f"first call {row.compile_s:.1f} s",
        flush=True,
    )


def run_all(dimensions, repeats: int, full_limit_s: float) -> list[Row]:
    """Prepare every (d, mode), then time the fast ones round-robin.

    Round-robin repeats spread any change in the machine's load over every d
    alike, so that ratios between dimensions are not skewed by it.
    """
    rows = []
    last_full: Row | None = None  # the largest d measured in full mode so far
    for d in dimensions:
        for mode in ("reduced", "full"):
            label = f"d = {d:>9,}  {mode:<7}"
            if mode == "full" and last_full is not None:
                predicted = last_full.best[(SEEDS[0], "simulate")] * d / last_full.d
                if predicted > full_limit_s:
                    reason = (
                        f"predicted {predicted:,.0f} s per trajectory > {full_limit_s:.0f} s, "
                        f"linear in d from d = {last_full.d:,}"
                    )
                    rows.append(Row(d=d, mode=mode, coordinates=d, skipped=reason))
                    print(f"{label} skipped ({reason})", flush=True)
                    continue
            print(f"{label} compiling and first timing ...", flush=True)
            row = prepare(d, mode)
            rows.append(row)
            if mode == "full":
                last_full = row
    fast = [r for r in rows if not r.skipped and not r.slow]
    for repeat in range(1, repeats):
        print(f"repeat {repeat + 1} of {repeats} ...", flush=True)
        for row in fast:
            _time_once(row)
    for row in rows:
        if not row.skipped:
            finish(row)
    return rows


# ---------------------------------------------------------------------------
# Report


def _cell(row: Row, value: float, fmt: str) -> str:
    return f"skipped ({row.skipped})" if row.skipped else format(value, fmt)


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| d | mode | coordinates | solver steps | simulate (s/trajectory) | solve (s/trajectory) "
        "| solve per step (ms) | first call (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.d:,} | {r.mode} | {r.coordinates:,} | skipped ({r.skipped}) | | | | |")
            continue
        lines.append(
            f"| {r.d:,} | {r.mode} | {r.coordinates:,} | {r.steps:.0f} | {r.simulate_s:.3f} | {r.solve_s:.3f} "
            f"| {r.solve_per_step_ms:.3f} | {r.compile_s:.1f} |"
        )
    return lines


def ratios(rows: list[Row]) -> list[str]:
    def pick(d, mode):
        return next((r for r in rows if r.d == d and r.mode == mode and not r.skipped), None)

    lo, hi = min(r.d for r in rows), max(r.d for r in rows)
    lines = []
    a, b = pick(lo, "reduced"), pick(hi, "reduced")
    if a and b:
        measures = {
            "simulate time per trajectory": (b.simulate_s, a.simulate_s),
            "solve time per trajectory": (b.solve_s, a.solve_s),
            "solve time per solver step": (b.solve_per_step_ms, a.solve_per_step_ms),
        }
        lines.append(f"Reduced mode, d = {hi:,} over d = {lo:,} (target ≤ {TARGET_RATIO}):")
        lines.append("")
        for name, (x, y) in measures.items():
            ratio = x / y
            lines.append(f"- {name}: {ratio:.2f} — {'met' if ratio <= TARGET_RATIO else 'NOT met'}")
        lines.append(f"- solver steps: {b.steps:.0f} at d = {hi:,}, {a.steps:.0f} at d = {lo:,}")
        gaps = [r.simulate_s - r.solve_s for r in rows if r.mode == "reduced" and not r.skipped]
        lines.append(
            f"- simulate − solve (drawing the initialisation, compilation included): "
            f"{min(gaps):.1f} to {max(gaps):.1f} s per call over all d"
        )
    full = [r for r in rows if r.mode == "full" and not r.skipped]
    if len(full) >= 2:
        f0, f1 = full[0], full[-1]
        lines += [
            "",
            f"Full mode, d = {f1.d:,} over d = {f0.d:,} (the largest d it ran at): "
            f"solve time per trajectory × {f1.solve_s / f0.solve_s:,.1f}, "
            f"per solver step × {f1.solve_per_step_ms / f0.solve_per_step_ms:,.1f}; "
            f"at d = {f1.d:,} reduced mode is "
            f"{f1.solve_s / pick(f1.d, 'reduced').solve_s:,.0f}× faster per trajectory.",
        ]
    return lines


def plot(rows: list[Row], path: Path, title: str) -> None:
    from jaxmoe.plot import pyplot, write_png

    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for mode, marker, color in (("reduced", "o", "C0"), ("full", "s", "C1")):
        done = [r for r in rows if r.mode == mode and not r.skipped]
        if not done:
            continue
        d = [r.d for r in done]
        axes[0].loglog(d, [r.simulate_s for r in done], marker=marker, color=color, label=f"{mode}: simulate")
        axes[0].loglog(d, [r.solve_s for r in done], marker=marker, color=color, linestyle="--",
                       label=f"{mode}: solve (flow alone)")
        axes[1].loglog(d, [r.solve_per_step_ms for r in done], marker=marker, color=color, label=mode)
    axes[0].set(xlabel="d", ylabel="wall time per trajectory (s)", title=f"one trajectory to t = {CONFIG.t_max:g}")
    axes[1].set(xlabel="d", ylabel="solve time per solver step (ms)", title="per solver step")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    write_png(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMENSIONS), help="dimensions d")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per seed and kind (default 3)")
    parser.add_argument(
        "--full-limit-s", type=float, default=120.0,
        help="skip full mode where a trajectory is predicted to take longer (default 120)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the report and plot go")
    args = parser.parse_args(argv)

    # Opt into float64 here, not at import (README, "Architecture").
    jax.config.update("jax_enable_x64", True)

    name = machine_name()
    k = reduced_dimension(CONFIG.m, CONFIG.m_star)
    small = [d for d in args.dims if not uses_reduced(CONFIG.replace(d=d))]
    print(f"machine {name}; m = {CONFIG.m}, m* = {CONFIG.m_star}, reduced coordinates {k}", flush=True)
    if small:
        print(f"note: d ≤ {k} runs in full coordinates in reduced mode too: {small}", flush=True)
    rows = run_all(sorted(args.dims), args.repeats, args.full_limit_s)

    setting = (
        f"m = {CONFIG.m}, m* = {CONFIG.m_star}, t = 0 … {CONFIG.t_max:g}, {CONFIG.solver}, "
        f"rtol {CONFIG.rtol:g}, atol {CONFIG.atol:g}, no early stop, seeds {list(SEEDS)} (one per call), "
        f"best of {args.repeats} warm calls per seed (1 where a call takes over {SLOW_CALL_S:g} s), "
        "round-robin over d, mean over seeds"
    )
    text = "\n".join(
        [
            f"# jaxmoe: cost of a trajectory against the dimension d ({name})",
            "",
            *machine_lines(),
            f"- setting: {setting}",
            "",
            "`simulate`: the whole call (draws the initialisation, then integrates); "
            "`solve`: the same call with the initialisation given, i.e. the flow alone. "
            "First call: the compiling call, not counted in the other columns. "
            "Per step: solve time over `Result.num_steps`; steps differ across d because the dynamics do "
            "(escape time ~ √d).",
            "",
            *table(rows),
            "",
            *ratios(rows),
            "",
        ]
    )
    print()
    print(text)
    path = args.out_dir / f"dimension-{name}.md"
    write_atomically(path, text)
    title = f"jaxmoe dimension benchmark — {name}\n" + textwrap.fill(setting, 140)
    plot(rows, args.out_dir / f"dimension-{name}.png", title)
    print(f"written: {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
