"""The pruning experiment: select, fine-tune, fit the rate, measure the curvature."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..model import MoE
from ..results import Result
from ..simulation import simulate
from ._curvature import hessian_spectrum
from ._defaults import DEFAULT_ATOL, DEFAULT_FLOOR, DEFAULT_NUM_TIMES, DEFAULT_RTOL, DEFAULT_T_MAX, STRONG_CONVEXITY_TOLERANCE
from ._rate import LinearFit, fit_linear_rate
from ._selection import Selection, check_rule, pruned_problem, select_experts

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
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        print(pruned.rate, pruned.predicted_rate, pruned.strongly_convex)
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
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
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
