"""Which rule computes the loss of a pair of mixtures, its stated error, and `mixture_loss`."""

from __future__ import annotations

import numpy as np
from jaxtyping import Scalar

from ..base import Model, check_pair
from ..families import Mixture, as_mixture, as_moe
from ..model import MoE
from ..pairkernel import independent_loss
from ..population import population_loss
from ._common import gate_vectors, is_polynomial, rule_degree
from ._conditional import conditional_loss, conditional_on_nodes
from ._nodes import CONDITIONAL_NODES, QMC_NODES, SOBOL_SEED, gaussian_nodes
from ._qmc import quasi_monte_carlo_loss, quasi_monte_carlo_on_nodes, span_size

# ---------------------------------------------------------------------------
# Dispatch


def is_exact(student: Model, teacher: Model) -> bool:
    """True when `mixture_loss` uses the exact kernel: independent gates and He experts on both sides.

    A `jaxmoe.MoE` always qualifies (its experts may be any Hermite polynomial).
    """
    return all(isinstance(model, MoE) or (model.gate.independent and model.expert_fn.hermite) for model in (student, teacher))


def uses_pair_kernel(student: Mixture, teacher: Mixture) -> bool:
    """True when `mixture_loss` uses `jaxmoe.pairkernel.independent_loss`.

    Independent gates on both sides, polynomial experts (He or linear) on
    both sides, not both He (that case is `is_exact`). The pair kernel is
    then accurate to about 1e-12 relative. mlp experts are not dispatched
    there: tanh/sigmoid units have poles at ±iπ/2 (±iπ), so tensor
    Gauss–Hermite in four dimensions converges too slowly.
    """
    independent = all(m.gate.independent for m in (student, teacher))
    return independent and is_polynomial(student) and is_polynomial(teacher) and not is_exact(student, teacher)


def loss_rule(student: Model, teacher: Model) -> str:
    """Which rule `mixture_loss` uses for this pair of families: one of `LOSS_RULES`.

    ``"exact"`` (`is_exact`), ``"pair kernel"`` (`uses_pair_kernel`),
    ``"conditional"`` (He or linear experts on both sides, any gates:
    `conditional_loss`), else ``"quasi-monte carlo"`` (mlp experts:
    `quasi_monte_carlo_loss`). Depends on the families only (static).

    Example::

        import jaxmoe.families, jaxmoe.quadrature
        teacher = jaxmoe.families.init_mixture_teacher(2, 12, "softmax", "he3", key=jax.random.PRNGKey(0))
        student = jaxmoe.families.init_mixture_student(4, 12, "softmax", "he3", key=jax.random.PRNGKey(1))
        assert jaxmoe.quadrature.loss_rule(student, teacher) == "conditional"
        assert jaxmoe.quadrature.stated_error(student, teacher) == 0.01
    """
    if is_exact(student, teacher):
        return "exact"
    student, teacher = as_mixture(student), as_mixture(teacher)
    if uses_pair_kernel(student, teacher):
        return "pair kernel"
    if is_polynomial(student) and is_polynomial(teacher):
        return "conditional"
    return "quasi-monte carlo"


# Relative error ε stated for each rule at the test size (m = 4, m* = 2,
# D = 12, default nodes): about 4× the RMS spread of the rule over 16
# scramblings (the fixed scrambling is one draw from that spread),
# rounded up; measured by benchmarks/kernel.py --families and held against
# 10⁷-sample Monte Carlo by tests/test_families.py.
_EXACT_ERROR = 1e-12
_PAIR_KERNEL_ERROR = 1e-10
# Conditional rule, by the larger expert degree (linear counts as 1).
# Largest spreads measured: 3.8e-4 (degree 1, top-k), 6.6e-4 (He2),
# 2.9e-3 (He3, top-k with k = 1), 2.0e-3 (He4).
CONDITIONAL_ERROR = {1: 2e-3, 2: 5e-3, 3: 1e-2, 4: 1e-2}
# Hierarchical gates read G + G* more directions, and at D = 12 the student's
# experts lie almost wholly in the gate span, so the polynomial tails are in
# y: spreads 4.2e-3 (He3) and 4.8e-4 (linear).
_HIERARCHICAL_FACTOR = 3.0
# Quasi-Monte Carlo, by the mlp activation (the larger of the two models'):
# largest spreads 1.4e-4 (sigmoid), 8.8e-4 (tanh), 8.9e-4 (GELU) at 2^16 nodes.
_QMC_ERROR = {"sigmoid": 1e-3, "tanh": 5e-3, "gelu": 5e-3}


def stated_error(student: Mixture, teacher: Mixture) -> float:
    """The relative error ε that `mixture_loss` is stated to meet for this pair of families.

    Measured at the test size (m = 4, m* = 2, D = 12, default nodes) as about
    four times the RMS spread of the rule over independent scramblings,
    rounded up (benchmarks/results/kernel-families-*.md), and held against
    10⁷-sample Monte Carlo references by tests/test_families.py:
    ``|L − L_MC| ≤ 4·SE + ε·L_MC``. Larger problems (more gate coordinates
    n_g) have larger errors at the same node budget; the benchmark reports
    the spread at the default size too.

    **Returns:** ε, a float (1e-12 exact kernel, 1e-10 pair kernel).
    """
    rule = loss_rule(student, teacher)
    if rule == "exact":
        return _EXACT_ERROR
    if rule == "pair kernel":
        return _PAIR_KERNEL_ERROR
    if rule == "conditional":
        error = CONDITIONAL_ERROR[max(rule_degree(student), rule_degree(teacher))]
        if any(m.gate.name == "hierarchical" for m in (student, teacher)):
            error *= _HIERARCHICAL_FACTOR
        return error
    return max(_QMC_ERROR[m.expert_fn.activation] for m in (student, teacher) if m.expert_fn.name == "mlp")


