"""Benchmark: the cost of a solver step inside `jaxmoe.simulate` against a bare diffrax solve.

Run as ``python benchmarks/overhead.py``. The paper's Figure 1 setting, seed
0, t ≤ 100 (the loss threshold of the default run, 1e-6, is on: its event
is checked after every step), 301 saved times. Every row solves the same
vector field −∇L (`jaxmoe.population_loss`, `jax.grad`) with the same solver
and step-size control (PID, pcoeff = icoeff = 0.3, rtol 1e-6, atol 1e-9),
so every row takes the same steps; warm wall time per solver step (best of ``--repeats``
rounds in which the rows take turns, so that load on a shared machine falls
on every row alike):

- **bare**: `diffrax.diffeqsolve` of that vector field on one seed,
  ``SaveAt(t1=True)``, no event: the plain baseline.
- **old structure**: the same solve laid out as `jaxmoe.simulate` did before
  the trajectory-cost issue, in plain diffrax: vmapped over a seed axis of
  one, the observables (`jaxmoe.observe`: loss, alignments, routing load and
  quality) saved inside the solve, and the stop event evaluating the loss
  again after every step.
- **simulate**: `jaxmoe.simulate` itself (draw, solve, observables at the
  301 times, result), and **integrate**, its solve alone (`jaxmoe.flow.integrate`).

The same rows run for the RKC2 solver (`jaxmoe.solvers.RKC2`, rtol 1e-7),
whose bare baseline is the same diffrax solve with RKC2 in place of Tsit5.
The target: a step inside `simulate` at most 1.15× the bare step.

The report is printed and written atomically to
``benchmarks/results/overhead-<machine>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jaxmoe  # noqa: E402
from jaxmoe.init import init_problem  # noqa: E402
from jaxmoe.solvers import RKC2  # noqa: E402

T_MAX = 100.0


def field(t, y, teacher):
    return jax.tree_util.tree_map(jnp.negative, jax.grad(jaxmoe.population_loss)(y, teacher))


def controller(rtol, atol):
    return diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.3, dtmin=1e-12 * T_MAX)


def bare(solver, rtol, atol):
    @jax.jit
    def solve(student, teacher):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, T_MAX, None, student, args=teacher,
            saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller(rtol, atol),
            max_steps=200_000, throw=False,
        )
        return solution.stats["num_steps"], solution.ys

    return solve


def old_structure(solver, rtol, atol, times):
    def one(student, teacher):
        saveat = diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=times, fn=lambda t, y, a: jaxmoe.observe(y, a, t)), diffrax.SubSaveAt(t1=True)]
        )
        event = diffrax.Event(lambda t, y, a, **kw: jaxmoe.observe(y, a, t)["loss"] < 1e-6)
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, T_MAX, None, student, args=teacher, saveat=saveat,
            stepsize_controller=controller(rtol, atol), max_steps=200_000, throw=False, event=event,
        )
        return solution.stats["num_steps"], solution.ys

    return jax.jit(jax.vmap(one))


def interleaved_best(calls: dict, repeats: int) -> dict:
    """Best wall time of each call over `repeats` rounds, the calls taking turns within a round,
    so that a burst of load on this shared machine falls on every row alike."""
    outputs = {}
    for name, call in calls.items():  # compile and warm up
        outputs[name] = jax.block_until_ready(call())
    best = {name: np.inf for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            outputs[name] = jax.block_until_ready(call())
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (best[name], outputs[name]) for name in calls}


def rows_for(name: str, solver, config: jaxmoe.SimulationConfig, repeats: int) -> list[dict]:
    teacher, student = init_problem(config, np.arange(1, dtype=np.int32))
    one = jax.tree_util.tree_map(lambda x: x[0], (teacher, student))
    times = jnp.asarray(jaxmoe.time_grid(config))
    grid = jaxmoe.time_grid(config)
    plain = bare(solver, config.rtol, config.atol)  # built once: each build is a new compilation
    old = old_structure(solver, config.rtol, config.atol, times)
    calls = {
        "bare diffrax": lambda: plain(one[1], one[0])[0],
        "old structure (plain diffrax)": lambda: old(student, teacher)[0],
        "jaxmoe.flow.integrate": lambda: jaxmoe.flow.integrate(config, teacher, student, grid)["num_steps"],
        "jaxmoe.simulate": lambda: jaxmoe.simulate(config).num_steps,
    }
    measured = interleaved_best(calls, repeats)
    out = [dict(solver=name, row=row, wall=wall, steps=int(np.ravel(steps)[0])) for row, (wall, steps) in measured.items()]
    base = out[0]["wall"] / out[0]["steps"]
    for row in out:
        row["per_step_ms"] = 1e3 * row["wall"] / row["steps"]
        row["ratio"] = row["wall"] / row["steps"] / base
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    base = jaxmoe.SimulationConfig(seeds=1, t_max=T_MAX, solver="tsit5", rtol=1e-6, atol=1e-9)
    rows = rows_for("tsit5", diffrax.Tsit5(), base, args.repeats)
    rows += rows_for("rkc2", RKC2(), base.replace(solver="rkc2", rtol=1e-7, atol=1e-10), args.repeats)
    lines = [
        "# Per-step cost inside jaxmoe.simulate against a bare diffrax solve",
        "",
        *machine_lines(),
        f"- load average at start: {os.getloadavg()[0]:.2f}",
        f"- command: `python benchmarks/overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "Figure 1 setting, seed 0, t ≤ 100, loss threshold 1e-6, 301 saved times; best of "
        f"{args.repeats} warm calls (see the module docstring). Target: simulate ≤ 1.15× bare per step.",
        "",
        "| solver | row | steps | wall (s) | per step (ms) | × bare |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['solver']} | {r['row']} | {r['steps']} | {r['wall']:.3f} | {r['per_step_ms']:.3f} | {r['ratio']:.2f} |"
        )
    report = "\n".join(lines) + "\n"
    write_atomically(RESULTS / f"overhead-{machine_name()}.md", report)
    print(report)


if __name__ == "__main__":
    main()
