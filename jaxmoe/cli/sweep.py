"""`jaxmoe sweep`: a grid of configurations from a TOML file, one result folder per point."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..chunks import FolderConflict
from ._flags import UsageError, add_scale_flags, check_scale_flags, out_path, start_processes


def add_parser(sub) -> argparse.ArgumentParser:
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
    add_scale_flags(swp)
    return swp


def run(args) -> int:
    try:
        check_scale_flags(args)
        from ..sweep import read_grid

        points = read_grid(args.grid)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = out_path(args, f"sweep-{args.grid.stem}")
    start_processes(args, points[0].config)
    from ..sweep import format_index, sweep

    print(f"jaxmoe sweep: {len(points)} points from {args.grid} into {out}", flush=True)
    try:
        rows = sweep(points, out, chunk=args.chunk, progress=not args.quiet, overwrite=args.overwrite,
                     figure_seeds=args.figure_seeds, source=args.grid.read_text(),
                     log=lambda text: print(text, flush=True))
    except FolderConflict as err:  # the folder holds another sweep or run; any other error is a bug
        raise UsageError(str(err)) from None
    if rows is None:
        return 0
    print()
    print(format_index(rows))
    print(f"\nwrote {out}/: index.md, index.csv, grid.toml, one result folder per point")
    return 0
