"""The slimming experiment: from a run's student, prune along schedules, distil each stage, compare."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..agreement import kth_recoveries
from ..base import Model
from ..observables import expert_alignment
from ..prune import DEFAULT_ATOL, DEFAULT_RTOL, check_rule
from ..quadrature import mixture_loss
from ..results import Result
from ..simulation import simulate
from ._distill import distill
from ._schedule import check_alpha, check_axis, check_schedule
from ._selection import FILLS, check_family, keep_experts, keep_hidden, select_experts_k

__all__ = ["Stage", "SlimRun", "SlimResult", "first_seeds", "start_point", "plan", "slim", "one_shot_baselines"]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a schedule, for S seeds.

    - `size`: experts (or hidden units per expert) after this stage's pruning;
      `budget`: its training time.
    - `kept` (S, size) experts kept of the previous stage's model (hidden
      axis: (S, m, size) units); `matched_score` (S, m*): the rule's score of
      each teacher's matched expert (experts axis; NaN on the hidden axis).
    - `loss_pruned` (S,): loss against the teacher right after pruning;
      `loss_trained` (S,): after the stage's training; `times` (T,) and
      `loss` (S, T): the training curve (time from this stage's start).
    - `status`, `num_steps` (S,): the solver's outcome per seed; `wall_time_s`.
    - `student`: the trained model at the stage's end (seed axis).
    """

    size: int
    budget: float
    kept: np.ndarray
    matched_score: np.ndarray
    loss_pruned: np.ndarray
    loss_trained: np.ndarray
    times: np.ndarray
    loss: np.ndarray
    status: np.ndarray
    num_steps: np.ndarray
    wall_time_s: float
    student: Model


