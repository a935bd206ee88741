"""Teachers and student initialisations (DESIGN §1).

Randomness comes only from explicit keys. The teacher's 2m* router and expert
vectors are orthonormal; the student's router and expert vectors are drawn
iid N(0, I_d/d), then each router is orthogonalised against its own expert.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from .hermite import Activation, HermiteExpert
from .model import MoE, unit

__all__ = ["init_teacher", "init_student", "orthogonalise_router", "seed_key", "init_problem"]


def _check_sizes(m: int, d: int, what: str) -> None:
    for name, value in ((what, m), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


def init_teacher(
    m_star: int,
    d: int,
    *,
    key: PRNGKeyArray | None = None,
    gate: str | Activation = "sigmoid",
    expert_fn: str | HermiteExpert = "he3",
    dtype=None,
) -> MoE:
    """A teacher whose 2m* router and expert vectors are orthonormal.

    **Arguments:**

    - `m_star`: number of teacher experts m*; needs 2m* ≤ d.
    - `d`: input dimension.
    - `key`: a PRNG key for a uniformly random (Haar) orthonormal frame; with
      `None` the teacher is axis-aligned: routers e_1 … e_{m*}, experts
      e_{m*+1} … e_{2m*}.

    **Returns:** an `MoE` with arrays of shape ``(m_star, d)``.
    """
    _check_sizes(m_star, d, "m_star")
    if 2 * m_star > d:
        raise ValueError(f"a teacher needs 2·m_star ≤ d orthonormal vectors; got m_star = {m_star}, d = {d}")
    dtype = dtype or jnp.zeros(()).dtype
    if key is None:
        frame = jnp.eye(2 * m_star, d, dtype=dtype)
    else:
        gaussian = jax.random.normal(key, (d, 2 * m_star), dtype)
        q, r = jnp.linalg.qr(gaussian)
        # Fix QR's sign convention so that the frame is exactly Haar distributed.
        frame = (q * jnp.sign(jnp.diagonal(r))[None, :]).T
    return MoE(frame[:m_star], frame[m_star:], gate, expert_fn)


def orthogonalise_router(router, expert):
    """``v − (w̄·v) w̄`` row by row: each router orthogonal to its own expert."""
    w = unit(expert)
    return router - jnp.sum(router * w, axis=-1, keepdims=True) * w


def init_student(
    m: int,
    d: int,
    *,
    key: PRNGKeyArray,
    gate: str | Activation = "sigmoid",
    expert_fn: str | HermiteExpert = "he3",
    dtype=None,
) -> MoE:
    """The paper's student initialisation in d dimensions.

    ``v̂_i, w_i ~ N(0, I_d/d)`` independently, then ``v_i = v̂_i − (w̄_i·v̂_i) w̄_i``.

    **Returns:** an `MoE` with arrays of shape ``(m, d)``.
    """
    _check_sizes(m, d, "m")
    dtype = dtype or jnp.zeros(()).dtype
    key_router, key_expert = jax.random.split(key)
    scale = 1.0 / jnp.sqrt(jnp.asarray(d, dtype))
    router = scale * jax.random.normal(key_router, (m, d), dtype)
    expert = scale * jax.random.normal(key_expert, (m, d), dtype)
    return MoE(orthogonalise_router(router, expert), expert, gate, expert_fn)


def seed_key(base_seed: int, index) -> PRNGKeyArray:
    """The key of seed `index`: the same whether simulated alone or in a batch."""
    return jax.random.fold_in(jax.random.PRNGKey(base_seed), index)


def init_problem(config, seed_index) -> tuple[MoE, MoE]:
    """Teacher and initial student of each seed, batched over `seed_index`.

    **Arguments:**

    - `config`: a `SimulationConfig` (d, m, m_star, gate, expert, teacher).
    - `seed_index`: integer array of shape (S,).

    **Returns:** ``(teacher, student)``, `MoE` models whose arrays have a leading
    seed axis: ``(S, m*, d)`` and ``(S, m, d)``.
    """

    def one(index):
        key_teacher, key_student = jax.random.split(seed_key(config.base_seed, index))
        teacher = init_teacher(
            config.m_star,
            config.d,
            key=key_teacher if config.teacher == "random" else None,
            gate=config.gate,
            expert_fn=config.expert,
        )
        student = init_student(config.m, config.d, key=key_student, gate=config.gate, expert_fn=config.expert)
        return teacher, student

    return jax.jit(jax.vmap(one))(jnp.asarray(seed_index))
