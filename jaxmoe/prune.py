"""Pruning and fine-tuning: the last phase of arXiv 2510.07205 (the `jaxmoe prune` experiment).

After gradient flow has recovered every teacher expert, the student holds
m ≥ m* experts: one well aligned with each teacher expert, the others
redundant (often in cancelling pairs). The paper's last step removes the
redundant experts and fine-tunes the rest; near the teacher the loss is
locally strongly convex on the directions it can see, so fine-tuning
converges *linearly*: ``L(t) ≈ L₀ e^{−r t}``. This module runs that step
exactly, seed by seed:

1. **Select** (`select_experts`): for every teacher expert j keep one student
   expert, by a rule in `RULES`; distinct teachers get distinct students
   (`greedy_match`).
2. **Fine-tune**: the pruned student (m = m*, same coordinates as the run) is
   trained by gradient flow on the exact population loss,
   ``simulate(config_pruned, initial=(teacher, pruned), seed_index=…)``.
3. **Rate** (`fit_linear_rate`): least-squares fit of ``log L(t) = a − r t``
   over the final phase of the fine-tuning.
4. **Curvature** (`hessian_spectrum`): eigenvalues of the Hessian of L at the
   end point, restricted to the tangent space, i.e. with the 2m* norm
   directions removed. L depends on each v_i, w_i only through its direction,
   so those directions are flat, and gradient flow never moves along them.
   A smallest tangent eigenvalue λ_min > 0 is local strong convexity.

The two measurements check each other. Linearised at the end point the flow
is ``δ̇ = −H δ``, so ``L(t) ≈ Σ_k c_k e^{−2 λ_k t}`` over the tangent
eigenvalues λ_k, and the fitted rate is 2λ of the slowest mode still visible
above the float64 floor: ``r ≥ 2 λ_min``, with equality when the slowest mode
dominates in time. It need not: the slowest modes belong to single experts
(in Figure 1 runs the lowest tangent eigenvalues are ``λ_j = c/‖v_j‖²``,
c ≈ 0.269, one per student router j, as the flow turns a long vector
slowly), so if the expert with the smallest λ started much closer to the
teacher than another, the loss reaches the floor first and the fit reports
the other's 2λ (seen in a Figure 1 run: r = 0.574 against 2λ_min = 0.503,
where 0.574 = 2·0.287 is another expert's eigenvalue).

Example::

    import jaxmoe.prune
    result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
    pruned = jaxmoe.prune.prune(result)                    # rule "best"
    pruned.kept                                            # (S, m*) student kept per teacher
    pruned.rate, pruned.predicted_rate                     # fitted rate r, predicted 2·λ_min
    jaxmoe.prune.save_prune(pruned, "runs/example/prune")  # config.json, result.npz, prune.csv, figures

From the command line: ``jaxmoe prune RUN_FOLDER [--rule best] [--t-max 200]``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .model import MoE
from .plot import figure, write_png
from .population import expert_kernel, population_loss
from .results import Result, save, write_atomic
from .simulation import simulate

__all__ = [
    "RULES",
    "PruneResult",
    "Selection",
    "LinearFit",
    "prune",
    "select_experts",
    "greedy_match",
    "pruned_problem",
    "fit_linear_rate",
    "loss_hessian",
    "norm_directions",
    "hessian_spectrum",
    "plot_prune_loss",
    "plot_spectrum",
    "format_prune_table",
    "prune_csv",
    "save_prune",
]

# How a student expert is chosen for each teacher expert (see `select_experts`).
RULES = ("best", "threshold", "contribution")

# Fine-tuning defaults: tolerances tight enough that the solver's error stays
# below the loss down to the float64 floor (L ≈ 1e-12 means |δθ| ≈ 1e-6, and
# the loss itself is exact to about 1e-15 near the teacher), so the straight
# line of log L is visible over ten decades.
DEFAULT_T_MAX = 200.0
DEFAULT_NUM_TIMES = 401
DEFAULT_RTOL = 1e-10
DEFAULT_ATOL = 1e-12
# Points of the fine-tuning loss used by the rate fit must lie above this
# (a thousand times the rounding error of the loss near the teacher).
DEFAULT_FLOOR = 1e-12
# A tangent eigenvalue counts as positive above this fraction of the largest:
# rounding in the Hessian is about 1e-13 of its scale.
STRONG_CONVEXITY_TOLERANCE = 1e-8


# ---------------------------------------------------------------------------
# 1. Selection


def check_rule(rule: str, threshold: float) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
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
        jaxmoe.prune.greedy_match(np.array([[0.9, 0.8], [0.5, 0.7]]))   # [0, 1]
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
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        selection = jaxmoe.prune.select_experts(result, rule="threshold", threshold=0.99)
        selection.kept, selection.alignment, selection.below_threshold
    """

    rule: str
    threshold: float
    kept: np.ndarray
    alignment: np.ndarray
    router_alignment: np.ndarray
    contribution: np.ndarray
    below_threshold: np.ndarray


