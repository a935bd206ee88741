"""`jaxmoe simulate`: many seeds of one configuration, into a result folder (resumable in chunks)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..chunks import FolderConflict
from ._flags import UsageError, add_problem_flags, add_scale_flags, check_scale_flags, config_from_args, out_path, start_processes


def add_parser(sub) -> argparse.ArgumentParser:
    sim = sub.add_parser(
        "simulate",
        help="train many seeds at once (exact gradient flow by default; optax, online SGD or a "
        "finite training set with --method) and write a result folder",
        description="Train several seeds: by default the exact gradient flow of the population loss, "
        "or discrete steps with --method; the defaults are the paper's Figure 1 setting "
        "(m* = 5, m = 25, d = 1000).",
    )
    add_problem_flags(sim)
    sim.add_argument("--out", type=Path, default=None, help="output folder (default runs/simulate-<date>-<time>)")
    sim.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    sim.add_argument("--figure-seeds", type=int, default=4, help="alignment figures for this many seeds (default %(default)s)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    add_scale_flags(sim)
    return sim


def run(args) -> int:
    try:
        config = config_from_args(args)
        check_scale_flags(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = out_path(args, "simulate")
    start_processes(args, config)
    import jax

    from ..chunks import finished, run_chunked
    from ..init import uses_reduced
    from ..plot import save_figures
    from ..results import format_summary, write_summaries

    if args.overwrite and jax.process_index() == 0:
        clear_run(out)
    try:
        if finished(out, config):
            print(f"{out} already holds this run, complete; nothing to do")
            return 0
    except FolderConflict as err:  # the folder holds another run; any other error is a bug
        raise UsageError(str(err)) from None
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
    except FolderConflict as err:  # the folder holds another run; any other error is a bug
        raise UsageError(str(err)) from None
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


def clear_run(out: Path) -> None:
    """--overwrite: remove what a previous run left (result, chunks, summaries, figures)."""
    import shutil

    if (out / "chunks").is_dir():
        shutil.rmtree(out / "chunks")
    for name in ("result.npz", "config.json", "summary.txt", "summary.csv"):
        if (out / name).is_file():
            (out / name).unlink()
