"""`jaxmoe rates`: parameter-estimation rates of the Voronoi loss against n."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..rates import FIT_OPTIMIZERS, SETTINGS, RatesConfig, format_table, rates, write_rates
from ._flags import UsageError, output_folder


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Define ``jaxmoe rates`` on an argparse subparsers object; returns its parser."""
    d = RatesConfig()
    p = subparsers.add_parser(
        "rates",
        help="parameter-estimation rates: Voronoi loss against n for softmax, temperature and activation gates",
        description="Draw n samples from a teacher mixture of experts, fit the student (L-BFGS, several restarts, "
        "vmapped over replicates and n), measure the Voronoi loss to the truth and fit its exponent in n with a "
        "bootstrap 95% interval, beside the papers' theoretical rates (arXiv 2305.03288, 2401.13875, 2402.02952, "
        "2503.03213). Writes rates.md, rates.csv, fit.csv, rates.npz, config.json and rates.png. The default is "
        "small enough for a CPU in minutes; --paper runs the full table (n = 10^2..10^5, 20 replicates).",
    )
    p.add_argument("--settings", default=",".join(d.settings), help="comma-separated, from: " + ", ".join(SETTINGS)
                   + " (default all)")
    p.add_argument("--ns", default=None, help=f"sample sizes, comma-separated (default {','.join(map(str, d.ns))})")
    p.add_argument("--paper", action="store_true", help="the full table: n on a log grid 10^2..10^5, 20 replicates, "
                   "4 restarts, 1000 steps (other flags still apply on top)")
    p.add_argument("--replicates", type=int, default=None, help=f"data sets per n, at least 2 (default {d.replicates})")
    p.add_argument("--restarts", type=int, default=None, help=f"optimiser starts per data set (default {d.restarts})")
    p.add_argument("--noise", type=float, default=d.noise, help="teacher noise sigma > 0 (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help=f"optimiser iterations at most (default {d.steps})")
    p.add_argument("--optimizer", default=d.optimizer, help=f"{', '.join(FIT_OPTIMIZERS)} (default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="adam's step (default %(default)s)")
    p.add_argument("--likelihood", default=None, help="ls or mle for every setting (default: each setting's own)")
    p.add_argument("--dim", type=int, default=d.dim, help="input dimension D (default %(default)s)")
    p.add_argument("--tau", type=float, default=d.tau, help="teacher temperature of the temperature and activation "
                   "gates (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="base seed (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch, help="fits per compiled call (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--float32", action="store_true", help="single precision (default float64)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/rates-<date>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace a rates result already in --out")
    return p



def _config_from_args(args) -> RatesConfig:
    changes: dict[str, Any] = {"settings": tuple(s.strip() for s in args.settings.split(",") if s.strip())}
    if args.ns is not None:
        try:
            changes["ns"] = tuple(int(v) for v in args.ns.split(","))
        except ValueError:
            raise ValueError(f"--ns takes integers separated by commas; got {args.ns!r}") from None
    for name in ("replicates", "restarts", "steps"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    changes.update(noise=args.noise, optimizer=args.optimizer, learning_rate=args.learning_rate,
                   likelihood=args.likelihood, dim=args.dim, tau=args.tau, seed=args.seed, batch=args.batch,
                   bootstrap=args.bootstrap, dtype="float32" if args.float32 else "float64")
    return RatesConfig.paper(**changes) if args.paper else RatesConfig(**changes)


def run(args) -> int:
    """Run ``jaxmoe rates`` from parsed arguments (`add_parser`): print the table, write the folder.

    Bad input raises `UsageError` (one line, exit code 2 from `jaxmoe.cli.main`);
    success returns 0. Opts into float64 unless ``--float32``.
    """
    try:
        config = _config_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = output_folder(args, "rates", "rates.md", config.dtype)
    print(f"jaxmoe rates: {len(config.settings)} settings, n in {list(config.ns)}, {config.replicates} replicates, "
          f"{config.restarts} restarts, {config.optimizer}, D = {config.dim}, noise {config.noise:g}", flush=True)
    result = rates(config, log=lambda text: print(text, flush=True))
    write_rates(result, out)
    print()
    print(format_table(result))
    print(f"\nwrote {out}/: rates.md, rates.csv, fit.csv, rates.npz, config.json, rates.png")
    return 0
