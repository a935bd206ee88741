"""The exact population loss, a plain quadrature reference, and Monte Carlo.

    L(θ) = ½ E[(f_student(x) − f_teacher(x))²],   x ~ N(0, I_d)
         = ½ Σ_{i,k} K(i,k) − Σ_{i,j} K(i,j*) + ½ Σ_{j,l} K(j*,l*)
    K(i,k) = E[σ(a₁) σ(a₂) P(b₁) P(b₂)],  a₁ = v̄_i·x, a₂ = v̄_k·x, b₁ = w̄_i·x, b₂ = w̄_k·x.

Every K depends only on the six correlations of its four unit vectors, so the
loss is a function of the Gram matrix of the unit vectors alone (docs/model.md §2).
Gaussian integration by parts applied to the Hermite polynomials, then
Mehler's formula for the two router factors, give the exact expansion

    K = Σ_r Σ_{p₁+q₁=k₁−r} Σ_{p₂+q₂=k₂−r} a_{k₁} b_{k₂} [k₁!/(p₁! q₁! r!)] [k₂!/(p₂! q₂!)]
          ρ_{b₁a₁}^{p₁} ρ_{b₁a₂}^{q₁} ρ_{b₂a₁}^{p₂} ρ_{b₂a₂}^{q₂} ρ_{b₁b₂}^{r} H_{p₁+p₂, q₁+q₂}(ρ_{a₁a₂})

summed over the Hermite components He_{k₁}, He_{k₂} of the two experts, with
``H_{j,l}(ρ) = Σ_n ρⁿ c_{n+j} c_{n+l} / n!`` (see `jaxmoe.hermite`). It is a
polynomial in the correlations: smooth, exact, and free of any sampling.

`expert_kernel_reference` computes the same K by Gauss–Hermite quadrature in
the Cholesky coordinates of the four projections, and
`population_loss_monte_carlo` by sampling x; the tests hold all three together.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Scalar

from .base import check_pair
from .hermite import HermiteExpert, gauss_hermite_rule, mehler_chebyshev
from .model import MoE, forward, unit

__all__ = [
    "population_loss",
    "expert_kernel",
    "expert_kernel_reference",
    "population_loss_reference",
    "population_loss_monte_carlo",
]


# ---------------------------------------------------------------------------
# The fast kernel


@functools.cache
def _terms(left: HermiteExpert, right: HermiteExpert):
    """Static list of the expansion's terms for two polynomial experts.

    **Returns:** ``(coefficient, exponents, pair)`` NumPy arrays: one row per
    term, exponents of ``(ρ_{b₁a₁}, ρ_{b₁a₂}, ρ_{b₂a₁}, ρ_{b₂a₂}, ρ_{b₁b₂})``,
    and the index of the Mehler function ``H_{j,l}`` in ``pairs``.
    """
    fact = math.factorial
    rows = {}
    for k1, a in enumerate(left.coefficients):
        for k2, b in enumerate(right.coefficients):
            if a == 0.0 or b == 0.0:
                continue
            for r in range(min(k1, k2) + 1):
                for p1 in range(k1 - r + 1):
                    q1 = k1 - r - p1
                    for p2 in range(k2 - r + 1):
                        q2 = k2 - r - p2
                        weight = a * b * fact(k1) / (fact(p1) * fact(q1) * fact(r))
                        weight *= fact(k2) / (fact(p2) * fact(q2))
                        key = (p1, q1, p2, q2, r)
                        rows[key] = rows.get(key, 0.0) + weight
    keys = sorted(rows)
    pairs = sorted({(p1 + p2, q1 + q2) for p1, q1, p2, q2, r in keys})
    coefficient = np.array([rows[k] for k in keys])
    exponents = np.array(keys, dtype=np.int32).reshape(-1, 5)
    pair_index = np.array([pairs.index((k[0] + k[2], k[1] + k[3])) for k in keys], dtype=np.int32)
    return coefficient, exponents, pair_index, tuple(pairs)


def _powers(x: Array, n: int) -> Array:
    """``[x⁰, x¹, …, x^{n−1}]`` stacked on a new leading axis.

    Products only, so that gradients stay finite at x = 0 (``x**0`` would
    differentiate to 0·x⁻¹).
    """
    out = [jnp.ones_like(x)]
    for _ in range(1, n):
        out.append(out[-1] * x)
    return jnp.stack(out)


def _chebyshev(x: Array, n: int) -> Array:
    """``[T_0(x), …, T_{n−1}(x)]`` by the three-term recurrence (stable on [−1, 1])."""
    out = [jnp.ones_like(x), x]
    for _ in range(2, n):
        out.append(2.0 * x * out[-1] - out[-2])
    return jnp.stack(out[:n])


def _kernel_from_correlations(left: MoE, right: MoE, rho_aa: Array, rhos: Array) -> Array:
    """K for a batch of pairs, from their six correlations.

    **Arguments:** ``rho_aa`` (P,) is ρ_{a₁a₂}; ``rhos`` (5, P) holds
    ``(ρ_{b₁a₁}, ρ_{b₁a₂}, ρ_{b₂a₁}, ρ_{b₂a₂}, ρ_{b₁b₂})``. `left` and `right`
    supply the activations and expert polynomials (their arrays are unused).
    """
    coefficient, exponents, pair_index, pairs = _terms(left.expert_fn, right.expert_fn)
    max_order = max(max(j, k) for j, k in pairs)
    cheb = mehler_chebyshev(left.gate, right.gate, max_order)  # (K, J, L)
    dtype = rho_aa.dtype
    cheb = jnp.asarray(np.stack([cheb[:, j, k] for j, k in pairs], axis=1), dtype)  # (K, U)
    mehler = cheb.T @ _chebyshev(rho_aa, cheb.shape[0])  # (U, P)
    # Gathers by the static exponent and pair indices are written as products
    # with one-hot matrices: their gradients are then matrix products too,
    # not scatters, which XLA runs several times faster on the CPU.
    num_powers = int(exponents.max()) + 1
    monomial = jnp.ones((exponents.shape[0],) + rho_aa.shape, dtype)
    for s in range(5):
        select = jnp.asarray(np.eye(num_powers)[exponents[:, s]], dtype)  # (T, E)
        monomial = monomial * (select @ _powers(rhos[s], num_powers))
    weight = np.zeros((len(pairs), exponents.shape[0]))
    weight[pair_index, np.arange(exponents.shape[0])] = coefficient
    return jnp.sum(mehler * (jnp.asarray(weight, dtype) @ monomial), axis=0)


def expert_kernel(left: MoE, right: MoE) -> Float[Array, "m_left m_right"]:
    """The exact matrix ``K(i,k) = E[σ(v̄_i·x) P(w̄_i·x) σ(v̄_k·x) P(w̄_k·x)]``, x ~ N(0, I_d).

    Experts ``i`` come from `left`, experts ``k`` from `right`; each side uses its
    own router activation and expert polynomial. Formula: the Hermite/Mehler
    expansion of the module docstring (Gaussian integration by parts, then
    Mehler's formula; docs/model.md §2), evaluated through the Chebyshev series of
    `jaxmoe.hermite.mehler_chebyshev`. Differentiable.

    **Arguments:** `left` with arrays ``(m_left, d)``, `right` with arrays
    ``(m_right, d)`` (one model each, no seed axis).

    **Returns:** shape ``(m_left, m_right)``.

    Example::

        teacher = jaxmoe.init_teacher(2, 10, key=jax.random.PRNGKey(0))
        K = jaxmoe.expert_kernel(teacher, teacher)
        assert np.allclose(jnp.diag(K), 1.76027422)                  # E[(σ He3)²]
        assert np.allclose(K - jnp.diag(jnp.diag(K)), 0.0, atol=1e-6)   # orthonormal teacher experts
    """
    v1, w1 = unit(left.router), unit(left.expert)
    v2, w2 = unit(right.router), unit(right.expert)
    rho_aa = v1 @ v2.T
    shape = rho_aa.shape
    rhos = jnp.stack(
        [
            jnp.broadcast_to(jnp.sum(w1 * v1, axis=-1)[:, None], shape),  # ρ_{b₁a₁}
            w1 @ v2.T,  # ρ_{b₁a₂}
            v1 @ w2.T,  # ρ_{b₂a₁}
            jnp.broadcast_to(jnp.sum(w2 * v2, axis=-1)[None, :], shape),  # ρ_{b₂a₂}
            w1 @ w2.T,  # ρ_{b₁b₂}
        ]
    )
    values = _kernel_from_correlations(left, right, rho_aa.reshape(-1), rhos.reshape(5, -1))
    return values.reshape(shape)


def _symmetric_quadratic_form(model: MoE, sign: Array) -> Scalar:
    """``½ Σ_{i,k} s_i s_k K(i,k)`` over the pairs i ≤ k only (K is symmetric)."""
    n = model.num_experts
    i, k = np.triu_indices(n)
    v, w = unit(model.router), unit(model.expert)
    gram_vv, gram_wv, gram_ww = v @ v.T, w @ v.T, w @ w.T
    self_overlap = jnp.diagonal(gram_wv)
    rhos = jnp.stack([self_overlap[i], gram_wv[i, k], gram_wv[k, i], self_overlap[k], gram_ww[i, k]])
    values = _kernel_from_correlations(model, model, gram_vv[i, k], rhos)
    weight = jnp.asarray(np.where(i == k, 0.5, 1.0), values.dtype) * sign[i] * sign[k]
    return jnp.sum(weight * values)


def _assemble(kernel, student: MoE, teacher: MoE) -> Scalar:
    """``½ΣK(s,s) − ΣK(s,t) + ½ΣK(t,t)``."""
    return (
        0.5 * jnp.sum(kernel(student, student))
        - jnp.sum(kernel(student, teacher))
        + 0.5 * jnp.sum(kernel(teacher, teacher))
    )


def population_loss(student: MoE, teacher: MoE) -> Scalar:
    """The exact population loss ``L = ½ E[(f_student(x) − f_teacher(x))²]``, x ~ N(0, I_d).

    Computed from inner products alone with the Hermite/Mehler kernel (module
    docstring; docs/model.md §2), to about 1e-13 relative in float64. Differentiable,
    and usable under `jax.jit` and `jax.vmap`.

    **Arguments:**

    - `student`, `teacher`: `MoE` models in the same dimension d. Each may have
      its own router activation and expert polynomial.

    **Returns:** a scalar.

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher = jaxmoe.init_teacher(3, 20, key=k1)
        student = jaxmoe.init_student(6, 20, key=k2)
        loss, grad = jax.value_and_grad(jaxmoe.population_loss)(student, teacher)
        assert grad.router.shape == grad.expert.shape == (6, 20)
    """
    check_pair(student, teacher, MoE)
    if student.gate == teacher.gate and student.expert_fn == teacher.expert_fn:
        # One symmetric block over student and teacher together, signs ±1.
        both = MoE(
            jnp.concatenate([student.router, teacher.router]),
            jnp.concatenate([student.expert, teacher.expert]),
            student.gate,
            student.expert_fn,
        )
        sign = jnp.concatenate([jnp.ones(student.num_experts), -jnp.ones(teacher.num_experts)])
        return _symmetric_quadratic_form(both, sign.astype(both.router.dtype))
    return _assemble(expert_kernel, student, teacher)


# ---------------------------------------------------------------------------
# The plain reference: Gauss–Hermite quadrature


def expert_kernel_reference(
    left: MoE, right: MoE, nodes: int = 64
) -> Float[Array, "m_left m_right"]:
    """``K(i,k)`` by tensor Gauss–Hermite quadrature, pair by pair.

    For each pair the four unit vectors ``(v̄_i, v̄_k, w̄_i, w̄_k)`` are
    orthonormalised by a QR decomposition, so that the projections are
    ``(a₁, a₂, b₁, b₂) = Rᵀ g`` with g ~ N(0, I₄) (Cholesky coordinates of
    their correlation matrix; degenerate pairs such as the diagonal i = k are
    handled without any special case). The router factors depend on g₁, g₂
    only and get `nodes` points each; given g₁, g₂ the expert factors are a
    polynomial in g₃, g₄ that the smallest exact rule integrates exactly.
    This is the plain reference the fast `expert_kernel` is tested against.

    **Arguments:** `left` ``(m_left, d)``, `right` ``(m_right, d)``; `nodes`,
    Gauss–Hermite points per router coordinate (1 to 150).

    **Returns:** shape ``(m_left, m_right)``.

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher = jaxmoe.init_teacher(2, 10, key=k1)
        student = jaxmoe.init_student(3, 10, key=k2)
        fast = jaxmoe.expert_kernel(student, teacher)
        slow = jaxmoe.expert_kernel_reference(student, teacher)
        assert np.allclose(fast, slow, rtol=0, atol=1e-6)     # about 1e-16 in float64
    """
    degree = left.expert_fn.degree + right.expert_fn.degree
    za, wa = gauss_hermite_rule(nodes)
    zb, wb = gauss_hermite_rule(degree // 2 + 1)
    dtype = jnp.result_type(left.router.dtype, right.router.dtype)
    g = np.stack(np.meshgrid(za, za, zb, zb, indexing="ij"), axis=-1).reshape(-1, 4)
    w = (wa[:, None, None, None] * wa[None, :, None, None] * wb[None, None, :, None] * wb[None, None, None, :]).reshape(-1)
    g, w = jnp.asarray(g, dtype), jnp.asarray(w, dtype)

    def pair(v1, w1, v2, w2):
        vectors = jnp.stack([v1, v2, w1, w2], axis=1)  # (d, 4)
        if vectors.shape[0] < 4:  # pad so that R is 4 × 4 in any dimension
            vectors = jnp.pad(vectors, ((0, 4 - vectors.shape[0]), (0, 0)))
        _, r = jnp.linalg.qr(vectors)  # (4, 4)
        a1, a2, b1, b2 = (g @ r).T  # projections at every node: (4, nodes²·n_b²)
        f = left.gate(a1) * right.gate(a2) * left.expert_fn(b1) * right.expert_fn(b2)
        return w @ f

    over_right = jax.vmap(pair, in_axes=(None, None, 0, 0))
    over_both = jax.vmap(over_right, in_axes=(0, 0, None, None))
    return over_both(unit(left.router), unit(left.expert), unit(right.router), unit(right.expert))


def population_loss_reference(student: MoE, teacher: MoE, nodes: int = 64) -> Scalar:
    """`population_loss` with every K computed by `expert_kernel_reference`.

    ``L = ½ Σ_{i,k} K(i,k) − Σ_{i,j} K(i,j*) + ½ Σ_{j,l} K(j*,l*)`` (docs/model.md §2),
    each K by quadrature with `nodes` points per router coordinate.

    **Returns:** a scalar.

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher = jaxmoe.init_teacher(2, 10, key=k1)
        student = jaxmoe.init_student(3, 10, key=k2)
        assert np.allclose(jaxmoe.population_loss_reference(student, teacher), jaxmoe.population_loss(student, teacher))
    """
    check_pair(student, teacher, MoE)
    return _assemble(functools.partial(expert_kernel_reference, nodes=nodes), student, teacher)


# ---------------------------------------------------------------------------
# Monte Carlo


def population_loss_monte_carlo(
    student: MoE,
    teacher: MoE,
    *,
    key: PRNGKeyArray,
    num_samples: int = 1_000_000,
    batch_size: int = 65_536,
) -> tuple[Scalar, Scalar]:
    """Monte Carlo estimate of the population loss and its standard error.

    Draws ``n = num_samples`` (rounded up to whole batches) inputs x ~ N(0, I_d)
    and returns the sample mean ``L̂ = (1/n) Σ_k ½(f_student(x_k) − f_teacher(x_k))²``
    and its standard error ``√(s²/n)``, s² the unbiased sample variance. An
    independent check of the exact kernel.

    **Arguments:**

    - `student`, `teacher`: `MoE` models in the same dimension d.
    - `key`: PRNG key; batch b draws from ``fold_in(key, b)``.
    - `num_samples`, `batch_size`: sample size and inputs per batch
      (memory ∝ `batch_size`·d).

    **Returns:** ``(mean, standard_error)``, two scalars.

    Example::

        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
        teacher = jaxmoe.init_teacher(2, 10, key=k1)
        student = jaxmoe.init_student(3, 10, key=k2)
        mean, se = jaxmoe.population_loss_monte_carlo(student, teacher, key=k3, num_samples=100_000)
        assert abs(mean - jaxmoe.population_loss(student, teacher)) < 4 * se
    """
    check_pair(student, teacher, MoE)
    if num_samples < 2 or batch_size < 1:
        raise ValueError("num_samples must be at least 2 and batch_size at least 1")
    num_batches = -(-num_samples // batch_size)
    dtype = student.router.dtype

    def body(carry, index):
        total, total_sq = carry
        x = jax.random.normal(jax.random.fold_in(key, index), (batch_size, student.dim), dtype)
        sample = 0.5 * (forward(student, x) - forward(teacher, x)) ** 2
        return (total + sample.sum(), total_sq + (sample**2).sum()), None

    zero = jnp.zeros((), dtype)
    (total, total_sq), _ = jax.lax.scan(body, (zero, zero), jnp.arange(num_batches))
    n = num_batches * batch_size
    mean = total / n
    variance = (total_sq / n - mean**2) * n / (n - 1)
    return mean, jnp.sqrt(variance / n)
