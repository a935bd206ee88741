"""Quasi-Monte Carlo over the span of all vectors (mlp experts)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Scalar

from ..base import check_pair
from ..families import Mixture, mixture_forward
from ..model import unit
from ..pairkernel import orthonormal_frame
from ._common import blockwise, expert_vectors, gate_vectors
from ._nodes import QMC_NODES, SOBOL_SEED, gaussian_nodes

# ---------------------------------------------------------------------------
# Quasi-Monte Carlo over the span


def _in_frame(model: Mixture, q: Array) -> Mixture:
    """`model` with every vector replaced by its coordinates in the frame Q (D × r)."""
    router = unit(model.router) @ q
    group = unit(model.group_router) @ q if model.group_router is not None else None
    expert = (unit(model.expert) if model.expert_fn.hermite else model.expert) @ q
    return Mixture(router, expert, group, model.bias, model.output, model.gate, model.expert_fn)


def quasi_monte_carlo_loss(
    student: Mixture, teacher: Mixture, *, t=None, nodes: int = QMC_NODES, seed: int = SOBOL_SEED, frame: bool = True
) -> Scalar:
    """``½ Σ_n ω_n (f_s − f_t)²(z_n)`` over the nodes of `gaussian_nodes` in the span of all vectors.

    When the k vectors of both models (gate, group and expert vectors, mlp
    rows) are at most D, the models are first written in an orthonormal
    frame of their span (`orthonormal_frame`, gate vectors first,
    differentiated through), so the rule runs in k coordinates and gives the
    same value in d coordinates and in reduced ones; otherwise in the D
    coordinates as given. Any gate and expert family.

    **Arguments:** `student`, `teacher`, `t`, `nodes` as in `mixture_loss`;
    `seed` of the scrambling (`gaussian_nodes`); `frame`: False runs the rule
    in the D coordinates as given even when the span is smaller. The frame is
    discontinuous where a vector of one model nearly repeats one of the
    other (its Gram–Schmidt residual, differentiated through, passes from
    dropped to normalised), and the rule's nodes turn with it: the loss is
    then not smooth in the student. That is the start of every distillation
    of a slimmed student from the model it was cut from (`jaxmoe.slim`,
    whose rows are copies of the previous model's): measured there, the
    Jacobian's spectral radius was 2e10 in the frame and a stage of 50
    time units did not finish in 1500 steps. The same happens as the
    student's rows come close to the teacher's (along an α = 1 stage: 1.3
    at its start, 1e6 at its step limit), so slim trains both of its
    terms out of the frame.

    **Returns:** a scalar. Differentiable (first order), jittable, vmappable.
    """
    check_pair(student, teacher, Mixture)
    size = min(student.dim, span_size(student, teacher)) if frame else student.dim
    points, weights = gaussian_nodes(size, nodes, 0, seed)
    return quasi_monte_carlo_on_nodes(student, teacher, points, weights, t, frame=frame)


def span_size(student: Mixture, teacher: Mixture) -> int:
    """k, the number of vectors both models read (gate, group and expert vectors, mlp rows)."""
    return sum(v.shape[0] for m in (student, teacher) for v in gate_vectors(m) + [expert_vectors(m)])


def quasi_monte_carlo_on_nodes(student: Mixture, teacher: Mixture, points, weights, t, *, frame: bool = True) -> Scalar:
    """`quasi_monte_carlo_loss` with the nodes and weights given (NumPy or traced arrays)."""
    models = (student, teacher)
    vectors = [v for m in models for v in gate_vectors(m)] + [expert_vectors(m) for m in models]
    u = jnp.concatenate(vectors).T  # (D, k)
    if frame and u.shape[1] <= student.dim:
        # In the frame of the span: the same rule whatever the coordinates
        # (d, or the reduced ones, where k = D), so a reduced simulation and
        # its d-dimensional original see the same nodes.
        q = orthonormal_frame(u, stop_gradient=False)
        student, teacher = _in_frame(student, q), _in_frame(teacher, q)

    def block(z, w):
        diff = mixture_forward(student, z, t) - mixture_forward(teacher, z, t)
        return jnp.dot(w, diff**2)

    return 0.5 * blockwise(block, points, weights, student.router.dtype)
