"""Staged slimming with distillation against one-shot pruning, in the exact population loss.

"SlimMoE: Structured Compression of Large MoE Models via Expert Slimming and
Distillation" (arXiv 2506.18349) compresses a trained mixture of experts in
several stages, each distilled from the one before, and reports that this
avoids the loss of one-shot pruning. The paper we simulate (arXiv 2510.07205)
prunes to one student expert per teacher expert in one shot and fine-tunes
(`jaxmoe.prune`). With the exact population loss the comparison is free of
sampling noise:

1. **Start** (`start_point`): the run's final student, or the student at a
   time t, or when a seed's K-th teacher expert is recovered (re-simulated
   from the saved initial state).
2. **Prune** each stage of a schedule (`check_schedule`): experts by the
   rules of `jaxmoe.prune` extended to any size (`select_experts_k`), or the
   hidden units of every mlp expert by norm (`keep_hidden`).
3. **Distil** (`distill`): gradient flow for the stage's budget on
   ``α L(θ, teacher) + (1 − α) L(θ, previous stage)``, both exact.
4. **Compare** with one-shot pruning to the same final size under the same
   total budget (`one_shot_baselines`): `format_slim_table`, `plot_slim`,
   `save_slim` / `load_slim`.

Example::

    import jaxmoe.slim
    result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
    out = jaxmoe.slim.slim(result, schedules=[(3, 2)], alphas=[0.5], t_max=50.0)
    print(jaxmoe.slim.format_slim_table(out))
    jaxmoe.slim.save_slim(out, "runs/example/slim")

From the command line: ``jaxmoe slim RUN --schedule 3,2 --alpha 0,0.5,1 --t-max 50``.
"""

from __future__ import annotations

from ._distill import distill, distillation_loss
from ._experiment import SlimResult, SlimRun, Stage, first_seeds, one_shot_baselines, plan, slim, start_point
from ._report import baseline_of, format_slim_table, load_slim, plot_slim, save_slim, slim_csv
from ._schedule import AXES, check_alpha, check_axis, check_schedule, parse_at, parse_schedule
from ._selection import (
    FILLS,
    check_family,
    closest_fill,
    expert_gram,
    expert_scores,
    hidden_norms,
    keep_experts,
    keep_hidden,
    rank_experts,
    select_experts_k,
)

__all__ = [
    "AXES",
    "FILLS",
    "SlimResult",
    "SlimRun",
    "Stage",
    "baseline_of",
    "check_alpha",
    "check_axis",
    "check_family",
    "check_schedule",
    "closest_fill",
    "distill",
    "distillation_loss",
    "expert_gram",
    "expert_scores",
    "first_seeds",
    "format_slim_table",
    "hidden_norms",
    "keep_experts",
    "keep_hidden",
    "load_slim",
    "one_shot_baselines",
    "parse_at",
    "parse_schedule",
    "plan",
    "plot_slim",
    "rank_experts",
    "save_slim",
    "select_experts_k",
    "slim",
    "slim_csv",
    "start_point",
]
