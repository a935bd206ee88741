"""Benchmark: the parameter-estimation rates table (`jaxmoe rates`) at full size, and what it costs.

Run as ``python benchmarks/rates.py``. On an accelerator it runs the papers'
grid, `jaxmoe.rates.RatesConfig.paper` (n = 10² … 10⁵ on a log grid of 7
points, 20 replicates, 4 restarts, L-BFGS up to 1000 iterations, float64), for
the five settings of the table; on a CPU the small default
(``RatesConfig()``) unless ``--paper`` is given. ``--settings`` and
``--batch`` override (``--batch``: fits per compiled call; the default is 140
on an accelerator, a quarter of a setting's 560 fits, and 32 on a CPU).

It prints the table (measured exponent of the Voronoi loss, bootstrap 95%
interval, beside the theory of arXiv 2305.03288, 2401.13875, 2402.02952 and
2503.03213) and writes ``benchmarks/results/rates-<machine>.md`` with the wall
time of each setting (compilation included) and ``rates-<machine>.png`` (the
loss against n with the fitted lines), both atomically. Timings are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

# The script lives in benchmarks/; make the repository importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

from jaxmoe import rates  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="the full grid even on a CPU")
    parser.add_argument("--small", action="store_true", help="the small CPU grid even on an accelerator")
    parser.add_argument("--settings", default=",".join(rates.DEFAULT_SETTINGS), help="comma-separated settings")
    parser.add_argument("--batch", type=int, default=None, help="fits per compiled call")
    parser.add_argument("--replicates", type=int, default=None, help="override the replicates per n")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the report and figure go")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    accelerator = jax.devices()[0].platform != "cpu"
    full = (accelerator or args.paper) and not args.small
    changes = {"settings": tuple(s for s in args.settings.split(",") if s)}
    changes["batch"] = args.batch or (140 if accelerator else 32)
    if args.replicates is not None:
        changes["replicates"] = args.replicates
    config = rates.RatesConfig.paper(**changes) if full else rates.RatesConfig(**changes)
    load_start = os.getloadavg()
    print(f"rates benchmark on {machine_name()}: {'full' if full else 'small'} grid, n in {list(config.ns)}, "
          f"{config.replicates} replicates, {config.restarts} restarts, batch {config.batch}", flush=True)
    start = time.perf_counter()
    # One setting at a time, the report rewritten after each: a run cut short keeps what it finished.
    done = []
    for setting in config.settings:
        done.append(rates.rates(config.replace(settings=(setting,)), log=lambda text: print(text, flush=True)))
        _report(_merge(done), args, argv, time.perf_counter() - start, load_start)
    return 0


def _merge(results: list) -> rates.RatesResult:
    """One `RatesResult` from results of single settings run with the same grid."""
    import numpy as np

    first = results[0]
    config = first.config.replace(settings=tuple(s for r in results for s in r.config.settings))
    stack = {name: np.concatenate([getattr(r, name) for r in results]) for name in ("loss", "objective", "grad_norm",
                                                                                  "steps", "wall")}
    return rates.RatesResult(config, first.ns, stack["loss"], stack["objective"], stack["grad_norm"], stack["steps"],
                             tuple(f for r in results for f in r.fits), stack["wall"])


def _report(result, args, argv, total: float, load_start) -> None:
    config = result.config
    load_end = os.getloadavg()
    table = rates.format_table(result)
    print()
    print(table, flush=True)
    name = machine_name()
    timing = ["| setting | wall (s), compile included | L-BFGS iterations: median / max | fits with gradient norm > 1e-6 |",
              "|---|---:|---:|---:|"]
    for i, f in enumerate(result.fits):
        steps = result.steps[i]
        unconverged = int((result.grad_norm[i] > 1e-6).sum())
        timing.append(f"| {f.setting} | {result.wall[i]:.1f} | {int(sorted(steps.ravel())[steps.size // 2])} / "
                      f"{int(steps.max())} | {unconverged} of {steps.size} |")
    lines = [
        f"# jaxmoe parameter-estimation rates ({name})",
        "",
        *machine_lines(),
        f"- load average (1 / 5 / 15 min): {' / '.join(f'{v:.1f}' for v in load_start)} at the start, "
        f"{' / '.join(f'{v:.1f}' for v in load_end)} at the end",
        f"- grid: n in {list(config.ns)}, {config.replicates} replicates per n, {config.restarts} restarts "
        f"(best training objective kept), {config.optimizer} up to {config.steps} iterations (gradient norm "
        f"< {config.tolerance:g} stops), D = {config.dim}, noise σ = {config.noise:g}, τ* = {config.tau:g}, "
        f"{config.dtype}, {config.batch} fits per compiled call; seed {config.seed}",
        f"- total wall time: {total:.1f} s",
        "",
        "## Voronoi loss ≈ a n^b: measured exponent beside the theory",
        "",
        table,
        "",
        "## Cost",
        "",
        *timing,
        "",
        "Command: `python benchmarks/rates.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        "",
    ]
    out = args.out_dir / f"rates-{name}.md"
    write_atomically(out, "\n".join(lines))
    from jaxmoe.plot import write_png

    write_png(rates.plot_rates(result), args.out_dir / f"rates-{name}.png")
    print(f"wrote {out} and rates-{name}.png", flush=True)


if __name__ == "__main__":
    sys.exit(main())
