"""`jaxmoe scaling`: recovery time against d (the √d escape law) and the router-after-expert delay."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..chunks import FolderConflict
from ._flags import UsageError, add_problem_flags, config_from_args, output_folder


def add_parser(sub) -> argparse.ArgumentParser:
    scl = sub.add_parser(
        "scaling",
        help="recovery time against d (the √d escape law) and the router-after-expert delay",
        description="Simulate many seeds at several d in reduced coordinates, stop each once every teacher "
        "expert is recovered (expert and router), and fit the exponent of recovery time against d for the "
        "first and each later recovery, with a bootstrap 95% interval.",
    )
    add_problem_flags(scl)
    scl.set_defaults(seeds=32)
    scl.add_argument("--dims", default="100,1000,10000,100000", help="dimensions, comma-separated (default %(default)s)")
    scl.add_argument("--epsilon", type=float, default=0.05, help="recovery: alignment ≥ 1 − epsilon (default %(default)s)")
    scl.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    scl.add_argument("--horizon", type=float, default=None, help="t_max for every d (default 3000·max(1, √(d/1000)))")
    scl.add_argument("--out", type=Path, default=None, help="output folder (default runs/scaling-<date>-<time>)")
    scl.add_argument("--overwrite", action="store_true",
                     help="rewrite the tables of a finished experiment in --out; dimensions holding another "
                     "configuration are run again, those of this one are kept")
    scl.add_argument("--quiet", action="store_true", help="no progress bar")
    scl.add_argument("--chunk", type=int, default=None,
                     help="seeds per chunk at each d; finished dimensions and chunks are saved, and rerunning the "
                     "same command resumes (default: all seeds of a d at once)")
    scl.add_argument("--refit", type=Path, default=None, metavar="FOLDER",
                     help="simulate nothing: refit the saved results of a finished scaling FOLDER and rewrite its "
                     "tables and figure (e.g. to add the censored fits to an older run)")
    return scl


def _refit(args) -> int:
    from ..censored_scaling import load_scaling
    from ..config import SimulationConfig
    from ..scaling import format_delays, format_fits, rank_fits, write_scaling

    if args.bootstrap < 10:
        raise UsageError(f"--bootstrap must be at least 10; got {args.bootstrap}")
    try:
        results, epsilon = load_scaling(args.refit)
        header = json.loads((args.refit / "config.json").read_text())
        config = SimulationConfig.from_dict(header["config"])
    except ValueError as err:
        raise UsageError(str(err)) from None
    fits = rank_fits(results, epsilon, bootstrap=args.bootstrap)
    write_scaling(fits, results, args.refit, epsilon, config, bootstrap=args.bootstrap)
    print(format_fits(fits))
    print()
    print(format_delays(results, epsilon))
    print()
    print((args.refit / "censored_fit.md").read_text())
    print(f"rewrote {args.refit}/: scaling.md, scaling.csv, fit.csv, censored_fit.md, censored_fit.csv, scaling.png")
    return 0


def run(args) -> int:
    if args.refit is not None:
        return _refit(args)
    try:
        config = config_from_args(args)
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
        if args.chunk is not None and args.chunk < 1:
            raise ValueError(f"--chunk must be an integer ≥ 1; got {args.chunk}")
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = output_folder(args, "scaling", "scaling.md", config.state_dtype)
    from ..scaling import format_delays, format_fits, scaling, write_scaling

    print(f"jaxmoe scaling: m = {config.m}, m* = {config.m_star}, {config.seeds} seeds per d, d in {dims}, "
          f"reduced coordinates", flush=True)
    try:
        fits, results = scaling(config, dims, epsilon=args.epsilon, bootstrap=args.bootstrap, t_max=args.horizon,
                                log=lambda text: print(text, flush=True), progress=not args.quiet, folder=out,
                                chunk=args.chunk, overwrite=args.overwrite)
    except FolderConflict as err:  # d<d>/ holds another run; any other error is a bug
        raise UsageError(str(err)) from None
    write_scaling(fits, results, out, args.epsilon, config, bootstrap=args.bootstrap)
    print()
    print(format_fits(fits))
    print()
    print(format_delays(results, args.epsilon))
    print()
    print((out / "censored_fit.md").read_text().rstrip())
    print(f"\ntheory: exponent 0.5 (escape time ∝ √d); wrote {out}/: scaling.md, scaling.csv, fit.csv, "
          f"scaling.png, censored_fit.md, censored_fit.csv, config.json, one result folder per d")
    return 0
