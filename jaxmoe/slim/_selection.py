"""Which experts, or which hidden units of every expert, a slimming stage keeps.

Expert pruning extends the rules of `jaxmoe.prune` (written for m* targets,
one kept student per teacher expert) to any size k with m* ≤ k ≤ m:

1. the rule's score matrix ``score[i, j]`` between student expert i and
   teacher expert j: expert alignment w̄_i·w̄*_j (rules ``"best"`` and
   ``"threshold"``; its absolute value for even He experts) or the
   contribution ``K(i, j*) = E[f_i(x) f*_j(x)]`` (rule ``"contribution"``);
2. one student per teacher expert first, by `jaxmoe.prune.greedy_match` on
   that score (exactly the experts `jaxmoe.prune.select_experts` keeps);
3. the remaining k − m* places are filled by one of two rules (`FILLS`):

   - ``"closest"`` (default): greedily, the expert whose addition keeps the
     pruned model closest to the unpruned one in the exact population loss,
     ``½ E[(f_prev − Σ_{i∈kept} f_i)²]`` (computed from the Gram matrix
     ``E[f_i f_k]`` of the experts; ties: lower index). The experts removed
     are those whose removal changes the model's function least — which is
     what the next stage's distillation starts from.
   - ``"score"``: the other experts with the largest score against any
     teacher expert, ``max_j score[i, j]`` (ties: lower index).

   The difference matters after full recovery: the redundant experts of a
   converged student form groups whose outputs cancel (for He3: experts on
   +w*_j and on −w*_j), each member scoring ±1 against teacher j. ``"score"``
   keeps the members that score +1 without their partners, so the pruned
   model is far from the teacher (measured at m = 6, m* = 2, d = 100:
   L = 2.3 after pruning 6 → 4, against 2e-4 with ``"closest"``).

So every stage keeps a full one-per-teacher match and the final stage of a
schedule ending at m* keeps what `jaxmoe prune` would keep from the same
student. Kept experts are ordered as chosen (matched experts in teacher
order first).

Expert slimming (mlp experts) keeps, in every expert, the hidden units of
largest norm ``|a_ir| · ‖W_ir‖`` (output weight times first-layer norm: the
scale of the unit's contribution to the expert), in their original order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..base import Model
from ..families import INDEPENDENT_GATES, Expert, Mixture
from ..model import MoE
from ..observables import ALIGNMENT_NODES, expert_alignment
from ..population import expert_kernel
from ..prune import SELECTION_RULES, greedy_match

__all__ = [
    "FILLS",
    "expert_gram",
    "expert_scores",
    "rank_experts",
    "closest_fill",
    "select_experts_k",
    "keep_experts",
    "hidden_norms",
    "keep_hidden",
    "check_family",
]

EVEN_EXPERTS = ("he2", "he4")
# How the places beyond the one-per-teacher match are filled (module docstring).
FILLS = ("closest", "score")


def _expert_name(model: Model) -> str:
    return model.expert_fn.name


def check_family(teacher: Model, student: Model, axis: str) -> None:
    """`ValueError` (one line) unless slimming along `axis` is defined for these models.

    Experts: the paper's model, or a `Mixture` with an independent gate
    (sigmoid, erf), where removing an expert leaves the others' gates
    unchanged. Hidden units: mlp experts (student; the teacher's width is the
    floor of a schedule).
    """
    if axis == "experts":
        if isinstance(student, Mixture) and student.gate.name not in INDEPENDENT_GATES:
            raise ValueError(
                f"slimming over experts needs independent gates ({', '.join(INDEPENDENT_GATES)}): removing an "
                f"expert from gate {str(student.gate)!r} would change every other expert's weight"
            )
    elif not (isinstance(student, Mixture) and _expert_name(student) == "mlp"):
        raise ValueError(f"slimming over hidden units needs mlp experts; this run has expert {str(student.expert_fn)!r}")


@functools.lru_cache(maxsize=8)
def _vmapped(kind: str):
    if kind == "kernel":
        return jax.jit(jax.vmap(expert_kernel))
    if kind == "alignment":
        return jax.jit(jax.vmap(expert_alignment))

    if kind == "gram":
        return jax.jit(jax.vmap(lambda model: expert_kernel(model, model)))

    def contribution(student: Mixture, teacher: Mixture):
        # E[f_i f*_j] on the fixed Gaussian nodes of the functional alignment.
        from ..quadrature import gaussian_nodes

        points, weights = gaussian_nodes(student.dim, ALIGNMENT_NODES)
        x, w = jnp.asarray(points, student.router.dtype), jnp.asarray(weights, student.router.dtype)
        f = student.gate_weights(x) * student.expert_values(x)  # (N, m)
        g = teacher.gate_weights(x) * teacher.expert_values(x)  # (N, m*)
        return (f * w[:, None]).T @ g

    return jax.jit(jax.vmap(contribution))


def expert_scores(teacher: Model, student: Model, rule: str = "best") -> np.ndarray:
    """The rule's score of every student expert against every teacher expert, ``(S, m, m*)``.

    ``"best"``/``"threshold"``: the expert alignment (`jaxmoe.observables.expert_alignment`:
    cosines of the expert vectors, or of the expert functions for mlp
    experts), in absolute value for even He experts (w and −w are one
    expert); ``"contribution"``: ``E[f_i f*_j]``, the exact kernel
    (`jaxmoe.expert_kernel`) for the paper's model, the functional
    alignment's fixed Gaussian nodes for a `Mixture`. Models carry a seed axis.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(SELECTION_RULES)}")
    with jax.enable_x64(student.router.dtype == jnp.float64):
        if rule == "contribution":
            kind = "kernel" if isinstance(student, MoE) and isinstance(teacher, MoE) else "mixture"
            return np.asarray(_vmapped(kind)(student, teacher))
        if isinstance(student, MoE):
            # Cosines in NumPy, as `jaxmoe.Result.final_expert_alignment` (what prune scores).
            a, b = np.asarray(student.expert), np.asarray(teacher.expert)
            a = a / np.linalg.norm(a, axis=-1, keepdims=True)
            b = b / np.linalg.norm(b, axis=-1, keepdims=True)
            score = np.einsum("sid,sjd->sij", a, b)
        else:
            score = np.asarray(_vmapped("alignment")(student, teacher))
    return np.abs(score) if _expert_name(student) in EVEN_EXPERTS else score


