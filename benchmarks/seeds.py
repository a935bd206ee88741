"""Benchmark: seed-trajectories per second, one batched solve against a loop of single-seed solves.

Run as ``python benchmarks/seeds.py``. In the paper's Figure 1 setting (the
`SimulationConfig` defaults: m* = 5 teacher experts, m = 25 student experts,
d = 1000, gradient flow in the reduced coordinates, Tsit5 at rtol 1e-6,
atol 1e-9, 301 saved times on the log grid) every seed is integrated to the
same fixed time ``--t-max`` with no early stop (``loss_threshold=None``), so
that every seed does comparable work. Two ways of running seeds are timed:

* **batched**: one call ``jaxmoe.simulate(config, seed_index=range(S))`` —
  one compiled solve, `jax.vmap`ped over the seeds — for S = 1, 2, 4, …,
  ``--max-batch``;
* **loop**: ``--loop-seeds`` calls ``jaxmoe.simulate(config, seed_index=[k])``
  in a Python loop, one seed each (the S = 1 program, compiled beforehand).

Throughput is seed-trajectories per second of wall time, warm. Before the
timed calls at a batch size, one call at t_max = 1e-3 compiles the solve for
that batch shape (the saved times are traced, so the same program serves the
longer run); it is reported apart: its wall time (compilation, then one
solver step and all saves) and the XLA compile time within it (from
`jax.monitoring`; tracing not included). Warm calls, and whole rounds of the
loop, are repeated while they take less than ``--min-time`` seconds in all
(at most ``--max-calls``); the median counts. A vmapped adaptive solve runs
until its slowest seed is done, so a batch costs about S × (largest step
count) seed-steps, the loop the sum of its seeds' own step counts; both are
reported.

The sweep stops early when the next batch size, extrapolated from the last
two, would take the whole run past ``--budget-s`` (default 15 minutes); the
sizes left out are listed. A second table times the vector field −∇L alone
(``jax.jit``, warm, best of 5) per seed at each batch size that ran, vmapped
and as a sequential `jax.lax.map`, to show what the kernel itself gains or
loses from batching.

Seed k of a batch is the same trajectory as seed k alone (keys
fold_in(PRNGKey(base_seed), k)); the report checks that the loop's seeds agree
with the largest batch's.

On a GPU (``jax.devices()[0].platform == "gpu"``) it also times 1000 seeds of
the Figure 1 setting to convergence (the default stop at L < 1e-6 or
t = 1000) in one call, against the target of under a minute
(``--convergence-seeds``; 0 skips).

The markdown report is printed and written atomically to
``benchmarks/results/seeds-<machine>.md``, with the machine's load average
(other processes may share the CPU; timings are reported, never asserted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

# The script lives in benchmarks/: make the repository and benchmarks/common.py
# importable without an install, however the script is started.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

import jaxmoe  # noqa: E402

# A single seed takes 7 solver steps to t = 0.5, 10 to t = 1, about 50 to
# t = 3 and 160 to t = 10 (the first steps are short while the student leaves
# its initialisation). Short, so that the sweep reaches large batches: on a
# 2-core CPU a vmapped batch costs *more* per seed than a single seed (see the
# report), and the 301 saved observables are a fixed cost per seed.
DEFAULT_T_MAX = 1.0
COMPILE_T_MAX = 1e-3
TARGET_SPEEDUP, TARGET_BATCH = 10.0, 64
TARGET_CONVERGENCE_S = 60.0
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")


class CompileClock:
    """Seconds JAX spends lowering and compiling (XLA), summed from `jax.monitoring` events."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self.seconds += duration


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def repeated(call, min_time: float, max_calls: int):
    """Run `call()` (→ result) while the calls take under `min_time` s in all; medians of wall and CPU time."""
    walls, cpus = [], []
    while True:
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if sum(walls) >= min_time or len(walls) >= max_calls:
            return result, statistics.median(walls), statistics.median(cpus), len(walls)


