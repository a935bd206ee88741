"""What the rules share: the vectors a gate and an expert read, the degree, checks, blockwise sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..base import unit
from ..families import Mixture


def is_polynomial(model: Mixture) -> bool:
    return model.expert_fn.hermite or model.expert_fn.name == "linear"


def gate_vectors(model: Mixture) -> list[Array]:
    """The unit vectors the gate reads: routers, then group routers (hierarchical)."""
    vectors = [unit(model.router)]
    if model.gate.name == "hierarchical":
        vectors.append(unit(model.group_router))
    return vectors


def expert_vectors(model: Mixture) -> Array:
    """The vectors the experts read: w̄_i (He), w_i (linear), the rows W_ir (mlp), shape (·, D)."""
    if model.expert_fn.hermite:
        return unit(model.expert)
    return model.expert.reshape(-1, model.dim)


def rule_degree(model: Mixture) -> int:
    """The expert's degree for the conditional rule's node count: its polynomial degree, 1 for mlp."""
    return model.expert_fn.degree or 1


NODE_BLOCK = 2**13


def blockwise(fn, points, weights, dtype) -> Array:
    """``Σ_blocks fn(points_block, weights_block)`` with `lax.map` over blocks of `NODE_BLOCK` nodes."""
    points, weights = jnp.asarray(points, dtype), jnp.asarray(weights, dtype)
    n = weights.shape[0]
    blocks = -(-n // NODE_BLOCK)
    if blocks == 1:
        return fn(points, weights)
    # Padded nodes get weight 0 at the origin, where every integrand is finite.
    pad = blocks * NODE_BLOCK - n
    points = jnp.pad(points, ((0, pad), (0, 0))).reshape(blocks, NODE_BLOCK, -1)
    weights = jnp.pad(weights, (0, pad)).reshape(blocks, NODE_BLOCK)
    return jnp.sum(jax.lax.map(lambda a: fn(*a), (points, weights)))