def _even_expert(result: Result) -> bool:
    from .hermite import get_expert

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

    **Arguments:** a finished `Result`; `rule`, one of `RULES`; `threshold`
    in (0, 1), used by rule ``"threshold"``.

    **Returns:** a `Selection`, arrays ``(S, m*)``.

    **Raises:** `ValueError` for an unknown rule, a threshold outside (0, 1),
    m < m*, or a seed whose final student is not finite.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        jaxmoe.prune.select_experts(result, rule="contribution").kept    # (2, 2)
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
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        kept = jaxmoe.prune.select_experts(result).kept
        teacher, student = jaxmoe.prune.pruned_problem(result, kept)
        student.router.shape        # (2, 2, 16): S, m*, D = 2(m + m*)
    """
    gate, expert = result.config.gate, result.config.expert
    rows = np.arange(result.num_seeds)[:, None]
    teacher = MoE(result.teacher_router, result.teacher_expert, gate, expert)
    student = MoE(result.student_router[rows, kept], result.student_expert[rows, kept], gate, expert)
    return teacher, student


# ---------------------------------------------------------------------------
# 3. Linear convergence rate


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """A least-squares fit ``log L(t) = intercept − rate · t`` per curve.

    Arrays of the curves' batch shape: `rate`, `intercept`, the window
    `t_start`, `t_end` and `num_points` used (NaN rate where fewer than 3
    points qualify).

    Example::

        import jaxmoe.prune
        t = np.linspace(0.0, 50.0, 101)
        fit = jaxmoe.prune.fit_linear_rate(t, np.stack([np.exp(-0.5 * t), np.exp(-t)]))
        fit.rate, fit.t_end        # [0.5, 1.0] and where each curve met the floor
    """

    rate: np.ndarray
    intercept: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    num_points: np.ndarray


def fit_linear_rate(times, loss, *, floor: float = DEFAULT_FLOOR, fraction: float = 0.5) -> LinearFit:
    """The linear convergence rate r of ``L(t) ≈ e^{a − r t}`` over the final phase.

    The window, per curve: take the saved points from the start up to (not
    including) the first one whose loss is at or below `floor` or not finite
    — below the floor the loss is rounding noise, not the flow — and keep the
    last `fraction` of them (at least 3). Early points are left out because
    the decay is a sum of modes ``e^{−2λ t}``; only late does the slowest mode
    alone remain, and it is this mode's rate, ``2 λ_min``, that the fit
    measures. ``log L`` is then fitted by least squares against t.

    **Arguments:** `times` (T,), `loss` (..., T); `floor` > 0; `fraction` in (0, 1].

    **Returns:** a `LinearFit` of the batch shape of `loss`.

    Example::

        import jaxmoe.prune
        t = np.linspace(0, 50, 101)
        jaxmoe.prune.fit_linear_rate(t, 3 * np.exp(-0.7 * t)).rate   # 0.7
    """
    times = np.asarray(times, dtype=float)
    loss = np.asarray(loss, dtype=float)
    if times.ndim != 1 or loss.shape[-1:] != times.shape:
        raise ValueError(f"loss must have shape (..., {times.size}) to match times; got {loss.shape}")
    if not floor > 0:
        raise ValueError(f"floor must be > 0; got {floor!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    batch = loss.shape[:-1]
    flat = loss.reshape(-1, times.size)
    out = {name: np.full(flat.shape[0], np.nan) for name in ("rate", "intercept", "t_start", "t_end")}
    count = np.zeros(flat.shape[0], dtype=np.int64)
    for c, curve in enumerate(flat):
        usable = np.isfinite(curve) & (curve > floor)
        end = int(np.argmin(usable)) if not usable.all() else times.size
        n = max(3, math.ceil(fraction * end))
        if end < 3:
            continue
        window = slice(end - min(n, end), end)
        t, y = times[window], np.log(curve[window])
        slope, intercept = np.polyfit(t, y, 1)
        out["rate"][c], out["intercept"][c] = -slope, intercept
        out["t_start"][c], out["t_end"][c] = t[0], t[-1]
        count[c] = t.size
    return LinearFit(**{k: v.reshape(batch) for k, v in out.items()}, num_points=count.reshape(batch))


# ---------------------------------------------------------------------------
# 4. The Hessian and its tangent spectrum


def _flatten(student: MoE) -> jax.Array:
    """θ = (v_1, …, v_m, w_1, …, w_m) as one vector: router rows, then expert rows."""
    return jnp.concatenate([student.router.reshape(-1), student.expert.reshape(-1)])


@jax.jit
def _hessian(student: MoE, teacher: MoE) -> jax.Array:
    m, dim = student.router.shape

    def loss(theta):
        model = MoE(theta[: m * dim].reshape(m, dim), theta[m * dim:].reshape(m, dim), student.gate, student.expert_fn)
        return population_loss(model, teacher)

    theta = _flatten(student)
    # Forward over reverse: linearise the gradient once, apply it to the P
    # basis vectors. Compiles faster here than jax.hessian's jacfwd(jacrev).
    _, hvp = jax.linearize(jax.grad(loss), theta)
    return jax.vmap(hvp)(jnp.eye(theta.size, dtype=theta.dtype))


def loss_hessian(student: MoE, teacher: MoE) -> jax.Array:
    """The Hessian of the exact population loss in the student's parameters.

    The parameters are flattened as ``θ = (v_1, …, v_m, w_1, …, w_m)`` (P =
    2·m·D entries for arrays of shape (m, D)); the result is ``∂²L/∂θ∂θ`` of
    shape (P, P), by automatic differentiation of `population_loss` (no finite
    differences: forward-over-reverse, ``jax.linearize`` of ``jax.grad``).
    One student and one teacher (no seed axis); use float64.

    At the teacher itself it is positive semi-definite, with the 2m* norm
    directions (`norm_directions`) in its null space.

    **Arguments:** `student` ``(m, D)``, `teacher` ``(m*, D)``.

    **Returns:** shape ``(P, P)``, P = 2·m·D.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        H = jaxmoe.prune.loss_hessian(teacher, teacher)     # (32, 32)
        np.linalg.eigvalsh(H)[:5]     # four ≈ 0 (the norm directions), then 0.269…
    """
    if student.router.ndim != 2 or teacher.router.ndim != 2:
        raise ValueError("loss_hessian takes one student and one teacher, arrays (m, D); loop over seeds")
    return _hessian(student, teacher)


def norm_directions(student: MoE) -> np.ndarray:
    """The 2m directions along which L is flat: ``v_i/‖v_i‖`` and ``w_i/‖w_i‖``.

    Column i is zero outside the block of v_i in θ (see `loss_hessian`) and
    holds v_i/‖v_i‖ there; column m + i likewise for w_i. The columns are
    orthonormal. L is invariant under ``v_i → c·v_i`` (c > 0), so the gradient
    is orthogonal to them (Euler's theorem for functions homogeneous of
    degree 0), and at a critical point so is every row of the Hessian.

    **Arguments:** `student` ``(m, D)``. **Returns:** shape (P, 2m), P = 2·m·D.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        normal = jaxmoe.prune.norm_directions(teacher)                        # (32, 4)
        np.abs(jaxmoe.prune.loss_hessian(teacher, teacher) @ normal).max()    # ≈ 0
    """
    router, expert = np.asarray(student.router, float), np.asarray(student.expert, float)
    m, dim = router.shape
    out = np.zeros((2 * m * dim, 2 * m))
    for b, vector in enumerate(np.concatenate([router, expert])):
        out[b * dim:(b + 1) * dim, b] = vector / np.linalg.norm(vector)
    return out


def _span_coordinates(teacher: MoE, student: MoE) -> tuple[MoE, MoE]:
    """Teacher and student in an orthonormal frame: their span plus one direction orthogonal to it.

    The loss is rotation invariant, so the Hessian in these coordinates is
    the Hessian in the run's, rotated — except that the directions orthogonal
    to the span, which all carry the same curvature by isotropy (the Hessian
    there is A ⊗ I), appear once instead of D − k times. Every distinct
    eigenvalue is kept, at a cost independent of D.
    """
    vectors = np.concatenate([teacher.router, teacher.expert, student.router, student.expert])  # (n, D)
    n, dim = vectors.shape
    if dim <= n + 1:
        return teacher, student
    # A = Q R with R (n × n): the span of the vectors lies in that of Q's
    # columns even when the vectors are linearly dependent (student = teacher).
    q, _ = np.linalg.qr(vectors.T)  # (D, n)
    # One more direction: the coordinate axis least covered by Q (its residual
    # is at least 1 − n/D > 0), orthogonalised.
    axis = int(np.argmin(np.sum(q * q, axis=1)))
    extra = -q @ q[axis]
    extra[axis] += 1.0
    frame = np.column_stack([q, extra / np.linalg.norm(extra)])  # (D, n + 1)
    m_star = teacher.router.shape[0]
    m = student.router.shape[0]
    coords = vectors @ frame
    return (
        MoE(coords[:m_star], coords[m_star:2 * m_star], teacher.gate, teacher.expert_fn),
        MoE(coords[2 * m_star:2 * m_star + m], coords[2 * m_star + m:], student.gate, student.expert_fn),
    )


def hessian_spectrum(student: MoE, teacher: MoE) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the loss Hessian, in full and on the tangent space.

    With H the Hessian of L in the student's parameters (`loss_hessian`) and
    B an orthonormal basis of the orthogonal complement of the 2m norm
    directions (`norm_directions`), returns ``eigvalsh(H)`` and
    ``eigvalsh(Bᵀ H B)``, ascending. The norm directions are exactly the
    directions L ignores (and that gradient flow never moves along), so
    ``λ_min(Bᵀ H B) > 0`` is local strong convexity at the point.

    It is computed in the frame of `_span_coordinates` (the span of teacher
    and student plus one orthogonal direction): by rotation invariance every
    distinct eigenvalue of the Hessian in the run's coordinates, or in d
    dimensions, is there; those of directions orthogonal to the span occur
    once instead of D − k times.

    **Arguments:** `student` (m, D), `teacher` (m*, D), or both with a leading
    seed axis (S, ·, D).

    **Returns:** ``(eigenvalues, tangent)`` of shapes (…, P) and (…, P − 2m),
    P = 2·m·k with k ≤ D the frame's dimension.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        full, tangent = jaxmoe.prune.hessian_spectrum(teacher, teacher)   # (32,), (28,)
        tangent[0] > 0          # True: locally strongly convex at the teacher
    """
    batched = student.router.ndim == 3
    if not batched:
        student = MoE(student.router[None], student.expert[None], student.gate, student.expert_fn)
        teacher = MoE(teacher.router[None], teacher.expert[None], teacher.gate, teacher.expert_fn)
    full, tangent = [], []
    with jax.enable_x64(True):
        for s in range(student.router.shape[0]):
            one_teacher, one_student = _span_coordinates(
                MoE(np.asarray(teacher.router[s], float), np.asarray(teacher.expert[s], float), teacher.gate, teacher.expert_fn),
                MoE(np.asarray(student.router[s], float), np.asarray(student.expert[s], float), student.gate, student.expert_fn),
            )
            h = np.asarray(loss_hessian(jax.tree_util.tree_map(jnp.asarray, one_student),
                                        jax.tree_util.tree_map(jnp.asarray, one_teacher)))
            h = 0.5 * (h + h.T)  # AD gives a symmetric matrix up to rounding
            normal = norm_directions(one_student)
            q, _ = np.linalg.qr(normal, mode="complete")
            basis = q[:, normal.shape[1]:]  # orthonormal complement of the norm directions
            full.append(np.linalg.eigvalsh(h))
            tangent.append(np.linalg.eigvalsh(basis.T @ h @ basis))
    full, tangent = np.stack(full), np.stack(tangent)
    return (full, tangent) if batched else (full[0], tangent[0])


