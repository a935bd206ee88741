"""Selecting one student expert per teacher expert, and the pruned problem."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..model import MoE
from ..population import expert_kernel
from ..results import Result
from ._defaults import SELECTION_RULES

# ---------------------------------------------------------------------------
# 1. Selection


def check_rule(rule: str, threshold: float) -> None:
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(SELECTION_RULES)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1); got {threshold!r}")


def greedy_match(score: np.ndarray) -> np.ndarray:
    """One distinct student for every teacher, largest scores first.

    Repeatedly takes the largest remaining entry ``score[i, j]`` among the
    students i and teachers j not yet matched, and keeps student i for teacher
    j. Where every teacher's favourite student is different this is simply
    ``argmax_i score[i, j]``; where two teachers want the same student, the
    larger score wins it and the other teacher gets its best remaining
    student. Ties go to the lower index (student first, then teacher).

    **Arguments:** `score` of shape ``(m, m*)`` with m ≥ m*, finite.

    **Returns:** ``kept`` of shape ``(m*,)``: the student index kept for each teacher.

    Example::

        import jaxmoe.prune
        assert list(jaxmoe.prune.greedy_match(np.array([[0.9, 0.8], [0.5, 0.7]]))) == [0, 1]
    """
    score = np.asarray(score, dtype=float)
    if score.ndim != 2 or score.shape[0] < score.shape[1]:
        raise ValueError(f"score must have shape (m, m*) with m ≥ m*; got {score.shape}")
    if not np.all(np.isfinite(score)):
        raise ValueError("score must be finite")
    m, m_star = score.shape
    kept = np.full(m_star, -1, dtype=np.int64)
    free_students, free_teachers = list(range(m)), list(range(m_star))
    for _ in range(m_star):
        sub = score[np.ix_(free_students, free_teachers)]
        a, b = np.unravel_index(np.argmax(sub), sub.shape)
        i, j = free_students.pop(a), free_teachers.pop(b)
        kept[j] = i
    return kept


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which student expert is kept for each teacher expert, per seed.

    All arrays have shape ``(S, m*)``; column j is teacher expert j.

    - `kept`: index of the kept student expert (distinct within a seed).
    - `alignment`, `router_alignment`: w̄_i·w̄*_j and v̄_i·v̄*_j of the kept
      student at the end of the run.
    - `contribution`: ``K(i, j*) = E[f_i(x) f*_j(x)]``, the kept expert's
      contribution to the output along teacher expert j (exact kernel).
    - `below_threshold`: rule ``"threshold"`` only (all False otherwise):
      teacher j's kept student has alignment score below the threshold.
    - `rule`, `threshold`: the settings it was made with.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        selection = jaxmoe.prune.select_experts(result, rule="threshold", threshold=0.99)
        print(selection.kept, selection.alignment, selection.below_threshold)
    """

    rule: str
    threshold: float
    kept: np.ndarray
    alignment: np.ndarray
    router_alignment: np.ndarray
    contribution: np.ndarray
    below_threshold: np.ndarray


def _even_expert(result: Result) -> bool:
    from ..hermite import get_expert

    coefficients = get_expert(result.config.expert).coefficients
    return all(a == 0.0 for k, a in enumerate(coefficients) if k % 2 == 1)


@functools.lru_cache(maxsize=8)
def _batched_kernel(gate: str, expert: str):
    # One compiled function per (gate, expert), reused by every call.
    def one(sr, se, tr, te):
        return expert_kernel(MoE(sr, se, gate, expert), MoE(tr, te, gate, expert))

    return jax.jit(jax.vmap(one))


def _contributions(result: Result) -> np.ndarray:
    """``K(i, j*)`` for every seed, shape (S, m, m*), from the exact kernel."""
    with jax.enable_x64(True):
        arrays = [jnp.asarray(a, jnp.float64) for a in
                  (result.student_router, result.student_expert, result.teacher_router, result.teacher_expert)]
        return np.asarray(_batched_kernel(result.config.gate, result.config.expert)(*arrays))


def _check_classic(result: Result) -> None:
    # Selection by contribution, the pruned problem and the Hessian spectrum
    # are built on the exact kernel of the paper's model (jaxmoe.MoE).
    config = result.config
    if not config.classic:
        raise ValueError(
            "pruning supports the paper's model (gate sigmoid or erf, experts he1..he4, teacher alike); "
            f"this run has gate {config.gate!r} and expert {config.expert!r}"
        )


