"""Benchmark: the exact population-loss kernel against its quadrature reference.

Run as ``python benchmarks/kernel.py``. At the paper's Figure 1 setting
(m* = 5 teacher experts, m = 25 student experts, d = 1000; fixed keys) it times
the loss and its gradient, ``jax.value_and_grad``, jitted and warm, for

* the fast Hermite/Mehler kernel `jaxmoe.population_loss`, and
* the Gauss–Hermite reference `jaxmoe.population_loss_reference` with 20 nodes
  in each of the two router coordinates ("20 × 20 quadrature nodes"),

and measures the error of each against a high-accuracy quadrature (100 nodes
per router coordinate, checked for convergence against 80 nodes). The error
is given for the loss and for its directional derivative ∇L·u along the unit
direction u of the gradient, u = ∇L/‖∇L‖ (so ∇L·u = ‖∇L‖; forward mode, so
that the high-accuracy reference can be evaluated in row blocks within memory).

The output is a markdown report, printed and written atomically to
``benchmarks/results/kernel-<machine>.md``. The report is a list of
`Section`s built in `main`; further benchmarks append their own section there.
Timings are reported, never asserted.

By default the process is pinned to one CPU core before JAX starts, so that
XLA's CPU thread pool has a single thread. With a pool of two threads (a
two-core machine) the reference deadlocks in jaxlib 0.10.2 at this size: two
batched LAPACK custom calls (the QRs of independent kernel blocks, or a QR and
the triangular solves of its derivative) run concurrently, and each blocks its
pool thread waiting for sub-tasks queued on the same, now exhausted, pool.
``--all-cores`` lifts the pinning.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# The script lives in benchmarks/: make the repository and benchmarks/common.py
# importable without an install, however the script is started.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import jaxmoe  # noqa: E402
from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402
from jaxmoe import MoE  # noqa: E402

# The paper's Figure 1 setting.
M_STAR, M, D = 5, 25, 1000
TEACHER_SEED, STUDENT_SEED = 0, 1
# The reference the fast kernel is meant to replace, and the yardsticks.
REFERENCE_NODES = 20
ACCURATE_NODES = 100
CONVERGENCE_NODES = 80
# Targets (printed, not asserted).
TARGET_SPEEDUP = 30.0
TARGET_ERROR = 1e-10
# Rows of the (m + m*) × (m + m*) kernel matrix per block of the high-accuracy
# quadrature: 3 rows × 30 columns × 100² × 4² nodes ≈ 14 M points per block.
BLOCK_ROWS = 3


@dataclasses.dataclass
class Section:
    """One titled part of the report: markdown lines, printed and written alike."""

    title: str
    lines: list[str]

    def markdown(self) -> str:
        return "\n".join([f"## {self.title}", "", *self.lines, ""])


# ---------------------------------------------------------------------------
# Threads


def pin_to_one_core() -> str:
    """Restrict this process to one CPU core; must run before JAX starts its backend."""
    from jax._src import xla_bridge

    if not hasattr(os, "sched_setaffinity"):
        return "not supported on this platform: all cores"
    if xla_bridge.backends_are_initialized():
        return "JAX backend already started: all cores"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core} (XLA CPU thread pool of one thread)"


# ---------------------------------------------------------------------------
# Timing and the high-accuracy reference


def median_ms(fn, *args, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, after warm-up calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _block_loss(student: MoE, teacher: MoE, start, nodes: int):
    """Rows ``start … start + BLOCK_ROWS`` of ``½ sᵀ K s`` by quadrature.

    ``K`` is the kernel matrix of student and teacher experts together and
    ``s = (1, …, 1, −1, …, −1)``, so that the sum over all row blocks is the
    population loss (DESIGN §2).
    """
    router = jnp.concatenate([student.router, teacher.router])
    expert = jnp.concatenate([student.expert, teacher.expert])
    sign = jnp.concatenate([jnp.ones(student.num_experts), -jnp.ones(teacher.num_experts)])
    both = MoE(router, expert, student.gate, student.expert_fn)
    rows = MoE(
        jax.lax.dynamic_slice_in_dim(router, start, BLOCK_ROWS),
        jax.lax.dynamic_slice_in_dim(expert, start, BLOCK_ROWS),
        student.gate,
        student.expert_fn,
    )
    kernel = jaxmoe.expert_kernel_reference(rows, both, nodes=nodes)
    return 0.5 * jax.lax.dynamic_slice_in_dim(sign, start, BLOCK_ROWS) @ kernel @ sign


def accurate_loss_and_derivative(student: MoE, teacher: MoE, direction: MoE, nodes: int):
    """Quadrature loss and ∇L·u with `nodes` per router coordinate, in row blocks."""
    total = student.num_experts + teacher.num_experts
    if total % BLOCK_ROWS:
        raise ValueError(f"BLOCK_ROWS = {BLOCK_ROWS} must divide m + m* = {total}")

    @jax.jit
    def block(student, start):
        fn = lambda s: _block_loss(s, teacher, start, nodes)  # noqa: E731
        return jax.jvp(fn, (student,), (direction,))

    loss = derivative = 0.0
    for start in range(0, total, BLOCK_ROWS):
        value, tangent = block(student, start)
        loss += float(value)
        derivative += float(tangent)
    return loss, derivative


def _tree_dot(a: MoE, b: MoE) -> float:
    return float(jnp.sum(a.router * b.router) + jnp.sum(a.expert * b.expert))


# ---------------------------------------------------------------------------
# Sections


def kernel_section(repeats: int) -> tuple[Section, dict]:
    """Speed and accuracy of the fast kernel against the 20-node reference."""
    teacher = jaxmoe.init_teacher(M_STAR, D, key=jax.random.PRNGKey(TEACHER_SEED))
    student = jaxmoe.init_student(M, D, key=jax.random.PRNGKey(STUDENT_SEED))
    # The direction of the derivative check: the gradient's own direction.
    # Any fixed direction would do; a random one in 2md = 50 000 dimensions
    # would see only a small fraction of the gradient.
    grad = jax.jit(jax.grad(jaxmoe.population_loss))(student, teacher)
    norm = np.sqrt(_tree_dot(grad, grad))
    direction = MoE(grad.router / norm, grad.expert / norm)

    print(f"high-accuracy reference ({ACCURATE_NODES} and {CONVERGENCE_NODES} nodes) ...", flush=True)
    accurate = accurate_loss_and_derivative(student, teacher, direction, ACCURATE_NODES)
    check = accurate_loss_and_derivative(student, teacher, direction, CONVERGENCE_NODES)
    converged = (
        abs(check[0] - accurate[0]) / abs(accurate[0]),
        abs(check[1] - accurate[1]) / abs(accurate[1]),
    )

    candidates = {
        "fast (Hermite/Mehler)": ("exact series", jaxmoe.population_loss),
        f"reference ({REFERENCE_NODES}×{REFERENCE_NODES} nodes)": (
            str(REFERENCE_NODES),
            lambda s, t: jaxmoe.population_loss_reference(s, t, nodes=REFERENCE_NODES),
        ),
    }
    measured = {}
    for name, (nodes, loss_fn) in candidates.items():
        print(f"timing {name} ...", flush=True)
        value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
        ms = median_ms(value_and_grad, student, teacher, repeats=repeats)
        loss, grad = value_and_grad(student, teacher)
        derivative = _tree_dot(grad, direction)
        measured[name] = dict(
            nodes=nodes,
            ms=ms,
            loss=float(loss),
            abs_error=abs(float(loss) - accurate[0]),
            rel_error=abs(float(loss) - accurate[0]) / abs(accurate[0]),
            rel_error_derivative=abs(derivative - accurate[1]) / abs(accurate[1]),
        )

    fast = measured["fast (Hermite/Mehler)"]
    reference = measured[f"reference ({REFERENCE_NODES}×{REFERENCE_NODES} nodes)"]
    speedup = reference["ms"] / fast["ms"]
    lines = [
        f"m* = {M_STAR}, m = {M}, d = {D} (paper Figure 1); teacher key {TEACHER_SEED}, "
        f"student key {STUDENT_SEED}. Timed: `jax.jit(jax.value_and_grad(loss))`, warm, "
        f"median of {repeats} calls with `block_until_ready`.",
        "",
        f"Errors are against Gauss–Hermite quadrature with {ACCURATE_NODES} nodes per router "
        f"coordinate (L = {accurate[0]:.15f}, ∇L·u = {accurate[1]:.15e} for the "
        f"unit direction u = ∇L/‖∇L‖ of the student). Converged: {CONVERGENCE_NODES} nodes agree to "
        f"{converged[0]:.1e} (loss) and {converged[1]:.1e} (∇L·u) relative.",
        "",
        "| kernel | nodes | median ms | speed-up vs reference-20 | abs. error L | rel. error L | rel. error ∇L·u |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in measured.items():
        lines.append(
            f"| {name} | {r['nodes']} | {r['ms']:.2f} | {reference['ms'] / r['ms']:.1f}× | "
            f"{r['abs_error']:.1e} | {r['rel_error']:.1e} | {r['rel_error_derivative']:.1e} |"
        )
    met_speed = speedup >= TARGET_SPEEDUP
    met_error = fast["rel_error"] <= TARGET_ERROR and fast["rel_error_derivative"] <= TARGET_ERROR
    lines += [
        "",
        f"- target speed-up ≥ {TARGET_SPEEDUP:.0f}×: {speedup:.1f}× — {'met' if met_speed else 'NOT met'}",
        f"- target fast-kernel relative error ≤ {TARGET_ERROR:.0e} (loss and ∇L·u): "
        f"{max(fast['rel_error'], fast['rel_error_derivative']):.1e} — {'met' if met_error else 'NOT met'}",
    ]
    summary = dict(speedup=speedup, met_speed=met_speed, met_error=met_error, measured=measured)
    return Section("Population-loss kernel: speed and accuracy", lines), summary


# ---------------------------------------------------------------------------


def flow_section() -> Section:
    """One Figure-1 gradient-flow trajectory to convergence: steps and wall time."""
    import time

    import jaxmoe

    config = jaxmoe.SimulationConfig(seeds=1)  # the default run: stop at L < 1e-6 or t = 1000
    jaxmoe.simulate(config, t_max=1e-3)  # compile (same shapes), not timed
    start = time.perf_counter()
    result = jaxmoe.simulate(config)
    wall = time.perf_counter() - start
    status = result.status_names()[0]
    return Section(
        "One gradient-flow trajectory to convergence",
        [
            f"Seed 0 of the default `jaxmoe simulate` problem (m* = {config.m_star}, m = {config.m}, d = {config.d}, "
            f"reduced coordinates, {config.solver} rtol = {config.rtol:g}, atol = {config.atol:g}, stop at "
            f"L < {config.loss_threshold:g} or t = {config.t_max:g}); warm, compilation excluded.",
            "",
            "| status | t_final | final loss | solver steps | wall time (s) | ms per step |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {status} | {result.t_final[0]:.1f} | {result.final_loss()[0]:.2e} | {result.num_steps[0]} | "
            f"{wall:.2f} | {1e3 * wall / result.num_steps[0]:.2f} |",
        ],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per kernel (default 20)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the markdown report goes")
    parser.add_argument(
        "--all-cores",
        action="store_true",
        help="do not pin to one core (the differentiated reference may deadlock in jaxlib "
        "0.10.2 on machines with few cores; see the module docstring)",
    )
    args = parser.parse_args(argv)

    cores = "all cores" if args.all_cores else pin_to_one_core()

    # Opt into float64 here, not at import (DESIGN §5).
    jax.config.update("jax_enable_x64", True)

    # The report is a list of sections; later benchmarks append theirs here.
    sections: list[Section] = []
    section, _ = kernel_section(args.repeats)
    sections.append(section)
    sections.append(flow_section())

    name = machine_name()
    text = "\n".join(
        [
            f"# jaxmoe kernel benchmark ({name})",
            "",
            *machine_lines(),
            f"- threads: {cores}; float64",
            "",
            *(s.markdown() for s in sections),
        ]
    )
    print()
    print(text)
    path = args.out_dir / f"kernel-{name}.md"
    write_atomically(path, text)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
