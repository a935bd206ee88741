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

from ._common import NODE_BLOCK, blockwise, expert_vectors, gate_vectors, is_polynomial, rule_degree
from ._conditional import conditional_loss
from ._dispatch import CONDITIONAL_ERROR, is_exact, loss_on_nodes, loss_rule, mixture_loss, rule_nodes, stated_error, uses_pair_kernel
from ._nodes import CONDITIONAL_NODES, LOSS_RULES, MAX_GAUSS_HERMITE_DIM, QMC_NODES, SOBOL_SEED, SPREAD, gaussian_nodes
from ._qmc import quasi_monte_carlo_loss
from ._reference import mixture_loss_monte_carlo

__all__ = [
    "CONDITIONAL_ERROR",
    "CONDITIONAL_NODES",
    "MAX_GAUSS_HERMITE_DIM",
    "NODE_BLOCK",
    "QMC_NODES",
    "SOBOL_SEED",
    "SPREAD",
    "blockwise",
    "expert_vectors",
    "gate_vectors",
    "is_polynomial",
    "rule_degree",
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
    "LOSS_RULES",
]
