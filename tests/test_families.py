"""Gate and expert families (jaxmoe.families) and their population loss (jaxmoe.quadrature).

Specifications parse and reject bad input in one line; forwards have the right
shapes; softmax-type gates are distributions over experts.

The loss (`mixture_loss`) is held, for every gate/expert pair of the family
table of benchmarks/kernel.py, to its stated bound against a 10⁷-sample Monte
Carlo reference stored in tests/data/families_mc.json (written by
``python benchmarks/kernel.py --families``; 10⁷ live samples per pair would
take minutes): ``|L − L_MC| ≤ 4·SE + ε·L_MC``, ε = `quadrature.stated_error`
(measured: about 4× the rule's spread over scramblings). A perturbation test
shows the bound is tight enough to catch a wrong loss. The conditional rule is
checked against the exact kernel (to 1e-10 where its gate integral is
Gauss–Hermite, to its stated error where it is Sobol), against brute-force
quasi-Monte Carlo, and its gradient against finite differences. All in
float64 (conftest.py), small sizes.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmoe import quadrature
from jaxmoe.families import (
    EXPERT_FAMILIES,
    GATES,
    Expert,
    Gate,
    Mixture,
    gate_weights,
    init_mixture_student,
    init_mixture_teacher,
    mixture_forward,
)
from jaxmoe.model import MoE
from jaxmoe.pairkernel import independent_loss, orthonormal_frame
from jaxmoe.population import population_loss
from jaxmoe.quadrature import (
    conditional_loss,
    gaussian_nodes,
    loss_rule,
    mixture_loss,
    quasi_monte_carlo_loss,
    stated_error,
)

# Student m, teacher m*, coordinates D = 2(m + m*) as in the reduced simulation.
M, M_STAR, D = 4, 2, 12
REFERENCES = Path(__file__).parent / "data" / "families_mc.json"

GATE_CASES = [
    "softmax",
    "temperature:tau=0.5",
    "activation:act=tanh,tau=0.5",
    "activation:act=sigmoid,tau=0.25",
    "hierarchical:groups=2",
    "topk:k=2",
    "temperature:tau=1,tau_final=0.2,decay=1",
]


def _models(gate, expert, dim=D, m=M, m_star=M_STAR):
    teacher = init_mixture_teacher(m_star, dim, gate, expert, key=jax.random.PRNGKey(0))
    student = init_mixture_student(m, dim, gate, expert, key=jax.random.PRNGKey(1))
    return student, teacher


def _flat(tree):
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(tree)])



def _with_bias(model, bias):
    # Non-zero biases, so that a dropped or mis-signed bias term is visible.
    return Mixture(model.router, model.expert, model.group_router, jnp.asarray(bias), model.output, model.gate, model.expert_fn)


def _with_biases(student, teacher):
    if student.expert_fn.name == "linear":
        student = _with_bias(student, 0.3 * jnp.cos(1.0 + jnp.arange(student.num_experts)))
    if teacher.expert_fn.name == "linear":
        teacher = _with_bias(teacher, 0.5 * jnp.cos(jnp.arange(teacher.num_experts, dtype=teacher.router.dtype)))
    return student, teacher


def _independent_models(gate, teacher_expert, student_expert, m=M, m_star=M_STAR, dim=D):
    teacher = init_mixture_teacher(m_star, dim, gate, teacher_expert, key=jax.random.PRNGKey(0))
    student = init_mixture_student(m, dim, gate, student_expert, key=jax.random.PRNGKey(1))
    return _with_biases(student, teacher)


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


FORWARD_CASES = [(g, "he3") for g in GATE_CASES + ["sigmoid", "erf"]] + [("topk:k=2", e) for e in ("linear", "mlp:hidden=3,act=gelu")]


def test_forward_shapes_and_gate_sums():
    # All cases under one compilation (compilation dominates this file's time).
    models = [_models(gate, expert) for gate, expert in FORWARD_CASES]
    x = jax.random.normal(jax.random.PRNGKey(2), (7, D))
    outputs = jax.jit(
        lambda models, x: [(mixture_forward(s, x, t=0.5), mixture_forward(q, x), gate_weights(s, x, t=0.5)) for s, q in models]
    )(models, x)
    for (gate, expert), (forward_s, forward_t, g) in zip(FORWARD_CASES, outputs):
        assert forward_s.shape == (7,) and forward_t.shape == (7,), (gate, expert)
        assert g.shape == (7, M) and bool(jnp.all(g >= 0)), (gate, expert)
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
# Dispatch and nodes


@pytest.mark.parametrize(
    "student_families, teacher_families, rule",
    [
        (("sigmoid", "he3"), ("erf", "he2"), "exact"),
        (("sigmoid", "linear"), ("sigmoid", "he3"), "pair kernel"),
        (("softmax", "he3"), ("softmax", "he3"), "conditional"),
        (("softmax", "linear"), ("sigmoid", "he3"), "conditional"),
        (("topk:k=2", "he4"), ("hierarchical:groups=2", "linear"), "conditional"),
        (("sigmoid", "mlp:hidden=2,act=tanh"), ("sigmoid", "he3"), "quasi-monte carlo"),
        (("softmax", "mlp:hidden=2,act=gelu"), ("softmax", "mlp:hidden=2,act=gelu"), "quasi-monte carlo"),
    ],
)
def test_loss_rule_dispatch(student_families, teacher_families, rule):
    student = init_mixture_student(M, D, *student_families, key=jax.random.PRNGKey(1))
    teacher = init_mixture_teacher(M_STAR, D, *teacher_families, key=jax.random.PRNGKey(0))
    assert loss_rule(student, teacher) == rule
    assert 0 < stated_error(student, teacher) <= 5e-2


@pytest.mark.parametrize("gate", ["sigmoid", "erf"])
def test_independent_hermite_dispatches_to_exact_kernel(gate):
    student, teacher = _models(gate, "he3")
    exact = population_loss(MoE(student.router, student.expert, gate, "he3"), MoE(teacher.router, teacher.expert, gate, "he3"))
    assert float(mixture_loss(student, teacher)) == float(exact)


def test_gaussian_nodes_integrate_low_moments():
    # Gauss–Hermite (n ≤ 3): polynomials exactly.
    z, w = gaussian_nodes(2, 4096)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-13)
    np.testing.assert_allclose(w @ (z[:, 0] ** 4 * z[:, 1] ** 2), 3.0, rtol=1e-12)
    for degree in (0, 3):
        z, w = gaussian_nodes(6, 2**12, degree)
        np.testing.assert_allclose(w @ z, 0.0, atol=1e-13)  # antithetic: odd moments vanish exactly
        if degree == 0:
            np.testing.assert_allclose(w, 1.0 / len(w), rtol=1e-15)
        # Sobol with (degree > 0) importance weights: second moments to QMC accuracy.
        np.testing.assert_allclose(w.sum(), 1.0, atol=2e-3)
        np.testing.assert_allclose(w @ z**2, 1.0, atol=2e-2)
    with pytest.raises(ValueError, match="dim"):
        gaussian_nodes(0, 16)


def test_orthonormal_frame_handles_dependent_columns():
    # Columns: a, b, a + 2b (dependent), c in R^3, then a fifth column in a
    # three-dimensional space (necessarily dependent): zero columns, the rest
    # orthonormal, and every column reconstructed from the frame.
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((3, 3))
    u = jnp.asarray(np.stack([a, b, a + 2 * b, c, a - c], axis=1))
    q = jax.jit(orthonormal_frame)(u)
    norms = np.linalg.norm(np.asarray(q), axis=0)
    np.testing.assert_allclose(norms, [1, 1, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.diag(norms**2), atol=1e-13)
    np.testing.assert_allclose(q @ (q.T @ u), u, atol=1e-12)
    lower = np.asarray(u.T @ q)
    np.testing.assert_allclose(lower, np.tril(lower), atol=1e-12)


# ---------------------------------------------------------------------------
# The conditional rule against exact answers
#
# Each test compiles one function (compilation dominates this file's time).


def test_conditional_rule_is_exact_where_the_gate_integral_is_gauss_hermite():
    # m = 2, m* = 1: n_g = 3 gate coordinates, so the y-integral is tensor
    # Gauss–Hermite (32 points per axis) and the whole rule is exact up to it:
    # measured 1e-12 (loss and derivatives) against the exact kernel (He3)
    # and the pair kernel (linear, non-zero biases), two independent methods.
    # A wrong term of the closed form (a factorial, the sign of A, a missing
    # cross-covariance, a dropped bias) or a frame gradient that missed the
    # gate–expert coupling shows at the 1e-2 level.
    # The He3 case also along a random direction of every student array
    # (forward mode: cheaper to compile than the full gradient, the same
    # linearisation; the full gradient is held to the exact one below).
    cases = [_independent_models("sigmoid", e, e, m=2, m_star=1, dim=6) for e in ("he3", "linear")]
    direction = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype), cases[0][0])

    @jax.jit
    def both(cases, direction):
        (s3, t3), (s1, t1) = cases
        slopes = [jax.jvp(lambda a: loss(a, t3), (s3,), (direction,)) for loss in (mixture_loss, conditional_loss)]
        return slopes, (mixture_loss(s1, t1), conditional_loss(s1, t1))

    ((exact, exact_slope), (approx, approx_slope)), (exact_linear, approx_linear) = both(cases, direction)
    np.testing.assert_allclose(float(approx), float(exact), rtol=1e-10)
    np.testing.assert_allclose(float(approx_slope), float(exact_slope), rtol=1e-8)
    np.testing.assert_allclose(float(approx_linear), float(exact_linear), rtol=1e-10)


def test_conditional_rule_against_exact_kernel_with_sobol_nodes():
    # n_g = 6: Sobol nodes. Sigmoid gates, He3 experts: the stated error of
    # degree 3 holds against the exact kernel (measured 1.1e-3). The
    # gradient's error relative to its norm is larger (measured 2.7e-2;
    # benchmarks/results/kernel-families-*.md): about the same absolute
    # error on a quantity much smaller than L; bound 1e-1.
    student, teacher = _models("sigmoid", "he3")
    (exact, exact_grad), (approx, approx_grad) = jax.jit(
        lambda s, t: (jax.value_and_grad(mixture_loss)(s, t), jax.value_and_grad(conditional_loss)(s, t))
    )(student, teacher)
    assert abs(float(approx) - float(exact)) <= quadrature.CONDITIONAL_ERROR[3] * float(exact)
    assert np.linalg.norm(_flat(approx_grad) - _flat(exact_grad)) <= 1e-1 * np.linalg.norm(_flat(exact_grad))


def test_conditional_rule_against_brute_force_quasi_monte_carlo():
    # Softmax gates, linear experts: the conditional rule (6 gate coordinates)
    # against plain Sobol in all 12 coordinates with 2^18 nodes, whose own
    # spread over scramblings is 1e-4. Measured difference 1e-4 relative;
    # bound: the conditional rule's stated error plus 4× that spread.
    student, teacher = _with_biases(*_models("softmax", "linear"))
    assert loss_rule(student, teacher) == "conditional"
    fast, brute = jax.jit(lambda s, t: (mixture_loss(s, t), quasi_monte_carlo_loss(s, t, nodes=2**18)))(student, teacher)
    assert abs(float(fast) - float(brute)) <= (stated_error(student, teacher) + 4e-4) * float(brute)


def test_jit_and_eager_agree():
    # XLA CPU (jaxlib 0.10.2) fuses dot·multiply·reduce into one kernel and
    # miscompiled it for a broadcast constant operand (wrong by O(1) beyond
    # 1024 rows); eager mode runs the operations one by one.
    student, teacher = _models("temperature:tau=0.5", "he2")
    np.testing.assert_allclose(float(jax.jit(mixture_loss)(student, teacher)), float(mixture_loss(student, teacher)), rtol=1e-12)


def test_gradient_matches_finite_differences():
    # The conditional rule is differentiated through its frame, so its
    # gradient is the exact gradient of the rule: it matches central
    # differences of the rule itself to their own accuracy (measured 1e-8).
    # Forward mode (cheaper to compile; reverse mode is the same
    # linearisation, and is held to the exact gradient above).
    cases = [_with_biases(*_models(g, e)) for g, e in (("softmax", "he3"), ("hierarchical:groups=2", "linear"))]
    directions = [
        jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype), s) for s, _ in cases
    ]
    eps = 1e-5

    @jax.jit
    def derivatives(cases, directions):
        out = []
        for (student, teacher), direction in zip(cases, directions):
            def along(e):
                shifted = jax.tree_util.tree_map(lambda x, y: x + e * y, student, direction)
                return jax.jvp(lambda s: mixture_loss(s, teacher), (shifted,), (direction,))

            # One trace: the derivative at 0 and the loss at ±eps.
            values, slopes = jax.vmap(along)(jnp.array([0.0, eps, -eps]))
            out.append((slopes[0], (values[1] - values[2]) / (2 * eps)))
        return out

    for analytic, numeric in derivatives(cases, directions):
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def test_loss_is_vmappable_and_runs_in_float32():
    # Seeds as a leading axis of the Mixture arrays (the gradient under vmap
    # is exercised by the simulator's tests); float32 agrees with float64 to
    # its own precision (measured 1e-7).
    student, teacher = _models("softmax", "linear")
    draws = [init_mixture_student(M, D, "softmax", "linear", key=k) for k in jax.random.split(jax.random.PRNGKey(3), 3)]
    students = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *draws)
    one = draws[1]
    single = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), (one, teacher))

    @jax.jit
    def run(students, teacher, one, single):
        return jax.vmap(mixture_loss, in_axes=(0, None))(students, teacher), mixture_loss(one, teacher), mixture_loss(*single)

    losses, loss, loss32 = run(students, teacher, one, single)
    assert losses.shape == (3,)
    np.testing.assert_allclose(float(losses[1]), float(loss), rtol=1e-12)
    assert loss32.dtype == jnp.float32
    np.testing.assert_allclose(float(loss32), float(loss), rtol=1e-5)


# ---------------------------------------------------------------------------
# Every pair against its 10^7-sample Monte Carlo reference


def _load_references():
    document = json.loads(REFERENCES.read_text())
    return document, {row["name"]: row for row in document["pairs"]}


_DOCUMENT, _REFERENCE_ROWS = _load_references()
# The perturbation test: one teacher bias moved by this much.
_NUDGE = 0.05


def _model_from_json(data) -> Mixture:
    arrays = {k: None if data[k] is None else jnp.asarray(data[k], jnp.float64) for k in ("router", "expert", "group_router", "bias", "output")}
    return Mixture(**arrays, gate=data["gate"], expert_fn=data["expert_fn"])


def _nudged(teacher: Mixture) -> Mixture:
    return Mixture(teacher.router, teacher.expert, None, teacher.bias.at[0].add(_NUDGE), None, teacher.gate, teacher.expert_fn)


@pytest.fixture(scope="module")
def reference_losses():
    """`mixture_loss` for every reference pair (and the nudged teacher), in one compilation."""
    names = sorted(_REFERENCE_ROWS)
    pairs = [(_model_from_json(_REFERENCE_ROWS[n]["student"]), _model_from_json(_REFERENCE_ROWS[n]["teacher"])) for n in names]
    times = [_REFERENCE_ROWS[n]["t"] for n in names]
    nudge_student, nudge_teacher = pairs[names.index("softmax + linear")]

    @jax.jit
    def losses(pairs, nudge_student, nudge_teacher):
        values = [mixture_loss(s, q, t=t) for (s, q), t in zip(pairs, times)]
        return values, mixture_loss(nudge_student, _nudged(nudge_teacher))

    values, nudged = losses(pairs, nudge_student, nudge_teacher)
    rules = {n: loss_rule(*p) for n, p in zip(names, pairs)}
    errors = {n: stated_error(*p) for n, p in zip(names, pairs)}
    return {n: float(v) for n, v in zip(names, values)}, rules, errors, float(nudged)


def test_references_were_drawn_at_the_stated_size():
    sizes, mc = _DOCUMENT["sizes"], _DOCUMENT["monte_carlo"]
    assert (sizes["m"], sizes["m_star"], sizes["D"]) == (M, M_STAR, D) and mc["samples"] == 10**7
    names = {row["name"] for row in _DOCUMENT["pairs"]}
    # Every gate (with He3) and every expert family (with softmax) is covered.
    gates = {n.split(" + ")[0].split(":")[0] for n in names if n.split(" + ")[1] == "he3"}
    experts = {n.split(" + ")[1].split(":")[0] for n in names if n.startswith("softmax + ")}
    assert gates >= set(GATES) and experts >= set(EXPERT_FAMILIES)


@pytest.mark.parametrize("name", sorted(_REFERENCE_ROWS))
def test_mixture_loss_within_stated_bound_of_monte_carlo(name, reference_losses):
    # |L − L_MC| ≤ 4·SE + ε·L_MC: 4·SE is Monte Carlo's own error (a normal
    # deviate beyond 4 has probability 6e-5), ε the rule's stated error
    # (quadrature.stated_error: about 4× its measured spread over
    # scramblings; 1e-12 for the exact kernel, 1e-10 for the pair kernel).
    losses, rules, errors, _ = reference_losses
    row = _REFERENCE_ROWS[name]
    assert rules[name] == row["rule"]
    bound = 4 * row["mc_se"] + errors[name] * row["mc_mean"]
    assert abs(losses[name] - row["mc_mean"]) <= bound, (losses[name], row["mc_mean"], bound)


def test_bound_catches_a_small_change_of_the_teacher(reference_losses):
    # The test above can fail: moving one teacher bias by 0.05 (a linear
    # expert's output by 5% of its scale) changes the softmax + linear loss
    # by more than that pair's bound.
    losses, _, errors, nudged = reference_losses
    row = _REFERENCE_ROWS["softmax + linear"]
    bound = 4 * row["mc_se"] + errors["softmax + linear"] * row["mc_mean"]
    assert abs(losses["softmax + linear"] - row["mc_mean"]) <= bound < abs(nudged - row["mc_mean"])


# ---------------------------------------------------------------------------
# Independent gates with polynomial experts: the pair kernel (jaxmoe.pairkernel)


def test_pair_kernel_reproduces_the_exact_hermite_kernel():
    # He3 on both sides: the Hermite/Mehler kernel is exact to ~1e-15. Measured
    # agreement 1e-15 relative (48 gate points); 32 points leave 4e-12, so
    # rtol 1e-12 fails for an under-resolved gate rule.
    student, teacher = _models("sigmoid", "he3")
    exact = population_loss(MoE(student.router, student.expert, "sigmoid", "he3"), MoE(teacher.router, teacher.expert, "sigmoid", "he3"))
    np.testing.assert_allclose(float(independent_loss(student, teacher)), float(exact), rtol=1e-12)