def rule_nodes(
    student: Mixture, teacher: Mixture, *, nodes: int | None = None, seed: int = SOBOL_SEED
) -> tuple[np.ndarray, np.ndarray] | None:
    """The node set `mixture_loss` integrates over for this pair, or ``None`` for the kernels.

    ``gaussian_nodes(n_g, nodes, degree, seed)`` over the n_g gate
    coordinates for the conditional rule, ``gaussian_nodes(D', nodes, 0,
    seed)`` over the D' = min(D, k) span coordinates for quasi-Monte Carlo.
    With `loss_on_nodes` it evaluates the rule for other scramblings
    (`seed`) under one compilation: their spread estimates the rule's error
    (benchmarks/kernel.py --families).

    Example::

        import jaxmoe.families, jaxmoe.quadrature as Q
        teacher = jaxmoe.families.init_mixture_teacher(2, 12, "softmax", "he3", key=jax.random.PRNGKey(0))
        student = jaxmoe.families.init_mixture_student(4, 12, "softmax", "he3", key=jax.random.PRNGKey(1))
        rule = jax.jit(Q.loss_on_nodes)
        assert np.allclose(rule(student, teacher, *Q.rule_nodes(student, teacher)), Q.mixture_loss(student, teacher))
        other = rule(student, teacher, *Q.rule_nodes(student, teacher, seed=1))   # scrambled by seed 1, same compilation
        assert abs(other - Q.mixture_loss(student, teacher)) < Q.stated_error(student, teacher) * other
    """
    rule = loss_rule(student, teacher)
    if rule == "conditional":
        order = max(rule_degree(student), rule_degree(teacher))
        n_g = sum(sum(v.shape[0] for v in gate_vectors(m)) for m in (student, teacher))
        return gaussian_nodes(n_g, nodes or CONDITIONAL_NODES, order, seed)
    if rule == "quasi-monte carlo":
        return gaussian_nodes(min(student.dim, span_size(student, teacher)), nodes or QMC_NODES, 0, seed)
    return None


def loss_on_nodes(student: Mixture, teacher: Mixture, points, weights, *, t=None) -> Scalar:
    """`mixture_loss`'s conditional or quasi-Monte Carlo rule on the given nodes (arrays, may be traced).

    **Arguments:** `student`, `teacher`; `points`, `weights` as returned by
    `rule_nodes`; `t`. **Returns:** a scalar. **Raises:** `ValueError` for a
    pair that `mixture_loss` computes by a kernel (no nodes).
    """
    check_pair(student, teacher, Mixture)
    rule = loss_rule(student, teacher)
    if rule == "conditional":
        return conditional_on_nodes(student, teacher, points, weights, t)
    if rule == "quasi-monte carlo":
        return quasi_monte_carlo_on_nodes(student, teacher, points, weights, t)
    raise ValueError(f"the {rule!r} rule has no nodes")


def mixture_loss(student: Model, teacher: Model, t=None, *, nodes: int | None = None, frame: bool = True) -> Scalar:
    """The population loss ``½ E[(f_student − f_teacher)²]`` by the best rule for the families.

    Dispatches by `loss_rule`: the exact kernel, the pair kernel, the
    conditional rule (`conditional_loss`) or quasi-Monte Carlo
    (`quasi_monte_carlo_loss`); module docstring. Its stated relative
    error for the pair is `stated_error`. Differentiable (for the
    conditional and quasi-Monte Carlo rules, the exact gradient of the rule
    itself: module docstring, "Gradients"), jittable, vmappable over seeds
    (`jax.vmap` over the arrays of the `Mixture`s), in float32 and float64.

    **Arguments:**

    - `student`, `teacher`: models (`Mixture` or `jaxmoe.MoE`) with the same D.
    - `t`: gradient-flow time, for a gate with a temperature schedule
      (``None``: t = 0).
    - `nodes`: the node budget of the conditional or quasi-Monte Carlo rule
      (default `CONDITIONAL_NODES`, `QMC_NODES`; ignored by the kernels).
    - `frame`: False runs quasi-Monte Carlo in the coordinates as given, not
      in the frame of the span (`quasi_monte_carlo_loss`; ignored by the
      other rules, which have no frame).

    **Returns:** a scalar.

    This is the one place that picks the loss rule, and the loss the
    simulator (flow, discrete training, observables) calls for any pair of
    models; a pair of `jaxmoe.MoE` goes straight to the exact kernel without
    any conversion.

    **Raises:** `TypeError` for models that are not `jaxmoe.base.Model`
    instances, `ValueError` for batched arrays or different D.

    Example::

        import jaxmoe.families, jaxmoe.quadrature
        teacher = jaxmoe.families.init_mixture_teacher(2, 8, "softmax", "linear", key=jax.random.PRNGKey(0))
        student = jaxmoe.families.init_mixture_student(4, 8, "softmax", "linear", key=jax.random.PRNGKey(1))
        loss, grad = jax.value_and_grad(jaxmoe.quadrature.mixture_loss)(student, teacher)
        assert grad.router.shape == student.router.shape == (4, 8)
    """
    check_pair(student, teacher, Model)
    rule = loss_rule(student, teacher)
    if rule == "exact":
        return population_loss(as_moe(student), as_moe(teacher))
    student, teacher = as_mixture(student), as_mixture(teacher)
    if rule == "pair kernel":
        return independent_loss(student, teacher)
    if rule == "conditional":
        return conditional_loss(student, teacher, t=t, nodes=nodes or CONDITIONAL_NODES)
    return quasi_monte_carlo_loss(student, teacher, t=t, nodes=nodes or QMC_NODES, frame=frame)
