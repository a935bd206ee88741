"""Defaults of the pruning experiment (the selection rules, the fine-tuning, the rate fit)."""

# How a student expert is chosen for each teacher expert (see `select_experts`).
SELECTION_RULES = ("best", "threshold", "contribution")

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
