"""Gate and expert families, and the general mixture of experts built from them.

    f(θ, x) = Σ_i g_i(x) E_i(x)

A model is a gate g (how the m experts are weighted at input x) composed with
experts E_i (what each one computes), each chosen by name with parameters
(issue #8). `Gate` and `Expert` are frozen, hashable, validated specifications
(usable as static fields under `jax.jit`); `Mixture` is the PyTree holding the
arrays each family needs; `mixture_forward` evaluates f.

**Gates** (routers enter through unit vectors v̄ = v/‖v‖, as in the paper, so
that a temperature τ and nothing else sets the sharpness; otherwise the norm
of v and τ would be two names for one thing):

- ``"sigmoid"``, ``"erf"``: independent gates g_i = σ(v̄_i·x) (the paper's
  router; the population loss of these with Hermite experts is exact,
  `jaxmoe.population`).
- ``"softmax"``: g = softmax_i(v̄_i·x).
- ``"temperature"``: g = softmax_i(v̄_i·x / τ), τ fixed or a schedule over
  training time (`Gate.temperature`).
- ``"activation"``: g = softmax_i(act(v̄_i·x) / τ), act ∈ {tanh, sigmoid}.
- ``"hierarchical"``: G groups of E = m/G experts (expert i in group i // E):
  g_i = softmax_g(ū_g·x / τ)[group(i)] · softmax_{j ∈ group(i)}(v̄_j·x / τ).
- ``"topk"``: softmax over the k largest logits v̄_i·x / τ, zero elsewhere.

**Experts:**

- ``"he1"`` … ``"he4"``: He_k(w̄_i·x) on a unit vector (the paper's expert;
  a unit w̄ because He_k of a scaled projection is no longer an orthogonal
  polynomial of a standard Gaussian, which the exact kernel relies on).
- ``"linear"``: w_i·x + b_i, not normalised (the norm of w is the expert's
  scale; there is nothing else to carry it).
- ``"mlp"``: Σ_r a_ir act(W_ir·x), h hidden units, act ∈ {sigmoid, tanh,
  gelu}, not normalised (the first-layer norms set how far each unit is into
  its nonlinearity, an essential parameter of a two-layer network).
"""

from __future__ import annotations

from ._draws import check_size, init_mixture_student, init_mixture_teacher, is_classic, mixture_from_rows, num_vectors
from ._mixture import MLP_FUNCTIONS, Mixture, as_mixture, as_moe, expert_values, gate_weights, mixture_forward
from ._specs import (
    EXPERT_FAMILIES,
    GATE_ACTIVATIONS,
    GATES,
    HERMITE_EXPERTS,
    INDEPENDENT_GATES,
    MLP_ACTIVATIONS,
    SOFTMAX_GATES,
    Expert,
    Gate,
    as_expert,
    as_gate,
    check_positive,
    is_int,
)

__all__ = [
    "as_expert",
    "as_gate",
    "check_positive",
    "check_size",
    "Expert",
    "EXPERT_FAMILIES",
    "expert_values",
    "Gate",
    "GATE_ACTIVATIONS",
    "gate_weights",
    "GATES",
    "HERMITE_EXPERTS",
    "INDEPENDENT_GATES",
    "init_mixture_student",
    "init_mixture_teacher",
    "is_classic",
    "is_int",
    "Mixture",
    "mixture_forward",
    "as_mixture",
    "as_moe",
    "mixture_from_rows",
    "MLP_ACTIVATIONS",
    "MLP_FUNCTIONS",
    "num_vectors",
    "SOFTMAX_GATES",
]
