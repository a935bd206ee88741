"""Draws of a general mixture: the teacher's orthonormal frame, the student, rows to a mixture."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..base import unit
from ._mixture import Mixture
from ._specs import as_expert, as_gate, is_int

# ---------------------------------------------------------------------------
# Initialisation


def check_size(name: str, value) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _frame(count: int, dim: int, key, dtype):
    """``count`` orthonormal rows in R^dim: Haar-random with a key, else the first axes."""
    if key is None:
        return jnp.eye(count, dim, dtype=dtype)
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, count), dtype))
    return (q * jnp.sign(jnp.diagonal(r))[None, :]).T


def init_mixture_teacher(
    m_star: int, dim: int, gate="sigmoid", expert_fn="he3", *, key: PRNGKeyArray | None = None, dtype=None
) -> Mixture:
    """A teacher whose router, group-router and expert directions are orthonormal.

    All ``m*`` routers, the ``G`` group routers (hierarchical) and the expert
    directions (one per He/linear expert, h per mlp expert) form one
    orthonormal frame, as in the paper's teacher (docs/model.md §1): every feature
    is distinct and of unit size, so recovering one tells nothing about
    another. Linear biases are 0 (the teacher is a pure projection); mlp
    output weights are 1/√h (output of order 1 whatever h).

    **Arguments:** `m_star` experts in dimension `dim` (needs the frame to
    fit: m*·(1 + h) + G ≤ D, h = 1 for He/linear); the `gate` and `expert_fn`
    specifications; `key` for a Haar-random frame (``None``: the first axes,
    routers, then group routers, then experts); `dtype`.

    **Returns:** a `Mixture` with ``m_star`` experts.
    """
    check_size("m_star", m_star)
    check_size("dim", dim)
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = dtype or jnp.zeros(()).dtype
    hidden = expert.hidden if expert.name == "mlp" else 1
    groups = gate.groups if gate.name == "hierarchical" else 0
    count = m_star * (1 + hidden) + groups
    if count > dim:
        raise ValueError(f"the teacher needs {count} orthonormal directions; got dim = {dim}")
    frame = _frame(count, dim, key, dtype)
    router, group_router, rest = frame[:m_star], frame[m_star : m_star + groups], frame[m_star + groups :]
    bias = output = None
    if expert.name == "mlp":
        weights = rest.reshape(m_star, hidden, dim)
        output = jnp.full((m_star, hidden), 1.0 / math.sqrt(hidden), dtype)
    else:
        weights = rest
        if expert.name == "linear":
            bias = jnp.zeros((m_star,), dtype)
    return Mixture(router, weights, group_router if groups else None, bias, output, gate, expert)


def is_classic(gate, expert_fn) -> bool:
    """True for the paper's families: an independent sigmoid/erf gate and an He_k expert.

    These run on `jaxmoe.MoE` with the exact kernel of docs/model.md §2.

    Example::

        import jaxmoe.families
        assert jaxmoe.families.is_classic("sigmoid", "he3") and not jaxmoe.families.is_classic("softmax", "he3")
    """
    return as_gate(gate).independent and as_expert(expert_fn).hermite


def num_vectors(m: int, gate="sigmoid", expert_fn="he3") -> int:
    """How many vectors in R^D a model of m experts has: m routers, G group routers, m·h expert rows.

    h = 1 for He and linear experts, the hidden width for mlp experts. This is
    the model's share of the reduced coordinates (`jaxmoe.init.init_mixture_reduced`),
    and for a teacher the size of its orthonormal frame.

    Example::

        import jaxmoe.families
        assert jaxmoe.families.num_vectors(4, "hierarchical:groups=2", "mlp:hidden=3") == 4 + 2 + 12
    """
    gate, expert = as_gate(gate), as_expert(expert_fn)
    hidden = expert.hidden if expert.name == "mlp" else 1
    groups = gate.groups if gate.name == "hierarchical" else 0
    return m * (1 + hidden) + groups


def mixture_from_rows(
    rows: Float[Array, "n D"], m: int, gate, expert_fn, *, output_key: PRNGKeyArray | None = None
) -> Mixture:
    """A student `Mixture` from its ``num_vectors(m, gate, expert_fn)`` raw vectors, in order:
    routers (m), group routers (G), expert rows (m·h).

    Then, as in the paper's initialisation: for He experts each router is
    orthogonalised against its own expert; linear biases start at 0; mlp
    output weights are N(0, 1/h) from `output_key` (required for mlp).
    Shared by `init_mixture_student` (rows in d dimensions) and
    `jaxmoe.init.init_mixture_reduced` (rows in reduced coordinates), so the two differ
    only in how the rows are drawn.
    """
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = rows.dtype
    groups = gate.groups if gate.name == "hierarchical" else 0
    router, group_router, rest = rows[:m], rows[m : m + groups], rows[m + groups :]
    bias = output = None
    if expert.name == "mlp":
        if output_key is None:
            raise ValueError("an mlp student needs output_key for its output weights")
        weights = rest.reshape(m, expert.hidden, rows.shape[-1])
        output = jax.random.normal(output_key, (m, expert.hidden), dtype) / math.sqrt(expert.hidden)
    else:
        weights = rest
        if expert.hermite:
            w = unit(weights)
            router = router - jnp.sum(router * w, axis=-1, keepdims=True) * w
        else:
            bias = jnp.zeros((m,), dtype)
    return Mixture(router, weights, group_router if groups else None, bias, output, gate, expert)


def init_mixture_student(
    m: int, dim: int, gate="sigmoid", expert_fn="he3", *, key: PRNGKeyArray, dtype=None
) -> Mixture:
    """A student drawn in D coordinates, the paper's law extended to every family.

    Every vector (router, group router, expert, mlp first-layer row) is
    N(0, I_D/D): norm ≈ 1, overlap with any fixed direction of order D^(-1/2)
    (the paper's initialisation, docs/model.md §1). For He experts each router is
    then orthogonalised against its own expert, as in the paper. Linear biases
    start at 0; mlp output weights are N(0, 1/h) (`mixture_from_rows`).

    **Arguments:** `m` experts in dimension `dim`; `gate`, `expert_fn`; the
    PRNG `key`; `dtype`.

    **Returns:** a `Mixture` with ``m`` experts.

    Example::

        import jaxmoe.families
        student = jaxmoe.families.init_mixture_student(4, 50, "softmax", "linear", key=jax.random.PRNGKey(1))
        assert student.router.shape == (4, 50) and student.bias.shape == (4,)
    """
    check_size("m", m)
    check_size("dim", dim)
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = dtype or jnp.zeros(()).dtype
    k_rows, k_output = jax.random.split(key)
    rows = jax.random.normal(k_rows, (num_vectors(m, gate, expert), dim), dtype) / math.sqrt(dim)
    return mixture_from_rows(rows, m, gate, expert, output_key=k_output)
