"""What is measured along a trajectory: the loss and the alignments.

Alignments are cosines between student and teacher directions:

    expert_alignment[i, j] = w̄_i · w̄*_j,   router_alignment[i, j] = v̄_i · v̄*_j

They are invariant under rotations, so they read the same in full and in
reduced coordinates. The host-side helpers below turn saved alignments into
the events of arXiv 2510.07205: when each teacher expert is recovered, in
which order, and when the initial plateau ends.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .base import Model, unit
from .quadrature import gaussian_nodes, mixture_loss
from .routing import routing_observables

__all__ = [
    "alignment",
    "expert_alignment",
    "router_alignment",
    "observe",
    "best_match",
    "first_crossing",
    "recovery",
    "recovery_order",
    "plateau_end",
    "quartiles",
    "OBSERVABLES",
]

# Names of the per-time observables, in the order they are stored: the loss,
# the alignments, and the routing observables of `jaxmoe.routing` (per-expert
# load and quality, from which entropy, CV and effective temperature follow).
OBSERVABLES = ("loss", "expert_alignment", "router_alignment", "load", "quality")


def alignment(a: Float[Array, "m d"], b: Float[Array, "k d"]) -> Float[Array, "m k"]:
    """Cosines ``ā_i · b̄_j`` between the rows of `a` and the rows of `b`.

    **Arguments:** `a` of shape ``(m, d)``, `b` of shape ``(k, d)``.

    **Returns:** shape ``(m, k)``; e.g. ``alignment(student.expert, teacher.expert)``
    is the matrix of expert alignments ``w̄_i·w̄*_j``.

    Example::

        cosines = jaxmoe.alignment(jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.array([[2.0, 0.0]]))
        assert np.allclose(cosines, [[1.0], [0.7071]], atol=1e-4)
    """
    return unit(a) @ unit(b).T


# Nodes of the functional alignment of mlp experts (below): enough that the
# cosine is accurate to about 1e-3, cheap enough to evaluate at every step.
ALIGNMENT_NODES = 2**12


def router_alignment(student: Model, teacher: Model) -> Float[Array, "m m_star"]:
    """Cosines ``v̄_i·v̄*_j`` between student and teacher routers (group routers are not included)."""
    return unit(student.router) @ unit(teacher.router).T


def _functional(student: Model, teacher: Model) -> Array:
    points, weights = gaussian_nodes(student.dim, ALIGNMENT_NODES)
    dtype = student.router.dtype
    x, w = jnp.asarray(points, dtype), jnp.asarray(weights, dtype)
    a, b = student.expert_values(x), teacher.expert_values(x)  # (N, m), (N, m*)
    gram = (a * w[:, None]).T @ b
    norm_a = jnp.sqrt(w @ a**2)
    norm_b = jnp.sqrt(w @ b**2)
    return gram / (norm_a[:, None] * norm_b[None, :])


def expert_alignment(student: Model, teacher: Model) -> Float[Array, "m m_star"]:
    """How well student expert i matches teacher expert j, a cosine in [−1, 1].

    - He and linear experts on both sides: ``w̄_i·w̄*_j``, the cosine of the
      expert vectors (a linear expert's bias is not part of it);
    - otherwise (an mlp expert on either side): the cosine of the expert
      *functions* in L²(N(0, I_D)),
      ``E[E_i E*_j] / √(E[E_i²] E[E*_j²])``, by a fixed quasi-Monte Carlo
      rule of `ALIGNMENT_NODES` nodes (`jaxmoe.quadrature.gaussian_nodes`):
      1 exactly when the two networks compute proportional functions, and
      blind to how their hidden units are ordered or scaled.
    """
    if student.degree is not None and teacher.degree is not None:
        return unit(student.expert) @ unit(teacher.expert).T
    return _functional(student, teacher)


def observe(student: Model, teacher: Model, t=None) -> dict[str, Array]:
    """The observables saved at every requested time.

    The population loss ``L = ½ E[(f_student(x) − f_teacher(x))²]``
    (`jaxmoe.quadrature.mixture_loss`: the exact kernel for the paper's model) and
    the alignments ``w̄_i·w̄*_j``, ``v̄_i·v̄*_j`` (`expert_alignment`
    says what the expert alignment is for mlp experts).

    **Arguments:** one `student` ``(m, D)`` and one `teacher` ``(m*, D)``
    (use `jax.vmap` for seeds), `jaxmoe.MoE` or `jaxmoe.families.Mixture`;
    `t`, the gradient-flow time (for a gate with a temperature schedule).

    **Returns:** ``{"loss": (), "expert_alignment": (m, m*), "router_alignment": (m, m*),
    "load": (m,), "quality": (m,)}`` (`jaxmoe.routing.routing_observables`).

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        obs = jaxmoe.observe(jaxmoe.init_student(4, 50, key=k2), jaxmoe.init_teacher(2, 50, key=k1))
        assert obs["expert_alignment"].shape == (4, 2)   # entries of order 50^(-1/2)
    """
    return {
        "loss": mixture_loss(student, teacher, t),
        "expert_alignment": expert_alignment(student, teacher),
        "router_alignment": router_alignment(student, teacher),
        **routing_observables(student, teacher, t),
    }


def best_match(expert_alignment: np.ndarray):
    """For each teacher expert j, the student expert with the largest alignment.

    ``index_j = argmax_i a_ij`` and ``value_j = max_i a_ij`` (signed: an
    anti-aligned expert does not count).

    **Arguments:** alignments of shape ``(..., m, m_star)`` (NumPy, on the host).

    **Returns:** ``(index, value)``, each of shape ``(..., m_star)``.

    Example::

        index, value = jaxmoe.best_match(np.array([[0.9, 0.1], [0.2, -0.95], [0.3, 0.6]]))
        assert list(index) == [0, 2] and np.allclose(value, [0.9, 0.6])
    """
    index = np.argmax(expert_alignment, axis=-2)
    value = np.max(expert_alignment, axis=-2)
    return index, value


def first_crossing(curve: np.ndarray, times: np.ndarray, level: float) -> np.ndarray:
    """First time each curve reaches `level`, linearly interpolated between saved times.

    With k the first saved index where ``c_k ≥ level``:
    ``t = t_{k−1} + (level − c_{k−1}) / (c_k − c_{k−1}) · (t_k − t_{k−1})``
    (``t_0`` if k = 0).

    **Arguments:** `curve` of shape ``(..., T)``, `times` of shape ``(T,)``,
    `level` a number.

    **Returns:** shape ``(...)``; ``inf`` where the curve never reaches the level
    (NaN values count as not reaching it).

    Example::

        times = np.array([0.0, 1.0, 2.0, 3.0])
        assert np.allclose(jaxmoe.observables.first_crossing(np.array([0.0, 0.4, 0.8, 1.0]), times, 0.6), 1.5)
    """
    curve = np.asarray(curve, dtype=float)
    above = np.nan_to_num(curve, nan=-np.inf) >= level
    reached = above.any(axis=-1)
    k = np.argmax(above, axis=-1)  # first index at or above the level
    k_prev = np.maximum(k - 1, 0)
    c1 = np.take_along_axis(curve, k[..., None], axis=-1)[..., 0]
    c0 = np.take_along_axis(curve, k_prev[..., None], axis=-1)[..., 0]
    t1, t0 = times[k], times[k_prev]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where((k > 0) & (c1 > c0), (level - c0) / (c1 - c0), 1.0)
    t = t0 + np.clip(fraction, 0.0, 1.0) * (t1 - t0)
    return np.where(reached, np.where(k == 0, times[0], t), np.inf)


def recovery(alignment: np.ndarray, times: np.ndarray, epsilon: float = 0.05):
    """When each teacher expert is recovered, and by which student expert.

    Teacher expert j counts as recovered at the first time t with
    ``max_i alignment[i, j](t) ≥ 1 − ε`` (linearly interpolated between saved
    times). Works on expert or router alignments of any method.

    **Arguments:** `alignment` of shape ``(S, T, m, m*)``, `times` ``(T,)``.

    **Returns:** ``(time, student)``, each ``(S, m*)``: the recovery time
    ``min{t : max_i alignment[i, j](t) ≥ 1 − ε}`` (``inf`` if never) and the
    student expert that is best aligned at the first saved time at or after
    it (−1 if never).

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        time, student = jaxmoe.observables.recovery(result.expert_alignment, result.times, epsilon=0.05)
        assert time.shape == (2, 2) and student.shape == (2, 2)
    """
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1); got {epsilon!r}")
    best = np.nanmax(np.nan_to_num(alignment, nan=-np.inf), axis=2)  # (S, T, m*)
    time = first_crossing(np.moveaxis(best, 1, -1), times, 1.0 - epsilon)  # (S, m*)
    index = np.argmax(np.nan_to_num(best, nan=-np.inf) >= 1.0 - epsilon, axis=1)  # (S, m*) first saved index
    student = np.take_along_axis(
        np.argmax(np.nan_to_num(alignment, nan=-np.inf), axis=2), index[:, None, :], axis=1
    )[:, 0, :]
    return time, np.where(np.isfinite(time), student, -1)


def recovery_order(time: np.ndarray) -> np.ndarray:
    """Rank of each teacher expert's recovery within its seed (0 = first; ties by index).

    **Arguments:** recovery times ``(S, m*)`` from `recovery` (``inf`` never).

    **Returns:** ``(S, m*)`` integer ranks; teachers never recovered rank last.

    Example::

        assert jaxmoe.observables.recovery_order(np.array([[3.0, np.inf, 1.0]])).tolist() == [[1, 2, 0]]
    """
    return np.argsort(np.argsort(time, axis=1, kind="stable"), axis=1, kind="stable")


def plateau_end(alignment: np.ndarray, times: np.ndarray, level: float = 0.5) -> np.ndarray:
    """End of the initial plateau: the first time any student expert reaches
    alignment `level` with any teacher expert (escape from the O(d^(-1/2))
    overlaps of the initialisation), ``min{t : max_{i,j} alignment[i, j](t) ≥ level}``,
    linearly interpolated (`first_crossing`).

    **Arguments:** `alignment` ``(S, T, m, m*)``, `times` ``(T,)``, `level`.

    **Returns:** shape ``(S,)``; ``inf`` if never.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        assert jaxmoe.observables.plateau_end(result.expert_alignment, result.times).shape == (2,)
    """
    best = np.nanmax(np.nan_to_num(alignment, nan=-np.inf), axis=(2, 3))  # (S, T)
    return first_crossing(best, times, level)


def quartiles(values: np.ndarray, axis: int = 0) -> dict[str, np.ndarray | np.float64]:
    """Median and quartiles over seeds; ``inf`` entries (never happened) count as larger than all.

    NumPy's ``quantile(…, method="lower")``: each is an actual entry, never an
    interpolation with ``inf``.

    **Arguments:** `values` (any shape), `axis` the seed axis.

    **Returns:** ``{"q25", "median", "q75"}``, arrays with `axis` removed.

    Example::

        assert jaxmoe.observables.quartiles(np.array([4.0, 1.0, np.inf, 2.0, 3.0])) == {"q25": 2, "median": 3, "q75": 4}
    """
    q = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75], axis=axis, method="lower")
    return {"q25": q[0], "median": q[1], "q75": q[2]}