def expert_gram(model: Model) -> np.ndarray:
    """``E[f_i(x) f_k(x)]`` between the experts of each seed's model, ``(S, m, m)``: the exact
    kernel for the paper's model, the fixed Gaussian nodes of `expert_scores` for a `Mixture`."""
    with jax.enable_x64(model.router.dtype == jnp.float64):
        if isinstance(model, MoE):
            return np.asarray(_vmapped("gram")(model))
        return np.asarray(_vmapped("mixture")(model, model))


def closest_fill(gram: np.ndarray, first: np.ndarray, k: int) -> np.ndarray:
    """`first`, then greedily the experts that keep ``Σ_kept f_i`` closest to ``Σ_all f_i`` (one seed).

    **Arguments:** `gram` ``(m, m)`` (`expert_gram`), the experts kept first, the total `k`.

    **Returns:** ``(k,)`` indices: `first`, then the additions in the order chosen.

    Example::

        gram = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # experts 0, 1 cancel
        jaxmoe.slim.closest_fill(gram, np.array([2]), 2)   # [2, 0]; with k = 3, [2, 0, 1]
    """
    kept = [int(i) for i in first]
    row_sums = gram.sum(axis=1)  # E[f_i f_prev]
    while len(kept) < k:
        rest = np.setdiff1d(np.arange(gram.shape[0]), kept)
        inside = gram[np.ix_(rest, kept)].sum(axis=1) if kept else np.zeros(rest.size)
        # E[(f_prev − f_kept∪{i})²] − E[(f_prev − f_kept)²] = K_ii + 2 Σ_{l∈kept} K_il − 2 Σ_l K_il
        change = np.diag(gram)[rest] + 2.0 * inside - 2.0 * row_sums[rest]
        kept.append(int(rest[np.argmin(change)]))
    return np.asarray(kept, np.int64)


