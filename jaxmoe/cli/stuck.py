"""`jaxmoe stuck RUN_FOLDER`: classify the seeds that did not converge, run them on to a longer horizon."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..chunks import FolderConflict
from ._flags import UsageError, claim_folder, use_float64


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "stuck",
        help="classify the seeds of a run that did not converge (shared / unrecovered teacher expert, slow, other) "
        "and time how long each class takes to converge on a longer horizon",
        description="Classify every seed of a finished run (jaxmoe simulate's folder) that did not converge by its "
        "t_max from its final alignments: shared (two or more student experts split one teacher expert, none "
        "recovering it), unrecovered (a teacher expert no student aligns to), slow (every teacher expert recovered, "
        "the loss still above the threshold), other. Then run those seeds again, from the same keys, to --extend "
        "(one folder per seed: rerunning resumes) and report per class how many converge and the Kaplan–Meier "
        "median time. Writes stuck.md, stuck.csv, stuck.json, stuck.png and extended/.",
    )
    p.add_argument("run_folder", metavar="RUN_FOLDER", type=Path, help="a finished run (jaxmoe simulate's folder)")
    p.add_argument("--extend", type=float, default=1e4, help="horizon of the rerun of the unconverged seeds; 0: classify only (default %(default)g)")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="seeds per solve of the rerun, each batch saved on its own (default %(default)s; on an "
        "accelerator use all the unconverged seeds at once)",
    )
    p.add_argument("--epsilon", type=float, default=0.05, help="recovered: alignment ≥ 1 − epsilon (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_FOLDER/stuck)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from ..results import load

    try:
        if not 0 < args.epsilon < 1:
            raise ValueError(f"--epsilon must be in (0, 1); got {args.epsilon}")
        if args.batch < 1:
            raise ValueError(f"--batch must be an integer ≥ 1; got {args.batch}")
        if not math.isfinite(args.extend) or args.extend < 0:
            raise ValueError(f"--extend must be a finite number ≥ 0; got {args.extend}")
        result = load(args.run_folder)
        if args.extend and args.extend <= result.config.t_max:
            raise ValueError(f"--extend must exceed the run's t_max = {result.config.t_max:g}; got {args.extend:g}")
        out = claim_folder(args.out or args.run_folder / "stuck", "stuck.md", args.overwrite)
    except ValueError as err:
        raise UsageError(str(err)) from None
    from ..stuck import classify, extend_seeds, format_stuck, stuck_rows, write_stuck

    use_float64(result.config.state_dtype)
    labels = classify(result, args.epsilon)
    stuck = [int(s) for s, lab in zip(result.seed_index, labels) if lab != "converged"]
    config = result.config
    print(
        f"jaxmoe stuck: {args.run_folder} (d = {config.d}, m = {config.m}, m* = {config.m_star}, "
        f"{result.num_seeds} seeds, t_max = {config.t_max:g}): {len(stuck)} not converged",
        flush=True,
    )
    extended = None
    if args.extend and stuck:
        try:
            extended = extend_seeds(
                result,
                stuck,
                args.extend,
                out / "extended",
                batch=args.batch,
                overwrite=args.overwrite,
                progress=not args.quiet,
                log=lambda text: print(text, flush=True),
            )
        except FolderConflict as err:  # --out holds reruns to another horizon
            raise UsageError(f"{err}; pass --overwrite to run them again") from None

    paths = write_stuck(result, extended, out, args.epsilon)
    print()
    print(format_stuck(stuck_rows(result, extended, args.epsilon), config.t_max, args.extend if extended else None))
    print(f"\nwrote {out}/: " + ", ".join(p.name for p in paths) + (", extended/" if extended is not None else ""))
    return 0
