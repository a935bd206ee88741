"""What the commands share: the problem flags (one per `SimulationConfig` field), the
configuration built from them, output folders, and the bad-input exception.

The error policy (`jaxmoe.cli.main`): a `UsageError` is bad input, reported
in one line with exit code 2; any other exception is a bug and keeps its
traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..config import METHODS, OPTIMIZERS, SOLVERS, TEACHERS, TIME_GRIDS, SimulationConfig
from ..families import EXPERT_FAMILIES, GATES, MLP_ACTIVATIONS

__all__ = [
    "CONFIG_FIELDS", "Parser", "UsageError", "add_problem_flags", "add_scale_flags", "check_scale_flags",
    "claim_folder", "config_from_args", "out_path", "output_folder", "start_processes", "use_float64",
]

_DEFAULTS = SimulationConfig()
# Every field of the configuration has a flag whose destination is the field's name.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(SimulationConfig))


class UsageError(Exception):
    """A bad command line: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_problem_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("problem")
    g.add_argument("--d", type=int, default=_DEFAULTS.d, help="input dimension (default %(default)s)")
    g.add_argument("--m", type=int, default=_DEFAULTS.m, help="student experts (default %(default)s)")
    g.add_argument("--m-star", type=int, default=_DEFAULTS.m_star, help="teacher experts (default %(default)s)")
    g.add_argument("--gate", default=_DEFAULTS.gate,
                   help=f"gate: {', '.join(GATES)}, with parameters after a colon, e.g. 'temperature:tau=0.5', "
                        "'temperature:tau=1,tau_final=0.1,decay=50', 'activation:act=sigmoid,tau=0.5', "
                        "'hierarchical:groups=2', 'topk:k=2' (default %(default)s)")
    g.add_argument("--expert", default=_DEFAULTS.expert,
                   help=f"expert: {', '.join(EXPERT_FAMILIES)}, e.g. 'mlp:hidden=4,act=gelu' (act: "
                        f"{', '.join(MLP_ACTIVATIONS)}) (default %(default)s)")
    g.add_argument("--teacher-gate", default=None, help="the teacher's gate, when it differs from --gate")
    g.add_argument("--teacher-expert", default=None, help="the teacher's expert, when it differs from --expert")
    g.add_argument("--teacher", default=_DEFAULTS.teacher, help=f"teacher frame: {', '.join(TEACHERS)} (default %(default)s)")
    g.add_argument("--full", dest="mode", action="store_const", const="full", default=_DEFAULTS.mode,
                   help="simulate in all d coordinates instead of the exact reduced ones (2(m + m*) for the paper's model; slower, same law)")
    g = p.add_argument_group("seeds")
    g.add_argument("--seeds", type=int, default=_DEFAULTS.seeds, help="number of seeds (default %(default)s)")
    g.add_argument("--base-seed", type=int, default=_DEFAULTS.base_seed, help="seed k uses fold_in(PRNGKey(base_seed), k) (default %(default)s)")
    g = p.add_argument_group("time and solver")
    g.add_argument("--t-max", type=float, default=_DEFAULTS.t_max, help="end of gradient-flow time (default %(default)s)")
    g.add_argument("--num-times", type=int, default=_DEFAULTS.num_times, help="saved times (default %(default)s)")
    g.add_argument("--time-grid", default=_DEFAULTS.time_grid, help=f"{', '.join(TIME_GRIDS)} (default %(default)s)")
    g.add_argument("--t-first", type=float, default=_DEFAULTS.t_first,
                   help="log grid: the first saved time after 0, as a fraction of t_max (default %(default)s)")
    g.add_argument("--solver", default=_DEFAULTS.solver, help=f"{', '.join(SOLVERS)} (default %(default)s)")
    g.add_argument("--rtol", type=float, default=_DEFAULTS.rtol, help="relative tolerance (default %(default)s)")
    g.add_argument("--atol", type=float, default=_DEFAULTS.atol, help="absolute tolerance (default %(default)s)")
    g.add_argument("--dt", type=float, default=None, help="fixed step (solver rk4 only)")
    g.add_argument("--rkc-safety", type=float, default=None,
                   help="margin on the spectral radius when RKC2 sizes its stages (solvers rkc2, auto; default 1.25)")
    g.add_argument("--auto-switch", type=float, default=None,
                   help="h·ρ at which solver auto hands over from Tsit5 to RKC2 (default 2.5)")
    g.add_argument("--lanes", type=int, default=None,
                   help="seeds integrated at once per device; fewer lanes than seeds makes a queue that finished "
                        "lanes draw from (default: 1 on a CPU, all seeds on an accelerator)")
    g.add_argument("--max-steps", type=int, default=_DEFAULTS.max_steps, help="step limit per seed (default %(default)s)")
    g.add_argument("--loss-threshold", type=float, default=_DEFAULTS.loss_threshold,
                   help="stop a seed once its loss is below this (default %(default)s)")
    g.add_argument("--no-early-stop", dest="loss_threshold", action="store_const", const=None, help="integrate every seed to t_max")
    g.add_argument("--recovery-epsilon", type=float, default=_DEFAULTS.recovery_epsilon,
                   help="also stop a seed once every teacher expert is recovered, expert and router alignment "
                        "≥ 1 − this (flow only; default: off)")
    g = p.add_argument_group("training method (discrete methods report at t = steps × learning rate)")
    g.add_argument("--method", default=_DEFAULTS.method, help=f"{', '.join(METHODS)} (default %(default)s)")
    g.add_argument("--optimizer", default=_DEFAULTS.optimizer, help=f"{', '.join(OPTIMIZERS)} (default %(default)s)")
    g.add_argument("--learning-rate", "--lr", type=float, default=_DEFAULTS.learning_rate, help="step size η (default %(default)s)")
    g.add_argument("--momentum", type=float, default=_DEFAULTS.momentum, help="for momentum and nesterov (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                   help="inputs per step for online and minibatch training (default %(default)s)")
    g.add_argument("--num-samples", type=int, default=_DEFAULTS.num_samples, help="training-set size n for --method dataset")
    g.add_argument("--retract", action="store_true",
                   help="norm-preserving steps: after each step rescale every router and expert vector to its "
                        "initial norm, as the flow keeps it (discrete methods; in compare, every SGD run)")
    precision = g.add_mutually_exclusive_group()
    precision.add_argument("--float64", dest="dtype", action="store_const", const="float64", help="double precision (default)")
    precision.add_argument("--float32", dest="dtype", action="store_const", const="float32", help="single precision")
    precision.add_argument("--precision", dest="dtype", metavar="{float64,float32,mixed}",
                           help="float64 (default), float32, or mixed: the vector field in float32, the state and "
                                "the stop checks in float64 (flow only; for GPUs with slow float64)")
    p.set_defaults(dtype=_DEFAULTS.dtype)


def config_from_args(args) -> SimulationConfig:
    """The `SimulationConfig` the problem flags name (a `ValueError` names a bad value)."""
    return SimulationConfig(**{name: getattr(args, name) for name in CONFIG_FIELDS})


def claim_folder(out: Path, marker: str | None = None, overwrite: bool = False) -> Path:
    """`out`, refused if it exists and is not a folder, or holds `marker` (a finished result) without --overwrite."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if marker is not None and (out / marker).exists() and not overwrite:
        raise UsageError(f"{out} already holds a result; choose another --out or pass --overwrite")
    return out


def out_path(args, name: str) -> Path:
    """--out, or runs/<name>-<date>-<time> (`claim_folder` without a marker)."""
    return claim_folder(args.out or Path("runs") / time.strftime(f"{name}-%Y%m%d-%H%M%S"))


def use_float64(dtype: str) -> None:
    """The command opts into float64 when the run asks for it (the library never does)."""
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def output_folder(args, command: str, marker: str, dtype: str) -> Path:
    """The folder to write (`out_path`), refusing to overwrite a finished one;
    then opt into float64 if `dtype` asks for it."""
    out = claim_folder(out_path(args, command), marker, args.overwrite)
    use_float64(dtype)
    return out


def check_scale_flags(args) -> None:
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be an integer ≥ 1; got {args.chunk}")
    from ..hosts import distributed_settings

    distributed_settings(args.coordinator, args.num_processes, args.process_id)


def start_processes(args, config) -> None:
    """Join a multi-process job (if asked), then opt into float64: both before JAX starts."""
    from ..hosts import initialize

    initialize(args.coordinator, args.num_processes, args.process_id)
    use_float64(config.state_dtype)


def add_scale_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("large runs (seeds in chunks; several processes with jax.distributed)")
    g.add_argument("--chunk", type=int, default=None,
                   help="seeds per chunk; each finished chunk is saved, and rerunning the same command resumes "
                   "(default: all seeds at once)")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the job (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None, help="this process, 0 … N−1 (or JAX_PROCESS_ID)")