def select_experts(result: Result, *, rule: str = "best", threshold: float = 0.9) -> Selection:
    """Choose, for each teacher expert, the student expert that pruning keeps.

    Rules (all use the final student of the run, and `greedy_match` so that
    distinct teachers keep distinct students):

    - ``"best"`` (default): the largest expert alignment ``w̄_i·w̄*_j``. For
      an even expert polynomial (he2, he4) ``w`` and ``−w`` give the same
      expert, so the score is ``|w̄_i·w̄*_j|`` there.
    - ``"threshold"``: the same choice as ``"best"``, and every teacher whose
      kept student scores below `threshold` is flagged in `below_threshold`
      (and in the seed's flags in the table). The student is still kept, so a
      pruned student always has exactly m* experts and the fine-tuning shows
      whether the flagged teacher is recovered anyway; nothing is dropped
      silently.
    - ``"contribution"``: the largest contribution to the output along the
      teacher expert, ``K(i, j*) = E[σ(v̄_i·x) P(w̄_i·x) σ(v̄*_j·x) P(w̄*_j·x)]``
      (`jaxmoe.expert_kernel`, exact). Unlike the alignment it also sees the
      router: an expert aligned with w*_j behind a misaligned router
      contributes less.

    **Arguments:** a finished `Result`; `rule`, one of `SELECTION_RULES`; `threshold`
    in (0, 1), used by rule ``"threshold"``.

    **Returns:** a `Selection`, arrays ``(S, m*)``.

    **Raises:** `ValueError` for an unknown rule, a threshold outside (0, 1),
    m < m*, or a seed whose final student is not finite.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        assert jaxmoe.prune.select_experts(result, rule="contribution").kept.shape == (2, 2)   # (S, m*)
    """
    check_rule(rule, threshold)
    _check_classic(result)
    m, m_star = result.config.m, result.config.m_star
    if result.student_router.shape[1] < m_star:
        raise ValueError(f"the run has m = {m} student experts, fewer than m* = {m_star}: nothing to prune to")
    finite = np.all(np.isfinite(result.student_router), axis=(1, 2)) & np.all(np.isfinite(result.student_expert), axis=(1, 2))
    if not finite.all():
        bad = ", ".join(str(s) for s in result.seed_index[~finite])
        raise ValueError(f"seeds {bad} ended with a non-finite student (see the run's status); nothing to prune there")
    alignment = result.final_expert_alignment()  # (S, m, m*)
    router_alignment = result.final_router_alignment()
    contribution = _contributions(result)
    if rule == "contribution":
        score = contribution
    else:
        score = np.abs(alignment) if _even_expert(result) else alignment
    kept = np.stack([greedy_match(score[s]) for s in range(result.num_seeds)])  # (S, m*)

    def pick(values):
        return np.take_along_axis(values, kept[:, None, :], axis=1)[:, 0, :]

    kept_score = pick(score)
    below = kept_score < threshold if rule == "threshold" else np.zeros(kept.shape, bool)
    return Selection(
        rule=rule,
        threshold=float(threshold),
        kept=kept,
        alignment=pick(alignment),
        router_alignment=pick(router_alignment),
        contribution=pick(contribution),
        below_threshold=below,
    )


def pruned_problem(result: Result, kept: np.ndarray) -> tuple[MoE, MoE]:
    """Teacher and pruned student of every seed, in the run's coordinates.

    The pruned student's expert j is the run's final student expert
    ``kept[s, j]``, so pruned experts are numbered like the teacher's.

    **Arguments:** a `Result` and `kept` ``(S, m*)`` (`Selection.kept`).

    **Returns:** ``(teacher, student)`` with arrays ``(S, m*, D)``, ready for
    ``simulate(…, initial=(teacher, student))``.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        kept = jaxmoe.prune.select_experts(result).kept
        teacher, student = jaxmoe.prune.pruned_problem(result, kept)
        assert student.router.shape == (2, 2, 12)        # S, m*, D = 2(m + m*)
    """
    gate, expert = result.config.gate, result.config.expert
    rows = np.arange(result.num_seeds)[:, None]
    teacher = MoE(result.teacher_router, result.teacher_expert, gate, expert)
    student = MoE(result.student_router[rows, kept], result.student_expert[rows, kept], gate, expert)
    return teacher, student
