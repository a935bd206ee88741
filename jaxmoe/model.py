"""The soft-routed mixture of experts of arXiv 2510.07205 as a PyTree.

    f(θ, x) = Σ_i σ(v̄_i·x) P(w̄_i·x),   v̄ = v/‖v‖,  w̄ = w/‖w‖

σ is the router activation (the logistic sigmoid in the paper) and P the
expert polynomial (He3 in the paper). There are no output weights, and the
model depends on each router and expert vector only through its direction.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .hermite import Activation, HermiteExpert, get_activation, get_expert

__all__ = ["MoE", "forward", "unit"]


class MoE(eqx.Module):
    """A mixture of experts: one router vector and one expert vector per expert.

    It computes ``f(θ, x) = Σ_i σ(v̄_i·x) P(w̄_i·x)`` (`forward`), the soft-routed
    model of "Guided by the Experts: Provable Feature Learning Dynamic of
    Soft-Routed Mixture-of-Experts" (arXiv 2510.07205; docs/model.md §1).

    **Arguments:**

    - `router`: router vectors v_i, shape ``(m, d)``.
    - `expert`: expert vectors w_i, shape ``(m, d)``.
    - `gate`: the router activation σ, a name (``"sigmoid"``, ``"erf"``) or an
      `Activation`. Static: not a leaf of the PyTree.
    - `expert_fn`: the expert polynomial P, a name (``"he1"`` … ``"he4"``) or a
      `HermiteExpert`. Static.

    The same class is used for the teacher and for the student. Under
    `jax.vmap` the arrays carry leading batch axes (one per seed).

    Example::

        key_v, key_w = jax.random.split(jax.random.PRNGKey(0))
        model = jaxmoe.MoE(jax.random.normal(key_v, (3, 10)), jax.random.normal(key_w, (3, 10)), gate="erf")
        assert (model.num_experts, model.dim) == (3, 10)
    """

    # Leading axes batch models (one per seed: `init.init_problem`, `Result.models`);
    # saved results and pruned problems hold NumPy arrays.
    router: Float[Array | np.ndarray, "*batch m d"]
    expert: Float[Array | np.ndarray, "*batch m d"]
    gate: Activation = eqx.field(static=True, default="sigmoid", converter=get_activation)
    expert_fn: HermiteExpert = eqx.field(static=True, default="he3", converter=get_expert)

    def __check_init__(self):
        shape_r, shape_e = getattr(self.router, "shape", None), getattr(self.expert, "shape", None)
        if shape_r is None or shape_e is None:
            return  # placeholders built by JAX transformations
        if len(shape_r) < 2 or shape_r != shape_e:
            raise ValueError(
                f"router and expert must both have shape (m, d); got {shape_r} and {shape_e}"
            )

    @property
    def num_experts(self) -> int:
        """m, the number of experts (the axis before the last)."""
        return self.router.shape[-2]

    @property
    def dim(self) -> int:
        """The dimension of the vectors: d, or the reduced 2(m + m*)."""
        return self.router.shape[-1]


def unit(v: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """Rows scaled to unit Euclidean norm: ``v̄ = v/‖v‖`` along the last axis.

    **Arguments:** `v` of shape ``(..., d)``. **Returns:** the same shape.

    Example::

        assert np.allclose(jaxmoe.unit(jnp.array([[3.0, 4.0], [0.0, 2.0]])), [[0.6, 0.8], [0.0, 1.0]])
    """
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def forward(model: MoE, x: Float[Array, "n d"]) -> Float[Array, " n"]:
    """``f(θ, x) = Σ_i σ(v̄_i·x) P(w̄_i·x)`` for a batch of inputs.

    **Arguments:**

    - `model`: the mixture of experts.
    - `x`: inputs, shape ``(n, d)``.

    **Returns:** the outputs, shape ``(n,)``.

    Example::

        teacher = jaxmoe.init_teacher(2, 10, key=jax.random.PRNGKey(0))
        x = jax.random.normal(jax.random.PRNGKey(1), (8, teacher.dim))
        assert jaxmoe.forward(teacher, x).shape == (8,)
    """
    if x.ndim != 2 or x.shape[-1] != model.dim:
        raise ValueError(f"x must have shape (n, {model.dim}); got {x.shape}")
    gate = model.gate(x @ unit(model.router).T)  # (n, m)
    value = model.expert_fn(x @ unit(model.expert).T)  # (n, m)
    return jnp.sum(gate * value, axis=-1)
