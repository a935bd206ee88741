"""The conditional rule: expert projections in closed form given the gate coordinates."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Scalar

from ..base import check_pair
from ..families import Mixture, gate_weights
from ..pairkernel import orthonormal_frame
from ._common import blockwise, expert_vectors, gate_vectors, is_polynomial, rule_degree
from ._nodes import CONDITIONAL_NODES, SOBOL_SEED, gaussian_nodes

# ---------------------------------------------------------------------------
# The conditional rule


def _gates_in_frame(model: Mixture, coords: Array, y: Array, t) -> Array:
    """g(y) of `model`, its gate vectors given by their frame coordinates `coords` (rows: routers, group routers)."""
    m = model.num_experts
    router, group = coords[:m], (coords[m:] if model.gate.name == "hierarchical" else None)
    reduced = Mixture(router, jnp.zeros_like(router), group, None, None, model.gate, "he1")
    return gate_weights(reduced, y, t)


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

        import jaxmoe.families, jaxmoe.quadrature
        teacher = jaxmoe.families.init_mixture_teacher(2, 12, "softmax", "he3", key=jax.random.PRNGKey(0))
        student = jaxmoe.families.init_mixture_student(4, 12, "softmax", "he3", key=jax.random.PRNGKey(1))
        loss = jaxmoe.quadrature.conditional_loss(student, teacher)
        mean, se = jaxmoe.quadrature.mixture_loss_monte_carlo(student, teacher, key=jax.random.PRNGKey(2), num_samples=10**5)
        assert abs(loss - mean) < 4 * se + 0.01 * mean      # within the rule's stated error (`stated_error`)
    """
    check_pair(student, teacher, Mixture)
    if not (is_polynomial(student) and is_polynomial(teacher)):
        raise ValueError("the conditional rule needs He or linear experts on both sides; use quasi_monte_carlo_loss")
    order = max(rule_degree(student), rule_degree(teacher))
    n_g = sum(sum(v.shape[0] for v in gate_vectors(m)) for m in (student, teacher))
    points, weights = gaussian_nodes(n_g, nodes, order, seed)
    return conditional_on_nodes(student, teacher, points, weights, t)


def conditional_on_nodes(student: Mixture, teacher: Mixture, points, weights, t) -> Scalar:
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

    return 0.5 * blockwise(block, points, weights, u.dtype)


# Nodes per block of the conditional and quasi-Monte Carlo rules: the
# per-node arrays of a block stay in cache (measured: 2^16 nodes in one block
# cost 3–10× the time of 2^14).
