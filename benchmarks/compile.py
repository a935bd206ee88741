"""Benchmark: compile time of `jaxmoe.simulate` per solver, against a bare diffrax solve of the same field.

Run as ``python benchmarks/compile.py``. Most of a first `simulate` call —
and most of the test suite's time — is XLA compiling the solve, and the
solve's size is set by how many copies of the vector field −∇L it holds:
XLA inlines every place the program evaluates the field, and compiles each
copy on its own. Every row runs in a fresh process (no in-memory or
persistent compilation cache) and reports:

- **trace** and **compile**: the seconds JAX spent tracing the program and
  XLA compiling it (``jax.monitoring``'s events, summed over the call);
- **field sites**: the places the compiled solve evaluates the vector field,
  counted in the program XLA receives (a second, separate compile with the
  field wrapped in a named `jax.jit`);
- **warm**: a second call's wall time, and its final loss against
  `simulate` with Tsit5 at rtol 1e-11 (the same problem and seeds).

Rows: **bare diffrax**, `diffrax.diffeqsolve` of −∇L (`jax.grad` of
`jaxmoe.population_loss`) with Tsit5 or `jaxmoe.solvers.RKC2`, PID control
as in `simulate`, vmapped over the seeds, saved at the same times (the
plain baseline); and **simulate** with solver tsit5, rkc2 and auto (its
default). Problems: the test suite's small one (d = 12, m = 4, m* = 2) and
the paper's Figure 1 setting (m = 25, m* = 5), 4 seeds to t = 300.

The report is printed and written atomically to
``benchmarks/results/compile-<machine>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROBLEMS = {
    "small": dict(d=12, m=4, m_star=2),
    "figure1": dict(),
}
ROWS = [("bare diffrax", "tsit5"), ("simulate", "tsit5"), ("bare diffrax", "rkc2"), ("simulate", "rkc2"), ("simulate", "auto")]


def _config(problem: str, solver: str, tight: bool = False):
    import jaxmoe

    config = jaxmoe.SimulationConfig(
        **PROBLEMS[problem], seeds=4, t_max=300.0, num_times=61, loss_threshold=None, rtol=1e-7, atol=1e-10, solver=solver
    )
    return config.replace(solver="tsit5", rtol=1e-11, atol=1e-13) if tight else config


def _bare(config, solver_name: str):
    """The plain baseline: diffrax's own loop on −∇L, vmapped over the seeds."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxmoe
    from jaxmoe.solvers import RKC2

    solver = diffrax.Tsit5() if solver_name == "tsit5" else RKC2()
    times = jnp.asarray(jaxmoe.time_grid(config))

    def field(t, y, teacher):
        return jax.tree_util.tree_map(jnp.negative, jax.grad(jaxmoe.population_loss)(y, teacher))

    def one(student, teacher):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, config.t_max, None, student, args=teacher,
            stepsize_controller=diffrax.PIDController(rtol=config.rtol, atol=config.atol, pcoeff=0.3, icoeff=0.3),
            saveat=diffrax.SaveAt(ts=times), max_steps=config.max_steps, throw=False,
        )
        return jaxmoe.population_loss(jax.tree_util.tree_map(lambda x: x[-1], solution.ys), teacher)

    solve = jax.jit(jax.vmap(one))
    teacher, student = jaxmoe.init.init_problem(config, np.arange(config.seeds, dtype=np.int32))
    return lambda: np.asarray(solve(student, teacher))


def _call(row: str, config):
    import numpy as np

    import jaxmoe

    if row == "bare diffrax":
        return _bare(config, config.solver)
    return lambda: np.asarray(jaxmoe.simulate(config).loss[:, -1])


def measure(row: str, problem: str, solver: str, count_sites: bool) -> dict:
    """One row, in this (fresh) process."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.monitoring

    spent = {"trace": 0.0, "compile": 0.0}

    def listen(event, duration, **_):
        if event.endswith("jaxpr_trace_duration"):
            spent["trace"] += duration
        elif event.endswith("backend_compile_duration"):
            spent["compile"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    if count_sites:
        import jaxmoe.flow

        inner = jaxmoe.flow._field

        def jaxmoe_counted_field(t, student, teacher):
            return inner(t, student, teacher)

        jaxmoe.flow._field = jax.jit(jaxmoe_counted_field)
    config = _config(problem, solver, tight=row == "tight")
    call = _call(row, config)
    start = time.perf_counter()
    final = call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    final = call()
    warm = time.perf_counter() - start
    return dict(first=first, warm=warm, final=[float(x) for x in final], **spent)


def _sites(dump: Path) -> int:
    """Call sites of the named field in the largest program XLA received (the solve)."""
    modules = sorted(dump.glob("*before_optimizations.txt"), key=lambda p: p.stat().st_size)
    text = modules[-1].read_text()
    return sum(1 for line in text.splitlines() if " call(" in line and "to_apply=%jaxmoe_counted_field" in line)


def _run(args: list[str], env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="small,figure1")
    parser.add_argument("--measure", nargs=3, metavar=("ROW", "PROBLEM", "SOLVER"), help=argparse.SUPPRESS)
    parser.add_argument("--count-sites", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, count_sites=args.count_sites)))
        return

    from common import RESULTS, machine_lines, machine_name, write_atomically

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
    rows = []
    for problem in args.problems.split(","):
        reference = _run(["tight", problem, "tsit5"], env)["final"]  # simulate, Tsit5 at rtol 1e-11
        for row, solver in ROWS:
            result = _run([row, problem, solver], env)
            with tempfile.TemporaryDirectory() as dump:
                _run(
                    [row, problem, solver, "--count-sites"],
                    {**env, "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_pass_re=^$"},
                )
                sites = _sites(Path(dump)) if row == "simulate" else None
            error = max(abs(a - b) for a, b in zip(result["final"], reference))
            rows.append(dict(problem=problem, row=row, solver=solver, sites=sites, error=error, **result))
            print(rows[-1], flush=True)
    lines = [
        "# Compile time of jaxmoe.simulate against a bare diffrax solve",
        "",
        *machine_lines(),
        f"- command: `python benchmarks/compile.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "Each row in a fresh process, no compilation cache; 4 seeds to t = 300, rtol 1e-7, 61 saved times. "
        "trace and compile: JAX's own timers over the first call; field sites: the places the solve "
        "evaluates −∇L (bare rows: not counted); error: the largest difference of a seed's final loss "
        "from simulate with Tsit5 at rtol 1e-11.",
        "",
        "| problem | row | solver | field sites | trace (s) | compile (s) | first call (s) | warm call (s) | final-loss error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sites = "" if r["sites"] is None else str(r["sites"])
        lines.append(
            f"| {r['problem']} | {r['row']} | {r['solver']} | {sites} | {r['trace']:.1f} | {r['compile']:.1f} | "
            f"{r['first']:.1f} | {r['warm']:.2f} | {r['error']:.1e} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    write_atomically(RESULTS / f"compile-{machine_name()}.md", report)


if __name__ == "__main__":
    main()
