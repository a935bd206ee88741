"""The `jaxmoe` command.

    jaxmoe simulate [--d 1000 --m 25 --m-star 5 --seeds 4 ...]

Every bad input ends with one line on stderr and exit code 2; no traceback.
The command opts into float64 (unless `--float32`): the library itself never
changes JAX's global configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import METHODS, OPTIMIZERS, SOLVERS, TEACHERS, TIME_GRIDS, SimulationConfig
from .families import EXPERT_FAMILIES, GATES, MLP_ACTIVATIONS

__all__ = ["main"]

_DEFAULTS = SimulationConfig()


class _UsageError(Exception):
    """A bad command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage block
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _add_problem_flags(p: argparse.ArgumentParser) -> None:
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


def _config_from_args(args) -> SimulationConfig:
    return SimulationConfig(
        d=args.d,
        m=args.m,
        m_star=args.m_star,
        gate=args.gate,
        expert=args.expert,
        teacher_gate=args.teacher_gate,
        teacher_expert=args.teacher_expert,
        teacher=args.teacher,
        mode=args.mode,
        seeds=args.seeds,
        base_seed=args.base_seed,
        t_max=args.t_max,
        num_times=args.num_times,
        time_grid=args.time_grid,
        solver=args.solver,
        rtol=args.rtol,
        atol=args.atol,
        dt=args.dt,
        max_steps=args.max_steps,
        rkc_safety=args.rkc_safety,
        auto_switch=args.auto_switch,
        lanes=args.lanes,
        loss_threshold=args.loss_threshold,
        dtype=args.dtype,
        method=args.method,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        retract=args.retract,
    )


def _parser() -> _Parser:
    parser = _Parser(prog="jaxmoe", description="Exact simulation of soft-routed mixture-of-experts learning dynamics.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sim = sub.add_parser(
        "simulate",
        help="train many seeds at once (exact gradient flow by default; optax, online SGD or a "
        "finite training set with --method) and write a result folder",
        description="Train several seeds: by default the exact gradient flow of the population loss, "
        "or discrete steps with --method; the defaults are the paper's Figure 1 setting "
        "(m* = 5, m = 25, d = 1000).",
    )
    _add_problem_flags(sim)
    sim.add_argument("--out", type=Path, default=None, help="output folder (default runs/simulate-<date>-<time>)")
    sim.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    sim.add_argument("--figure-seeds", type=int, default=4, help="alignment figures for this many seeds (default %(default)s)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_flags(sim)

    swp = sub.add_parser(
        "sweep",
        help="a grid over problem settings from a TOML file: one result folder per point and an index table",
        description="Run every point of a grid of settings read from GRID.toml: [base] holds settings shared by "
        "all points, [grid] lists values per setting (their product is the grid); the names are those of "
        "SimulationConfig (d, m, m_star, seeds, t_max, rtol, method, learning_rate, ...). Each point is a "
        "result folder like simulate's; index.md and index.csv summarise them. Rerunning the same command "
        "resumes: finished points and chunks are kept.",
    )
    swp.add_argument("grid", type=Path, help="the grid, a TOML file")
    swp.add_argument("--out", type=Path, default=None, help="output folder (default runs/sweep-<grid>-<date>-<time>)")
    swp.add_argument("--overwrite", action="store_true", help="discard a sweep of another grid already in --out")
    swp.add_argument("--figure-seeds", type=int, default=2, help="alignment figures per point (default %(default)s)")
    swp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_flags(swp)

    cmp = sub.add_parser(
        "compare",
        help="exact gradient flow against online SGD from the same seeds: cost and fidelity",
        description="Run exact gradient flow and online SGD for several (learning rate, batch size) pairs "
        "from the same seeds; tabulate wall time, samples drawn, the largest deviation of the alignment "
        "curves from the flow, and recovery times. Defaults: the Figure 1 setting, 2 seeds, t_max = 100.",
    )
    _add_problem_flags(cmp)
    cmp.set_defaults(seeds=2, t_max=100.0, num_times=101)
    cmp.add_argument("--settings", default=",".join(f"{eta:g}:{b}" for eta, b in _compare_defaults()),
                     help="online SGD runs as eta:batch pairs, comma-separated (default %(default)s)")
    cmp.add_argument("--tolerance", type=float, default=0.05,
                     help="the bound --measure is held to: a deviation ≤ it (also the matched gap at which the runs "
                          "part), or for 'distribution' a KS p-value > it (default %(default)s)")
    cmp.add_argument("--measure", default="pairwise",
                     help="what counts as agreement: pairwise (every alignment curve), matched (best alignment per "
                          "teacher expert, whole run), escape (matched, up to the flow's first recovery), loss, "
                          "distribution (recovery times per rank, KS test) (default %(default)s)")
    cmp.add_argument("--epsilon", type=float, default=0.05, help="recovery: alignment ≥ 1 − epsilon (default %(default)s)")
    cmp.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare-<date>-<time>)")
    cmp.add_argument("--overwrite", action="store_true", help="replace a comparison already in --out")

    scl = sub.add_parser(
        "scaling",
        help="recovery time against d (the √d escape law) and the router-after-expert delay",
        description="Simulate many seeds at several d in reduced coordinates, stop each once every teacher "
        "expert is recovered (expert and router), and fit the exponent of recovery time against d for the "
        "first and each later recovery, with a bootstrap 95% interval.",
    )
    _add_problem_flags(scl)
    scl.set_defaults(seeds=32)
    scl.add_argument("--dims", default="100,1000,10000,100000", help="dimensions, comma-separated (default %(default)s)")
    scl.add_argument("--epsilon", type=float, default=0.05, help="recovery: alignment ≥ 1 − epsilon (default %(default)s)")
    scl.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    scl.add_argument("--horizon", type=float, default=None, help="t_max for every d (default 3000·max(1, √(d/1000)))")
    scl.add_argument("--out", type=Path, default=None, help="output folder (default runs/scaling-<date>-<time>)")
    scl.add_argument("--overwrite", action="store_true", help="replace a scaling experiment already in --out")
    scl.add_argument("--quiet", action="store_true", help="no progress bar")

    from .prune import add_parser as add_prune_parser

    add_prune_parser(sub)
    from .rates import add_parser as add_rates_parser

    add_rates_parser(sub)
    return parser


