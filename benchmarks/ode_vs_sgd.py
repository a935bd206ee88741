"""Exact gradient flow against online SGD on the paper's Figure 1 setting.

Same seeds, same initial vectors; online SGD at several (η, B). For each run:
wall time (warm: compilation excluded), samples drawn, the largest deviation
of its alignment curves from the flow, and the median recovery time of each
successive teacher expert. Headline: the wall-time ratio of the cheapest SGD
run whose alignment curves stay within 0.05 of the flow, to the flow.

    python benchmarks/ode_vs_sgd.py [--seeds 2 --t-max 60 --settings 0.05:256,0.02:1024,0.01:4096]

The same experiment is `jaxmoe compare`. Writes
``benchmarks/results/ode_vs_sgd-<machine>.md`` and ``…-overlay.png``.

    python benchmarks/ode_vs_sgd.py --study [--setting m4] [--seeds 32] [--max-samples 4.2e6]

The study (`ode_vs_sgd_study.py` beside this file): plain and norm-preserving online SGD
over a grid of (η, B) against the flow from the same seeds; one result file
per cell, resumable. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import sys

import jax
from common import RESULTS, machine_lines, machine_name, write_atomically


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--study" in argv:  # the study has flags of its own (some with the same names)
        from ode_vs_sgd_study import main as study_main

        return study_main([a for a in argv if a != "--study"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--t-max", type=float, default=60.0)
    parser.add_argument("--settings", default="0.05:256,0.02:1024,0.01:4096")
    parser.add_argument("--study", action="store_true", help="the (η, B) study instead (ode_vs_sgd_study.py, with its own flags)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    import jaxmoe
    from jaxmoe.compare import compare, format_table, headline, plot_overlay
    from jaxmoe.plot import write_png

    settings = [(float(a), int(b)) for a, b in (item.split(":") for item in args.settings.split(","))]
    config = jaxmoe.SimulationConfig(seeds=args.seeds, t_max=args.t_max, num_times=int(args.t_max) + 1)
    rows, results = compare(config, settings, log=lambda text: print(text, flush=True))
    table = format_table(rows)
    name = machine_name()
    report = "\n".join(
        [
            "# Exact gradient flow vs online SGD (Figure 1 setting)",
            "",
            *machine_lines(),
            f"- d = {config.d}, m = {config.m}, m* = {config.m_star}, {config.seeds} seeds, t in [0, {config.t_max:g}], "
            f"saved every {config.t_max / (config.num_times - 1):g}; flow: {config.solver} rtol {config.rtol:g} "
            f"atol {config.atol:g} on the exact span coordinates; SGD: online, fresh Gaussian batches in d dimensions",
            "- wall times are warm (compilation excluded); recovery: expert alignment ≥ 0.95",
            "",
            table,
            "",
            f"**Headline:** {headline(rows)}.",
            "",
        ]
    )
    print(report)
    write_atomically(RESULTS / f"ode_vs_sgd-{name}.md", report)
    fig = plot_overlay(results)
    write_png(fig, RESULTS / f"ode_vs_sgd-{name}-overlay.png")
    print(f"wrote benchmarks/results/ode_vs_sgd-{name}.md and -overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
