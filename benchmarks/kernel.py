"""Benchmark: the exact population-loss kernel against its quadrature reference.

Run as ``python benchmarks/kernel.py`` (``--families`` for the family section
alone). At the paper's Figure 1 setting
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

A further section measures `jaxmoe.quadrature.mixture_loss` for every
gate/expert family pair at a small size (m = 4, m* = 2, D = 12): the rule
used, its value against a 10⁷-sample Monte Carlo estimate (fixed key) with
the standard error, the rule's spread over independent scramblings (its
error), the stated error bound `quadrature.stated_error`, and the speed of
the loss and gradient at that size and at m = 25, m* = 5, D = 60. It writes
the Monte Carlo references, with the models' arrays, to
``tests/data/families_mc.json`` (read by tests/test_families.py; stored
references for unchanged models are reused unless ``--fresh-mc``).

The output is a markdown report, printed and written atomically to
``benchmarks/results/kernel-<machine>.md`` (all sections) and
``benchmarks/results/kernel-families-<machine>.md`` (the family section). The report is a list of
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

from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

import jaxmoe  # noqa: E402
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
    population loss (docs/model.md §2).
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
# Gate and expert families: mixture_loss against 10^7-sample Monte Carlo

# The test size of the family table: student m, teacher m*, coordinates D.
FAMILY_M, FAMILY_M_STAR, FAMILY_D = 4, 2, 12
FAMILY_TEACHER_KEY, FAMILY_STUDENT_KEY, FAMILY_MC_KEY = 0, 1, 7
FAMILY_MC_SAMPLES = 10**7
FAMILY_MC_BATCH = 2**16
# Scramblings of the rule whose spread measures its error (seeds 1 … S; the
# rule itself uses jaxmoe.quadrature.SOBOL_SEED).
FAMILY_SCRAMBLINGS = 16
# Linear biases, so that a dropped or mis-signed bias term is visible.
STUDENT_BIAS_SCALE, TEACHER_BIAS_SCALE = 0.3, 0.5
FAMILY_REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "families_mc.json"
# The temperature schedule is evaluated at this gradient-flow time.
SCHEDULE_TIME = 1.0


@dataclasses.dataclass(frozen=True)
class FamilyPair:
    """One row of the family table: student and teacher families (the teacher's default to the student's)."""

    gate: str
    expert: str
    teacher_gate: str | None = None
    teacher_expert: str | None = None

    @property
    def name(self) -> str:
        student = f"{self.gate} + {self.expert}"
        if self.teacher_gate is None and self.teacher_expert is None:
            return student
        return f"{student} vs teacher {self.teacher_gate or self.gate} + {self.teacher_expert or self.expert}"

    @property
    def t(self):
        return SCHEDULE_TIME if "decay" in self.gate or "decay" in (self.teacher_gate or "") else None


FAMILY_PAIRS = (
    # every gate with He3 experts
    *(
        FamilyPair(gate, "he3")
        for gate in (
            "sigmoid",
            "erf",
            "softmax",
            "temperature:tau=0.5",
            "temperature:tau=1,tau_final=0.2,decay=1",
            "activation:act=tanh,tau=0.5",
            "activation:act=sigmoid,tau=0.25",
            "hierarchical:groups=2",
            "topk:k=2",
            "topk:k=1",
        )
    ),
    # every expert family with the softmax gate
    *(
        FamilyPair("softmax", expert)
        for expert in ("he1", "he2", "he4", "linear", "mlp:hidden=2,act=sigmoid", "mlp:hidden=2,act=tanh", "mlp:hidden=2,act=gelu")
    ),
    # mixed families, independent gates with linear and mlp experts, top-k with linear
    FamilyPair("softmax", "linear", teacher_expert="he3"),
    FamilyPair("softmax", "he2", teacher_gate="sigmoid", teacher_expert="he3"),
    FamilyPair("hierarchical:groups=2", "linear"),
    FamilyPair("topk:k=2", "linear"),
    FamilyPair("sigmoid", "linear"),
    FamilyPair("sigmoid", "he2", teacher_expert="linear"),
    FamilyPair("sigmoid", "mlp:hidden=2,act=tanh"),
    FamilyPair("erf", "mlp:hidden=2,act=gelu"),
)


def family_models(pair: FamilyPair, m=FAMILY_M, m_star=FAMILY_M_STAR, dim=FAMILY_D):
    """Student and teacher of a `FamilyPair` (fixed keys; non-zero linear biases)."""
    from jaxmoe.families import Mixture, init_mixture_student, init_mixture_teacher

    teacher = init_mixture_teacher(
        m_star,
        dim,
        pair.teacher_gate or pair.gate,
        pair.teacher_expert or pair.expert,
        key=jax.random.PRNGKey(FAMILY_TEACHER_KEY),
    )
    student = init_mixture_student(m, dim, pair.gate, pair.expert, key=jax.random.PRNGKey(FAMILY_STUDENT_KEY))

    def with_bias(model, scale, phase):
        if model.expert_fn.name != "linear":
            return model
        bias = scale * jnp.cos(phase + jnp.arange(model.num_experts, dtype=model.router.dtype))
        return Mixture(model.router, model.expert, model.group_router, bias, model.output, model.gate, model.expert_fn)

    return with_bias(student, STUDENT_BIAS_SCALE, 1.0), with_bias(teacher, TEACHER_BIAS_SCALE, 0.0)


def model_to_json(model) -> dict:
    """A `Mixture` as plain JSON (families as strings, arrays as nested lists of float64)."""
    out = {"gate": str(model.gate), "expert_fn": str(model.expert_fn)}
    for field in ("router", "expert", "group_router", "bias", "output"):
        value = getattr(model, field)
        out[field] = None if value is None else np.asarray(value, np.float64).tolist()
    return out


def _flat(tree) -> jnp.ndarray:
    return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(tree)])


def _load_references(path: Path) -> dict:
    import json

    try:
        return {row["name"]: row for row in json.loads(path.read_text())["pairs"]}
    except (OSError, ValueError, KeyError):
        return {}


def family_rows(fresh_mc: bool, references: Path) -> list[dict]:
    """Measure every `FAMILY_PAIRS` row: the rule, its scrambling spread, and 10⁷-sample Monte Carlo.

    Monte Carlo references already in `references` for the same models,
    key and sample count are reused unless `fresh_mc`.
    """
    from jaxmoe import quadrature

    previous = {} if fresh_mc else _load_references(references)
    rows = []
    for pair in FAMILY_PAIRS:
        student, teacher = family_models(pair)
        t = pair.t
        rule = quadrature.loss_rule(student, teacher)
        print(f"{pair.name}: {rule} ...", flush=True)
        value_and_grad = jax.jit(jax.value_and_grad(lambda s, q: quadrature.mixture_loss(s, q, t=t)))
        loss, grad = value_and_grad(student, teacher)
        loss, grad = float(loss), _flat(grad)
        spread = spread_grad = mean = None
        if quadrature.rule_nodes(student, teacher) is not None:
            on_nodes = jax.jit(
                jax.value_and_grad(lambda s, q, p, w: quadrature.loss_on_nodes(s, q, p, w, t=t))
            )
            values, grads = [], []
            for seed in range(1, FAMILY_SCRAMBLINGS + 1):
                v, g = on_nodes(student, teacher, *quadrature.rule_nodes(student, teacher, seed=seed))
                values.append(float(v))
                grads.append(_flat(g))
            values, grads = np.array(values), jnp.stack(grads)
            mean = float(values.mean())
            spread = float(values.std(ddof=1) / abs(mean))
            mean_grad = grads.mean(axis=0)
            spread_grad = float(jnp.sqrt(jnp.mean(jnp.sum((grads - mean_grad) ** 2, axis=1))) / jnp.linalg.norm(mean_grad))
        student_json, teacher_json = model_to_json(student), model_to_json(teacher)
        old = previous.get(pair.name)
        if (
            old is not None
            and old.get("student") == student_json
            and old.get("teacher") == teacher_json
            and old.get("mc_samples") == FAMILY_MC_SAMPLES
            and old.get("mc_key") == FAMILY_MC_KEY
        ):
            mc, se = old["mc_mean"], old["mc_se"]
        else:
            start = time.perf_counter()
            mc, se = quadrature.mixture_loss_monte_carlo(
                student,
                teacher,
                key=jax.random.PRNGKey(FAMILY_MC_KEY),
                num_samples=FAMILY_MC_SAMPLES,
                batch_size=FAMILY_MC_BATCH,
                t=t,
            )
            mc, se = float(mc), float(se)
            print(f"  Monte Carlo {FAMILY_MC_SAMPLES:.0e} samples: {time.perf_counter() - start:.1f} s", flush=True)
        epsilon = quadrature.stated_error(student, teacher)
        rows.append(
            dict(
                name=pair.name,
                rule=rule,
                t=t,
                loss=loss,
                grad_norm=float(jnp.linalg.norm(grad)),
                mc_mean=mc,
                mc_se=se,
                mc_samples=FAMILY_MC_SAMPLES,
                mc_key=FAMILY_MC_KEY,
                scrambling_mean=mean,
                scrambling_spread=spread,
                scrambling_spread_grad=spread_grad,
                stated_error=epsilon,
                bound=4 * se + epsilon * abs(mc),
                student=student_json,
                teacher=teacher_json,
            )
        )
    return rows


def conditional_vs_exact_rows() -> list[dict]:
    """The conditional rule applied to independent gates, where the exact loss and gradient are known."""
    from jaxmoe import quadrature

    rows = []
    for pair in (FamilyPair("sigmoid", "he3"), FamilyPair("erf", "he2"), FamilyPair("sigmoid", "linear")):
        student, teacher = family_models(pair)
        exact, exact_grad = jax.jit(jax.value_and_grad(quadrature.mixture_loss))(student, teacher)
        approx, approx_grad = jax.jit(jax.value_and_grad(quadrature.conditional_loss))(student, teacher)
        rows.append(
            dict(
                name=pair.name,
                exact_rule=quadrature.loss_rule(student, teacher),
                loss=float(exact),
                rel_error=abs(float(approx) - float(exact)) / float(exact),
                rel_error_grad=float(jnp.linalg.norm(_flat(approx_grad) - _flat(exact_grad)) / jnp.linalg.norm(_flat(exact_grad))),
            )
        )
    return rows


FAMILY_SPEED_CASES = ("he3", "linear", "mlp:hidden=2,act=tanh")
FAMILY_SPEED_SIZES = ((FAMILY_M, FAMILY_M_STAR, FAMILY_D), (25, 5, 60))


def family_speed_rows(repeats: int) -> list[dict]:
    """Warm time of ``jax.jit(jax.value_and_grad(mixture_loss))`` with the softmax gate."""
    from jaxmoe import quadrature

    rows = []
    for m, m_star, dim in FAMILY_SPEED_SIZES:
        for expert in FAMILY_SPEED_CASES:
            pair = FamilyPair("softmax", expert)
            student, teacher = family_models(pair, m, m_star, dim)
            fn = jax.jit(jax.value_and_grad(quadrature.mixture_loss))
            start = time.perf_counter()
            jax.block_until_ready(fn(student, teacher))
            compile_s = time.perf_counter() - start
            ms = median_ms(fn, student, teacher, repeats=repeats)
            spread = None
            if dim != FAMILY_D:  # the test size's spread is in the main table
                on_nodes = jax.jit(quadrature.loss_on_nodes)
                values = np.array(
                    [float(on_nodes(student, teacher, *quadrature.rule_nodes(student, teacher, seed=s))) for s in range(1, 9)]
                )
                spread = float(values.std(ddof=1) / abs(values.mean()))
            rows.append(
                dict(
                    size=f"m = {m}, m* = {m_star}, D = {dim}",
                    pair=pair.name,
                    rule=quadrature.loss_rule(student, teacher),
                    ms=ms,
                    compile_s=compile_s,
                    spread=spread,
                )
            )
    return rows


def write_references(rows: list[dict], path: Path) -> None:
    """The Monte Carlo references and the models they belong to, as JSON for tests/test_families.py."""
    import json

    keep = (
        "name", "rule", "t", "mc_mean", "mc_se", "mc_samples", "mc_key", "loss", "stated_error",
        "scrambling_mean", "scrambling_spread", "student", "teacher",
    )
    document = {
        "description": (
            "10^7-sample Monte Carlo references of the population loss 1/2 E[(f_student - f_teacher)^2] "
            "for the family table of benchmarks/kernel.py --families (written by it; read by tests/test_families.py). "
            "Models: init_mixture_teacher/init_mixture_student with the keys below, linear biases "
            "0.3 cos(1 + i) (student) and 0.5 cos(j) (teacher); their arrays are stored, so the references "
            "do not depend on how the init functions draw. `loss` is mixture_loss when written."
        ),
        "sizes": {"m": FAMILY_M, "m_star": FAMILY_M_STAR, "D": FAMILY_D},
        "keys": {"teacher": FAMILY_TEACHER_KEY, "student": FAMILY_STUDENT_KEY, "monte_carlo": FAMILY_MC_KEY},
        "monte_carlo": {"samples": FAMILY_MC_SAMPLES, "batch_size": FAMILY_MC_BATCH},
        "pairs": [{k: row[k] for k in keep} for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, indent=1) + "\n")


def families_section(repeats: int, fresh_mc: bool, references: Path) -> Section:
    """Accuracy of `mixture_loss` for every gate/expert pair against Monte Carlo, and its speed."""
    from jaxmoe import quadrature

    rows = family_rows(fresh_mc, references)
    write_references(rows, references)
    exact_rows = conditional_vs_exact_rows()
    print("timing ...", flush=True)
    speed = family_speed_rows(repeats)

    def fmt(x, spec=".1e"):
        return "—" if x is None else format(x, spec)

    lines = [
        f"Student m = {FAMILY_M}, teacher m* = {FAMILY_M_STAR}, D = {FAMILY_D} "
        f"(`init_mixture_teacher` key {FAMILY_TEACHER_KEY}, `init_mixture_student` key {FAMILY_STUDENT_KEY}; "
        f"linear biases {STUDENT_BIAS_SCALE} cos(1 + i), {TEACHER_BIAS_SCALE} cos(j); a τ schedule at t = {SCHEDULE_TIME:g}). "
        f"Default nodes: conditional {quadrature.CONDITIONAL_NODES}, quasi-Monte Carlo {quadrature.QMC_NODES}.",
        "",
        f"- approx: `mixture_loss`; MC, SE: `mixture_loss_monte_carlo`, {FAMILY_MC_SAMPLES:.0e} samples, key {FAMILY_MC_KEY} "
        f"(references in `tests/data/families_mc.json`).",
        f"- spread: relative RMS of the rule over {FAMILY_SCRAMBLINGS} other Owen scramblings (its error, "
        "which the fixed scrambling draws from); ∇ spread: the same for the gradient vector, relative to its norm.",
        "- scrambled mean: the mean over those scramblings (randomised QMC: an unbiased estimate with "
        "standard error spread·L/√S, a second reference besides MC).",
        "- ε: `quadrature.stated_error`, the stated relative error; bound = 4·SE + ε·MC, held by `tests/test_families.py`.",
        "",
        "| pair | rule | approx | MC | SE | \\|diff\\|/SE | rel. error | spread | ∇ spread | scrambled mean | ε | bound | within |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        diff = abs(r["loss"] - r["mc_mean"])
        lines.append(
            f"| {r['name']} | {r['rule']} | {r['loss']:.6f} | {r['mc_mean']:.6f} | {r['mc_se']:.1e} | "
            f"{diff / r['mc_se']:.2f} | {diff / abs(r['mc_mean']):.1e} | {fmt(r['scrambling_spread'])} | "
            f"{fmt(r['scrambling_spread_grad'])} | {fmt(r['scrambling_mean'], '.6f')} | {r['stated_error']:.0e} | {r['bound']:.1e} | "
            f"{'yes' if diff <= r['bound'] else 'NO'} |"
        )
    lines += [
        "",
        "The conditional rule on independent gates, where the exact loss and gradient are known "
        "(`conditional_loss` against `mixture_loss`'s kernel):",
        "",
        "| pair | exact rule | L | rel. error L | rel. error ∇L |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {r['name']} | {r['exact_rule']} | {r['loss']:.6f} | {r['rel_error']:.1e} | {r['rel_error_grad']:.1e} |"
            for r in exact_rows
        ),
        "",
        f"Speed: `jax.jit(jax.value_and_grad(mixture_loss))`, warm, median of {repeats} calls; compile time of the "
        "first call; at the larger size the spread of the rule over 8 scramblings.",
        "",
        "| size | pair | rule | median ms | compile s | spread |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {r['size']} | {r['pair']} | {r['rule']} | {r['ms']:.1f} | {r['compile_s']:.1f} | {fmt(r['spread'])} |"
            for r in speed
        ),
    ]
    return Section("Gate and expert families: mixture_loss against Monte Carlo", lines)


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
    parser.add_argument(
        "--families",
        action="store_true",
        help="run only the gate/expert family section (report kernel-families-<machine>.md, "
        "references tests/data/families_mc.json)",
    )
    parser.add_argument(
        "--fresh-mc", action="store_true", help="recompute the 10^7-sample Monte Carlo references even if stored"
    )
    parser.add_argument("--references", type=Path, default=FAMILY_REFERENCES, help="where the Monte Carlo references go")
    args = parser.parse_args(argv)

    cores = "all cores" if args.all_cores else pin_to_one_core()

    # Opt into float64 here, not at import (README, "Architecture").
    jax.config.update("jax_enable_x64", True)

    # The report is a list of sections; later benchmarks append theirs here.
    sections: list[Section] = []
    if not args.families:
        section, _ = kernel_section(args.repeats)
        sections.append(section)
        sections.append(flow_section())
    families = families_section(args.repeats, args.fresh_mc, args.references)
    sections.append(families)

    name = machine_name()
    header = [*machine_lines(), f"- threads: {cores}; float64", ""]
    reports = [(f"kernel-families-{name}.md", f"# jaxmoe gate/expert family benchmark ({name})", [families])]
    if not args.families:
        reports.append((f"kernel-{name}.md", f"# jaxmoe kernel benchmark ({name})", sections))
    for filename, title, parts in reports:
        text = "\n".join([title, "", *header, *(s.markdown() for s in parts)])
        print()
        print(text)
        path = args.out_dir / filename
        write_atomically(path, text)
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