def rank_experts(score: np.ndarray) -> np.ndarray:
    """All m student experts of one seed, most worth keeping first (module docstring, steps 2–3).

    **Arguments:** `score` ``(m, m*)``, m ≥ m*. **Returns:** a permutation ``(m,)``.

    Example::

        jaxmoe.slim.rank_experts(np.array([[0.2, 0.1], [0.9, 0.0], [0.0, 0.3], [0.5, 0.1]]))   # [1, 2, 3, 0]
    """
    matched = greedy_match(score)
    rest = np.setdiff1d(np.arange(score.shape[0]), matched)
    best = np.max(score[rest], axis=1)
    return np.concatenate([matched, rest[np.argsort(-best, kind="stable")]]).astype(np.int64)


def select_experts_k(teacher: Model, student: Model, k: int, rule: str = "best", fill: str = "closest") -> tuple[np.ndarray, np.ndarray]:
    """The k experts each seed keeps, ``(S, k)``, and the score of each teacher's matched expert, ``(S, m*)``.

    One expert per teacher by `rule` (as `jaxmoe.prune.select_experts`), the
    other k − m* by `fill` (module docstring).
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; allowed: {', '.join(FILLS)}")
    score = expert_scores(teacher, student, rule)
    order = np.stack([rank_experts(s) for s in score])
    m_star = score.shape[2]
    matched = np.take_along_axis(score, order[:, None, :m_star], axis=1)[:, 0, :]
    if fill == "score" or k == m_star:
        return order[:, :k], matched
    gram = expert_gram(student)
    kept = np.stack([closest_fill(g, o[:m_star], k) for g, o in zip(gram, order)])
    return kept, matched


def keep_experts(model: Model, kept: np.ndarray) -> Model:
    """The model (seed axis) with only the experts ``kept`` ``(S, k)`` of each seed, in that order."""
    rows = np.arange(kept.shape[0])[:, None]
    take = lambda x: None if x is None else jnp.asarray(np.asarray(x)[rows, kept])
    if isinstance(model, MoE):
        return MoE(take(model.router), take(model.expert), model.gate, model.expert_fn)
    return Mixture(take(model.router), take(model.expert), model.group_router, take(model.bias), take(model.output), model.gate, model.expert_fn)


def hidden_norms(model: Mixture) -> np.ndarray:
    """``|a_ir| · ‖W_ir‖`` of every hidden unit r of every expert i, ``(S, m, h)``."""
    return np.abs(np.asarray(model.output)) * np.linalg.norm(np.asarray(model.expert), axis=-1)


def keep_hidden(model: Mixture, width: int) -> tuple[Mixture, np.ndarray]:
    """Every expert slimmed to its `width` hidden units of largest norm (`hidden_norms`), original order kept.

    **Returns:** the slimmed `Mixture` (expert ``mlp:hidden=width``) and the kept units ``(S, m, width)``.
    """
    norms = hidden_norms(model)
    kept = np.sort(np.argsort(-norms, axis=-1, kind="stable")[..., :width], axis=-1)
    expert = np.take_along_axis(np.asarray(model.expert), kept[..., None], axis=2)
    output = np.take_along_axis(np.asarray(model.output), kept, axis=2)
    spec = Expert("mlp", hidden=int(width), activation=model.expert_fn.activation)
    slim = Mixture(jnp.asarray(model.router), jnp.asarray(expert), model.group_router, model.bias, jnp.asarray(output), model.gate, spec)
    return slim, kept
