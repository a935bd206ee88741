"""The population loss of independent gates with any expert family, pair by pair.

With independent gates (sigmoid, erf: g_i depends on v̄_i·x alone) the model
is a sum of *units* u, each a coefficient c_u times a gate on one direction
times a function of one more direction:

    f(x) = Σ_u c_u σ(v̄_u·x) φ_u(w_u·x)

- He_k experts: one unit per expert, φ = He_k, w = w̄_i (unit), c = 1;
- linear experts: one unit per expert, φ(z) = z + b_i, w = w_i, c = 1;
- mlp experts: one unit per hidden neuron (i, r), σ(v̄_i·x) shared by the
  h units of expert i, φ = act, w = W_ir, c = a_ir.

The loss is then a quadratic form over units, ``L = ½ Σ_{u,u'} s_u s_{u'}
c_u c_{u'} K(u,u')`` (s = +1 for the student, −1 for the teacher), with

    K(u,u') = E[σ(a₁) σ'(a₂) φ(c₁) φ'(c₂)],  (a₁, a₂, c₁, c₂) = (v̄_u, v̄_{u'}, w_u, w_{u'})·x,

a four-dimensional Gaussian integral. Each is computed by tensor
Gauss–Hermite quadrature in the Cholesky coordinates of the four projections
(as `jaxmoe.population.expert_kernel_reference`): an orthonormal basis Q of
the span of the four vectors, from `orthonormal_frame` (modified
Gram–Schmidt; rank-deficient pairs, such as a unit with itself, need no
special case: a dependent column of Q is zero), gives
``(a₁, a₂, c₁, c₂) = Lg``, ``L = UᵀQ`` lower triangular, g ~ N(0, I₄): the
gates depend on g₁, g₂ only. The gates get `router_nodes` points per axis;
polynomial experts (He, linear) need only the smallest rule exact for their
degree on g₃, g₄; mlp experts get `expert_nodes` points there.

**Gradients.** Q enters under `stop_gradient`. This gives the exact first
derivative: for a perturbation dU, ``dL = E[∇f(Uᵀx)·dUᵀx]`` and the part of x
orthogonal to span(Q) is independent of Qᵀx and has mean zero, so
``dL = E_g[∇f(Lg)·(dUᵀQ g)]``, which is what differentiating ``L = UᵀQ`` at
fixed Q computes (and the derivative of a polynomial expert's factor stays
within the exactness of the g₃, g₄ rule, which has one degree to spare).
Second derivatives would miss a term; nothing in jaxmoe takes them.

**Accuracy** (measured at D = 12, m = 4, m* = 2): for He and linear experts
the defaults agree with the exact Hermite/Mehler kernel (He3) to 1e-15, with
96 gate points to 6e-15 (linear), and with the conditional rule of
`jaxmoe.quadrature` (an independent method) to 1e-12 in value and
derivative where that rule is Gauss–Hermite; tests/test_families.py. For mlp
experts the rule converges slowly: tanh has poles at ±iπ/2 and one
dimensional Gauss–Hermite already leaves 1e-7 at 48 points, so
`expert_nodes` = 16 leaves about 1e-4 relative (tanh), 3e-6 (gelu), 1e-8
(sigmoid) at 2–6 s per loss and gradient on a 2-core CPU. `mixture_loss`
therefore does not dispatch mlp experts here.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Scalar

from .families import MLP_FUNCTIONS, Mixture
from .hermite import ACTIVATIONS, EXPERTS, gauss_hermite_rule
from .model import unit

__all__ = ["independent_loss", "orthonormal_frame", "ROUTER_NODES", "EXPERT_NODES"]

# Gauss–Hermite points per gate axis (g₁, g₂). The sigmoid is analytic in the
# strip |Im z| < π, erf is entire: the rule converges geometrically in √n.
ROUTER_NODES = 48
# Points per expert axis (g₃, g₄) for mlp experts (non-polynomial φ).
EXPERT_NODES = 16
# Pairs evaluated at once (memory ∝ PAIR_BATCH × nodes).
PAIR_BATCH = 8

# A column whose residual after projecting out the earlier ones is below this
# fraction of its norm (times √ε of the dtype) counts as dependent. √ε·1e-2:
# 1.5e-10 in float64, 3.5e-6 in float32; dropping such a residual changes a
# projection by that fraction of the vector, far below any quadrature error.
_FRAME_TOLERANCE = 1e-2

class _Units(NamedTuple):
    router: Array  # (n, D) unit vectors v̄_u
    weight: Array  # (n, D) expert directions w_u
    coef: Array  # (n,) c_u (times the sign s_u)
    bias: Array  # (n,) b_u (linear experts; else 0)
    expert: Array  # (n,) index of the expert the unit belongs to (for the shared gate)


def _units(model: Mixture, sign: float) -> _Units:
    m, dim = model.router.shape
    v = unit(model.router)
    dtype = v.dtype
    name = model.expert_fn.name
    if name == "mlp":
        h = model.expert_fn.hidden
        return _Units(
            jnp.repeat(v, h, axis=0),
            model.expert.reshape(m * h, dim),
            sign * model.output.reshape(m * h),
            jnp.zeros(m * h, dtype),
            jnp.repeat(jnp.arange(m), h),
        )
    weight = unit(model.expert) if model.expert_fn.hermite else model.expert
    bias = model.bias if name == "linear" else jnp.zeros(m, dtype)
    return _Units(v, weight, jnp.full(m, sign, dtype), bias, jnp.arange(m))


def _phi(model: Mixture):
    spec = model.expert_fn
    if spec.hermite:
        return lambda z, b: EXPERTS[spec.name](z)
    if spec.name == "linear":
        return lambda z, b: z + b
    act = MLP_FUNCTIONS[spec.activation]
    return lambda z, b: act(z)


def orthonormal_frame(vectors: Float[Array, "D k"], *, stop_gradient: bool = True) -> Float[Array, "D k"]:
    """An orthonormal basis of the span of the columns, by modified Gram–Schmidt (under `stop_gradient` by default).

    Column j of the result is the part of column j of `vectors` orthogonal to
    the earlier columns, normalised; a column that is (numerically) dependent
    on the earlier ones, its residual below ``1e-2·√ε`` of its norm, gives a
    zero column (two students aligned with one teacher, a unit paired with
    itself, or more vectors than the dimension D). So ``Qᵀ Q`` is the identity
    on the non-zero columns, every column of `vectors` lies in the span of Q,
    and ``L = vectorsᵀ Q`` (shape ``(k, k)``) is lower triangular: vector p
    depends on frame coordinates 1 … p only. Each projection is taken twice
    ("twice is enough": Giraud, Langou, Rozložník 2005), so Q is orthogonal to
    working precision however close the columns are.

    Plain `jnp` operations in a `lax.fori_loop` over the k columns (O(D k²)),
    not `jnp.linalg.qr`: with jaxlib 0.10.2 on a two-thread XLA CPU pool,
    concurrent batched LAPACK custom calls can deadlock (benchmarks/kernel.py),
    and a vmap over seeds batches them.

    **Why `stop_gradient` gives exact first derivatives** (module docstring):
    differentiating ``L = vectorsᵀ Q`` at fixed Q drops only the part of a
    perturbation orthogonal to span(Q), whose projection of x is independent of
    Qᵀx and has mean zero; this needs the integral over the frame coordinates
    to be exact (or to be estimated as a whole), which the conditional rule of
    `jaxmoe.quadrature` does not do, so it differentiates through Q.

    **Arguments:** `vectors`, shape ``(D, k)``; `stop_gradient` (default
    True): False differentiates through the Gram–Schmidt steps (finite
    derivatives: a dropped column is the constant zero).

    **Returns:** Q, shape ``(D, k)``.

    Example::

        import jaxmoe.pairkernel
        q = jaxmoe.pairkernel.orthonormal_frame(jnp.array([[1.0, 2.0], [0.0, 0.0]]))
        assert np.allclose(np.abs(q), [[1.0, 0.0], [0.0, 0.0]])    # column 2 ∥ column 1: one direction
    """
    if stop_gradient:
        vectors = jax.lax.stop_gradient(vectors)
    tolerance = _FRAME_TOLERANCE * math.sqrt(float(jnp.finfo(vectors.dtype).eps))

    def column(j, q):
        # Columns j, j+1, … of q are still zero, so q qᵀ projects on the earlier ones.
        u = jax.lax.dynamic_index_in_dim(vectors, j, axis=1, keepdims=False)
        size = jnp.sum(u * u)
        for _ in range(2):
            u = u - q @ (q.T @ u)
        residual = jnp.sum(u * u)
        keep = residual > tolerance**2 * size
        # Square roots only of kept (positive) residuals: √0 has no derivative.
        u = jnp.where(keep, u / jnp.sqrt(jnp.where(keep, residual, 1.0)), 0.0)
        return jax.lax.dynamic_update_index_in_dim(q, u, j, axis=1)

    return jax.lax.fori_loop(0, vectors.shape[1], column, jnp.zeros_like(vectors))


@functools.lru_cache(maxsize=64)
def _grid(router_nodes: int, expert_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    za, wa = gauss_hermite_rule(router_nodes)
    zb, wb = gauss_hermite_rule(expert_nodes)
    g = np.stack(np.meshgrid(za, za, zb, zb, indexing="ij"), axis=-1).reshape(-1, 4)
    w = functools.reduce(np.multiply.outer, [wa, wa, wb, wb]).ravel()
    return g, w


def _block(left: Mixture, lu: _Units, right: Mixture, ru: _Units, i, k, scale, router_nodes: int, expert_nodes: int) -> Array:
    """``Σ_p scale_p c_{i_p} c_{k_p} K(i_p, k_p)`` over the pairs (i_p, k_p) of units of `left` × `right`."""
    deg_l, deg_r = left.expert_fn.degree, right.expert_fn.degree
    if deg_l is None or deg_r is None:
        n_b = expert_nodes
    else:
        # Exact for degree deg_l + deg_r + 1 on g₃, g₄ (one to spare for the gradient).
        n_b = (deg_l + deg_r) // 2 + 1 + 1
    g, w = _grid(router_nodes, n_b)
    dtype = lu.router.dtype
    g, w = jnp.asarray(g, dtype), jnp.asarray(w, dtype)
    gate_l, gate_r = ACTIVATIONS[left.gate.name], ACTIVATIONS[right.gate.name]
    phi_l, phi_r = _phi(left), _phi(right)

    def pair(v1, v2, w1, w2, b1, b2):
        u = jnp.stack([v1, v2, w1, w2], axis=1)  # (D, 4)
        q = orthonormal_frame(u)  # (D, 4): orthonormal or zero columns
        proj = g @ (u.T @ q).T  # (N, 4): Lg at every node
        a1, a2, c1, c2 = proj.T
        return w @ (gate_l(a1) * gate_r(a2) * phi_l(c1, b1) * phi_r(c2, b2))

    args = (lu.router[i], ru.router[k], lu.weight[i], ru.weight[k], lu.bias[i], ru.bias[k])
    values = jax.lax.map(lambda a: pair(*a), args, batch_size=PAIR_BATCH)
    return jnp.sum(jnp.asarray(scale, dtype) * lu.coef[i] * ru.coef[k] * values)


def independent_loss(
    student: Mixture, teacher: Mixture, *, router_nodes: int = ROUTER_NODES, expert_nodes: int = EXPERT_NODES
) -> Scalar:
    """``½ E[(f_student − f_teacher)²]`` for independent gates and any experts, pair kernel by pair kernel.

    See the module docstring. Both models must have independent gates
    (sigmoid or erf); their expert families may differ. Differentiable
    (first order), jittable, vmappable.
    """
    su, tu = _units(student, 1.0), _units(teacher, -1.0)
    same = student.gate == teacher.gate and student.expert_fn == teacher.expert_fn
    if same:
        both = _Units(*(jnp.concatenate([a, b]) for a, b in zip(su, tu)))
        n = both.router.shape[0]
        i, k = np.triu_indices(n)
        return _block(student, both, student, both, i, k, np.where(i == k, 0.5, 1.0), router_nodes, expert_nodes)
    blocks = 0.0
    for lm, lu, rm, ru, factor in (
        (student, su, student, su, 0.5),
        (student, su, teacher, tu, 1.0),
        (teacher, tu, teacher, tu, 0.5),
    ):
        nl, nr = lu.router.shape[0], ru.router.shape[0]
        i, k = (a.ravel() for a in np.meshgrid(np.arange(nl), np.arange(nr), indexing="ij"))
        blocks = blocks + _block(lm, lu, rm, ru, i, k, np.full(len(i), factor), router_nodes, expert_nodes)
    return blocks
