"""The Mixture PyTree of any family, its gate weights, expert values and forward."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..base import Model, unit
from ..hermite import ACTIVATIONS, EXPERTS
from ..model import MoE
from ._specs import Expert, Gate, as_expert, as_gate

# The hidden units' activations of the mlp experts (`MLP_ACTIVATIONS`); GELU
# is the exact z·Φ(z), not its tanh approximation.
MLP_FUNCTIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "gelu": lambda z: jax.nn.gelu(z, approximate=False)}


class Mixture(Model):
    """A mixture of experts of any gate and expert family: ``f(θ, x) = Σ_i g_i(x) E_i(x)``.

    The same class serves as teacher and as student. Under `jax.vmap` the
    arrays carry leading batch axes (one per seed).

    **Arguments:**

    - `router`: router vectors v_i, shape ``(m, D)`` (used through v̄_i).
    - `expert`: expert weights: ``(m, D)`` for He_k (used through w̄_i) and
      linear; ``(m, h, D)`` for mlp (the first layer W_ir).
    - `group_router`: ``(G, D)`` group routers u_g for ``"hierarchical"``
      (used through ū_g), else ``None``.
    - `bias`: ``(m,)`` biases b_i for ``"linear"``, else ``None``.
    - `output`: ``(m, h)`` output weights a_ir for ``"mlp"``, else ``None``.
    - `gate`, `expert_fn`: `Gate` and `Expert` specifications or their
      strings. Static: not leaves of the PyTree.

    **Raises:** `ValueError` (one line) for shapes that do not fit the
    families, groups that do not divide m, or k outside 1..m.
    """

    router: Float[Array | np.ndarray, "*batch m D"]  # leading axes: one model per seed (as `MoE`)
    expert: Array
    group_router: Array | None = None
    bias: Array | None = None
    output: Array | None = None
    gate: Gate = eqx.field(static=True, default=Gate("sigmoid"), converter=as_gate)
    expert_fn: Expert = eqx.field(static=True, default=Expert("he3"), converter=as_expert)
    # Biases and mlp output weights are scalars per expert: they do not rotate.
    VECTOR_FIELDS = ("router", "group_router", "expert")

    def __check_init__(self):
        shape_r = getattr(self.router, "shape", None)
        shape_e = getattr(self.expert, "shape", None)
        if shape_r is None or shape_e is None or len(shape_r) != 2:
            return  # placeholders built by JAX transformations, or batched arrays under vmap
        m, dim = shape_r
        gate, expert = self.gate, self.expert_fn
        want = (m, expert.hidden, dim) if expert.name == "mlp" else (m, dim)
        if tuple(shape_e) != want:
            raise ValueError(f"expert {str(expert)!r} needs expert weights of shape {want}; got {tuple(shape_e)}")
        if expert.name == "linear" and (self.bias is None or tuple(self.bias.shape) != (m,)):
            raise ValueError(f"expert 'linear' needs bias of shape ({m},); got {getattr(self.bias, 'shape', None)}")
        if expert.name == "mlp" and (self.output is None or tuple(self.output.shape) != (m, expert.hidden)):
            raise ValueError(
                f"expert 'mlp' needs output weights of shape {(m, expert.hidden)}; got {getattr(self.output, 'shape', None)}"
            )
        if gate.name == "hierarchical":
            if m % gate.groups != 0:
                raise ValueError(f"hierarchical gate: groups = {gate.groups} must divide m = {m}")
            if self.group_router is None or tuple(self.group_router.shape) != (gate.groups, dim):
                raise ValueError(
                    f"hierarchical gate needs group_router of shape {(gate.groups, dim)}; "
                    f"got {getattr(self.group_router, 'shape', None)}"
                )
        if gate.name == "topk" and not 1 <= gate.k <= m:
            raise ValueError(f"topk gate: k must be in 1..m = 1..{m}; got {gate.k}")

    def gate_weights(self, x: Float[Array, "n D"], t=None) -> Float[Array, "n m"]:
        """The gate g_i(x) for each input and expert, at gradient-flow time `t` (for a τ schedule)."""
        gate = self.gate
        logits = x @ unit(self.router).T  # (n, m)
        if gate.independent:
            return ACTIVATIONS[gate.name](logits)
        tau = gate.temperature(t)
        if gate.name == "activation":
            act = jnp.tanh if gate.activation == "tanh" else jax.nn.sigmoid
            logits = act(logits)
        logits = logits / tau
        if gate.name in ("softmax", "temperature", "activation"):
            return jax.nn.softmax(logits, axis=-1)
        if gate.name == "hierarchical":
            n, m = logits.shape
            groups = gate.groups
            outer = jax.nn.softmax(x @ unit(self.group_router).T / tau, axis=-1)  # (n, G)
            inner = jax.nn.softmax(logits.reshape(n, groups, m // groups), axis=-1)  # (n, G, E)
            return (outer[:, :, None] * inner).reshape(n, m)
        # topk: the k-th largest logit is the threshold; ties have probability zero.
        threshold = jax.lax.top_k(logits, gate.k)[0][:, -1:]
        kept = logits >= threshold
        masked = jnp.where(kept, logits, -jnp.inf)
        return jax.nn.softmax(masked, axis=-1)

    def expert_values(self, x: Float[Array, "n D"]) -> Float[Array, "n m"]:
        """Each expert's output E_i(x): shape ``(n, m)``."""
        expert = self.expert_fn
        if expert.hermite:
            return EXPERTS[expert.name](x @ unit(self.expert).T)
        if expert.name == "linear":
            return x @ self.expert.T + self.bias
        pre = jnp.einsum("nd,mhd->nmh", x, self.expert)
        return jnp.einsum("nmh,mh->nm", MLP_FUNCTIONS[expert.activation](pre), self.output)

    @property
    def degree(self) -> int | None:
        """The experts' polynomial degree: k for He_k, 1 for linear, None for mlp."""
        return self.expert_fn.degree

    @property
    def families(self) -> tuple[str, str]:
        """The `Gate` and `Expert` specifications as strings, e.g. ``("softmax:tau=0.5", "mlp:hidden=4")``."""
        return str(self.gate), str(self.expert_fn)

    def arrays(self) -> dict[str, Array | np.ndarray]:
        """The arrays by name: ``router``, ``expert`` and, where present, ``group_router``, ``bias``, ``output``."""
        out = {"router": self.router, "expert": self.expert}
        for name in ("group_router", "bias", "output"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def gate_weights(model: Mixture, x: Float[Array, "n D"], t=None) -> Float[Array, "n m"]:
    """The gate g_i(x) for each input and expert, at gradient-flow time `t`: `Mixture.gate_weights`."""
    return model.gate_weights(x, t)


def expert_values(model: Mixture, x: Float[Array, "n D"]) -> Float[Array, "n m"]:
    """Each expert's output E_i(x), shape ``(n, m)``: `Mixture.expert_values`."""
    return model.expert_values(x)


def mixture_forward(model: Mixture, x: Float[Array, "n D"], t=None) -> Float[Array, " n"]:
    """``f(θ, x) = Σ_i g_i(x) E_i(x)`` for a batch of inputs.

    **Arguments:**

    - `model`: the `Mixture`.
    - `x`: inputs, shape ``(n, D)``.
    - `t`: gradient-flow time, used only by a gate with a temperature
      schedule (``None``: t = 0).

    **Returns:** the outputs, shape ``(n,)``.

    Example::

        import jaxmoe.families
        teacher = jaxmoe.families.init_mixture_teacher(2, 6, "topk:k=1", "linear", key=jax.random.PRNGKey(0))
        assert jaxmoe.families.mixture_forward(teacher, jnp.ones((3, 6))).shape == (3,)
    """
    return model.forward(x, t)


def as_mixture(model: Model) -> Mixture:
    """A `Mixture` computing the same function (a `jaxmoe.MoE` is rewrapped; its families are named alike)."""
    if isinstance(model, Mixture):
        return model
    if not isinstance(model, MoE):
        raise TypeError(f"expected a jaxmoe.MoE or jaxmoe.families.Mixture; got {type(model).__name__}")
    return Mixture(model.router, model.expert, gate=model.gate.name, expert_fn=model.expert_fn.name)


def as_moe(model: Model) -> MoE:
    """A `jaxmoe.MoE` computing the same function, for a model of the paper's families (independent gate, He_k expert)."""
    if isinstance(model, MoE):
        return model
    if not (model.gate.independent and model.expert_fn.hermite):
        raise ValueError(f"only an independent gate with He_k experts is a jaxmoe.MoE; got {model.gate}, {model.expert_fn}")
    return MoE(model.router, model.expert, model.gate.name, model.expert_fn.name)
