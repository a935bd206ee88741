"""The soft-routed mixture of experts of arXiv 2510.07205 as a PyTree.

    f(θ, x) = Σ_i σ(v̄_i·x) P(w̄_i·x),   v̄ = v/‖v‖,  w̄ = w/‖w‖

σ is the router activation (the logistic sigmoid in the paper) and P the
expert polynomial (He3 in the paper). There are no output weights, and the
model depends on each router and expert vector only through its direction.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .base import Model, unit
from .hermite import Activation, HermiteExpert, get_activation, get_expert

__all__ = ["MoE", "forward", "unit"]


class MoE(Model):
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

    def gate_weights(self, x: Float[Array, "n d"], t=None) -> Float[Array, "n m"]:
        """``σ(v̄_i·x)`` for each input and expert (`t` is unused: the gate has no schedule)."""
        return self.gate(x @ unit(self.router).T)

    def expert_values(self, x: Float[Array, "n d"]) -> Float[Array, "n m"]:
        """``P(w̄_i·x)`` for each input and expert."""
        return self.expert_fn(x @ unit(self.expert).T)

    @property
    def degree(self) -> int:
        """The degree k of the expert polynomial He_k."""
        return self.expert_fn.degree

    @property
    def families(self) -> tuple[str, str]:
        """``(gate name, expert name)``, e.g. ``("sigmoid", "he3")``."""
        return self.gate.name, self.expert_fn.name

    def arrays(self) -> dict[str, Array | np.ndarray]:
        """``{"router": …, "expert": …}``: what a result stores."""
        return {"router": self.router, "expert": self.expert}


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
    return model.forward(x)