def _compare_defaults():
    from .compare import DEFAULT_SETTINGS

    return DEFAULT_SETTINGS


def _parse_settings(text: str) -> list[tuple[float, int]]:
    pairs = []
    for item in text.split(","):
        try:
            eta, batch = item.split(":")
            pairs.append((float(eta), int(batch)))
        except ValueError:
            raise _UsageError(f"--settings takes eta:batch pairs such as 0.01:4096, comma-separated; got {item!r}") from None
    return pairs


def _out_path(args, name: str) -> Path:
    """--out, or runs/<name>-<date>-<time>; refused if it exists and is not a folder."""
    out = args.out or Path("runs") / time.strftime(f"{name}-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise _UsageError(f"--out {out} exists and is not a folder")
    return out


def _use_float64(config: SimulationConfig) -> None:
    """The command opts into float64 when the run asks for it (the library never does)."""
    if config.state_dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def _output_folder(args, command: str, marker: str, config: SimulationConfig) -> Path:
    """The folder to write (`_out_path`), refusing to overwrite a finished one;
    then opt into float64 if asked."""
    out = _out_path(args, command)
    if (out / marker).exists() and not args.overwrite:
        raise _UsageError(f"{out} already holds a result; choose another --out or pass --overwrite")
    _use_float64(config)
    return out


def _simulate(args) -> int:
    try:
        config = _config_from_args(args)
        _check_scale_flags(args)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    out = _out_path(args, "simulate")
    _start_processes(args, config)
    import jax

    from .chunks import finished, run_chunked
    from .init import uses_reduced
    from .plot import save_figures
    from .results import format_summary, write_summaries

    if args.overwrite and jax.process_index() == 0:
        _clear_run(out)
    try:
        if finished(out, config):
            print(f"{out} already holds this run, complete; nothing to do")
            return 0
    except ValueError as err:
        raise _UsageError(f"{err} (--overwrite)") from None
    if config.method == "flow":
        how = f"gradient flow, {config.solver} rtol = {config.rtol:g} atol = {config.atol:g}"
    else:
        how = f"{config.method} {config.optimizer} η = {config.learning_rate:g}"
        if config.method != "optax":
            how += f" B = {config.batch_size}"
        if config.method == "dataset":
            how += f" n = {config.num_samples}"
    where = f"{jax.local_device_count()} {jax.devices()[0].device_kind} device(s)"
    if jax.process_count() > 1:
        where += f" in process {jax.process_index()} of {jax.process_count()}"
    print(
        f"jaxmoe simulate: d = {config.d}, m = {config.m}, m* = {config.m_star}, {config.seeds} seeds, "
        f"{'reduced' if uses_reduced(config) else 'full'} coordinates, t_max = {config.t_max:g}, {how}, "
        f"{config.dtype} on {where}",
        flush=True,
    )
    if args.chunk is None or args.chunk >= config.seeds:
        print("compiling and running (the bar follows the slowest seed) ...", flush=True)
    else:
        print(f"compiling and running in chunks of {args.chunk} seeds (resumable: rerun the same command) ...",
              flush=True)
    start = time.perf_counter()
    try:
        result = run_chunked(config, out, chunk=args.chunk, progress=not args.quiet,
                             log=lambda text: print(text, flush=True))
    except ValueError as err:
        raise _UsageError(f"{err} (--overwrite)") from None
    elapsed = time.perf_counter() - start
    if result is None:  # another process merges and reports
        print(f"process {jax.process_index()}: my chunks are saved in {out}/chunks; process 0 merges")
        return 0
    write_summaries(result, out)
    figures = save_figures(result, out, max_seeds=args.figure_seeds)
    print()
    print(format_summary(result) if result.num_seeds <= 64 else f"(summary of {result.num_seeds} seeds in summary.txt)")
    print()
    print(f"status: {result.status_counts()}")
    failed = [str(s) for s, name in zip(result.seed_index, result.status_names()) if name not in ("success", "converged")]
    if failed:
        shown = ", ".join(failed[:20]) + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")
        print(f"warning: seeds {shown} did not finish normally (see the status column)")
    print(f"{result.num_seeds} seeds in {elapsed:.1f} s; wrote {out}/: config.json, result.npz, summary.txt, summary.csv, "
          + ", ".join(p.name for p in figures))
    return 0


def _clear_run(out: Path) -> None:
    """--overwrite: remove what a previous run left (result, chunks, summaries, figures)."""
    import shutil

    if (out / "chunks").is_dir():
        shutil.rmtree(out / "chunks")
    for name in ("result.npz", "config.json", "summary.txt", "summary.csv"):
        if (out / name).is_file():
            (out / name).unlink()


def _check_scale_flags(args) -> None:
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be an integer ≥ 1; got {args.chunk}")
    from .hosts import distributed_settings

    distributed_settings(args.coordinator, args.num_processes, args.process_id)


def _start_processes(args, config) -> None:
    """Join a multi-process job (if asked), then opt into float64: both before JAX starts."""
    from .hosts import initialize

    initialize(args.coordinator, args.num_processes, args.process_id)
    _use_float64(config)


def _add_scale_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("large runs (seeds in chunks; several processes with jax.distributed)")
    g.add_argument("--chunk", type=int, default=None,
                   help="seeds per chunk; each finished chunk is saved, and rerunning the same command resumes "
                   "(default: all seeds at once)")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the job (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None, help="this process, 0 … N−1 (or JAX_PROCESS_ID)")


def _sweep(args) -> int:
    try:
        _check_scale_flags(args)
        from .sweep import read_grid

        points = read_grid(args.grid)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    out = _out_path(args, f"sweep-{args.grid.stem}")
    _start_processes(args, points[0].config)
    from .sweep import format_index, sweep

    print(f"jaxmoe sweep: {len(points)} points from {args.grid} into {out}", flush=True)
    try:
        rows = sweep(points, out, chunk=args.chunk, progress=not args.quiet, overwrite=args.overwrite,
                     figure_seeds=args.figure_seeds, source=args.grid.read_text(),
                     log=lambda text: print(text, flush=True))
    except ValueError as err:
        raise _UsageError(str(err)) from None
    if rows is None:
        return 0
    print()
    print(format_index(rows))
    print(f"\nwrote {out}/: index.md, index.csv, grid.toml, one result folder per point")
    return 0


def _compare(args) -> int:
    from .compare import MEASURES

    try:
        # --retract applies to the SGD runs; the configuration describes the flow.
        retract, args.retract = args.retract, False
        config = _config_from_args(args)
        if retract:
            config.replace(method="online", retract=True)  # validates the expert family
        if args.measure not in MEASURES:
            raise ValueError(f"unknown --measure {args.measure!r}; allowed: {', '.join(MEASURES)}")
        settings = _parse_settings(args.settings)
        for eta, batch in settings:
            config.replace(learning_rate=eta, batch_size=batch)
        for name in ("tolerance", "epsilon"):
            value = getattr(args, name)
            if not 0 < value < 1:
                raise ValueError(f"--{name} must be in (0, 1); got {value}")
    except ValueError as err:
        raise _UsageError(str(err)) from None
    out = _output_folder(args, "compare", "compare.md", config)
    from .compare import compare, format_distributions, format_table, headline, write_compare

    print(f"jaxmoe compare: d = {config.d}, m = {config.m}, m* = {config.m_star}, {config.seeds} seeds, "
          f"t_max = {config.t_max:g}, {'norm-preserving ' if retract else ''}online SGD at {len(settings)} settings, "
          f"agreement measured by {args.measure}", flush=True)
    rows, results = compare(config, settings, epsilon=args.epsilon, tolerance=args.tolerance, measure=args.measure,
                            retract=retract, log=lambda text: print(text, flush=True))
    write_compare(rows, results, out)
    print()
    print(format_table(rows))
    print()
    print(format_distributions(rows))
    print()
    print(headline(rows))
    print(f"wrote {out}/: compare.md, compare.csv, overlay.png, config.json and one result folder per run")
    return 0


def _scaling(args) -> int:
    try:
        config = _config_from_args(args)
        try:
            dims = [int(x) for x in args.dims.split(",")]
        except ValueError:
            raise ValueError(f"--dims takes integers separated by commas; got {args.dims!r}") from None
        if len(dims) < 2 or len(set(dims)) != len(dims):
            raise ValueError(f"--dims needs at least two distinct dimensions; got {args.dims!r}")
        for d in dims:
            config.replace(d=d)
        if not 0 < args.epsilon < 1:
            raise ValueError(f"--epsilon must be in (0, 1); got {args.epsilon}")
        if args.bootstrap < 10:
            raise ValueError(f"--bootstrap must be at least 10; got {args.bootstrap}")
        if args.horizon is not None:
            config.replace(t_max=args.horizon)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    out = _output_folder(args, "scaling", "scaling.md", config)
    from .scaling import format_delays, format_fits, scaling, write_scaling

    print(f"jaxmoe scaling: m = {config.m}, m* = {config.m_star}, {config.seeds} seeds per d, d in {dims}, "
          f"reduced coordinates", flush=True)
    fits, results = scaling(config, dims, epsilon=args.epsilon, bootstrap=args.bootstrap, t_max=args.horizon,
                            log=lambda text: print(text, flush=True), progress=not args.quiet)
    write_scaling(fits, results, out, args.epsilon, config)
    print()
    print(format_fits(fits))
    print()
    print(format_delays(results, args.epsilon))
    print(f"\ntheory: exponent 0.5 (escape time ∝ √d); wrote {out}/: scaling.md, scaling.csv, fit.csv, "
          f"scaling.png, config.json, one result folder per d")
    return 0


def _prune(args) -> int:
    from .prune import run_command

    try:
        return run_command(args)
    except ValueError as err:
        raise _UsageError(str(err)) from None


def _rates(args) -> int:
    from .rates import main as rates_main

    # rates.main reports its own bad input (one line, exit code 2).
    return rates_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.version:
            from . import __version__

            print(f"jaxmoe {__version__}")
            return 0
        if args.command is None:
            raise _UsageError("a command is required: simulate, sweep, compare, scaling, prune, rates (see 'jaxmoe --help')")
        commands = {"simulate": _simulate, "sweep": _sweep, "compare": _compare, "scaling": _scaling, "prune": _prune,
                    "rates": _rates}
        return commands[args.command](args)
    except _UsageError as err:
        print(f"jaxmoe: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxmoe: interrupted; files already written are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
