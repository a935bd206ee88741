"""jaxmoe: exact, batched simulation of soft-routed mixture-of-experts learning.

The student–teacher setting of "Guided by the Experts: Provable Feature
Learning Dynamic of Soft-Routed Mixture-of-Experts" (arXiv 2510.07205).
"""

from .hermite import (
    ACTIVATIONS,
    EXPERTS,
    Activation,
    HermiteExpert,
    get_activation,
    get_expert,
    hermite_coefficients,
    mehler_table,
)
from .init import init_student, init_teacher, orthogonalise_router
from .model import MoE, forward, unit
from .population import (
    expert_kernel,
    expert_kernel_reference,
    population_loss,
    population_loss_monte_carlo,
    population_loss_reference,
)

__version__ = "0.1.0"

from . import observables
from .config import METHODS, OPTIMIZERS, SimulationConfig
from .flow import time_grid
from .simulation import simulate
from .discrete import make_optimizer
from .observables import alignment, best_match, observe
from .results import STATUS_NAMES, Result, format_summary, load, save
from .chunks import run_chunked
from .sweep import grid_points, read_grid
from .sweep import sweep as run_sweep
