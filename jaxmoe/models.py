"""Any student or teacher: the paper's `MoE` or a `Mixture` of other families, behind one interface.

Both are `jaxmoe.base.Model` subclasses. The paper's model (independent
sigmoid/erf gates, He_k experts) is a `jaxmoe.MoE` and its loss is the exact
kernel of docs/model.md §2 (`jaxmoe.population.population_loss`). Every other
gate and expert family (issue #8) is a `jaxmoe.families.Mixture` and its loss
is `jaxmoe.quadrature.mixture_loss` (exact where a kernel applies, else a
fixed deterministic rule), which is also the one place that picks the rule
for any pair. The simulator (flow, discrete training, observables) calls the
functions here and the `Model` methods, and never asks which class it has.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar

from .base import Model, unit
from .quadrature import gaussian_nodes, mixture_loss

__all__ = ["Model", "model_loss", "expert_alignment", "router_alignment"]

# Nodes of the functional alignment of mlp experts (below): enough that the
# cosine is accurate to about 1e-3, cheap enough to evaluate at every step.
ALIGNMENT_NODES = 2**12


def model_loss(student: Model, teacher: Model, t=None) -> Scalar:
    """``½ E[(f_student(x) − f_teacher(x))²]``, x ~ N(0, I_D), at gradient-flow time `t`.

    `jaxmoe.quadrature.mixture_loss`: the exact kernel for two `MoE` (t is
    unused: their gates have no schedule), the best rule for the families
    otherwise (a `MoE` paired with a `Mixture` is converted).

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        jaxmoe.models.model_loss(jaxmoe.init_student(4, 20, key=k2), jaxmoe.init_teacher(2, 20, key=k1))
    """
    return mixture_loss(student, teacher, t=t)


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
