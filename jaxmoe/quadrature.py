"""The population loss for every gate and expert family.

    L(θ) = ½ E_z[(f_student(z) − f_teacher(z))²],   z ~ N(0, I_D)

in the model's own coordinates D (d, or the reduced dimension of docs/model.md §3).
`mixture_loss` picks the most accurate rule that applies (`loss_rule`):

1. ``"exact"``: independent sigmoid/erf gates with He experts on both sides:
   the Hermite/Mehler kernel (`jaxmoe.population.population_loss`), ~1e-13.
2. ``"pair kernel"``: independent gates with He or linear experts:
   `jaxmoe.pairkernel.independent_loss`, four-dimensional Gauss–Hermite per
   pair of units, ~1e-12.
3. ``"conditional"``: any gates (softmax, temperature, activation,
   hierarchical, top-k, or mixed), He or linear experts: `conditional_loss`.
   The expert projections are integrated in closed form given the gate
   coordinates, and only the gate coordinates by quadrature (below).
4. ``"quasi-monte carlo"``: mlp experts with any gate: `quasi_monte_carlo_loss`,
   a fixed scrambled-Sobol rule in all coordinates of the span.

**The conditional rule.** Stack the gate vectors (unit routers, unit group
routers; student, then teacher) and then the expert vectors (unit w̄ for He,
raw w for linear) as the columns of U, and take the orthonormal frame Q of
`jaxmoe.pairkernel.orthonormal_frame` (modified Gram–Schmidt in plain jnp
operations: no LAPACK call, which can deadlock on a two-thread CPU pool).
The projections are ``Uᵀz = L g``, ``L = UᵀQ`` lower triangular (the
Cholesky factor of the Gram matrix UᵀU, so the rule depends on the vectors'
inner products only: d and reduced coordinates give the same value),
g ~ N(0, I). The gates depend only on the first
n_g coordinates y; expert i's projection is ``a_i = α_i·y + β_i·h`` with h the
remaining coordinates, independent of y. So

    L = ½ E_y[ Σ_{i,j} s_i s_j g_i(y) g_j(y) M_ij(y) ],   M_ij(y) = E_h[φ_i(a_i) φ_j(a_j)],

s = +1 for student experts, −1 for teacher experts. Given y, (a_i, a_j) is
Gaussian with means μ = α·y and covariance C_ij = β_i·β_j, and for
polynomials φ the expansion about independence (Price's theorem; the
generating function e^{as − s²/2} = Σ_k He_k(a) s^k/k! gives the same)

    E[φ_i(a_i) φ_j(a_j)] = Σ_c C_ij^c / c! · E[φ_i^(c)(a_i)] E[φ_j^(c)(a_j)]

is finite (c ≤ the degrees), with, for a ~ N(μ, 1 + A),
``E[He_n(a)] = e_n``, ``e_0 = 1, e_1 = μ, e_{n+1} = μ e_n + n A e_{n−1}``
(so e_n = n! p_n(μ, A), ``p_n = Σ_j μ^{n−2j} (A/2)^j / ((n−2j)! j!)``) and
``He_k^(c) = k!/(k−c)! He_{k−c}``; a linear expert is ``a + b``. The whole
integrand is a polynomial in α, β and the biases: no square roots, and the
self-pairs (C_ii = ‖β_i‖²) need no special case. With
``R_c = [s_i g_i(y) E[φ_i^(c)]/√c!]`` (nodes × experts),

    L ≈ ½ Σ_c Σ_{i,j} (C^∘c)_ij (R_cᵀ W R_c)_ij,   W = diag(node weights).

The y-integral (n_g = m + m* (+ groups) dimensions; smooth bounded gates
times polynomials of degree ≤ 2·max degree) uses `gaussian_nodes`.

**Nodes** (`gaussian_nodes`): for n ≤ 3 coordinates the tensor Gauss–Hermite
rule; beyond, 2^p scrambled Sobol points (Owen scrambling, fixed seed, built
once on the host and cached) mapped to Gaussians through the inverse normal
CDF, made antithetic (u and −u, so every odd part integrates to zero), and
spread by a factor σ with the density ratio as weight (importance sampling
from N(0, σ²I)): the polynomial tails of He experts then decay like
e^{−(1 − 1/σ²) z²/2} on the cube instead of growing at its faces, which is
where plain Sobol + inverse CDF loses its accuracy (measured: `_spread`).

Because the nodes and weights are constants, every rule is a smooth function
of the parameters, so an ODE solver's step control behaves; Monte Carlo
resampling would feed it noise.

**Gradients.** The conditional and quasi-Monte Carlo rules are
differentiated through their frame Q, so `jax.grad` gives the exact gradient
of the rule: finite differences of the rule agree with it, and the rule's
loss decreases along the simulated gradient flow. Holding Q fixed, as the
pair kernel may (its integral over the frame coordinates is exact), would be
wrong here: a router perturbed towards an expert direction would then read
the h coordinates, which the closed form assumes it does not (a directional
derivative off by 28%, measured). The gradient's error relative to |∇L| is
larger than the loss's relative error (about the same absolute error on a
smaller quantity; tables in benchmarks/results/kernel-families-*.md). For
top-k gates the rule is piecewise smooth, and its gradient is the expected
per-sample gradient E[∇_θ ½(f_s − f_t)²], the mean of what SGD follows,
not the derivative of the population loss, which has an extra term from the
boundaries where the selected set changes (the two differ by 7% for linear
and 25% for He3 experts at m = 4, m* = 2, D = 12, measured by finite
differences of a 2^19-node rule with steps 3e-3 to 1e-2).

**Accuracy** (benchmarks/results/kernel-families-*.md; tests/test_families.py
holds every pair to ``|L − L_MC| ≤ 4·SE + ε·L_MC`` against 10⁷-sample Monte
Carlo references, ε = `stated_error`). The error of a fixed-node rule is
measured as its spread over independent scramblings, relative to L, at
m = 4, m* = 2, D = 12 with the default nodes:

==============================  ==============  ==============
rule, families                  loss            gradient (/|∇L|)
==============================  ==============  ==============
conditional, linear / He1       1.5e-4–4.8e-4   1e-3–6e-3
conditional, He2                6.6e-4          1e-2
conditional, He3 (any gate)     0.9e-3–2.9e-3   4e-2–8e-2
conditional, He4                2.0e-3          8e-2
conditional, hierarchical + He3 4.2e-3          1.5e-1
QMC, mlp (sigmoid, tanh, GELU)  1.4e-4–8.9e-4   7e-4–7e-3
==============================  ==============  ==============

At m = 25, m* = 5, D = 60 (30 gate coordinates) the loss spreads are 9e-3
(softmax + He3), 2e-3 (linear) and 5e-3 (mlp, tanh). The gradient's error
is about the loss's absolute error on a much smaller quantity. One loss and
gradient (jit, warm, one CPU core) take 19 ms (He3), 11 ms (linear), 18 ms
(mlp) at the small size and 230, 120, 200 ms at the larger one.

`mixture_loss_monte_carlo` is the plain, obviously-correct reference.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, Scalar

from .families import Mixture, gate_weights, mixture_forward
from .model import MoE, unit
from .pairkernel import independent_loss, orthonormal_frame
from .population import population_loss

__all__ = [
    "gaussian_nodes",
    "mixture_loss",
    "conditional_loss",
    "quasi_monte_carlo_loss",
    "mixture_loss_monte_carlo",
    "loss_rule",
    "rule_nodes",
    "stated_error",
    "loss_on_nodes",
    "is_exact",
    "uses_pair_kernel",
    "RULES",
]

RULES = ("exact", "pair kernel", "conditional", "quasi-monte carlo")

# Node budget of the conditional rule (over the n_g gate coordinates) and of
# the quasi-Monte Carlo rule (over all coordinates).
CONDITIONAL_NODES = 2**15
QMC_NODES = 2**16
# Gauss–Hermite is used up to this many coordinates; beyond, a tensor rule
# needs too many nodes for its accuracy to pay off.
MAX_GAUSS_HERMITE_DIM = 3
# NumPy's Gauss–Hermite rule overflows beyond about 150 nodes.
_MAX_GH_PER_AXIS = 150
# Seed of the fixed Owen scrambling of the Sobol points.
SOBOL_SEED = 20251008


def _spread(dim: int, degree: int) -> float:
    """σ of the importance-sampling law N(0, σ²I) of the Sobol rule: ``σ² = 1 + SPREAD·degree/√dim``.

    The weight σ^n e^{−(σ² − 1)|u|²/2} has second moment ≈ e^{n (σ²−1)²}, so
    σ² − 1 ∝ n^{−1/2} keeps the weights' spread the same in every dimension;
    and the faster the integrand grows (polynomial experts of degree K give
    integrands of degree 2K), the more spread pays. Measured (conditional
    rule, sigmoid gates against the exact kernel, n = 6, N = 2^16, RMS over
    six scramblings): He3 1.7e-3 → 1.7e-4, He4 7.0e-3 → 3.8e-4, linear
    6.2e-5 → 5.8e-5, against σ = 1.
    """
    return math.sqrt(1.0 + SPREAD * degree / math.sqrt(dim))


# σ² − 1 per degree at n = 1 (He3 in n = 6 gate coordinates: σ = 1.20).
SPREAD = 0.36


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}; got {value!r}")


@functools.lru_cache(maxsize=32)
def gaussian_nodes(
    dim: int, nodes: int = CONDITIONAL_NODES, degree: int = 0, seed: int = SOBOL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed nodes and weights for E[g(z)], z ~ N(0, I_dim): ``Σ_n ω_n g(z_n)``.

    **Arguments:**

    - `dim`: the number of coordinates n.
    - `nodes`: the node budget N. For n ≤ 3 the tensor Gauss–Hermite rule
      with ``min(150, round(N^(1/n)))`` nodes per axis; otherwise
      ``2^⌈log₂(N/2)⌉`` scrambled Sobol points u_k (scipy.stats.qmc.Sobol,
      Owen scrambling, seed `SOBOL_SEED`) mapped to Gaussians by the inverse
      normal CDF, with their antithetic partners, spread by
      σ = `_spread(n, degree)`: z = σu, ω ∝ σ^n e^{−(σ²−1)|u|²/2}
      (importance sampling from N(0, σ²I); module docstring).
    - `degree`: how fast the integrand grows, as the polynomial degree of
      the experts (0: bounded; 1: linear; k: He_k). Sets σ (σ = 1 at 0).
    - `seed`: the seed of the Owen scrambling (default `SOBOL_SEED`); other
      seeds give independent randomised rules, whose spread measures the
      rule's error (benchmarks/kernel.py --families).

    **Returns:** ``(points, weights)``: float64 NumPy arrays of shapes
    ``(N', n)`` and ``(N',)``; the weights sum to 1 (Gauss–Hermite) or to
    1 ± O(N^{-1}) (Sobol, unnormalised so that the rule stays unbiased under
    random scrambling). Cached per arguments, and read-only.

    Example::

        z, w = gaussian_nodes(6, 4096)
        w @ z[:, 0] ** 2      # ≈ 1
    """
    _check_int("dim", dim, 1)
    _check_int("nodes", nodes, 2)
    _check_int("degree", degree, 0)
    _check_int("seed", seed, 0)
    if dim <= MAX_GAUSS_HERMITE_DIM:
        per_axis = min(_MAX_GH_PER_AXIS, max(2, round(nodes ** (1.0 / dim))))
        z1, w1 = np.polynomial.hermite_e.hermegauss(per_axis)
        w1 = w1 / w1.sum()
        grids = np.meshgrid(*([z1] * dim), indexing="ij")
        points = np.stack([g.ravel() for g in grids], axis=-1)
        weights = functools.reduce(np.multiply.outer, [w1] * dim).ravel()
        return _read_only(points, weights)
    from scipy.special import ndtri
    from scipy.stats import qmc

    half = 2 ** max(0, math.ceil(math.log2(nodes / 2)))
    u = ndtri(qmc.Sobol(dim, scramble=True, seed=seed).random(half))
    u = np.concatenate([u, -u])
    sigma = _spread(dim, degree)
    log_weight = dim * math.log(sigma) - 0.5 * (sigma**2 - 1.0) * np.sum(u * u, axis=1)
    return _read_only(sigma * u, np.exp(log_weight) / len(u))


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    # The cache hands the same arrays to every caller.
    for a in arrays:
        a.setflags(write=False)
    return arrays


