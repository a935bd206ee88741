"""Pruning and fine-tuning: the last phase of arXiv 2510.07205 (the `jaxmoe prune` experiment).

After gradient flow has recovered every teacher expert, the student holds
m ≥ m* experts: one well aligned with each teacher expert, the others
redundant (often in cancelling pairs). The paper's last step removes the
redundant experts and fine-tunes the rest; near the teacher the loss is
locally strongly convex on the directions it can see, so fine-tuning
converges *linearly*: ``L(t) ≈ L₀ e^{−r t}``. This module runs that step
exactly, seed by seed:

1. **Select** (`select_experts`): for every teacher expert j keep one student
   expert, by a rule in `SELECTION_RULES`; distinct teachers get distinct students
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
    result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
    pruned = jaxmoe.prune.prune(result)                    # rule "best"
    assert pruned.kept.shape == (2, 2)                     # (S, m*): the student kept per teacher
    print(pruned.rate, pruned.predicted_rate)              # fitted rate r, predicted 2·λ_min
    jaxmoe.prune.save_prune(pruned, "runs/example/prune")  # config.json, result.npz, prune.csv, figures

From the command line: ``jaxmoe prune RUN_FOLDER [--rule best] [--t-max 200]``.
"""

from __future__ import annotations

from ._curvature import hessian_spectrum, loss_hessian, norm_directions
from ._defaults import (
    DEFAULT_ATOL,
    DEFAULT_FLOOR,
    DEFAULT_NUM_TIMES,
    DEFAULT_RTOL,
    DEFAULT_T_MAX,
    SELECTION_RULES,
    STRONG_CONVEXITY_TOLERANCE,
)
from ._experiment import PruneResult, prune
from ._rate import LinearFit, fit_linear_rate
from ._report import format_prune_table, plot_prune_loss, plot_spectrum, prune_csv, save_prune
from ._selection import Selection, check_rule, greedy_match, pruned_problem, select_experts

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_FLOOR",
    "DEFAULT_NUM_TIMES",
    "DEFAULT_RTOL",
    "DEFAULT_T_MAX",
    "STRONG_CONVEXITY_TOLERANCE",
    "check_rule",
    "SELECTION_RULES",
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
