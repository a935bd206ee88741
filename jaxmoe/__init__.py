"""jaxmoe: exact, batched simulation of soft-routed mixture-of-experts learning.

The student–teacher setting of "Guided by the Experts: Provable Feature
Learning Dynamic of Soft-Routed Mixture-of-Experts" (arXiv 2510.07205).
"""

from .base import Model
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
from .chunks import run_chunked
from .config import METHODS, OPTIMIZERS, SimulationConfig
from .discrete import make_optimizer
from .flow import time_grid
from .observables import alignment, best_match, observe
from .results import STATUS_NAMES, Result, format_summary, load, save
from .simulation import simulate
from .sweep import grid_points, read_grid
from .sweep import sweep as run_sweep

__all__ = [
    "__version__",
    "ACTIVATIONS",
    "EXPERTS",
    "Activation",
    "HermiteExpert",
    "get_activation",
    "get_expert",
    "hermite_coefficients",
    "mehler_table",
    "init_student",
    "init_teacher",
    "orthogonalise_router",
    "Model",
    "MoE",
    "forward",
    "unit",
    "expert_kernel",
    "expert_kernel_reference",
    "population_loss",
    "population_loss_monte_carlo",
    "population_loss_reference",
    "observables",
    "run_chunked",
    "METHODS",
    "OPTIMIZERS",
    "SimulationConfig",
    "make_optimizer",
    "time_grid",
    "alignment",
    "best_match",
    "observe",
    "STATUS_NAMES",
    "Result",
    "format_summary",
    "load",
    "save",
    "simulate",
    "grid_points",
    "read_grid",
    "run_sweep",
]

# The experiment modules (and matplotlib with them) load on first use:
# `jaxmoe.plot.plot_alignments(...)` works after a bare `import jaxmoe`.
_LAZY = (
    "plot", "compare", "scaling", "prune", "hosts", "devices", "chunks", "sweep", "cli",
    "families", "pairkernel", "quadrature", "routing", "voronoi", "rates", "slim", "stats", "base", "files",
    "phase", "stuck", "survival", "censored_scaling",
)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxmoe' has no attribute {name!r}")
