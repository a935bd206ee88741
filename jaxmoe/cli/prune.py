"""`jaxmoe prune RUN_FOLDER`: prune a finished run to one student expert per teacher expert, fine-tune, measure."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..prune import (
    DEFAULT_ATOL,
    DEFAULT_FLOOR,
    DEFAULT_NUM_TIMES,
    DEFAULT_RTOL,
    DEFAULT_T_MAX,
    SELECTION_RULES,
    check_rule,
    format_prune_table,
    prune,
    save_prune,
)
from ..results import load
from ._flags import UsageError, claim_folder, use_float64


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Define ``jaxmoe prune`` on an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "prune",
        help="prune a finished run to one student expert per teacher expert, fine-tune, measure rate and curvature",
        description="Keep one student expert per teacher expert (rule best: largest expert alignment; threshold: "
        "the same, flagging teachers whose kept expert is below --threshold; contribution: largest E[f_i f*_j]), "
        "fine-tune the pruned student by gradient flow, fit the linear convergence rate of log L, and report the "
        "Hessian spectrum at the end point on the tangent space (norm directions removed). Writes config.json, "
        "result.npz (the fine-tuning, readable by jaxmoe.load), prune.csv, prune.txt, prune.npz, loss.png, spectrum.png.",
    )
    p.add_argument("run_folder", metavar="RUN_FOLDER", type=Path, help="a finished run (jaxmoe simulate's folder)")
    p.add_argument("--rule", default="best", help=f"{', '.join(SELECTION_RULES)} (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="alignment below which rule 'threshold' flags a teacher, in (0, 1) (default %(default)s)")
    p.add_argument("--t-max", type=float, default=DEFAULT_T_MAX, help="fine-tuning time (default %(default)s)")
    p.add_argument("--num-times", type=int, default=DEFAULT_NUM_TIMES, help="saved times, linear grid (default %(default)s)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance (default %(default)s)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance (default %(default)s)")
    p.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                   help="rate fit: use losses above this only (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_FOLDER/prune)")
    p.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check(args) -> Path:
    """The output folder, once every flag is valid (`ValueError`, or `UsageError` for the folder, otherwise)."""
    check_rule(args.rule, args.threshold)
    for name in ("t_max", "rtol", "atol", "floor"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0; got {value!r}")
    if args.num_times < 2:
        raise ValueError(f"--num-times must be at least 2; got {args.num_times}")
    run_folder = Path(args.run_folder)
    out = Path(args.out) if args.out is not None else run_folder / "prune"
    if out.resolve() == run_folder.resolve():
        raise ValueError("--out must differ from RUN_FOLDER: the run being pruned is not overwritten")
    return claim_folder(out, "result.npz", args.overwrite)


def run(args) -> int:
    """Execute ``jaxmoe prune`` from parsed arguments; print the table; return 0.

    Opts into float64 (``jax_enable_x64``), as ``jaxmoe simulate`` does.
    **Raises:** `UsageError` with a one-line message for bad input (not a
    result folder, unknown rule, threshold outside (0, 1), an existing result
    in --out without --overwrite, …).
    """
    try:
        out = _check(args)
        result = load(Path(args.run_folder))
    except ValueError as err:
        raise UsageError(str(err)) from None
    run_folder = Path(args.run_folder)
    use_float64("float64")  # fine-tuning near the teacher needs float64: L reaches 1e-12
    config = result.config
    print(
        f"jaxmoe prune: {run_folder} (d = {config.d}, m = {config.m} → m* = {config.m_star}, {result.num_seeds} seeds), "
        f"rule {args.rule}" + (f" at {args.threshold:g}" if args.rule == "threshold" else "")
        + f"; fine-tuning by gradient flow to t = {args.t_max:g}, rtol = {args.rtol:g}, atol = {args.atol:g}",
        flush=True,
    )
    pruned = prune(
        result, rule=args.rule, threshold=args.threshold, t_max=args.t_max, num_times=args.num_times,
        rtol=args.rtol, atol=args.atol, floor=args.floor, source=str(run_folder), progress=not args.quiet,
    )
    paths = save_prune(pruned, out)
    print()
    print(format_prune_table(pruned))
    print()
    print(f"rate r: least-squares slope of −log L over the last half of the fine-tuning above L = {args.floor:g}; "
          "2 λ_min: the slowest rate the tangent Hessian at the end allows (r ≥ 2 λ_min, equal when the "
          "slowest mode dominates before the floor); λ_min > 0: locally strongly convex")
    flagged = [str(s) for s, f in zip(pruned.finetune.seed_index, pruned.flags()) if f]
    failed = [str(s) for s, n in zip(pruned.finetune.seed_index, pruned.finetune.status_names()) if n != "success"]
    if flagged or failed:
        print(f"warning: seeds {', '.join(sorted(set(flagged + failed), key=int))} need a look (status column)")
    print(f"wrote {out}/: " + ", ".join(p.name for p in paths))
    return 0
