"""Gate and expert families (jaxmoe.families) and their population loss (jaxmoe.quadrature).

Specifications parse and reject bad input in one line; forwards have the right
shapes; softmax-type gates are distributions over experts; the sigmoid + He
case dispatches to the exact kernel; and the deterministic quadrature agrees
with Monte Carlo for every gate family (with He3 experts) and every expert
family (with the softmax gate). All in float64 (conftest.py), small sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmoe.families import (
    EXPERT_FAMILIES,
    GATES,
    Expert,
    Gate,
    gate_weights,
    init_mixture_student,
    init_mixture_teacher,
    mixture_forward,
)
from jaxmoe.model import MoE
from jaxmoe.population import population_loss
from jaxmoe.pairkernel import independent_loss
from jaxmoe.quadrature import gaussian_nodes, mixture_loss, mixture_loss_monte_carlo, uses_pair_kernel

# Student m, teacher m*, coordinates D = 2(m + m*) as in the reduced simulation.
M, M_STAR, D = 4, 2, 12
# Monte Carlo sample count of the tolerance tests. The issue asks for 10^7; at
# D = 12 that costs about 3.7 s per pair on a 2-core CPU (13 pairs: ~50 s),
# beyond this file's 30 s budget, so the tests use 10^6 and the 10^7
# comparison is in the issue #8 report.
MC_SAMPLES = 10**6
# Quadrature nodes of the tolerance tests (the default of mixture_loss).
NODES = 2**15
# Stated quadrature tolerance, relative to the loss: |approx − MC| ≤ 4·SE + TOL·L.
# Measured relative errors of the spherical–radial Halton rule at D = 12,
# N = 2^15 against 2^21 nodes and 10^7-sample Monte Carlo were up to about
# 3e-2 (He3/He4 experts: degree-12/16 polynomial integrands); 5e-2 leaves
# margin without hiding a wrong formula (a perturbed teacher moves L by ≫ 5%).
TOL = 5e-2

GATE_CASES = [
    "softmax",
    "temperature:tau=0.5",
    "activation:act=tanh,tau=0.5",
    "activation:act=sigmoid,tau=0.25",
    "hierarchical:groups=2",
    "topk:k=2",
    "temperature:tau=1,tau_final=0.2,decay=1",
]
EXPERT_CASES = ["he1", "he4", "linear", "mlp:hidden=2,act=gelu", "mlp:hidden=2,act=tanh", "mlp:hidden=2,act=sigmoid"]
PAIRS = [(g, "he3") for g in GATE_CASES] + [("softmax", e) for e in EXPERT_CASES]


def _models(gate, expert, dim=D, m=M, m_star=M_STAR):
    teacher = init_mixture_teacher(m_star, dim, gate, expert, key=jax.random.PRNGKey(0))
    student = init_mixture_student(m, dim, gate, expert, key=jax.random.PRNGKey(1))
    return student, teacher


# ---------------------------------------------------------------------------
# Specifications


@pytest.mark.parametrize(
    "text, spec",
    [
        ("softmax", Gate("softmax")),
        ("temperature:tau=0.5", Gate("temperature", tau=0.5)),
        ("activation:act=tanh,tau=0.5", Gate("activation", activation="tanh", tau=0.5)),
        ("hierarchical:groups=2", Gate("hierarchical", groups=2)),
        ("topk:k=2", Gate("topk", k=2)),
        ("temperature:tau=2,tau_final=0.5,decay=10", Gate("temperature", tau=2.0, tau_final=0.5, decay=10.0)),
    ],
)
def test_gate_parsing_round_trips(text, spec):
    assert Gate.from_string(text) == spec
    assert Gate.from_string(str(spec)) == spec
    assert hash(Gate.from_string(text)) == hash(spec)


@pytest.mark.parametrize(
    "text, spec",
    [("he3", Expert("he3")), ("linear", Expert("linear")), ("mlp:hidden=4,act=gelu", Expert("mlp", hidden=4, activation="gelu"))],
)
def test_expert_parsing_round_trips(text, spec):
    assert Expert.from_string(text) == spec
    assert Expert.from_string(str(spec)) == spec


@pytest.mark.parametrize(
    "text, words",
    [
        ("bogus", ["softmax", "hierarchical", "topk"]),
        ("temperature:tau=0", ["tau", "> 0"]),
        ("temperature:tau=-1", ["tau"]),
        ("activation:act=relu", ["tanh", "sigmoid"]),
        ("topk", ["k"]),
        ("topk:k=0", ["k"]),
        ("hierarchical", ["groups"]),
        ("softmax:tau=2", ["no parameters"]),
        ("topk:k=2,bar=1", ["k, tau"]),
        ("temperature:tau_final=0.1", ["decay"]),
    ],
)
def test_bad_gate_one_line_error(text, words):
    with pytest.raises(ValueError) as info:
        Gate.from_string(text)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words)


@pytest.mark.parametrize(
    "text, words",
    [
        ("he5", list(EXPERT_FAMILIES)),
        ("mlp", ["hidden"]),
        ("mlp:hidden=0", ["hidden"]),
        ("mlp:hidden=2,act=relu", ["sigmoid", "tanh", "gelu"]),
        ("linear:hidden=2", ["no parameters"]),
    ],
)
def test_bad_expert_one_line_error(text, words):
    with pytest.raises(ValueError) as info:
        Expert.from_string(text)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words)


@pytest.mark.parametrize("gate, message", [("hierarchical:groups=3", "divide"), ("topk:k=5", "1..4")])
def test_sizes_checked_against_m(gate, message):
    with pytest.raises(ValueError, match=message):
        init_mixture_student(M, D, gate, "he3", key=jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize(
    "gate, expert",
    [(g, "he3") for g in GATE_CASES + ["sigmoid", "erf"]] + [("topk:k=2", e) for e in ("linear", "mlp:hidden=3,act=gelu")],
)
def test_forward_shapes_and_gate_sums(gate, expert):
    student, teacher = _models(gate, expert)
    x = jax.random.normal(jax.random.PRNGKey(2), (7, D))
    assert mixture_forward(student, x, t=0.5).shape == (7,)
    assert mixture_forward(teacher, x).shape == (7,)
    g = gate_weights(student, x, t=0.5)
    assert g.shape == (7, M) and bool(jnp.all(g >= 0))
    if not Gate.from_string(gate).independent:
        np.testing.assert_allclose(g.sum(-1), 1.0, atol=1e-12)
    if gate.startswith("topk"):
        assert bool(jnp.all(jnp.sum(g > 0, axis=-1) == 2))


def test_temperature_schedule():
    gate = Gate("temperature", tau=1.0, tau_final=0.1, decay=5.0)
    assert gate.temperature() == 1.0
    np.testing.assert_allclose(gate.temperature(5.0), 0.1 + 0.9 / np.e)
    np.testing.assert_allclose(gate.temperature(1e4), 0.1)


# ---------------------------------------------------------------------------
# Population loss


@pytest.mark.parametrize("gate", ["sigmoid", "erf"])
def test_independent_hermite_dispatches_to_exact_kernel(gate):
    student, teacher = _models(gate, "he3")
    exact = population_loss(MoE(student.router, student.expert, gate, "he3"), MoE(teacher.router, teacher.expert, gate, "he3"))
    assert float(mixture_loss(student, teacher)) == float(exact)


def test_nodes_integrate_low_moments():
    for dim in (2, 6):
        z, w = gaussian_nodes(dim, 4096)
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-13)
        np.testing.assert_allclose(w @ z, 0.0, atol=1e-13)  # antithetic / symmetric
    z, w = gaussian_nodes(2, 4096)  # Gauss–Hermite: polynomials exactly
    np.testing.assert_allclose(w @ (z[:, 0] ** 4 * z[:, 1] ** 2), 3.0, rtol=1e-12)


def test_loss_is_differentiable_and_vmappable():
    student, teacher = _models("softmax", "linear")
    loss, grad = jax.value_and_grad(mixture_loss)(student, teacher, nodes=1024)
    assert grad.router.shape == student.router.shape and bool(jnp.isfinite(loss))
    students = jax.vmap(lambda k: init_mixture_student(M, D, "softmax", "linear", key=k))(jax.random.split(jax.random.PRNGKey(3), 3))
    losses = jax.vmap(lambda s: mixture_loss(s, teacher, nodes=1024))(students)
    assert losses.shape == (3,)


def _check_against_monte_carlo(student, teacher, t, nodes=NODES):
    approx = float(mixture_loss(student, teacher, nodes=nodes, t=t))
    mc, se = mixture_loss_monte_carlo(student, teacher, key=jax.random.PRNGKey(7), num_samples=MC_SAMPLES, batch_size=2**17, t=t)
    return abs(approx - float(mc)) <= 4 * float(se) + TOL * abs(float(mc))


@pytest.mark.parametrize("gate, expert", PAIRS)
def test_quadrature_against_monte_carlo(gate, expert):
    student, teacher = _models(gate, expert)
    t = 1.0 if "decay" in gate else None
    assert _check_against_monte_carlo(student, teacher, t)


def test_gauss_hermite_path_against_monte_carlo():
    # D = 3 ≤ MAX_GAUSS_HERMITE_DIM: the tensor Gauss–Hermite rule.
    student, teacher = _models("softmax", "he3", dim=3, m=2, m_star=1)
    assert _check_against_monte_carlo(student, teacher, None)


# ---------------------------------------------------------------------------
# Independent gates with polynomial experts: the pair kernel (jaxmoe.pairkernel)


def _with_bias(model, bias):
    # Non-zero biases, so that a dropped or mis-signed bias term is visible.
    return type(model)(model.router, model.expert, model.group_router, jnp.asarray(bias), model.output, model.gate, model.expert_fn)


def _independent_models(gate, teacher_expert, student_expert):
    teacher = init_mixture_teacher(M_STAR, D, gate, teacher_expert, key=jax.random.PRNGKey(0))
    student = init_mixture_student(M, D, gate, student_expert, key=jax.random.PRNGKey(1))
    if student_expert == "linear":
        student = _with_bias(student, 0.3 * jnp.arange(M) - 0.4)
    if teacher_expert == "linear":
        teacher = _with_bias(teacher, jnp.array([0.5, -0.2]))
    return student, teacher


PAIR_KERNEL_CASES = [("sigmoid", "linear", "linear"), ("erf", "linear", "linear"), ("sigmoid", "he2", "linear")]


def test_pair_kernel_reproduces_the_exact_hermite_kernel():
    # He3 on both sides: the Hermite/Mehler kernel is exact to ~1e-15. Measured
    # agreement 1e-15 relative (48 gate points); 32 points leave 4e-12, so
    # rtol 1e-12 fails for an under-resolved gate rule.
    student, teacher = _models("sigmoid", "he3")
    exact = population_loss(MoE(student.router, student.expert, "sigmoid", "he3"), MoE(teacher.router, teacher.expert, "sigmoid", "he3"))
    np.testing.assert_allclose(float(independent_loss(student, teacher)), float(exact), rtol=1e-12)


@pytest.mark.parametrize("gate, teacher_expert, student_expert", PAIR_KERNEL_CASES[1:])
def test_pair_kernel_against_higher_order_rule(gate, teacher_expert, student_expert):
    # 48 vs 96 Gauss–Hermite points per gate axis: measured 2e-15 to 6e-15 relative.
    student, teacher = _independent_models(gate, teacher_expert, student_expert)
    assert uses_pair_kernel(student, teacher)
    fast = float(mixture_loss(student, teacher))
    np.testing.assert_allclose(fast, float(independent_loss(student, teacher, router_nodes=96)), rtol=1e-12)


@pytest.mark.parametrize("gate, teacher_expert, student_expert", PAIR_KERNEL_CASES)
def test_pair_kernel_against_monte_carlo(gate, teacher_expert, student_expert):
    # The pair kernel is exact to 1e-12, so the only error is Monte Carlo's:
    # |L − L̂| ≤ 4·SE, no extra slack (SE ≈ 0.15–0.2% of L at 10^6 samples;
    # measured |L − L̂|/SE = 0.4–0.6). Dropping the biases moves L by ≫ 4·SE.
    student, teacher = _independent_models(gate, teacher_expert, student_expert)
    loss = float(mixture_loss(student, teacher))
    mc, se = mixture_loss_monte_carlo(student, teacher, key=jax.random.PRNGKey(7), num_samples=MC_SAMPLES, batch_size=2**17)
    assert abs(loss - float(mc)) <= 4 * float(se)


def test_pair_kernel_gradient_matches_finite_differences():
    # Q enters under stop_gradient (jaxmoe.pairkernel): the first derivative
    # is still exact. Measured agreement 1e-10 (the central difference's own error).
    student, teacher = _independent_models("sigmoid", "linear", "linear")
    grad = jax.grad(mixture_loss)(student, teacher)
    direction = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype), student)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction)))
    eps = 1e-5
    shifted = jax.jit(lambda e: mixture_loss(jax.tree_util.tree_map(lambda x, y: x + e * y, student, direction), teacher))
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-7)
