"""`jaxmoe phase`: the share of seeds recovering every teacher expert, over m/m* and d (the phase diagram)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..chunks import FolderConflict
from ._flags import UsageError, add_problem_flags, config_from_args, output_folder


def _integers(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes integers separated by commas; got {text!r}") from None


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phase",
        help="share of seeds recovering every teacher expert against over-parameterization m/m* and d",
        description="For each m/m* in --ratios (m = ratio·m*) and each d in --dims, simulate the seeds by gradient "
        "flow in reduced coordinates, each stopping once every teacher expert is recovered (expert and router "
        "alignment ≥ 1 − epsilon); report the share fully recovered by the horizon with a Wilson 95% interval and the "
        "Kaplan–Meier median time to full recovery. Runs as a sweep, one result folder per point: rerunning the same "
        "command resumes. Writes phase.md, phase.csv, phase.png, index.md.",
    )
    add_problem_flags(p)
    p.set_defaults(seeds=64)
    p.add_argument("--ratios", default="1,2,3,5,8", help="m/m*, comma-separated integers (default %(default)s)")
    p.add_argument("--dims", default="100,1000,10000", help="dimensions, comma-separated (default %(default)s)")
    p.add_argument("--epsilon", type=float, default=0.05, help="recovery: alignment ≥ 1 − epsilon (default %(default)s)")
    p.add_argument("--horizon", type=float, default=None, help="t_max for every point (default 3000·max(1, √(d/1000)))")
    p.add_argument("--chunk", type=int, default=None, help="seeds per chunk within a point (default: all at once)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/phase-<date>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="discard a phase diagram of another grid in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    try:
        config = config_from_args(args)
        if not 0 < args.epsilon < 1:
            raise ValueError(f"--epsilon must be in (0, 1); got {args.epsilon}")
        if args.horizon is not None and not args.horizon > 0:
            raise ValueError(f"--horizon must be > 0; got {args.horizon}")
        if args.chunk is not None and args.chunk < 1:
            raise ValueError(f"--chunk must be an integer ≥ 1; got {args.chunk}")
        from ..phase import phase_points

        points = phase_points(config, _integers(args.ratios, "--ratios"), _integers(args.dims, "--dims"), t_max=args.horizon, epsilon=args.epsilon)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = output_folder(args, "phase", "phase.md", config.state_dtype)
    from ..phase import format_phase, run_phase

    print(f"jaxmoe phase: m* = {config.m_star}, {config.seeds} seeds per point, {len(points)} points into {out}", flush=True)
    try:
        rows = run_phase(
            points,
            out,
            epsilon=args.epsilon,
            chunk=args.chunk,
            progress=not args.quiet,
            overwrite=args.overwrite,
            log=lambda text: print(text, flush=True),
        )
    except FolderConflict as err:  # the folder holds another grid; any other error is a bug
        raise UsageError(str(err)) from None
    if rows is None:
        return 0
    print()
    print(format_phase(rows))
    print(f"\nwrote {out}/: phase.md, phase.csv, phase.png, index.md, one result folder per point")
    return 0
