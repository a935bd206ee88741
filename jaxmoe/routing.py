"""Routing-load diagnostics along a trajectory: per-expert load, its entropy and spread, an effective temperature.

"Three Phases of Expert Routing" (arXiv 2604.04230) follows how evenly a
router spreads its inputs over the experts during training. For a model with
gate g (any family of `jaxmoe.families`) these are, at one time t:

- **load** of expert i: ``ℓ_i = E_x[g_i(x)]``, x ~ N(0, I_D) — the share of
  the input distribution routed to it (for softmax-type gates Σ_i ℓ_i = 1).
  The paper's independent gates σ(v̄_i·x) have no bias and x is symmetric, so
  every load is exactly ½ whatever the router: for them the load diagnostics
  are uniform by construction and only the qualities move; the diagnostics
  speak for the coupled (softmax-type) gates of `jaxmoe.families`.
- **quality** of expert i: minus its mean squared error against the teacher
  on the inputs routed to it,

      q_i = − E[g_i(x) (E_i(x) − f*(x))²] / E[g_i(x)]

  (the gate-weighted error divided by the load, so that it is the error per
  unit of routed mass: a quality, comparable between a busy expert and an
  idle one; without the division a busy expert would look worse only for
  being busy).
- **load entropy** ``H = −Σ p_i log p_i`` with ``p = ℓ / Σ ℓ`` (log m for a
  uniform load, 0 when one expert takes everything) and the **coefficient
  of variation** ``CV = std_i(ℓ) / mean_i(ℓ)`` (0 for a uniform load; the
  squared CV is the load-balancing loss of Shazeer et al. 2017).
- **effective temperature**: the inverse temperature β for which
  ``softmax(β q)`` best predicts the load, ``β̂ = argmin_β KL(p ‖ softmax(β q))``.
  β > 0: the router sends more to better experts (β → ∞: all to the best);
  β ≈ 0: load unrelated to quality; β < 0: more to worse ones.

`routing_observables` is jittable and vmappable (over seeds and times): the
expectations are a fixed deterministic rule, `jaxmoe.quadrature.gaussian_nodes`
(tensor Gauss–Hermite in ≤ 3 coordinates, scrambled Sobol points mapped by the
inverse normal CDF beyond), built once per size and cached, taken in an
orthonormal frame of the vectors the two models read (so a d = 1000 model
costs what its few vectors cost). The rest is host-side NumPy on saved arrays.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .families import as_mixture

__all__ = [
    "ROUTING_OBSERVABLES",
    "routing_observables",
    "load_entropy",
    "load_cv",
    "effective_temperature",
    "routing_diagnostics",
]

# Names of the per-time routing observables, as `routing_observables` returns them.
ROUTING_OBSERVABLES = ("load", "quality")
# Node budget of the expectations: loads to about 1e-3 in a few dozen coordinates.
ROUTING_NODES = 2**12
# Loads below this count as zero when dividing (an expert nobody routes to).
_TINY = 1e-30


def routing_observables(student, teacher, t=None, *, nodes: int = ROUTING_NODES) -> dict[str, Array]:
    """Per-expert load and quality of `student` (module docstring), at gradient-flow time `t`.

    **Arguments:**

    - `student` ``(m, D)`` and `teacher` ``(m*, D)``: `jaxmoe.families.Mixture`
      (or the paper's `jaxmoe.MoE`); one of each — `jax.vmap` for seeds or times.
    - `t`: gradient-flow time, for a gate with a temperature schedule (``None``: t = 0).
    - `nodes`: the node budget of the expectations (static).

    **Returns:** ``{"load": (m,), "quality": (m,)}``. Jittable.

    Example::

        import jaxmoe.families as F, jaxmoe.routing as R
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher = F.init_mixture_teacher(2, 8, "softmax", "linear", key=k1)
        student = F.init_mixture_student(4, 8, "softmax", "linear", key=k2)
        obs = R.routing_observables(student, teacher)
        assert np.allclose(obs["load"].sum(), 1.0)      # for a softmax gate
    """
    from .quadrature import expert_vectors, gate_vectors, gaussian_nodes, rule_degree

    student, teacher = as_mixture(student), as_mixture(teacher)
    if student.dim != teacher.dim:
        raise ValueError(f"student and teacher must share the dimension; got {student.dim} and {teacher.dim}")
    dim = student.dim
    # Every vector the models read x through (routers, group routers, expert rows).
    frame = jnp.concatenate([v for m in (student, teacher) for v in gate_vectors(m) + [expert_vectors(m)]])
    count = frame.shape[0]
    degree = max(rule_degree(student), rule_degree(teacher))
    if count >= dim:
        z, w = gaussian_nodes(dim, nodes, degree)
        x = jnp.asarray(z, frame.dtype)
    else:
        # x enters only through projections on these K vectors: integrate over
        # an orthonormal frame q of their span (exact in law: qᵀx ~ N(0, I_K)).
        z, w = gaussian_nodes(count, nodes, degree)
        # (D, K), orthonormal columns spanning the vectors (dependent ones zero).
        # Not jnp.linalg.qr: batched LAPACK calls can deadlock a 2-thread XLA CPU pool.
        from .pairkernel import orthonormal_frame

        q = orthonormal_frame(frame.T)
        # The models read x = q z only through these vectors, and v·(q z) = (qᵀv)·z:
        # evaluate them on the K frame coordinates, not on N inputs of dimension D
        # (a save at d = 50 cost 20× one at D = 12, most of it the N × D products).
        student, teacher = (model.with_vectors([v @ q for v in model.vectors()]) for model in (student, teacher))
        x = jnp.asarray(z, frame.dtype)
    w = jnp.asarray(w / w.sum(), frame.dtype)  # exact normalisation: a uniform gate gets load 1/m exactly
    g = student.gate_weights(x, t)  # (N, m)
    err = (student.expert_values(x) - teacher.forward(x, t)[:, None]) ** 2
    load = w @ g
    quality = -(w @ (g * err)) / jnp.maximum(load, _TINY)
    return {"load": load, "quality": quality}


def _distribution(load: np.ndarray) -> np.ndarray:
    load = np.asarray(load, dtype=float)
    return load / np.sum(load, axis=-1, keepdims=True)


def load_entropy(load) -> np.ndarray | np.float64:
    """``H = −Σ_i p_i log p_i``, p = load normalised to sum to one; over the last axis.

    **Arguments:** loads ``(..., m)`` (non-negative). **Returns:** ``(...)``,
    in nats: log m for a uniform load, 0 when one expert takes all.

    Example::

        import jaxmoe.routing
        assert np.allclose(jaxmoe.routing.load_entropy(np.full(4, 0.25)), np.log(4))
    """
    p = _distribution(load)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.sum(terms, axis=-1)


def load_cv(load) -> np.ndarray | np.float64:
    """Coefficient of variation of the loads over experts, ``std(ℓ) / mean(ℓ)`` (population std); over the last axis.

    Example::

        import jaxmoe.routing
        assert jaxmoe.routing.load_cv(np.full(4, 0.25)) == 0.0
        assert jaxmoe.routing.load_cv(np.array([1.0, 0.0])) == 1.0
    """
    load = np.asarray(load, dtype=float)
    return np.std(load, axis=-1) / np.mean(load, axis=-1)


def effective_temperature(load, quality, *, iterations: int = 200) -> np.ndarray:
    """The effective inverse temperature β̂ = argmin_β KL(p ‖ softmax(β q)), over the last axis.

    p = load / Σ load, q = quality. ``KL(p ‖ softmax(βq)) = const − β p·q +
    logsumexp(βq)`` is convex in β, and its minimiser matches moments:
    ``E_{softmax(β̂q)}[q] = p·q`` (the softmax's mean quality is the load's).
    Solved by bisection on that monotone condition (robust: no step size,
    no starting point), over ``|β| ≤ 10³ / (max q − min q)``.

    **Arguments:** `load` and `quality` ``(..., m)``; `iterations` of bisection.

    **Returns:** β̂ ``(...)`` in units of 1/quality (the temperature is 1/β̂):
    ``+inf`` when the load's mean quality is at (or beyond) the best expert's,
    ``−inf`` at the worst's, 0 when every expert has the same quality (no β
    does better than another), NaN for non-finite input.

    Example::

        import jaxmoe.routing
        q = np.array([-1.0, -2.0, -3.0])
        assert np.allclose(jaxmoe.routing.effective_temperature(np.exp(2 * q) / np.exp(2 * q).sum(), q), 2.0)
    """
    p = _distribution(load)
    q = np.asarray(quality, dtype=float)
    p, q = np.broadcast_arrays(p, q)
    target = np.sum(p * q, axis=-1)
    spread = np.max(q, axis=-1) - np.min(q, axis=-1)
    flat = ~(spread > 0)
    bound = 1e3 / np.where(flat, 1.0, spread)

    def excess(beta):  # E_{softmax(βq)}[q] − p·q, increasing in β
        s = beta[..., None] * q
        s = s - np.max(s, axis=-1, keepdims=True)  # stable for either sign of β
        e = np.exp(s)
        return np.sum(e * q, axis=-1) / np.sum(e, axis=-1) - target

    lo, hi = -bound, bound.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        # The minimiser is ±∞ exactly when the load's mean quality is at the
        # best (worst) expert's or beyond; checking that directly avoids
        # reporting where exp underflows as a finite β.
        above, below = target >= np.max(q, axis=-1), target <= np.min(q, axis=-1)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            up = excess(mid) < 0
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    beta = 0.5 * (lo + hi)
    beta = np.where(above, np.inf, np.where(below, -np.inf, beta))
    beta = np.where(flat, 0.0, beta)
    bad = ~np.all(np.isfinite(p) & np.isfinite(q), axis=-1)
    return np.where(bad, np.nan, beta)


def routing_diagnostics(load, quality) -> dict[str, np.ndarray]:
    """`load_entropy`, `load_cv` and `effective_temperature` of saved loads and qualities ``(..., m)``.

    **Returns:** ``{"entropy", "cv", "beta"}``, each ``(...)``.

    Example::

        import jaxmoe.routing
        load = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])   # (T, m); a run's: result.extra["load"], (S, T, m)
        diag = jaxmoe.routing.routing_diagnostics(load, np.zeros_like(load))  # (…, m) → (…) each
        assert np.allclose(diag["entropy"], [np.log(4), 0.0]) and np.allclose(diag["cv"], [0.0, np.sqrt(3)])
    """
    return {"entropy": load_entropy(load), "cv": load_cv(load), "beta": effective_temperature(load, quality)}
