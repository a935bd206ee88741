"""What is measured along a trajectory: the loss and the alignments.

Alignments are cosines between student and teacher directions:

    expert_alignment[i, j] = w̄_i · w̄*_j,   router_alignment[i, j] = v̄_i · v̄*_j

They are invariant under rotations, so they read the same in full and in
reduced coordinates.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Array, Float

from .model import MoE, unit
from .population import population_loss

__all__ = ["alignment", "observe", "best_match", "OBSERVABLES"]

# Names of the per-time observables, in the order they are stored.
OBSERVABLES = ("loss", "expert_alignment", "router_alignment")


def alignment(a: Float[Array, "m d"], b: Float[Array, "k d"]) -> Float[Array, "m k"]:
    """Cosines ``ā_i · b̄_j`` between the rows of `a` and the rows of `b`."""
    return unit(a) @ unit(b).T


def observe(student: MoE, teacher: MoE) -> dict[str, Array]:
    """The observables saved at every requested time.

    **Returns:** ``{"loss": (), "expert_alignment": (m, m*), "router_alignment": (m, m*)}``.
    """
    return {
        "loss": population_loss(student, teacher),
        "expert_alignment": alignment(student.expert, teacher.expert),
        "router_alignment": alignment(student.router, teacher.router),
    }


def best_match(expert_alignment: np.ndarray):
    """For each teacher expert j, the student expert with the largest alignment.

    **Arguments:** alignments of shape ``(..., m, m_star)`` (NumPy, on the host).

    **Returns:** ``(index, value)``, each of shape ``(..., m_star)``.
    """
    index = np.argmax(expert_alignment, axis=-2)
    value = np.max(expert_alignment, axis=-2)
    return index, value
