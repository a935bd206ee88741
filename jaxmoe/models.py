"""Any student or teacher: the paper's `MoE` or a `Mixture` of other families, behind one interface.

The paper's model (independent sigmoid/erf gates, He_k experts) is a
`jaxmoe.MoE` and its loss is the exact kernel of docs/model.md §2
(`jaxmoe.population.population_loss`). Every other gate and expert family
(issue #8) is a `jaxmoe.families.Mixture` and its loss is
`jaxmoe.quadrature.mixture_loss` (exact where a kernel applies, else a fixed
deterministic rule). The simulator (flow, discrete training, observables)
calls the functions here and never asks which it has.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Scalar

from .families import Mixture, expert_values, mixture_forward
from .model import MoE, forward, unit
from .population import population_loss

__all__ = ["Model", "model_loss", "model_forward", "expert_alignment", "router_alignment", "model_arrays"]

Model = MoE | Mixture

# Nodes of the functional alignment of mlp experts (below): enough that the
# cosine is accurate to about 1e-3, cheap enough to evaluate at every step.
ALIGNMENT_NODES = 2**12


def model_loss(student: Model, teacher: Model, t=None) -> Scalar:
    """``½ E[(f_student(x) − f_teacher(x))²]``, x ~ N(0, I_D), at gradient-flow time `t`.

    The exact kernel for two `MoE` (t is unused: their gates have no
    schedule); `jaxmoe.quadrature.mixture_loss` otherwise (a `MoE` paired
    with a `Mixture` is converted).

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        student, teacher = jaxmoe.init_student(4, 20, key=k2), jaxmoe.init_teacher(2, 20, key=k1)
        assert np.allclose(jaxmoe.models.model_loss(student, teacher), jaxmoe.population_loss(student, teacher))
    """
    if isinstance(student, MoE) and isinstance(teacher, MoE):
        return population_loss(student, teacher)
    from .quadrature import mixture_loss

    return mixture_loss(as_mixture(student), as_mixture(teacher), t=t)


def model_forward(model: Model, x: Float[Array, "n D"], t=None) -> Float[Array, " n"]:
    """``f(θ, x)`` for a batch of inputs ``(n, D)``: `jaxmoe.forward` or `jaxmoe.families.mixture_forward`."""
    if isinstance(model, MoE):
        return forward(model, x)
    return mixture_forward(model, x, t)


def as_mixture(model: Model) -> Mixture:
    """A `Mixture` computing the same function (a `MoE` is rewrapped; its families are named alike)."""
    if isinstance(model, Mixture):
        return model
    if not isinstance(model, MoE):
        raise TypeError(f"expected a jaxmoe.MoE or jaxmoe.families.Mixture; got {type(model).__name__}")
    return Mixture(model.router, model.expert, gate=model.gate.name, expert_fn=model.expert_fn.name)


def router_alignment(student: Model, teacher: Model) -> Float[Array, "m m_star"]:
    """Cosines ``v̄_i·v̄*_j`` between student and teacher routers (group routers are not included)."""
    return unit(student.router) @ unit(teacher.router).T


def _functional(student: Mixture, teacher: Mixture) -> Array:
    from .quadrature import gaussian_nodes

    points, weights = gaussian_nodes(student.dim, ALIGNMENT_NODES)
    dtype = student.router.dtype
    x, w = jnp.asarray(points, dtype), jnp.asarray(weights, dtype)
    a, b = expert_values(student, x), expert_values(teacher, x)  # (N, m), (N, m*)
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
    mlp = any(isinstance(m, Mixture) and m.expert_fn.name == "mlp" for m in (student, teacher))
    if not mlp:
        return unit(student.expert) @ unit(teacher.expert).T
    return _functional(as_mixture(student), as_mixture(teacher))


def model_arrays(model: Model) -> dict[str, Array | np.ndarray]:
    """The model's arrays by name (``router``, ``expert`` and, where present,
    ``group_router``, ``bias``, ``output``): what a result stores."""
    out = {"router": model.router, "expert": model.expert}
    if isinstance(model, Mixture):
        for name in ("group_router", "bias", "output"):
            value = getattr(model, name)
            if value is not None:
                out[name] = value
    return out
