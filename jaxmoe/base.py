"""The one model abstraction: what every mixture of experts, the paper's or any other family, provides.

Every model computes ``f(θ, x) = Σ_i g_i(x) E_i(x)`` from a gate (router
vectors, and group routers for a hierarchical gate) and experts (expert
vectors, or rows of a first layer, with biases or output weights). The
paper's `jaxmoe.MoE` and the general `jaxmoe.families.Mixture` both subclass
`Model`; the simulator (loss choice, span projection, observables, saved
arrays) asks a model for what it needs through these methods and never
which class it has.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["Model", "unit", "check_pair"]


def unit(v: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """Rows scaled to unit Euclidean norm: ``v̄ = v/‖v‖`` along the last axis.

    **Arguments:** `v` of shape ``(..., d)``. **Returns:** the same shape.

    Example::

        assert np.allclose(jaxmoe.unit(jnp.array([[3.0, 4.0], [0.0, 2.0]])), [[0.6, 0.8], [0.0, 1.0]])
    """
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


class Model(eqx.Module):
    """A mixture of experts ``f(θ, x) = Σ_i g_i(x) E_i(x)``: the base of `jaxmoe.MoE` and `jaxmoe.families.Mixture`.

    A subclass holds its arrays as fields (`router` first), names the
    fields that hold vectors in R^D in `VECTOR_FIELDS` (they rotate with the
    inputs, the others are scalars per expert) and implements the gate, the
    experts, the expert degree and the arrays a result stores. Under
    `jax.vmap` the arrays carry leading batch axes (one per seed).
    """

    router: eqx.AbstractVar[Array | np.ndarray]
    expert: eqx.AbstractVar[Array | np.ndarray]
    # The fields holding vectors in R^D along their last axis, in the order
    # of the span's basis (`jaxmoe.init.project_to_span`).
    VECTOR_FIELDS: ClassVar[tuple[str, ...]] = ("router", "expert")

    @abc.abstractmethod
    def gate_weights(self, x: Float[Array, "n D"], t=None) -> Float[Array, "n m"]:
        """The gate g_i(x) for each input and expert, at gradient-flow time `t` (for a τ schedule)."""

    @abc.abstractmethod
    def expert_values(self, x: Float[Array, "n D"]) -> Float[Array, "n m"]:
        """Each expert's output E_i(x)."""

    @property
    @abc.abstractmethod
    def degree(self) -> int | None:
        """The experts' polynomial degree: k for He_k, 1 for linear, None for mlp (not a polynomial)."""

    @property
    @abc.abstractmethod
    def families(self) -> tuple[str, str]:
        """The gate and the expert family as a configuration names them (``SimulationConfig.gate``, ``.expert``)."""

    @abc.abstractmethod
    def arrays(self) -> dict[str, Array | np.ndarray]:
        """The model's arrays by name (``router``, ``expert`` and whatever else it has): what a result stores."""

    @property
    def num_experts(self) -> int:
        """m, the number of experts (the axis before the last of `router`)."""
        return self.router.shape[-2]

    @property
    def dim(self) -> int:
        """D, the dimension of the vectors: d, or that of the reduced coordinates."""
        return self.router.shape[-1]

    def forward(self, x: Float[Array, "n D"], t=None) -> Float[Array, " n"]:
        """``f(θ, x) = Σ_i g_i(x) E_i(x)`` for a batch of inputs ``(n, D)``; `t` as for `gate_weights`."""
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}); got {x.shape}")
        return jnp.sum(self.gate_weights(x, t) * self.expert_values(x), axis=-1)

    def vectors(self) -> list[Array | np.ndarray]:
        """The arrays of `VECTOR_FIELDS` that are present, each as rows ``([S,] n, D)``.

        A field with one axis more than `router` (the ``(m, h, D)`` first
        layer of mlp experts) is flattened to ``m·h`` rows.
        """
        out = []
        for name in self.VECTOR_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if value.ndim == self.router.ndim + 1:
                value = value.reshape(value.shape[:-3] + (-1, value.shape[-1]))
            out.append(value)
        return out

    def with_vectors(self, vectors: list[Array | np.ndarray]):
        """The same model with the arrays of `vectors()` replaced (same order, any last dimension)."""
        names = [name for name in self.VECTOR_FIELDS if getattr(self, name) is not None]
        if len(vectors) != len(names):
            raise ValueError(f"expected {len(names)} vector arrays ({', '.join(names)}); got {len(vectors)}")
        new = [v.reshape(getattr(self, name).shape[:-1] + (v.shape[-1],)) for name, v in zip(names, vectors, strict=True)]
        return eqx.tree_at(lambda model: [getattr(model, name) for name in names], self, new)


def check_pair(student, teacher, cls: type = Model) -> None:
    """Check a student and a teacher for a loss: both `cls`, unbatched, the same dimension.

    **Raises:** `TypeError` for another class, `ValueError` (one line) for
    batched arrays or different dimensions.
    """
    if not isinstance(student, cls) or not isinstance(teacher, cls):
        name = {"MoE": "jaxmoe.MoE", "Mixture": "jaxmoe.families.Mixture"}.get(cls.__name__, f"jaxmoe.{cls.__name__}")
        raise TypeError(f"student and teacher must be {name} instances; got {type(student).__name__} and {type(teacher).__name__}")
    if student.router.ndim != 2 or teacher.router.ndim != 2:
        raise ValueError(
            "the loss takes one student and one teacher (arrays of shape (m, D)); use jax.vmap for batches of seeds; "
            f"got router shapes {student.router.shape} and {teacher.router.shape}"
        )
    if student.dim != teacher.dim:
        raise ValueError(f"student and teacher must share the dimension; got D = {student.dim} and D = {teacher.dim}")