def batch_row(config, size: int, clock: CompileClock, min_time: float, max_calls: int) -> dict:
    seeds = np.arange(size)
    compiled_before, start = clock.seconds, time.perf_counter()
    jaxmoe.simulate(config, seed_index=seeds, t_max=COMPILE_T_MAX)  # compile this batch shape
    first = time.perf_counter() - start
    compile_s = clock.seconds - compiled_before
    result, wall, cpu, calls = repeated(lambda: jaxmoe.simulate(config, seed_index=seeds), min_time, max_calls)
    return dict(
        size=size,
        first=first,
        compile=compile_s,
        calls=calls,
        wall=wall,
        cpu=cpu,
        throughput=size / wall,
        steps=result.num_steps,
        final_loss=result.final_loss(),
        statuses=result.status_names(),
        load=os.getloadavg()[0],
    )


def loop_row(config, count: int, min_time: float, max_calls: int) -> dict:
    def one_round():
        results = [jaxmoe.simulate(config, seed_index=[k]) for k in range(count)]
        return dict(
            steps=np.array([r.num_steps[0] for r in results]),
            final_loss=np.array([r.final_loss()[0] for r in results]),
            statuses=[s for r in results for s in r.status_names()],
        )

    out, wall, cpu, calls = repeated(one_round, min_time, max_calls)
    return dict(size=count, calls=calls, wall=wall, cpu=cpu, throughput=count / wall, load=os.getloadavg()[0], **out)


def kernel_rows(config, sizes: list[int]) -> list[tuple[int, float, float]]:
    """Per seed: ms for −∇L at S seeds, vmapped and as a sequential lax.map (jitted, warm, best of 5)."""
    from jaxmoe.flow import vector_field
    from jaxmoe.init import init_problem
    from jaxmoe.model import MoE

    def field(router, expert, teacher_router, teacher_expert):
        v = vector_field(MoE(router, expert, config.gate, config.expert),
                         MoE(teacher_router, teacher_expert, config.gate, config.expert))
        return v.router, v.expert

    def best_ms(fn, args):
        jax.block_until_ready(fn(*args))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    vmapped = jax.jit(jax.vmap(field))
    mapped = jax.jit(lambda *args: jax.lax.map(lambda a: field(*a), args))
    rows = []
    for size in sizes:
        teacher, student = init_problem(config, np.arange(size, dtype=np.int32))
        args = (student.router, student.expert, teacher.router, teacher.expert)
        rows.append((size, best_ms(vmapped, args) / size, best_ms(mapped, args) / size))
    return rows


def convergence_section(seeds: int) -> list[str]:
    """GPU only: `seeds` seeds of the default run (stop at L < 1e-6 or t = 1000)."""
    config = jaxmoe.SimulationConfig(seeds=seeds)
    index = np.arange(seeds)
    print(f"convergence: compiling {seeds} seeds ...", flush=True)
    start = time.perf_counter()
    jaxmoe.simulate(config, seed_index=index, t_max=COMPILE_T_MAX)
    first = time.perf_counter() - start
    print(f"convergence: {seeds} seeds to L < {config.loss_threshold:g} or t = {config.t_max:g} ...", flush=True)
    start = time.perf_counter()
    result = jaxmoe.simulate(config, seed_index=index)
    wall = time.perf_counter() - start
    names, counts = np.unique(result.status_names(), return_counts=True)
    return [
        "## Figure 1 to convergence",
        "",
        f"{seeds} seeds of the default run (each stops at L < {config.loss_threshold:g} or t = {config.t_max:g}), "
        f"one batched call, warm (the compiling call took {first:.1f} s and is not counted).",
        "",
        "| seeds | wall time (s) | seeds/s | statuses | largest t_final | solver steps mean / max |",
        "|---:|---:|---:|---|---:|---:|",
        f"| {seeds} | {wall:.1f} | {seeds / wall:.3g} | "
        f"{', '.join(f'{n} {c}' for n, c in zip(names, counts))} | {np.max(result.t_final):.1f} | "
        f"{result.num_steps.mean():.0f} / {result.num_steps.max()} |",
        "",
        f"- target: {seeds} seeds to convergence in under a minute: {wall:.1f} s — "
        f"{'met' if wall < TARGET_CONVERGENCE_S else 'NOT met'}",
        "",
    ]


POOL_PROBLEM = dict(d=200, m=8, m_star=3, t_max=400.0)
TARGET_POOL_RATIO, TARGET_UTILISATION = 1.3, 0.8


