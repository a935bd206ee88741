"""Teachers and student initialisations (docs/model.md §1).

Randomness comes only from explicit keys. The teacher's 2m* router and expert
vectors are orthonormal; the student's router and expert vectors are drawn
iid N(0, I_d/d), then each router is orthogonalised against its own expert.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .base import Model, unit
from .buckets import padded, trimmed
from .config import ROTATION_EQUIVARIANT
from .families import (
    Mixture,
    as_expert,
    as_gate,
    check_size,
    init_mixture_student,
    init_mixture_teacher,
    is_classic,
    mixture_from_rows,
    num_vectors,
)
from .hermite import Activation, HermiteExpert
from .model import MoE

__all__ = [
    "init_teacher",
    "init_student",
    "init_reduced",
    "orthogonalise_router",
    "seed_key",
    "init_problem",
    "reduced_dimension",
    "uses_reduced",
    "config_dimension",
    "gaussian_rows_reduced",
    "init_mixture_reduced",
    "project_to_span",
    "draw_problem",
]


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

    ``v*_j·v*_l = w*_j·w*_l = δ_jl`` and ``v*_j·w*_l = 0`` (docs/model.md §1). The
    random frame is the Q factor of the QR decomposition of a d × 2m*
    Gaussian matrix, its column signs fixed by the signs of R's diagonal,
    which makes it exactly Haar distributed ("How to generate random matrices
    from the classical compact groups", Mezzadri).

    **Arguments:**

    - `m_star`: number of teacher experts m*; needs 2m* ≤ d.
    - `d`: input dimension.
    - `key`: a PRNG key for a uniformly random (Haar) orthonormal frame; with
      `None` the teacher is axis-aligned: routers e_1 … e_{m*}, experts
      e_{m*+1} … e_{2m*}.
    - `gate`, `expert_fn`: router activation and expert polynomial (see `MoE`).
    - `dtype`: array dtype (default: JAX's default float dtype).

    **Returns:** an `MoE` with arrays of shape ``(m_star, d)``.

    Example::

        teacher = jaxmoe.init_teacher(2, 10, key=jax.random.PRNGKey(0))
        frame = jnp.concatenate([teacher.router, teacher.expert])    # (4, 10)
        assert jnp.allclose(frame @ frame.T, jnp.eye(4), atol=1e-6)  # orthonormal
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
    """``v_i − (w̄_i·v_i) w̄_i`` row by row: each router orthogonal to its own expert.

    The last step of the paper's student initialisation (docs/model.md §1).

    **Arguments:** `router` and `expert` of shape ``(..., m, d)``.

    **Returns:** the new routers, shape ``(..., m, d)``.

    Example::

        v = jaxmoe.init.orthogonalise_router(jnp.array([[1.0, 1.0]]), jnp.array([[2.0, 0.0]]))
        assert np.allclose(v, [[0.0, 1.0]])
    """
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
    """The paper's student initialisation in d dimensions (arXiv 2510.07205; docs/model.md §1).

    ``v̂_i, w_i ~ N(0, I_d/d)`` independently, then ``v_i = v̂_i − (w̄_i·v̂_i) w̄_i``.
    Its overlaps with any fixed unit vector are of order d^(-1/2).

    **Arguments:** `m` student experts, dimension `d`, PRNG `key`; `gate`,
    `expert_fn` and `dtype` as for `init_teacher`.

    **Returns:** an `MoE` with arrays of shape ``(m, d)``.

    Example::

        student = jaxmoe.init_student(6, 100, key=jax.random.PRNGKey(1))
        assert np.allclose(jnp.sum(student.router * student.expert, axis=-1), 0.0, atol=1e-6)   # v_i ⟂ w_i
    """
    _check_sizes(m, d, "m")
    dtype = dtype or jnp.zeros(()).dtype
    key_router, key_expert = jax.random.split(key)
    scale = 1.0 / jnp.sqrt(jnp.asarray(d, dtype))
    router = scale * jax.random.normal(key_router, (m, d), dtype)
    expert = scale * jax.random.normal(key_expert, (m, d), dtype)
    return MoE(orthogonalise_router(router, expert), expert, gate, expert_fn)


def seed_key(base_seed: int, index) -> PRNGKeyArray:
    """The key of seed `index`: ``fold_in(PRNGKey(base_seed), index)``.

    The same whether the seed is simulated alone or in a batch; `index` may be
    a traced integer (under `jax.vmap`).

    Example::

        key = jaxmoe.init.seed_key(0, 17)    # seed 17 of base seed 0
        batch = jax.vmap(lambda i: jaxmoe.init.seed_key(0, i))(jnp.arange(64))
        assert jnp.array_equal(batch[17], key)   # the same key in any batch
    """
    return jax.random.fold_in(jax.random.PRNGKey(base_seed), index)


def reduced_dimension(m: int, m_star: int) -> int:
    """Coordinates of the reduced simulation, ``k = 2(m + m*)``: the span of
    the teacher's 2m* vectors and the student's 2m initial vectors (docs/model.md §3).

    Example::

        assert jaxmoe.init.reduced_dimension(25, 5) == 60     # for any d
    """
    return 2 * (m + m_star)


def uses_reduced(config) -> bool:
    """Whether `config` runs in reduced coordinates.

    Needs mode "reduced", d > 2(m + m*), and a method whose dynamics stay in
    the span of the teacher and the initial student: the gradient flow, or an
    optimiser that commutes with rotations (SGD, momentum) on the exact loss.
    Online SGD and finite training sets add a new direction with every sample,
    and Adam's per-coordinate scaling depends on the basis: those run in d
    coordinates, from the d-dimensional initialisation of the same seed.

    **Arguments:** `config`, a `SimulationConfig`. **Returns:** a bool.

    Example::

        assert jaxmoe.init.uses_reduced(jaxmoe.SimulationConfig(d=1000))
        assert not jaxmoe.init.uses_reduced(jaxmoe.SimulationConfig(d=1000, method="online"))
    """

    span_preserving = config.method == "flow" or (
        config.method == "optax" and config.optimizer in ROTATION_EQUIVARIANT
    )
    return config.mode == "reduced" and span_preserving and config.d > config_dimension(config)


def config_dimension(config) -> int:
    """Reduced coordinates of a configuration: 2(m + m*) for the paper's model,
    else the teacher's and the student's vectors together (`jaxmoe.families.num_vectors`).

    Example::

        config = jaxmoe.SimulationConfig(m=4, m_star=2, gate="hierarchical:groups=2")
        assert jaxmoe.init.config_dimension(config) == 16
    """
    if config.classic:
        return reduced_dimension(config.m, config.m_star)
    gate, expert, teacher_gate, teacher_expert = config.families()
    return num_vectors(config.m_star, teacher_gate, teacher_expert) + num_vectors(config.m, gate, expert)


def init_reduced(
    m: int,
    m_star: int,
    d: int,
    *,
    key: PRNGKeyArray,
    gate: str | Activation = "sigmoid",
    expert_fn: str | HermiteExpert = "he3",
    dtype=None,
) -> tuple[MoE, MoE]:
    """Teacher and student in k = 2(m + m*) coordinates, with the exact law of d dimensions.

    The data law is rotation invariant and the population loss depends only on
    inner products, so gradient flow keeps every vector in the span of the
    teacher and the initial student; its coordinates in an orthonormal basis
    of that span evolve exactly as the d-dimensional flow (docs/model.md §3). Their
    initial law is sampled without any d-vector:

    - the teacher sits on the first 2m* axes (routers, then experts);
    - each raw student vector (v̂_1 … v̂_m, w_1 … w_m, all N(0, I_d/d)) has
      teacher-span coordinates iid N(0, 1/d);
    - their parts orthogonal to the teacher span form a 2m × (d − 2m*)
      Gaussian matrix G with ``G Gᵀ ~ Wishart(d − 2m*, I/d)``. Writing
      ``G = L Q`` with Q orthonormal rows, L is lower triangular with the
      Bartlett law: ``L_ii = √(χ²_{d−2m*−i+1} / d)`` (i from 1), ``L_ij ~ N(0, 1/d)``
      below the diagonal, all independent; L holds the coordinates in Q's basis;
    - each router is then orthogonalised against its own expert, as in d
      dimensions.

    Nothing allocated grows with d, so d = 10⁹ costs what d = 10³ does.

    **Arguments:** `m`, `m_star`, `d` (needs d > 2(m + m*)), the PRNG `key`;
    `gate`, `expert_fn` and `dtype` as for `init_teacher`.

    **Returns:** ``(teacher, student)`` with arrays ``(m*, k)`` and ``(m, k)``.

    Example::

        teacher, student = jaxmoe.init.init_reduced(4, 2, 10**6, key=jax.random.PRNGKey(0))
        assert teacher.router.shape == (2, 12) and student.router.shape == (4, 12)
    """
    _check_sizes(m, d, "m")
    _check_sizes(m_star, d, "m_star")
    k = reduced_dimension(m, m_star)
    if d <= k:
        raise ValueError(f"reduced coordinates need d > 2(m + m*) = {k}; got d = {d} (use the full mode)")
    dtype = dtype or jnp.zeros(()).dtype
    teacher = init_teacher(m_star, k, gate=gate, expert_fn=expert_fn, dtype=dtype)
    raw = gaussian_rows_reduced(key, 2 * m, 2 * m_star, d, dtype)  # (2m, k)
    router, expert = raw[:m], raw[m:]
    return teacher, MoE(orthogonalise_router(router, expert), expert, gate, expert_fn)


def gaussian_rows_reduced(key: PRNGKeyArray, n: int, n_span: int, d: int, dtype) -> Float[Array, "n k"]:
    """n rows iid N(0, I_d/d) in d dimensions, written in k = n_span + n coordinates (Bartlett).

    The first `n_span` coordinates are those on a fixed orthonormal set (the
    teacher's axes): iid N(0, 1/d). The parts orthogonal to it form an
    n × (d − n_span) Gaussian matrix ``G = L Q`` with Q orthonormal rows and
    L lower triangular with the Bartlett law, ``L_ii = √(χ²_{d−n_span−i+1}/d)``
    (i from 1) and ``L_ij ~ N(0, 1/d)`` below the diagonal; L holds the
    coordinates in Q's basis (`init_reduced`). Needs d ≥ n_span + n.
    """
    key_span, key_lower, key_chi = jax.random.split(key, 3)
    scale = 1.0 / jnp.sqrt(jnp.asarray(d, dtype))
    span = scale * jax.random.normal(key_span, (n, n_span), dtype)
    lower = jnp.tril(scale * jax.random.normal(key_lower, (n, n), dtype), k=-1)
    dof = (d - n_span) - jnp.arange(n, dtype=dtype)  # d − n_span − i + 1 for i = 1 … n
    chi2 = 2.0 * jax.random.gamma(key_chi, dof / 2.0, dtype=dtype)
    lower = lower + jnp.diag(jnp.sqrt(chi2) * scale)
    return jnp.concatenate([span, lower], axis=1)


def init_mixture_reduced(
    m: int,
    m_star: int,
    d: int,
    gate="sigmoid",
    expert_fn="he3",
    *,
    key: PRNGKeyArray,
    teacher_gate=None,
    teacher_expert=None,
    dtype=None,
) -> tuple[Mixture, Mixture]:
    """Teacher and student in reduced coordinates, with the exact law of d dimensions.

    As `jaxmoe.init.init_reduced` (docs/model.md §3), for every family: the input
    law is rotation invariant and every family depends on x only through
    projections on its vectors, so gradient flow stays in the span of the
    teacher's n* and the initial student's n vectors (`num_vectors`); the
    k = n* + n coordinates in an orthonormal basis of it evolve exactly as in
    d dimensions. The teacher takes the first n* axes (`init_mixture_teacher`
    with no key); the student's raw N(0, I_d/d) vectors are drawn there by
    `gaussian_rows_reduced`, without any d-vector.

    **Arguments:** `m`, `m_star`, `d` (needs d > k); the student's `gate` and
    `expert_fn`, the teacher's (``None``: the same); the PRNG `key`; `dtype`.

    **Returns:** ``(teacher, student)`` with arrays in k coordinates.

    Example::

        init = jaxmoe.init.init_mixture_reduced
        teacher, student = init(4, 2, 10**6, "softmax", "linear", key=jax.random.PRNGKey(0))
        assert teacher.router.shape == (2, 12) and student.router.shape == (4, 12)
    """
    check_size("m", m)
    check_size("m_star", m_star)
    gate, expert = as_gate(gate), as_expert(expert_fn)
    teacher_gate = gate if teacher_gate is None else as_gate(teacher_gate)
    teacher_expert = expert if teacher_expert is None else as_expert(teacher_expert)
    dtype = dtype or jnp.zeros(()).dtype
    n_teacher, n_student = num_vectors(m_star, teacher_gate, teacher_expert), num_vectors(m, gate, expert)
    k = n_teacher + n_student
    if d <= k:
        raise ValueError(f"reduced coordinates need d > {k} (the teacher's and the student's vectors); got d = {d}")
    k_rows, k_output = jax.random.split(key)
    teacher = init_mixture_teacher(m_star, k, teacher_gate, teacher_expert, dtype=dtype)
    rows = gaussian_rows_reduced(k_rows, n_student, n_teacher, d, dtype)
    return teacher, mixture_from_rows(rows, m, gate, expert, output_key=k_output)


def init_problem(config, seed_index) -> tuple[MoE | Mixture, MoE | Mixture]:
    """Teacher and initial student of each seed, batched over `seed_index`.

    In reduced mode (when d > 2(m + m*)) they are drawn by `init_reduced` in
    2(m + m*) coordinates, otherwise in d dimensions.

    **Arguments:**

    - `config`: a `SimulationConfig` (d, m, m_star, gate, expert, teacher, mode).
    - `seed_index`: integer array of shape (S,).

    **Returns:** ``(teacher, student)``, `MoE` models whose arrays have a leading
    seed axis: ``(S, m*, D)`` and ``(S, m, D)``, D = 2(m + m*) or d.

    Each seed's key is `seed_key` (base_seed, index), so seed k draws the same
    teacher and student alone or in any batch.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=3)
        teacher, student = jaxmoe.init.init_problem(config, np.arange(3))
        assert student.router.shape == (3, 4, 12)       # reduced coordinates
    """
    gate, expert, teacher_gate, teacher_expert = config.families()
    draw = _compiled_draw(
        config.m, config.m_star, config.d, gate, expert, teacher_gate, teacher_expert, config.teacher,
        config.base_seed, uses_reduced(config), config.classic,
    )
    if isinstance(seed_index, jax.core.Tracer) or len(seed_index) == 0:
        return draw(jnp.asarray(seed_index))
    # Drawn for a padded batch (the last index repeated) and trimmed, so that
    # one compiled draw serves many seed counts (`buckets.padded`): a
    # seed's draw depends on its index only.
    return trimmed(draw(jnp.asarray(padded(np.asarray(seed_index)))), len(seed_index))


def draw_problem(
    m: int, m_star: int, d: int, gate, expert, teacher_gate, teacher_expert, *, key: PRNGKeyArray,
    teacher_frame: str = "axis", reduced: bool = False, classic: bool | None = None,
) -> tuple[MoE | Mixture, MoE | Mixture]:
    """One seed's teacher and initial student, for any families: the one draw path of `init_problem`.

    The paper's families (`classic`, default: decided from the families)
    draw `jaxmoe.MoE` models by `init_reduced` or `init_teacher` and
    `init_student`; every other family draws `jaxmoe.families.Mixture`
    models by `init_mixture_reduced` or `init_mixture_teacher` and
    `init_mixture_student`. In d dimensions the key is split into the
    teacher's and the student's; the teacher's frame is Haar-random for
    ``teacher_frame="random"``, else the first axes.

    **Returns:** ``(teacher, student)``, arrays ``(m*, D)`` and ``(m, D)``.
    """
    if classic is None:
        classic = is_classic(gate, expert) and str(teacher_gate) == str(gate) and str(teacher_expert) == str(expert)
    if classic:
        gate, expert = str(gate), str(expert)
    if reduced:
        if classic:
            return init_reduced(m, m_star, d, key=key, gate=gate, expert_fn=expert)
        return init_mixture_reduced(m, m_star, d, gate, expert, key=key, teacher_gate=teacher_gate, teacher_expert=teacher_expert)
    key_teacher, key_student = jax.random.split(key)
    key_teacher = key_teacher if teacher_frame == "random" else None
    if classic:
        teacher = init_teacher(m_star, d, key=key_teacher, gate=gate, expert_fn=expert)
        return teacher, init_student(m, d, key=key_student, gate=gate, expert_fn=expert)
    teacher = init_mixture_teacher(m_star, d, teacher_gate, teacher_expert, key=key_teacher)
    return teacher, init_mixture_student(m, d, gate, expert, key=key_student)


@functools.lru_cache(maxsize=64)
def _compiled_draw(m, m_star, d, gate, expert, teacher_gate, teacher_expert, teacher_frame, base_seed, reduced, classic):
    """The jitted, seed-vmapped `draw_problem`; cached so that repeated runs do not recompile it."""

    def one(index):
        return draw_problem(
            m, m_star, d, gate, expert, teacher_gate, teacher_expert, key=seed_key(base_seed, index),
            teacher_frame=teacher_frame, reduced=reduced, classic=classic,
        )

    return jax.jit(jax.vmap(one))


def project_to_span(teacher: Model, student: Model, *, extra: bool = False) -> tuple[Model, Model]:
    """Coordinates of teacher and student in an orthonormal basis of their span.

    The population loss and its gradient flow depend only on inner products,
    so the flow of these coordinates is *pathwise* the flow of the original
    vectors: same losses, same alignments, at a cost set by the span's
    dimension (2(m + m*) for the paper's model) instead of d. Batched over a
    leading seed axis when the arrays have one. Every family: the vectors
    are those of `Model.vectors` (routers, group routers, expert rows); the
    scalars per expert (biases, mlp output weights) do not rotate.

    The basis is the Q factor of the QR decomposition of the d × k matrix of
    all vectors (the teacher's, then the student's) (docs/model.md §3).

    **Arguments:** `teacher` ``([S,] m*, d)``, `student` ``([S,] m, d)``;
    `extra`: one more basis direction orthogonal to the span (when d leaves
    room for it: d > k), so that the curvature of directions outside the
    span is also seen (`jaxmoe.prune.hessian_spectrum`): the coordinate axis
    least covered by Q, orthogonalised.

    **Returns:** ``(teacher, student)`` with last dimension ``min(d, k)``
    (``k + 1`` with `extra`).

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher = jaxmoe.init_teacher(2, 50, key=k1)
        student = jaxmoe.init_student(4, 50, key=k2)
        t, s = jaxmoe.init.project_to_span(teacher, student)
        assert t.router.shape == (2, 12) and s.router.shape == (4, 12)
        assert np.allclose(jaxmoe.population_loss(s, t), jaxmoe.population_loss(student, teacher))
    """

    def one(t_rows, s_rows):
        vectors = jnp.concatenate(t_rows + s_rows, axis=0)  # (k, d)
        # A = Q R with R (k × k): the span of the vectors lies in that of Q's
        # columns even when the vectors are linearly dependent (student = teacher).
        q, _ = jnp.linalg.qr(vectors.T)  # (d, k)
        n, dim = vectors.shape
        if extra and dim > n:
            # The residual of the least covered axis is at least 1 − n/d > 0.
            axis = jnp.argmin(jnp.sum(q * q, axis=1))
            direction = jnp.zeros(dim, q.dtype).at[axis].set(1.0) - q @ q[axis]
            q = jnp.concatenate([q, (direction / jnp.linalg.norm(direction))[:, None]], axis=1)
        return [r @ q for r in t_rows], [r @ q for r in s_rows]

    fn = jax.vmap(one) if student.router.ndim == 3 else one
    t_rows, s_rows = jax.jit(fn)(teacher.vectors(), student.vectors())
    return teacher.with_vectors(t_rows), student.with_vectors(s_rows)