# ---------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """Everything `prune` measures, as NumPy arrays (S seeds, m* teacher experts).

    - `selection`: the `Selection` (kept students, their alignments, contributions, flags).
    - `original`: the run that was pruned; `finetune`: the fine-tuning run
      (a `Result`, m = m*, linear time grid starting at 0 = the pruning).
    - `loss_before` (S,): the run's loss at its end, before pruning;
      `loss_pruned` (S,): right after pruning; `loss_final` (S,): after fine-tuning.
    - `fit`: the `LinearFit` of log L over the fine-tuning's final phase.
    - `hessian_eigenvalues` (S, P), `tangent_eigenvalues` (S, P − 2m*): the
      Hessian spectrum at the fine-tuning's end point (`hessian_spectrum`).

    Derived per seed (S,): `kept` (S, m*), `rate` r, `predicted_rate` 2λ_min,
    `smallest_tangent` λ_min, `largest_tangent` λ_max, `strongly_convex`, and
    `flags()`.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        pruned.rate, pruned.predicted_rate, pruned.strongly_convex
    """

    selection: Selection
    original: Result
    finetune: Result
    loss_before: np.ndarray
    loss_pruned: np.ndarray
    loss_final: np.ndarray
    fit: LinearFit
    hessian_eigenvalues: np.ndarray
    tangent_eigenvalues: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """The student expert kept for each teacher expert, (S, m*)."""
        return self.selection.kept

    @property
    def rate(self) -> np.ndarray:
        """Fitted linear convergence rate r of L, per seed."""
        return self.fit.rate

    @property
    def smallest_tangent(self) -> np.ndarray:
        """λ_min of the tangent Hessian at the end point, per seed."""
        return self.tangent_eigenvalues[:, 0]

    @property
    def largest_tangent(self) -> np.ndarray:
        """λ_max of the tangent Hessian at the end point, per seed."""
        return self.tangent_eigenvalues[:, -1]

    @property
    def predicted_rate(self) -> np.ndarray:
        """``2 λ_min``: the decay rate of L under the flow linearised at the end point."""
        return 2.0 * self.smallest_tangent

    @property
    def strongly_convex(self) -> np.ndarray:
        """λ_min > 0 on the tangent space (beyond rounding: > 1e-8 λ_max)."""
        return self.smallest_tangent > STRONG_CONVEXITY_TOLERANCE * np.abs(self.largest_tangent)

    def flags(self) -> list[str]:
        """Per seed, what needs a look: teachers below the threshold, no rate, no strong convexity."""
        out = []
        for s in range(self.finetune.num_seeds):
            items = []
            below = np.flatnonzero(self.selection.below_threshold[s])
            if below.size:
                items.append("below_threshold:" + "+".join(str(j + 1) for j in below))
            if not np.isfinite(self.fit.rate[s]):
                items.append("no_rate")
            if not self.strongly_convex[s]:
                items.append("not_strongly_convex")
            out.append(" ".join(items))
        return out


def prune(
    result: Result,
    *,
    rule: str = "best",
    threshold: float = 0.9,
    t_max: float = DEFAULT_T_MAX,
    num_times: int = DEFAULT_NUM_TIMES,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    floor: float = DEFAULT_FLOOR,
    fraction: float = 0.5,
    source: str | None = None,
    progress: bool = False,
) -> PruneResult:
    """Prune a finished run to m* experts, fine-tune by gradient flow, measure rate and curvature.

    **Arguments:**

    - `result`: a finished run (any method; its final student is pruned).
    - `rule`, `threshold`: how to choose the kept experts (`select_experts`).
    - `t_max`, `num_times`: the fine-tuning's length and its linear grid of
      saved times.
    - `rtol`, `atol`: the fine-tuning solver's tolerances (tsit5, float64,
      no early stop, so the whole linear phase down to the floor is seen).
    - `floor`, `fraction`: the rate fit's window (`fit_linear_rate`).
    - `source`: where `result` came from, recorded in the fine-tuning's
      ``run["prune"]``.
    - `progress`: show the solver's progress bar.

    The fine-tuning is ``simulate(config_pruned, initial=(teacher, pruned),
    seed_index=result.seed_index)`` with config_pruned the run's configuration
    with ``m = m*``, ``method="flow"``, ``loss_threshold=None``, a linear time
    grid and the tolerances above.

    **Returns:** a `PruneResult`.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result, rule="contribution")
        print(jaxmoe.prune.format_prune_table(pruned))
    """
    check_rule(rule, threshold)
    selection = select_experts(result, rule=rule, threshold=threshold)
    teacher, student = pruned_problem(result, selection.kept)
    config = result.config.replace(
        m=result.config.m_star,
        method="flow",
        # Fine-tuning runs its full time: neither the loss threshold nor the
        # recovery stop of the run (a `jaxmoe scaling` run sets one) applies.
        loss_threshold=None,
        recovery_epsilon=None,
        time_grid="linear",
        t_max=float(t_max),
        num_times=num_times,
        solver="tsit5",
        dt=None,
        rtol=rtol,
        atol=atol,
        dtype="float64",
    )
    finetune = simulate(config, initial=(teacher, student), seed_index=result.seed_index, progress=progress)
    fit = fit_linear_rate(finetune.times, finetune.loss, floor=floor, fraction=fraction)
    end = MoE(finetune.student_router, finetune.student_expert, config.gate, config.expert)
    eigenvalues, tangent = hessian_spectrum(end, MoE(finetune.teacher_router, finetune.teacher_expert, config.gate, config.expert))
    run = dict(finetune.run)
    run["prune"] = {
        "source": source,
        "rule": rule,
        "threshold": float(threshold),
        "floor": float(floor),
        "fraction": float(fraction),
        "original_m": int(result.student_router.shape[1]),
        "original_t_final": [float(t) for t in result.t_final],
        "kept": selection.kept.tolist(),
    }
    finetune = dataclasses.replace(finetune, run=run)
    return PruneResult(
        selection=selection,
        original=result,
        finetune=finetune,
        loss_before=result.final_loss(),
        loss_pruned=finetune.loss[:, 0],
        loss_final=finetune.final_loss(),
        fit=fit,
        hessian_eigenvalues=eigenvalues,
        tangent_eigenvalues=tangent,
    )


# ---------------------------------------------------------------------------
# Figures and tables


def _positive(values: np.ndarray) -> np.ndarray:
    # A log axis cannot show the exact zeros the loss reaches at the teacher.
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def plot_prune_loss(pruned: PruneResult, ax=None):
    """The loss of every seed before and after pruning, on one time axis.

    Left: the run's loss up to its end t_final, then the fine-tuning's loss at
    t_final + t; a dotted vertical line marks each seed's pruning. Right: the
    same curves against the time since pruning, t − t_final, zoomed on the
    fine-tuning (the run's last stretch at negative times), with the fitted
    ``e^{a − r t}`` dashed black over the fit's window. Linear time, log loss:
    linear convergence is a straight line.

    **Arguments:** `pruned`, a `PruneResult`; `ax`: optionally a pair of
    matplotlib axes.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        fig = jaxmoe.prune.plot_prune_loss(pruned)
    """
    fig, ax = figure(ax, ncols=2, figsize=(12, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    original, finetune, fit = pruned.original, pruned.finetune, pruned.fit
    # The zoom ends a little after the last seed's loss reaches exact zero
    # (or at the end of the fine-tuning).
    positive = np.isfinite(finetune.loss) & (finetune.loss > 0)
    last = max((finetune.times[np.flatnonzero(row)[-1]] for row in positive if row.any()), default=finetune.times[-1])
    zoom = min(float(finetune.times[-1]), 1.1 * float(last)) or float(finetune.times[-1])
    for s in range(finetune.num_seeds):
        t_prune = float(original.t_final[s])
        before = original.times <= t_prune
        t_run = np.append(original.times[before], t_prune)
        l_run = _positive(np.append(original.loss[s, before], pruned.loss_before[s]))
        l_fine = _positive(finetune.loss[s])
        line, = ax[0].plot(t_run, l_run, lw=1.2, label=f"seed {original.seed_index[s]}")
        color = line.get_color()
        ax[0].plot(t_prune + finetune.times, l_fine, lw=1.2, color=color)
        ax[0].axvline(t_prune, color=color, ls=":", lw=0.8)
        # From the last saved time left of the zoom, so the line enters from the edge.
        first = max(int(np.searchsorted(t_run, t_prune - 0.25 * zoom)) - 1, 0)
        ax[1].plot(t_run[first:] - t_prune, l_run[first:], lw=1.2, color=color)
        ax[1].plot(finetune.times, l_fine, lw=1.2, color=color)
        if np.isfinite(fit.rate[s]):
            t = np.linspace(fit.t_start[s], fit.t_end[s], 20)
            ax[1].plot(t, np.exp(fit.intercept[s] - fit.rate[s] * t), color="k", ls="--", lw=1.0)
    ax[1].axvline(0.0, color="k", ls=":", lw=0.8)
    ax[1].set_xlim(-0.25 * zoom, zoom)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("time t (pruning dotted, then fine-tuning)")
    ax[1].set_xlabel("time since pruning t − t_final")
    ax[0].set_ylabel("population loss L")
    config = original.config
    ax[0].set_title(f"d = {config.d}, m = {config.m} → m* = {config.m_star} (rule {pruned.selection.rule})", fontsize=9)
    ax[1].set_title("fine-tuning; fitted linear rate dashed", fontsize=9)
    for a in ax:
        a.grid(alpha=0.3, which="both")
    if finetune.num_seeds <= 10:
        ax[0].legend(fontsize=7)
    return fig


def plot_spectrum(pruned: PruneResult, ax=None):
    """The tangent Hessian eigenvalues at the end of fine-tuning, every seed (ascending).

    Log scale when all are positive, else symmetric-log with a line at 0.

    **Arguments:** `pruned`, a `PruneResult`; `ax`, optionally one matplotlib axes.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        fig = jaxmoe.prune.plot_spectrum(pruned)
    """
    fig, ax = figure(ax, figsize=(6, 4))
    tangent = pruned.tangent_eigenvalues
    for s in range(tangent.shape[0]):
        ax.plot(np.arange(1, tangent.shape[1] + 1), tangent[s], ".", ms=4, label=f"seed {pruned.finetune.seed_index[s]}")
    if np.all(tangent > 0):
        ax.set_yscale("log")
    else:  # a non-positive eigenvalue must stay visible
        ax.set_yscale("symlog", linthresh=1e-6 * float(np.max(np.abs(tangent))))
        ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("eigenvalue of the tangent Hessian")
    ax.set_title("Hessian of L at the end point, norm directions removed", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if tangent.shape[0] <= 10:
        ax.legend(fontsize=7)
    return fig


def _rows(pruned: PruneResult) -> tuple[list[str], list[list[Any]]]:
    sel, fit, finetune = pruned.selection, pruned.fit, pruned.finetune
    m_star = sel.kept.shape[1]
    head = ["seed", "status", "flags", "loss_before", "loss_pruned", "loss_final", "rate", "predicted_rate",
            "rate_t_start", "rate_t_end", "rate_points", "tangent_min", "tangent_max", "strongly_convex"]
    for name in ("kept", "alignment", "router_alignment", "contribution"):
        head += [f"{name}_{j + 1}" for j in range(m_star)]
    flags, status = pruned.flags(), finetune.status_names()
    rows = []
    for s in range(finetune.num_seeds):
        rows.append(
            [int(finetune.seed_index[s]), status[s], flags[s], pruned.loss_before[s], pruned.loss_pruned[s],
             pruned.loss_final[s], fit.rate[s], pruned.predicted_rate[s], fit.t_start[s], fit.t_end[s],
             int(fit.num_points[s]), pruned.smallest_tangent[s], pruned.largest_tangent[s],
             bool(pruned.strongly_convex[s])]
            + [int(i) for i in sel.kept[s]] + list(sel.alignment[s]) + list(sel.router_alignment[s])
            + list(sel.contribution[s])
        )
    return head, rows


def prune_csv(pruned: PruneResult) -> str:
    """One row per seed: status and flags, losses before/after, rate, tangent extremes, kept experts.

    Columns ``kept_j``, ``alignment_j``, ``router_alignment_j``,
    ``contribution_j`` describe teacher expert j's kept student (j from 1).

    **Returns:** the CSV text, header included.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        print(jaxmoe.prune.prune_csv(pruned))
    """
    head, rows = _rows(pruned)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(head)
    for row in rows:
        # NumPy's float64 is a float: every real number gets ten digits.
        writer.writerow([f"{x:.10e}" if isinstance(x, float) else x for x in row])
    return out.getvalue()


def format_prune_table(pruned: PruneResult) -> str:
    """A per-seed text table: kept experts, losses, fitted rate against 2λ_min, λ_max, status.

    **Returns:** the table as one string.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        print(jaxmoe.prune.format_prune_table(pruned))
    """
    sel, fit = pruned.selection, pruned.fit
    head = ["seed", "kept (j*: i)", "min align", "L before", "L pruned", "L final", "rate r", "2 λ_min", "λ_max", "status"]
    rows = []
    for s, (status, flags) in enumerate(zip(pruned.finetune.status_names(), pruned.flags())):
        kept = " ".join(f"{j + 1}:{i}" for j, i in enumerate(sel.kept[s]))
        rows.append([
            str(pruned.finetune.seed_index[s]), kept, f"{np.min(sel.alignment[s]):+.4f}",
            f"{pruned.loss_before[s]:.3e}", f"{pruned.loss_pruned[s]:.3e}", f"{pruned.loss_final[s]:.3e}",
            f"{fit.rate[s]:.5g}", f"{pruned.predicted_rate[s]:.5g}", f"{pruned.largest_tangent[s]:.5g}",
            status + (f" ({flags})" if flags else ""),
        ])
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def save_prune(pruned: PruneResult, folder: str | os.PathLike) -> list[Path]:
    """Write the experiment's folder; `jaxmoe.load(folder)` reads the fine-tuning back.

    Files: ``prune.csv`` and ``prune.txt`` (the per-seed table), ``prune.npz``
    (selection, fit and eigenvalue arrays), ``loss.png``
    (`plot_prune_loss`), ``spectrum.png`` (`plot_spectrum`), and, last, the
    fine-tuning `Result` by `jaxmoe.save`: ``config.json`` (its configuration;
    the prune settings under ``run["prune"]``) and ``result.npz``, whose
    presence marks a complete folder.

    **Returns:** the paths written.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        jaxmoe.prune.save_prune(pruned, "runs/example/prune")
        jaxmoe.load("runs/example/prune").config.m          # 2 = m*
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in ("prune.csv", "prune.txt", "prune.npz", "loss.png", "spectrum.png")]
    write_atomic(paths[0], prune_csv(pruned).encode())
    write_atomic(paths[1], (format_prune_table(pruned) + "\n").encode())
    sel, fit = pruned.selection, pruned.fit
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, seed_index=pruned.finetune.seed_index, kept=sel.kept, alignment=sel.alignment,
        router_alignment=sel.router_alignment, contribution=sel.contribution, below_threshold=sel.below_threshold,
        loss_before=pruned.loss_before, loss_pruned=pruned.loss_pruned, loss_final=pruned.loss_final,
        rate=fit.rate, rate_intercept=fit.intercept, rate_t_start=fit.t_start, rate_t_end=fit.t_end,
        rate_points=fit.num_points, hessian_eigenvalues=pruned.hessian_eigenvalues,
        tangent_eigenvalues=pruned.tangent_eigenvalues,
    )
    write_atomic(paths[2], buffer.getvalue())
    write_png(plot_prune_loss(pruned), paths[3])
    write_png(plot_spectrum(pruned), paths[4])
    save(pruned.finetune, folder)
    return [folder / "config.json", folder / "result.npz", *paths]
