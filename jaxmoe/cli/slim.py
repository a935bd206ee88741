"""`jaxmoe slim RUN_FOLDER`: staged slimming with distillation against one-shot pruning (arXiv 2506.18349)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..prune import DEFAULT_ATOL, DEFAULT_RTOL, SELECTION_RULES, check_rule
from ..results import load
from ..slim import (
    AXES,
    FILLS,
    check_alpha,
    check_axis,
    first_seeds,
    format_slim_table,
    parse_at,
    parse_schedule,
    plan,
    save_slim,
    slim,
)
from ._flags import UsageError, claim_folder, use_float64


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Define ``jaxmoe slim`` on an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "slim",
        help="compress a run's student along schedules of sizes, distilling each stage from the one before, "
        "against one-shot pruning under the same budget",
        description="From a finished run's student (at its end, at --at t, or when each seed's K-th teacher expert "
        "is recovered: --at recovered:K, re-simulated from the saved initial state), prune along each --schedule "
        "(experts, or with --axis hidden the hidden units of every mlp expert) and train each stage by gradient flow "
        "for --t-max / stages on alpha L(student, teacher) + (1 - alpha) L(student, previous stage), exactly. "
        "One-shot pruning to each final size under the whole budget is added as the baseline. Writes slim.json, "
        "slim.csv, slim.txt, slim.npz and loss.png.",
    )
    p.add_argument("run_folder", metavar="RUN_FOLDER", type=Path, help="a finished run (jaxmoe simulate's folder)")
    p.add_argument(
        "--schedule",
        action="append",
        default=None,
        metavar="SIZES",
        help="strictly decreasing sizes, e.g. 25,15,10,5 (a leading size equal to the current one is the "
        "start); repeat for several schedules (default: one-shot to m*)",
    )
    p.add_argument(
        "--alpha",
        default="1",
        help="weights of the true teacher's loss, in [0, 1], comma-separated "
        "(0: distillation only; 1: teacher only, as jaxmoe prune) (default %(default)s)",
    )
    p.add_argument("--axis", default="experts", help=f"{', '.join(AXES)} (default %(default)s)")
    p.add_argument("--at", default="end", help="where to take the student: end, a time t, or recovered:K (default %(default)s)")
    p.add_argument("--epsilon", type=float, default=0.05, help="recovered means best expert alignment ≥ 1 − epsilon (default %(default)s)")
    p.add_argument("--rule", default="best", help=f"one expert per teacher by {', '.join(SELECTION_RULES)} (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.9, help="for rule threshold, in (0, 1) (default %(default)s)")
    p.add_argument("--fill", default="closest", help=f"the other kept experts at intermediate sizes: {', '.join(FILLS)} (default %(default)s)")
    p.add_argument("--seeds", type=int, default=None, help="slim only the run's first N seeds (default: all)")
    p.add_argument("--t-max", type=float, default=200.0, help="total training time of a schedule (default %(default)s)")
    p.add_argument("--num-times", type=int, default=51, help="saved times per stage (default %(default)s)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance (default %(default)s)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=200_000, help="step limit per seed and stage (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_FOLDER/slim)")
    p.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar while re-simulating to --at")
    return p


def _alphas(text: str) -> list[float]:
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--alpha is a comma-separated list of numbers in [0, 1]; got {text!r}") from None
    return [check_alpha(a) for a in values]


def _check(args):
    """Parsed settings and the output folder, once every flag is valid (`ValueError`, or `UsageError`)."""
    check_rule(args.rule, args.threshold)
    check_axis(args.axis)
    if args.fill not in FILLS:
        raise ValueError(f"unknown --fill {args.fill!r}; allowed: {', '.join(FILLS)}")
    for name in ("t_max", "rtol", "atol", "epsilon"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0; got {value!r}")
    if args.epsilon >= 1:
        raise ValueError(f"--epsilon must be in (0, 1); got {args.epsilon!r}")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {args.seeds}")
    if args.num_times < 2 or args.max_steps < 1:
        raise ValueError("--num-times must be at least 2 and --max-steps at least 1")
    schedules = [parse_schedule(s) for s in args.schedule] if args.schedule else None
    run_folder = Path(args.run_folder)
    out = Path(args.out) if args.out is not None else run_folder / "slim"
    if out.resolve() == run_folder.resolve():
        raise ValueError("--out must differ from RUN_FOLDER: the run being slimmed is not overwritten")
    return schedules, _alphas(args.alpha), parse_at(args.at), claim_folder(out, "slim.npz", args.overwrite)


def run(args) -> int:
    """Execute ``jaxmoe slim`` from parsed arguments; print the table; return 0.

    **Raises:** `UsageError` with a one-line message for bad input (a schedule
    that does not decrease, sizes outside 1..m or below m*, α outside [0, 1],
    a family the axis does not support, …).
    """
    run_folder = Path(args.run_folder)
    try:
        schedules, alphas, at, out = _check(args)
        result = load(run_folder)
        if args.seeds is not None:
            result = first_seeds(result, args.seeds)
        config = result.config
        if schedules is None:
            schedules = [(config.m_star,)]
        plan(result, schedules, axis=args.axis, at=at, epsilon=args.epsilon)
    except ValueError as err:
        raise UsageError(str(err)) from None
    use_float64("float64")  # pruned students near the teacher reach L ≈ 1e-12
    print(
        f"jaxmoe slim: {run_folder} (d = {config.d}, m = {config.m}, m* = {config.m_star}, expert {config.expert}, "
        f"{result.num_seeds} seeds), {args.axis} from {args.at}, schedules "
        + "; ".join(",".join(str(v) for v in s) for s in schedules)
        + f", alpha {', '.join(f'{a:g}' for a in alphas)}, budget {args.t_max:g} per schedule",
        flush=True,
    )
    slimmed = slim(
        result,
        schedules=schedules,
        alphas=alphas,
        t_max=args.t_max,
        axis=args.axis,
        rule=args.rule,
        threshold=args.threshold,
        fill=args.fill,
        at=at,
        epsilon=args.epsilon,
        num_times=args.num_times,
        rtol=args.rtol,
        atol=args.atol,
        max_steps=args.max_steps,
        progress=not args.quiet,
    )
    paths = save_slim(slimmed, out, source=str(run_folder))
    print()
    print(format_slim_table(slimmed))
    if slimmed.skipped.size:
        print(f"note: seeds {', '.join(str(s) for s in slimmed.skipped)} never reach {slimmed.start}; left out")
    failed = sorted({int(seed) for run in slimmed.runs for seed, st in zip(slimmed.seed_index, run.status) if st})
    if failed:
        print(f"warning: the solver failed for seeds {', '.join(map(str, failed))} in some stage (slim.csv, status)")
    print(f"wrote {out}/: " + ", ".join(p.name for p in paths))
    return 0