@dataclasses.dataclass(frozen=True)
class SlimRun:
    """One schedule at one α: its `stages`, the final `student` (seed axis) and
    `best_alignment` (S, m*): per teacher expert, max_i of the expert alignment at the end."""

    schedule: tuple[int, ...]
    alpha: float
    stages: tuple[Stage, ...]
    student: Model
    best_alignment: np.ndarray

    @property
    def label(self) -> str:
        return f"{'→'.join(str(s) for s in self.schedule)} α={self.alpha:g}"

    @property
    def one_shot(self) -> bool:
        return len(self.schedule) == 1

    @property
    def loss_pruned(self) -> np.ndarray:
        """(S, stages): loss against the teacher right after each pruning."""
        return np.stack([s.loss_pruned for s in self.stages], axis=1)

    @property
    def loss_trained(self) -> np.ndarray:
        """(S, stages): loss against the teacher after each stage's training."""
        return np.stack([s.loss_trained for s in self.stages], axis=1)

    @property
    def loss_final(self) -> np.ndarray:
        return self.stages[-1].loss_trained

    @property
    def status(self) -> np.ndarray:
        """(S,): the worst solver status over the stages (0 = success everywhere)."""
        return np.max(np.stack([s.status for s in self.stages]), axis=0)

    @property
    def training_time(self) -> float:
        return float(sum(s.budget for s in self.stages))

    @property
    def wall_time_s(self) -> float:
        return float(sum(s.wall_time_s for s in self.stages))

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative training time (N,) and loss against the teacher (S, N), stages one after another."""
        offsets = np.cumsum([0.0] + [s.budget for s in self.stages[:-1]])
        times = np.concatenate([o + s.times for o, s in zip(offsets, self.stages)])
        return times, np.concatenate([s.loss for s in self.stages], axis=1)

    def prune_times(self) -> np.ndarray:
        """The cumulative times of the prunings (stages), (stages,)."""
        return np.cumsum([0.0] + [s.budget for s in self.stages[:-1]])


@dataclasses.dataclass(frozen=True)
class SlimResult:
    """Everything `slim` measures: the starting point and one `SlimRun` per (schedule, α).

    - `config`: the source run's configuration; `seed_index` (S,) the seeds
      slimmed (seeds that never reach the start point are left out:
      `skipped`); `t_start` (S,) the time of the source run the student was
      taken at, `loss_start` (S,) its loss; `start`: how (``"end"``, ``"t=…"``,
      ``"recovered:K"``).
    - `axis`, `rule`, `settings` (the solver and budget settings), `runs`.
    """

    config: object
    seed_index: np.ndarray
    skipped: np.ndarray
    t_start: np.ndarray
    loss_start: np.ndarray
    start: str
    axis: str
    rule: str
    runs: tuple[SlimRun, ...]
    settings: dict


def start_point(result: Result, at=None, *, epsilon: float = 0.05, progress: bool = False):
    """The teacher and student to slim, per seed.

    `at`: ``None`` (the run's final student, at its `t_final`); a time t
    (re-simulated from the saved initial state to t, early stop off, with
    the run's own solver settings, so it follows the run's trajectory); or
    ``("recovered", K)``: per seed, the time its K-th teacher expert is
    recovered (expert alignment ≥ 1 − `epsilon`, `jaxmoe.agreement.kth_recoveries`),
    re-simulated to it. Seeds that never recover K teacher experts are left out.

    **Returns:** ``(teacher, student, seeds, t_start)``: models with a seed
    axis, the kept positions in the run's seed axis (S,), their start times.
    """
    teacher, student = result.models("final")
    seeds = np.arange(result.num_seeds)
    if at is None:
        return teacher, student, seeds, np.asarray(result.t_final, float)
    if isinstance(at, tuple):
        when = _recovery_times(result, at[1], epsilon)
        seeds = np.flatnonzero(np.isfinite(when))
        when = when[seeds]
    else:
        when = np.full(result.num_seeds, float(at))
    teacher0, student0 = result.models("initial")
    config = result.config.replace(loss_threshold=None, recovery_epsilon=None, num_times=2, time_grid="linear")
    students = []
    for s, t in zip(seeds, when):
        one = jax.tree_util.tree_map(lambda x, s=s: x[s : s + 1], (teacher0, student0))
        run = simulate(config.replace(t_max=float(t)), initial=one, seed_index=result.seed_index[s : s + 1], progress=progress)
        students.append(run.models("final")[1])
    student = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *students)
    teacher = jax.tree_util.tree_map(lambda x: x[seeds], teacher)
    return teacher, student, seeds, np.asarray(when, float)


def plan(result: Result, schedules, *, axis: str = "experts", at=None, epsilon: float = 0.05) -> list[tuple[int, ...]]:
    """Every check `slim` makes before it computes anything; the schedules it will run.

    **Returns:** the stages of each schedule (`check_schedule`) with the
    one-shot baselines added (`one_shot_baselines`).

    **Raises:** `ValueError` (one line) for an unknown axis, a family the axis
    does not support (`check_family`), a bad schedule, or a start point
    ``("recovered", K)`` with K outside 1..m* or reached by no seed.
    """
    check_axis(axis)
    teacher, student = result.models("final")
    check_family(teacher, student, axis)
    if axis == "experts":
        size, smallest, what = result.config.m, result.config.m_star, "experts"
    else:
        size = student.expert_fn.hidden
        smallest = teacher.expert_fn.hidden if teacher.expert_fn.name == "mlp" else 1
        what = "hidden units"
    schedules = list(schedules)
    if not schedules:
        raise ValueError("give at least one schedule")
    checked = one_shot_baselines(check_schedule(s, size, smallest, what) for s in schedules)
    if isinstance(at, tuple):
        _recovery_times(result, at[1], epsilon)
    return checked


def _recovery_times(result: Result, k: int, epsilon: float) -> np.ndarray:
    """Per seed, when its k-th teacher expert is recovered (inf: never); refuses k outside 1..m* or no seed."""
    if not 1 <= k <= result.config.m_star:
        raise ValueError(f"--at recovered:K needs K in 1..m* = 1..{result.config.m_star}; got {k}")
    when = kth_recoveries(result, epsilon)[:, k - 1]
    if not np.isfinite(when).any():
        raise ValueError(f"no seed of the run recovers {k} teacher experts (alignment ≥ {1 - epsilon:g})")
    return when


def first_seeds(result: Result, n: int) -> Result:
    """The run restricted to its first `n` seeds (all of them if it has fewer)."""
    n = min(int(n), result.num_seeds)
    per_seed = {
        f.name: getattr(result, f.name) for f in dataclasses.fields(Result) if isinstance(getattr(result, f.name), np.ndarray) and f.name != "times"
    }
    extra = {name: value[:n] for name, value in result.extra.items()}
    return dataclasses.replace(result, extra=extra, **{name: value[:n] for name, value in per_seed.items()})


def one_shot_baselines(schedules) -> list[tuple[int, ...]]:
    """The schedules with, for every final size among them, one-shot pruning to it added (first) if missing."""
    schedules = [tuple(s) for s in schedules]
    finals = sorted({s[-1] for s in schedules}, reverse=True)
    added = [(f,) for f in finals if (f,) not in schedules]
    return added + schedules


# Compiled once per model shape and family (jax.jit keys on them).
_batched_loss = jax.jit(jax.vmap(mixture_loss))
_batched_alignment = jax.jit(jax.vmap(expert_alignment))


def slim(
    result: Result,
    *,
    schedules,
    alphas=(1.0,),
    t_max: float = 200.0,
    axis: str = "experts",
    rule: str = "best",
    threshold: float = 0.9,
    fill: str = "closest",
    at=None,
    epsilon: float = 0.05,
    num_times: int = 51,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_steps: int = 200_000,
    progress: bool = False,
) -> SlimResult:
    """Staged slimming with distillation against one-shot pruning, in the exact population loss.

    For every schedule (sizes of experts, or of hidden units per mlp expert,
    strictly decreasing: `check_schedule`) and every α: start from the run's
    student (`start_point`); at each stage prune the previous stage's model
    to the stage's size (experts by the rule's ranking, `select_experts_k`;
    hidden units by norm, `keep_hidden`) and train it by gradient flow for
    ``t_max / stages`` on ``α L(·, teacher) + (1 − α) L(·, previous)``
    (`distill`), the previous model being the stage's unpruned start. One-shot
    pruning to each final size (the baseline, one stage of the whole budget
    `t_max`) is added where missing (`one_shot_baselines`), so every schedule
    uses the same total training time as its baseline.

    **Arguments:** a finished `result`; `schedules` (sequences of sizes; a
    leading size equal to the current one is allowed and dropped); `alphas`
    in [0, 1]; `t_max` the total budget; `axis` ``"experts"`` or
    ``"hidden"``; `rule`, `threshold` (`jaxmoe.prune.select_experts`); `at`
    and `epsilon` (`start_point`); `num_times` saved times per stage;
    `rtol`, `atol`, `max_steps` (`distill`); `progress`.

    **Returns:** a `SlimResult`.

    **Raises:** `ValueError` (one line) for a bad schedule, α, rule, axis or
    family.

    Example::

        import jaxmoe.slim
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        out = jaxmoe.slim.slim(result, schedules=[(3, 2)], alphas=[0.0, 1.0], t_max=50.0)
        assert [run.label for run in out.runs] == ['2 α=0', '2 α=1', '3→2 α=0', '3→2 α=1']
        out.runs[0].loss_final                # (S,) one-shot, distilled from the unpruned student
    """
    check_rule(rule, threshold)
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; allowed: {', '.join(FILLS)}")
    alphas = [check_alpha(a) for a in alphas]
    if not alphas:
        raise ValueError("give at least one alpha")
    if not np.isfinite(t_max) or t_max <= 0:
        raise ValueError(f"t_max must be a finite number > 0; got {t_max!r}")
    schedules = plan(result, schedules, axis=axis, at=at, epsilon=epsilon)
    solver = dict(num_times=num_times, rtol=rtol, atol=atol, max_steps=max_steps)
    # Pruned students start from converged ones, whose loss reaches 1e-12: float64 throughout.
    with jax.enable_x64(True):
        teacher, student, seeds, t_start = start_point(result, at, epsilon=epsilon, progress=progress)
        teacher, student = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), (teacher, student))
        loss_start = np.asarray(_batched_loss(student, teacher))
        runs = [
            _run(teacher, student, schedule, alpha, t_max / len(schedule), axis, (rule, fill), solver) for schedule in schedules for alpha in alphas
        ]
    start = "end" if at is None else (f"recovered:{at[1]}" if isinstance(at, tuple) else f"t={at:g}")
    return SlimResult(
        config=result.config,
        seed_index=result.seed_index[seeds],
        skipped=np.setdiff1d(result.seed_index, result.seed_index[seeds]),
        t_start=t_start,
        loss_start=loss_start,
        start=start,
        axis=axis,
        rule=rule,
        runs=tuple(runs),
        settings={
            "t_max": float(t_max),
            "fill": fill,
            "threshold": float(threshold),
            "epsilon": float(epsilon),
            "num_times": int(num_times),
            "rtol": float(rtol),
            "atol": float(atol),
            "max_steps": int(max_steps),
        },
    )


def _run(teacher, start, schedule, alpha, budget, axis, selection, solver) -> SlimRun:
    previous, stages = start, []
    m_star = teacher.router.shape[1]
    for size in schedule:
        begin = time.perf_counter()
        if axis == "experts":
            kept, matched = select_experts_k(teacher, previous, size, *selection)
            pruned = keep_experts(previous, kept)
        else:
            pruned, kept = keep_hidden(previous, size)
            matched = np.full((kept.shape[0], m_star), np.nan)
        out = distill(teacher, previous, pruned, alpha=alpha, t_max=budget, **solver)
        stages.append(
            Stage(
                size=int(size),
                budget=float(budget),
                kept=kept,
                matched_score=matched,
                loss_pruned=out["loss"][:, 0],
                loss_trained=out["loss"][:, -1],
                times=out["times"],
                loss=out["loss"],
                status=out["status"],
                num_steps=out["num_steps"],
                wall_time_s=time.perf_counter() - begin,
                student=out["student"],
            )
        )
        previous = out["student"]
    alignment = np.asarray(_batched_alignment(previous, teacher))
    return SlimRun(schedule=tuple(schedule), alpha=float(alpha), stages=tuple(stages), student=previous, best_alignment=np.max(alignment, axis=1))