def _timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def pool_section(seeds: int, lanes: int, figure1_seeds: int, figure1_lanes: int) -> list[str]:
    """The seed pool: a batch costs the sum of its seeds' steps; lane utilisation (lane-steps that advance a seed)."""
    config = jaxmoe.SimulationConfig(seeds=seeds, **POOL_PROBLEM)
    index = np.arange(seeds)
    print(f"pool: {seeds} seeds of {POOL_PROBLEM} ...", flush=True)
    jaxmoe.simulate(config, seed_index=index[:1], t_max=COMPILE_T_MAX)  # compile
    batch, batch_wall = _timed(lambda: jaxmoe.simulate(config, seed_index=index))
    steps = batch.num_steps
    median_seed = int(np.argsort(steps)[len(steps) // 2])
    print(f"  {batch_wall:.1f} s; {seeds} copies of the median seed {median_seed} ...", flush=True)
    initial = jax.tree_util.tree_map(
        lambda x: np.repeat(x[median_seed : median_seed + 1], seeds, axis=0),
        (jaxmoe.MoE(batch.teacher_router, batch.teacher_expert), jaxmoe.MoE(batch.student_router0, batch.student_expert0)),
    )
    copies, copies_wall = _timed(lambda: jaxmoe.simulate(config, initial=initial))
    ratio_steps = steps.mean() / np.median(steps)
    bound = TARGET_POOL_RATIO * ratio_steps * copies_wall
    rows = [
        f"| default (CPU: one seed after another) | {seeds} | — | {batch_wall:.1f} | {steps.mean():.0f} / "
        f"{np.median(steps):.0f} / {steps.max()} | — |",
        f"| {seeds} copies of the median seed (`initial=`) | {seeds} | — | {copies_wall:.1f} | "
        f"{copies.num_steps.mean():.0f} / {np.median(copies.num_steps):.0f} / {copies.num_steps.max()} | — |",
    ]
    print(f"  {copies_wall:.1f} s; the pool on {lanes} lanes ...", flush=True)
    pooled_config = config.replace(lanes=lanes)
    jaxmoe.simulate(pooled_config, seed_index=index[: lanes + 1], t_max=COMPILE_T_MAX)
    pooled, pooled_wall = _timed(lambda: jaxmoe.simulate(pooled_config, seed_index=index))
    same = np.array_equal(pooled.num_steps, steps) and pooled.status_names() == batch.status_names()
    rows.append(
        f"| pool, {lanes} lanes (vmapped) | {seeds} | {lanes} | {pooled_wall:.1f} | {steps.mean():.0f} / "
        f"{np.median(steps):.0f} / {steps.max()} | {pooled.run['lane_utilisation']:.3f} |"
    )
    lines = [
        "## The seed pool",
        "",
        f"{seeds} seeds of d = {POOL_PROBLEM['d']}, m = {POOL_PROBLEM['m']}, m* = {POOL_PROBLEM['m_star']}, "
        f"t_max = {POOL_PROBLEM['t_max']:g} (the defaults otherwise: solver auto, rtol 1e-7, stop at L < 1e-6), "
        "one warm call each (compiled beforehand). Lane utilisation: lane-steps that advanced a seed ÷ "
        "lane-steps run.",
        "",
        "| run | seeds | lanes | wall (s) | steps mean / median / max | lane utilisation |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- target: the batch ≤ {TARGET_POOL_RATIO} × (mean ÷ median steps = {ratio_steps:.2f}) × the copies' "
        f"wall = {bound:.1f} s: {batch_wall:.1f} s — {'met' if batch_wall <= bound else 'NOT met'}",
        f"- the pool gives every seed the steps and status it has alone: {'yes' if same else 'NO'}",
        "",
    ]
    if figure1_seeds > 0:
        fig = jaxmoe.SimulationConfig(seeds=figure1_seeds, lanes=figure1_lanes)
        print(f"pool: {figure1_seeds} Figure 1 seeds on {figure1_lanes} lanes ...", flush=True)
        jaxmoe.simulate(fig, seed_index=np.arange(figure1_lanes + 1), t_max=COMPILE_T_MAX)
        result, wall = _timed(lambda: jaxmoe.simulate(fig))
        utilisation = result.run.get("lane_utilisation", 1.0)
        names, counts = np.unique(result.status_names(), return_counts=True)
        all_at_once = result.num_steps.mean() / result.num_steps.max()
        lines += [
            f"### {figure1_seeds} Figure 1 seeds to convergence, {figure1_lanes} lanes",
            "",
            "| seeds | lanes | wall (s) | statuses | steps mean / max | lane utilisation | all seeds at once would be |",
            "|---:|---:|---:|---|---:|---:|---:|",
            f"| {figure1_seeds} | {figure1_lanes} | {wall:.1f} | "
            f"{', '.join(f'{n} {c}' for n, c in zip(names, counts))} | {result.num_steps.mean():.0f} / "
            f"{result.num_steps.max()} | {utilisation:.3f} | {all_at_once:.3f} |",
            "",
            f"- target: lane utilisation ≥ {TARGET_UTILISATION}: {utilisation:.3f} — "
            f"{'met' if utilisation >= TARGET_UTILISATION else 'NOT met'}",
            "",
        ]
    return lines


def _running(result, reference) -> np.ndarray:
    """(S, T): saved times before either run stopped, where L ≥ 1e-8: after a stop the saved values are a fill."""
    until = np.minimum(result.t_final, reference.t_final)[:, None]
    return (reference.loss >= 1e-8) & (reference.times[None, :] < until) & np.isfinite(result.loss)


def _loss_error(result, reference) -> np.ndarray:
    """Per seed: the largest relative loss difference over the times both runs were integrating."""
    mask = _running(result, reference)
    return np.where(mask, np.abs(result.loss - reference.loss) / np.where(mask, reference.loss, 1.0), 0.0).max(axis=1)


def _alignment_error(result, reference) -> float:
    return max(np.nanmax(np.abs(result.expert_alignment - reference.expert_alignment)),
               np.nanmax(np.abs(result.router_alignment - reference.router_alignment)))


def precision_section() -> list[str]:
    """float64 against mixed precision: −∇L alone, and the default run (4 Figure 1 seeds to L < 1e-6 or t = 1000).

    Both runs are also held against a tight float64 reference (rtol 1e-10,
    atol 1e-13): float64 at the default rtol 1e-7 is itself far from 1e-3 of
    the true loss in the slow tail, and that sets what "within 1e-3 of
    float64" can mean.
    """
    from jaxmoe.flow import _field, _field_mixed
    from jaxmoe.init import init_problem

    config = jaxmoe.SimulationConfig()
    teacher, student = init_problem(config, np.arange(1, dtype=np.int32))
    one = jax.tree_util.tree_map(lambda x: x[0], (student, teacher))
    field_ms = {}
    for name, fn in (("float64", _field), ("mixed", _field_mixed)):
        f = jax.jit(fn)
        jax.block_until_ready(f(None, *one))
        best = []
        for _ in range(50):
            start = time.perf_counter()
            jax.block_until_ready(f(None, *one))
            best.append(time.perf_counter() - start)
        field_ms[name] = 1e3 * min(best)
    print("precision: the default run in float64, mixed, and a tight float64 reference ...", flush=True)
    tight = dict(rtol=1e-10, atol=1e-13, max_steps=400_000)
    jaxmoe.simulate(config, t_max=COMPILE_T_MAX)
    jaxmoe.simulate(config, t_max=COMPILE_T_MAX, dtype="mixed")
    wide, wide_wall = _timed(lambda: jaxmoe.simulate(config))
    mixed, mixed_wall = _timed(lambda: jaxmoe.simulate(config, dtype="mixed"))
    reference = jaxmoe.simulate(config, **tight)
    against_wide = _loss_error(mixed, wide)
    worst = int(np.argmax(against_wide))
    wide_err, mixed_err = _loss_error(wide, reference), _loss_error(mixed, reference)
    align = _alignment_error(mixed, wide)
    same = wide.status_names() == mixed.status_names()
    seeds = lambda values: ", ".join(f"{v:.1e}" for v in values)
    return [
        "## float64 against mixed precision",
        "",
        "−∇L with its loss at the Figure 1 size, one seed, jitted, best of 50; then the default run (4 seeds "
        "to L < 1e-6 or t = 1000), one warm call each; and the same seeds in float64 at rtol 1e-10, atol 1e-13 "
        "as the reference. Loss errors are taken where L ≥ 1e-8 at the saved times before either run stopped "
        "(after a stop the saved values repeat the stopped state, whose loss depends on where the last step landed).",
        "",
        "| precision | −∇L (ms) | default run (s) | solver steps per seed | statuses | loss error against the reference, per seed |",
        "|---|---:|---:|---|---|---|",
        f"| float64 | {field_ms['float64']:.3f} | {wide_wall:.1f} | {', '.join(map(str, wide.num_steps))} | "
        f"{', '.join(wide.status_names())} | {seeds(wide_err)} |",
        f"| mixed | {field_ms['mixed']:.3f} | {mixed_wall:.1f} | {', '.join(map(str, mixed.num_steps))} | "
        f"{', '.join(mixed.status_names())} | {seeds(mixed_err)} |",
        f"| reference | | | {', '.join(map(str, reference.num_steps))} | {', '.join(reference.status_names())} | |",
        "",
        f"- per step: float32 −∇L is {field_ms['float64'] / field_ms['mixed']:.2f}× faster than float64 on this CPU; "
        f"the default run {wide_wall / mixed_wall:.2f}×",
        f"- target: alignment curves within 2e-3 of float64: {align:.2e} — {'met' if align <= 2e-3 else 'NOT met'} "
        f"(float64 against the reference: {_alignment_error(wide, reference):.2e}; mixed: "
        f"{_alignment_error(mixed, reference):.2e})",
        f"- target: loss within 1e-3 relative of float64 wherever L ≥ 1e-8: {against_wide.max():.2e} (seed {worst}) — "
        f"{'met' if against_wide.max() <= 1e-3 else 'NOT met'}; float64 itself is {wide_err.max():.1e} from the "
        f"reference, so at the default rtol the loss tail is not known to 1e-3 in either precision; mixed is "
        f"{mixed_err.max() / wide_err.max():.1f}× float64's error at worst",
        f"- target: the same statuses: {'met' if same else 'NOT met'}",
        "",
    ]


def _report(text: str, path: Path) -> int:
    """Print the markdown report and write it atomically to `path`."""
    print()
    print(text)
    write_atomically(path, text)
    print(f"written: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t-max", type=float, default=DEFAULT_T_MAX,
                        help=f"integrate every seed to this time, no early stop (default {DEFAULT_T_MAX:g})")
    parser.add_argument("--max-batch", type=int, default=1024,
                        help="largest batch; sizes 1, 2, 4, … up to it (default 1024)")
    parser.add_argument("--loop-seeds", type=int, default=16,
                        help="single-seed calls in the loop baseline (default 16)")
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="repeat warm calls (loop rounds) while they take less than this in all (default 2 s)")
    parser.add_argument("--max-calls", type=int, default=5,
                        help="at most this many warm calls (loop rounds) per row (default 5)")
    parser.add_argument("--budget-s", type=float, default=900.0,
                        help="leave out batch sizes predicted to end the sweep after this many seconds (default 900)")
    parser.add_argument("--convergence-seeds", type=int, default=1000,
                        help="seeds run to convergence on a GPU (default 1000; 0 skips)")
    parser.add_argument("--pool", action="store_true",
                        help="only the seed-pool section (written to seeds-pool-<machine>.md)")
    parser.add_argument("--precision", action="store_true",
                        help="only float64 against mixed precision (written to seeds-precision-<machine>.md)")
    parser.add_argument("--pool-seeds", type=int, default=64, help="seeds of the pool section's problem (default 64)")
    parser.add_argument("--pool-lanes", type=int, default=8, help="lanes of the pool section's pool run (default 8)")
    parser.add_argument("--figure1-seeds", type=int, default=None,
                        help="Figure 1 seeds run to convergence in the pool (default: 1000 on a GPU, 0 elsewhere)")
    parser.add_argument("--figure1-lanes", type=int, default=128, help="their lanes (default 128)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the markdown report goes")
    args = parser.parse_args(argv)
    if args.precision:
        jax.config.update("jax_enable_x64", True)
        name = machine_name()
        text = "\n".join([f"# jaxmoe precision benchmark ({name})", "", *machine_lines(),
                          f"- load average (1 / 5 / 15 min): {load_average()}", "", *precision_section()])
        return _report(text, args.out_dir / f"seeds-precision-{name}.md")
    if args.pool:
        jax.config.update("jax_enable_x64", True)
        figure1 = args.figure1_seeds
        if figure1 is None:
            figure1 = 1000 if jax.devices()[0].platform == "gpu" else 0
        load_before = load_average()
        lines = pool_section(args.pool_seeds, args.pool_lanes, figure1, args.figure1_lanes)
        name = machine_name()
        text = "\n".join([f"# jaxmoe seed-pool benchmark ({name})", "", *machine_lines(),
                          f"- load average (1 / 5 / 15 min): {load_before} at the start, {load_average()} at the end",
                          "- float64", "", *lines])
        return _report(text, args.out_dir / f"seeds-pool-{name}.md")
    for name in ("max_batch", "loop_seeds", "max_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    # Opt into float64 here, not at import (README, "Architecture").
    jax.config.update("jax_enable_x64", True)
    clock = CompileClock()

    config = jaxmoe.SimulationConfig(t_max=args.t_max, loss_threshold=None)
    sizes = [2**k for k in range(args.max_batch.bit_length())]
    load_before = load_average()
    began = time.perf_counter()

    rows, skipped = [], []
    for size in sizes:
        if len(rows) >= 2:
            # Extrapolate from the last two sizes: the first call and one warm call.
            a, b = rows[-2], rows[-1]
            predicted = b["first"] * max(1.0, b["first"] / a["first"]) + b["wall"] * max(2.0, b["wall"] / a["wall"])
            if time.perf_counter() - began + predicted > args.budget_s:
                skipped = [s for s in sizes if s >= size]
                print(f"batch {size}: predicted {predicted:.0f} s, past the budget; stopping", flush=True)
                break
        print(f"batch {size} ...", flush=True)
        row = batch_row(config, size, clock, args.min_time, args.max_calls)
        rows.append(row)
        print(f"  first call {row['first']:.1f} s (XLA compile {row['compile']:.1f} s), warm {row['wall']:.2f} s, "
              f"{row['throughput']:.2f} seeds/s, steps mean {row['steps'].mean():.1f} max {row['steps'].max()}",
              flush=True)
        if size == 1:
            print(f"loop of {args.loop_seeds} single-seed calls ...", flush=True)
            loop = loop_row(config, args.loop_seeds, args.min_time, args.max_calls)
            print(f"  {loop['wall']:.2f} s a round, {loop['throughput']:.2f} seeds/s", flush=True)
    sweep = time.perf_counter() - began

    print("vector field alone ...", flush=True)
    kernel = kernel_rows(config, [row["size"] for row in rows])

    # The same seeds alone and in the largest batch: the same trajectories.
    largest = rows[-1]
    shared = min(args.loop_seeds, largest["size"])
    agreement = np.max(
        np.abs(loop["final_loss"][:shared] - largest["final_loss"][:shared]) / np.abs(largest["final_loss"][:shared])
    )
    same_steps = np.array_equal(loop["steps"][:shared], largest["steps"][:shared])

    lines = [
        f"Figure 1 setting (m* = {config.m_star}, m = {config.m}, d = {config.d}, {config.mode} coordinates, "
        f"{config.solver} rtol = {config.rtol:g}, atol = {config.atol:g}, {config.num_times} saved times, float64); "
        f"every seed integrated to t = {config.t_max:g} with no early stop; seeds 0 … S−1. Wall and CPU time "
        f"(this process, all threads) are medians over warm calls (loop: over rounds of {loop['size']} calls), "
        f"repeated while under {args.min_time:g} s in all, at most {args.max_calls}. The first call at each batch "
        f"size (t_max = {COMPILE_T_MAX:g}: compilation, one solver step, all {config.num_times} saves) is not "
        f"counted; XLA compile is the lowering and compilation within it.",
        "",
        "A vmapped adaptive solve runs until its slowest seed is done, so a batch costs about "
        "S × (largest step count) seed-steps, the loop the sum of its seeds' step counts; "
        "ms per seed-step divides the wall time by those.",
        "",
        "| run | seeds | first call (s) | XLA compile (s) | warm calls | wall (s) | CPU (s) | seeds/s | vs loop "
        "| solver steps mean / max | ms per seed-step | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| loop of single-seed calls | {loop['size']} | — | — | {loop['calls']} | {loop['wall']:.2f} | "
        f"{loop['cpu']:.2f} | {loop['throughput']:.2f} | 1.00× | {loop['steps'].mean():.1f} / {loop['steps'].max()} "
        f"| {1e3 * loop['wall'] / loop['steps'].sum():.1f} | {loop['load']:.1f} |",
    ]
    for row in rows:
        lines.append(
            f"| batched | {row['size']} | {row['first']:.1f} | {row['compile']:.1f} | {row['calls']} | "
            f"{row['wall']:.2f} | {row['cpu']:.2f} | {row['throughput']:.2f} | "
            f"{row['throughput'] / loop['throughput']:.2f}× | {row['steps'].mean():.1f} / {row['steps'].max()} | "
            f"{1e3 * row['wall'] / (row['size'] * row['steps'].max()):.1f} | {row['load']:.1f} |"
        )
    bad = [s for row in [loop, *rows] for s in row["statuses"] if s != "success"]
    target = next((row for row in rows if row["size"] == TARGET_BATCH), None)
    best = max(rows, key=lambda row: row["throughput"])
    lines.append("")
    if target is not None:
        speedup = target["throughput"] / loop["throughput"]
        lines.append(
            f"- target: ≥ {TARGET_SPEEDUP:.0f}× the loop's throughput at {TARGET_BATCH} seeds: "
            f"{speedup:.2f}× — {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}"
        )
    else:
        lines.append(f"- target: ≥ {TARGET_SPEEDUP:.0f}× the loop's throughput at {TARGET_BATCH} seeds: not measured")
    lines += [
        f"- best batched throughput: {best['throughput']:.2f} seeds/s at S = {best['size']} "
        f"({best['throughput'] / loop['throughput']:.2f}× the loop)",
        f"- seeds 0 … {shared - 1} alone and in the batch of {largest['size']}: same step counts: "
        f"{'yes' if same_steps else 'NO'}; final losses agree to {agreement:.1e} relative",
        f"- statuses: {'all success' if not bad else ', '.join(sorted(set(bad)))}",
    ]
    if skipped:
        lines.append(
            f"- left out, predicted past the {args.budget_s:.0f} s budget: S = {', '.join(map(str, skipped))} "
            f"(`--budget-s` to run them)"
        )
    lines += [
        f"- wall time of the sweep: {sweep / 60:.1f} min",
        "",
        "### The vector field alone",
        "",
        "−∇L at S seeds, `jax.jit`, warm, best of 5 calls, per seed: vmapped (what the batched solve "
        "evaluates, 6 times a Tsit5 step) and as a sequential `jax.lax.map` over the seeds.",
        "",
        "| seeds | vmapped (ms per seed) | lax.map (ms per seed) |",
        "|---:|---:|---:|",
        *(f"| {size} | {v:.3f} | {m:.3f} |" for size, v, m in kernel),
        "",
    ]

    sections = ["## Seed-trajectories per second", "", *lines]
    if jax.devices()[0].platform == "gpu" and args.convergence_seeds > 0:
        sections += convergence_section(args.convergence_seeds)

    name = machine_name()
    text = "\n".join(
        [
            f"# jaxmoe seed-batching benchmark ({name})",
            "",
            *machine_lines(),
            f"- load average (1 / 5 / 15 min): {load_before} at the start, {load_average()} at the end; the "
            f"benchmark alone keeps it near its {os.cpu_count()} XLA threads, above that other jobs shared the CPU",
            "- threads: XLA's default (all cores); float64",
            "",
            *sections,
        ]
    )
    return _report(text, args.out_dir / f"seeds-{name}.md")


if __name__ == "__main__":
    raise SystemExit(main())