# ---------------------------------------------------------------------------
# Dispatch


def is_exact(student: Mixture, teacher: Mixture) -> bool:
    """True when `mixture_loss` uses the exact kernel: independent gates and He experts on both sides."""
    return all(model.gate.independent and model.expert_fn.hermite for model in (student, teacher))


def _polynomial(model: Mixture) -> bool:
    return model.expert_fn.hermite or model.expert_fn.name == "linear"


def uses_pair_kernel(student: Mixture, teacher: Mixture) -> bool:
    """True when `mixture_loss` uses `jaxmoe.pairkernel.independent_loss`.

    Independent gates on both sides, polynomial experts (He or linear) on
    both sides, not both He (that case is `is_exact`). The pair kernel is
    then accurate to about 1e-12 relative. mlp experts are not dispatched
    there: tanh/sigmoid units have poles at ±iπ/2 (±iπ), so tensor
    Gauss–Hermite in four dimensions converges too slowly.
    """
    independent = all(m.gate.independent for m in (student, teacher))
    return independent and _polynomial(student) and _polynomial(teacher) and not is_exact(student, teacher)


def loss_rule(student: Mixture, teacher: Mixture) -> str:
    """Which rule `mixture_loss` uses for this pair of families: one of `RULES`.

    ``"exact"`` (`is_exact`), ``"pair kernel"`` (`uses_pair_kernel`),
    ``"conditional"`` (He or linear experts on both sides, any gates:
    `conditional_loss`), else ``"quasi-monte carlo"`` (mlp experts:
    `quasi_monte_carlo_loss`). Depends on the families only (static).

    Example::

        teacher = init_mixture_teacher(2, 12, "softmax", "he3", key=jax.random.PRNGKey(0))
        student = init_mixture_student(4, 12, "softmax", "he3", key=jax.random.PRNGKey(1))
        loss_rule(student, teacher), stated_error(student, teacher)   # ("conditional", 0.01)
    """
    if is_exact(student, teacher):
        return "exact"
    if uses_pair_kernel(student, teacher):
        return "pair kernel"
    if _polynomial(student) and _polynomial(teacher):
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
_CONDITIONAL_ERROR = {1: 2e-3, 2: 5e-3, 3: 1e-2, 4: 1e-2}
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
        error = _CONDITIONAL_ERROR[max(rule_degree(student), rule_degree(teacher))]
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

        points, weights = rule_nodes(student, teacher, seed=1)
        jax.jit(loss_on_nodes)(student, teacher, points, weights)   # the rule, scrambled by seed 1
    """
    rule = loss_rule(student, teacher)
    if rule == "conditional":
        order = max(rule_degree(student), rule_degree(teacher))
        n_g = sum(sum(v.shape[0] for v in gate_vectors(m)) for m in (student, teacher))
        return gaussian_nodes(n_g, nodes or CONDITIONAL_NODES, order, seed)
    if rule == "quasi-monte carlo":
        return gaussian_nodes(min(student.dim, _span_size(student, teacher)), nodes or QMC_NODES, 0, seed)
    return None


def loss_on_nodes(student: Mixture, teacher: Mixture, points, weights, *, t=None) -> Scalar:
    """`mixture_loss`'s conditional or quasi-Monte Carlo rule on the given nodes (arrays, may be traced).

    **Arguments:** `student`, `teacher`; `points`, `weights` as returned by
    `rule_nodes`; `t`. **Returns:** a scalar. **Raises:** `ValueError` for a
    pair that `mixture_loss` computes by a kernel (no nodes).
    """
    _check_pair(student, teacher)
    rule = loss_rule(student, teacher)
    if rule == "conditional":
        return _conditional_on_nodes(student, teacher, points, weights, t)
    if rule == "quasi-monte carlo":
        return _quasi_monte_carlo_on_nodes(student, teacher, points, weights, t)
    raise ValueError(f"the {rule!r} rule has no nodes")


def _check_pair(student, teacher) -> None:
    if not isinstance(student, Mixture) or not isinstance(teacher, Mixture):
        raise TypeError("student and teacher must be jaxmoe.families.Mixture instances")
    if student.router.ndim != 2 or teacher.router.ndim != 2:
        raise ValueError("the loss takes one student and one teacher (arrays (m, D)); use jax.vmap for seeds")
    if student.dim != teacher.dim:
        raise ValueError(f"student and teacher must share the dimension; got D = {student.dim} and D = {teacher.dim}")


def _as_moe(model: Mixture) -> MoE:
    return MoE(model.router, model.expert, model.gate.name, model.expert_fn.name)


def mixture_loss(student: Mixture, teacher: Mixture, *, t=None, nodes: int | None = None) -> Scalar:
    """The population loss ``½ E[(f_student − f_teacher)²]`` by the best rule for the families.

    Dispatches by `loss_rule`: the exact kernel, the pair kernel, the
    conditional rule (`conditional_loss`) or quasi-Monte Carlo
    (`quasi_monte_carlo_loss`); module docstring. Its stated relative
    error for the pair is `stated_error`. Differentiable (for the
    conditional and quasi-Monte Carlo rules, the exact gradient of the rule
    itself: module docstring, "Gradients"), jittable, vmappable over seeds
    (`jax.vmap` over the arrays of the `Mixture`s), in float32 and float64.

    **Arguments:**

    - `student`, `teacher`: `Mixture` models with the same D.
    - `t`: gradient-flow time, for a gate with a temperature schedule
      (``None``: t = 0).
    - `nodes`: the node budget of the conditional or quasi-Monte Carlo rule
      (default `CONDITIONAL_NODES`, `QMC_NODES`; ignored by the kernels).

    **Returns:** a scalar.

    **Raises:** `TypeError` for non-`Mixture` models, `ValueError` for
    batched arrays or different D.

    Example::

        teacher = init_mixture_teacher(2, 8, "softmax", "linear", key=jax.random.PRNGKey(0))
        student = init_mixture_student(4, 8, "softmax", "linear", key=jax.random.PRNGKey(1))
        loss, grad = jax.value_and_grad(mixture_loss)(student, teacher)
    """
    _check_pair(student, teacher)
    rule = loss_rule(student, teacher)
    if rule == "exact":
        return population_loss(_as_moe(student), _as_moe(teacher))
    if rule == "pair kernel":
        return independent_loss(student, teacher)
    if rule == "conditional":
        return conditional_loss(student, teacher, t=t, nodes=nodes or CONDITIONAL_NODES)
    return quasi_monte_carlo_loss(student, teacher, t=t, nodes=nodes or QMC_NODES)


# ---------------------------------------------------------------------------
# The conditional rule


def gate_vectors(model: Mixture) -> list[Array]:
    """The unit vectors the gate reads: routers, then group routers (hierarchical)."""
    vectors = [unit(model.router)]
    if model.gate.name == "hierarchical":
        vectors.append(unit(model.group_router))
    return vectors


def expert_vectors(model: Mixture) -> Array:
    """The vectors the experts read: w̄_i (He), w_i (linear), the rows W_ir (mlp), shape (·, D)."""
    if model.expert_fn.hermite:
        return unit(model.expert)
    return model.expert.reshape(-1, model.dim)


def _gates_in_frame(model: Mixture, coords: Array, y: Array, t) -> Array:
    """g(y) of `model`, its gate vectors given by their frame coordinates `coords` (rows: routers, group routers)."""
    m = model.num_experts
    router, group = coords[:m], (coords[m:] if model.gate.name == "hierarchical" else None)
    reduced = Mixture(router, jnp.zeros_like(router), group, None, None, model.gate, "he1")
    return gate_weights(reduced, y, t)


def rule_degree(model: Mixture) -> int:
    """The expert's degree for the conditional rule's node count: its polynomial degree, 1 for mlp."""
    return model.expert_fn.degree or 1


def _derivative_moments(model: Mixture, mean: Array, excess: Array, order: int) -> list[Array]:
    """``[E[φ_i^(c)(a_i)] for c = 0 … order]``, a_i ~ N(mean_i, 1 + excess_i); each of shape ``mean.shape``.

    He_k: ``k!/(k−c)! e_{k−c}`` with ``e_{n+1} = μ e_n + n A e_{n−1}``;
    linear ``a + b``: μ + b, 1, then 0.
    """
    zero = jnp.zeros_like(mean)
    if model.expert_fn.name == "linear":
        return [mean + model.bias, jnp.ones_like(mean)] + [zero] * (order - 1)
    k = rule_degree(model)
    e = [jnp.ones_like(mean), mean]
    for n in range(1, k):
        e.append(mean * e[n] + n * excess * e[n - 1])
    return [math.factorial(k) / math.factorial(k - c) * e[k - c] if c <= k else zero for c in range(order + 1)]


def conditional_loss(
    student: Mixture, teacher: Mixture, *, t=None, nodes: int = CONDITIONAL_NODES, seed: int = SOBOL_SEED
) -> Scalar:
    """``½ E[(f_s − f_t)²]`` for He or linear experts and any gates: closed form given the gate coordinates.

    See the module docstring for the formula. The y-integral over the n_g
    gate coordinates uses ``gaussian_nodes(n_g, nodes)``.

    **Arguments:** `student`, `teacher` (`Mixture`, He or linear experts; any
    gates, families may differ); `t` (gradient-flow time, for a τ schedule);
    `nodes`, the node budget, and `seed`, the scrambling, of `gaussian_nodes`.

    **Returns:** a scalar. Differentiable (first order), jittable, vmappable.

    Example::

        teacher = init_mixture_teacher(2, 12, "softmax", "he3", key=jax.random.PRNGKey(0))
        student = init_mixture_student(4, 12, "softmax", "he3", key=jax.random.PRNGKey(1))
        conditional_loss(student, teacher)     # ≈ mixture_loss_monte_carlo(…)[0]
    """
    _check_pair(student, teacher)
    if not (_polynomial(student) and _polynomial(teacher)):
        raise ValueError("the conditional rule needs He or linear experts on both sides; use quasi_monte_carlo_loss")
    order = max(rule_degree(student), rule_degree(teacher))
    n_g = sum(sum(v.shape[0] for v in gate_vectors(m)) for m in (student, teacher))
    points, weights = gaussian_nodes(n_g, nodes, order, seed)
    return _conditional_on_nodes(student, teacher, points, weights, t)


def _conditional_on_nodes(student: Mixture, teacher: Mixture, points, weights, t) -> Scalar:
    """`conditional_loss` with the y-nodes and weights given (NumPy or traced arrays)."""
    order = max(rule_degree(student), rule_degree(teacher))
    models = (student, teacher)
    gates = [jnp.concatenate(gate_vectors(m)) for m in models]
    experts = [expert_vectors(m) for m in models]
    sizes_g = [g.shape[0] for g in gates]
    n_g = sum(sizes_g)
    u = jnp.concatenate(gates + experts).T  # (D, k): gate vectors first
    # Differentiated through Q (module docstring, "Gradients"): the gradient
    # is the exact gradient of this rule.
    frame = u.T @ orthonormal_frame(u, stop_gradient=False)  # (k, k), lower triangular
    router_s, router_t = frame[: sizes_g[0], :n_g], frame[sizes_g[0] : n_g, :n_g]
    alpha, beta = frame[n_g:, :n_g], frame[n_g:, n_g:]  # experts: a = α·y + β·h
    cov = beta @ beta.T  # (m + m*, m + m*): Cov(a_i, a_j | y)
    excess = jnp.diagonal(cov) - 1.0  # Var(a_i | y) − 1
    powers = [cov**c for c in range(1, order + 1)]
    m = student.num_experts

    def block(y, w):
        """Σ_n w_n (integrand at y_n) over one block of nodes."""
        g_s = _gates_in_frame(student, router_s, y, t)
        g_t = _gates_in_frame(teacher, router_t, y, t)
        signed = jnp.concatenate([g_s, -g_t], axis=1)  # (n, m + m*)
        mean = y @ alpha.T  # (n, m + m*)
        moments_s = _derivative_moments(student, mean[:, :m], excess[:m], order)
        moments_t = _derivative_moments(teacher, mean[:, m:], excess[m:], order)
        total = jnp.zeros((), y.dtype)
        for c, (a, b) in enumerate(zip(moments_s, moments_t)):
            r = signed * jnp.concatenate([a, b], axis=1) / math.sqrt(math.factorial(c))
            gram = (r * w[:, None]).T @ r  # Σ_n w_n r_n r_nᵀ
            # C^∘0 is all ones: sum the Gram matrix rather than multiply by a
            # constant matrix (XLA CPU's YNN fusion of dot·mul·reduce with a
            # broadcast constant miscompiles in jaxlib 0.10.2; tests check jit).
            total = total + (jnp.sum(gram) if c == 0 else jnp.sum(powers[c - 1] * gram))
        return total

    return 0.5 * _blockwise(block, points, weights, u.dtype)


# Nodes per block of the conditional and quasi-Monte Carlo rules: the
# per-node arrays of a block stay in cache (measured: 2^16 nodes in one block
# cost 3–10× the time of 2^14).
NODE_BLOCK = 2**13


def _blockwise(fn, points, weights, dtype) -> Array:
    """``Σ_blocks fn(points_block, weights_block)`` with `lax.map` over blocks of `NODE_BLOCK` nodes."""
    points, weights = jnp.asarray(points, dtype), jnp.asarray(weights, dtype)
    n = weights.shape[0]
    blocks = -(-n // NODE_BLOCK)
    if blocks == 1:
        return fn(points, weights)
    # Padded nodes get weight 0 at the origin, where every integrand is finite.
    pad = blocks * NODE_BLOCK - n
    points = jnp.pad(points, ((0, pad), (0, 0))).reshape(blocks, NODE_BLOCK, -1)
    weights = jnp.pad(weights, (0, pad)).reshape(blocks, NODE_BLOCK)
    return jnp.sum(jax.lax.map(lambda a: fn(*a), (points, weights)))


# ---------------------------------------------------------------------------
# Quasi-Monte Carlo over the span


def _in_frame(model: Mixture, q: Array) -> Mixture:
    """`model` with every vector replaced by its coordinates in the frame Q (D × r)."""
    router = unit(model.router) @ q
    group = unit(model.group_router) @ q if model.group_router is not None else None
    expert = (unit(model.expert) if model.expert_fn.hermite else model.expert) @ q
    return Mixture(router, expert, group, model.bias, model.output, model.gate, model.expert_fn)


def quasi_monte_carlo_loss(
    student: Mixture, teacher: Mixture, *, t=None, nodes: int = QMC_NODES, seed: int = SOBOL_SEED
) -> Scalar:
    """``½ Σ_n ω_n (f_s − f_t)²(z_n)`` over the nodes of `gaussian_nodes` in the span of all vectors.

    When the k vectors of both models (gate, group and expert vectors, mlp
    rows) are at most D, the models are first written in an orthonormal
    frame of their span (`orthonormal_frame`, gate vectors first,
    differentiated through), so the rule runs in k coordinates and gives the
    same value in d coordinates and in reduced ones; otherwise in the D
    coordinates as given. Any gate and expert family.

    **Arguments:** `student`, `teacher`, `t`, `nodes` as in `mixture_loss`;
    `seed` of the scrambling (`gaussian_nodes`).

    **Returns:** a scalar. Differentiable (first order), jittable, vmappable.
    """
    _check_pair(student, teacher)
    points, weights = gaussian_nodes(min(student.dim, _span_size(student, teacher)), nodes, 0, seed)
    return _quasi_monte_carlo_on_nodes(student, teacher, points, weights, t)


def _span_size(student: Mixture, teacher: Mixture) -> int:
    """k, the number of vectors both models read (gate, group and expert vectors, mlp rows)."""
    return sum(v.shape[0] for m in (student, teacher) for v in gate_vectors(m) + [expert_vectors(m)])


def _quasi_monte_carlo_on_nodes(student: Mixture, teacher: Mixture, points, weights, t) -> Scalar:
    """`quasi_monte_carlo_loss` with the nodes and weights given (NumPy or traced arrays)."""
    models = (student, teacher)
    vectors = [v for m in models for v in gate_vectors(m)] + [expert_vectors(m) for m in models]
    u = jnp.concatenate(vectors).T  # (D, k)
    if u.shape[1] <= student.dim:
        # In the frame of the span: the same rule whatever the coordinates
        # (d, or the reduced ones, where k = D), so a reduced simulation and
        # its d-dimensional original see the same nodes.
        q = orthonormal_frame(u, stop_gradient=False)
        student, teacher = _in_frame(student, q), _in_frame(teacher, q)

    def block(z, w):
        diff = mixture_forward(student, z, t) - mixture_forward(teacher, z, t)
        return jnp.dot(w, diff**2)

    return 0.5 * _blockwise(block, points, weights, student.router.dtype)


# ---------------------------------------------------------------------------
# Monte Carlo reference


def mixture_loss_monte_carlo(
    student: Mixture,
    teacher: Mixture,
    *,
    key: PRNGKeyArray,
    num_samples: int = 1_000_000,
    batch_size: int = 2**16,
    t=None,
) -> tuple[Scalar, Scalar]:
    """Monte Carlo estimate of ``½ E[(f_student − f_teacher)²]`` and its standard error.

    Draws ``n = num_samples`` (rounded up to whole batches) inputs
    z ~ N(0, I_D) in batches of `batch_size` (memory ∝ batch_size·D, so 10⁷
    samples fit anywhere), batch b from ``fold_in(key, b)``, and returns the
    sample mean of ``½(f_s − f_t)²`` and ``√(s²/n)``, s² the unbiased sample
    variance.

    **Returns:** ``(mean, standard_error)``, two scalars.
    """
    _check_pair(student, teacher)
    if num_samples < 2 or batch_size < 1:
        raise ValueError("num_samples must be at least 2 and batch_size at least 1")
    num_batches = -(-num_samples // batch_size)
    dtype = student.router.dtype

    @jax.jit
    def run(student, teacher, key, t):
        def body(carry, index):
            total, total_sq = carry
            z = jax.random.normal(jax.random.fold_in(key, index), (batch_size, student.dim), dtype)
            sample = 0.5 * (mixture_forward(student, z, t) - mixture_forward(teacher, z, t)) ** 2
            return (total + sample.sum(), total_sq + (sample**2).sum()), None

        zero = jnp.zeros((), dtype)
        (total, total_sq), _ = jax.lax.scan(body, (zero, zero), jnp.arange(num_batches))
        return total, total_sq

    total, total_sq = run(student, teacher, key, t)
    n = num_batches * batch_size
    mean = total / n
    variance = (total_sq / n - mean**2) * n / (n - 1)
    return mean, jnp.sqrt(variance / n)
