"""`jaxmoe compare`: exact gradient flow against online SGD from the same seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import DEFAULT_SETTINGS, MEASURES
from ._flags import UsageError, add_problem_flags, config_from_args, output_folder


def add_parser(sub) -> argparse.ArgumentParser:
    cmp = sub.add_parser(
        "compare",
        help="exact gradient flow against online SGD from the same seeds: cost and fidelity",
        description="Run exact gradient flow and online SGD for several (learning rate, batch size) pairs "
        "from the same seeds; tabulate wall time, samples drawn, the largest deviation of the alignment "
        "curves from the flow, and recovery times. Defaults: the Figure 1 setting, 2 seeds, t_max = 100.",
    )
    add_problem_flags(cmp)
    cmp.set_defaults(seeds=2, t_max=100.0, num_times=101)
    cmp.add_argument("--settings", default=",".join(f"{eta:g}:{b}" for eta, b in DEFAULT_SETTINGS),
                     help="online SGD runs as eta:batch pairs, comma-separated (default %(default)s)")
    cmp.add_argument("--tolerance", type=float, default=0.05,
                     help="the bound --measure is held to: a deviation ≤ it (also the matched gap at which the runs "
                          "part), or for 'distribution' a KS p-value > it (default %(default)s)")
    cmp.add_argument("--measure", default="pairwise",
                     help="what counts as agreement: pairwise (every alignment curve), matched (best alignment per "
                          "teacher expert, whole run), escape (matched, up to the flow's first recovery), loss, "
                          "distribution (recovery times per rank, KS test) (default %(default)s)")
    cmp.add_argument("--epsilon", type=float, default=0.05, help="recovery: alignment ≥ 1 − epsilon (default %(default)s)")
    cmp.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare-<date>-<time>)")
    cmp.add_argument("--overwrite", action="store_true", help="replace a comparison already in --out")
    return cmp


def parse_settings(text: str) -> list[tuple[float, int]]:
    pairs = []
    for item in text.split(","):
        try:
            eta, batch = item.split(":")
            pairs.append((float(eta), int(batch)))
        except ValueError:
            raise UsageError(f"--settings takes eta:batch pairs such as 0.01:4096, comma-separated; got {item!r}") from None
    return pairs


def run(args) -> int:
    try:
        # --retract applies to the SGD runs; the configuration describes the flow.
        retract, args.retract = args.retract, False
        config = config_from_args(args)
        if retract:
            config.replace(method="online", retract=True)  # validates the expert family
        if args.measure not in MEASURES:
            raise ValueError(f"unknown --measure {args.measure!r}; allowed: {', '.join(MEASURES)}")
        settings = parse_settings(args.settings)
        for eta, batch in settings:
            config.replace(learning_rate=eta, batch_size=batch)
        for name in ("tolerance", "epsilon"):
            value = getattr(args, name)
            if not 0 < value < 1:
                raise ValueError(f"--{name} must be in (0, 1); got {value}")
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = output_folder(args, "compare", "compare.md", config.state_dtype)
    from ..compare import compare, format_distributions, format_table, headline, write_compare

    print(f"jaxmoe compare: d = {config.d}, m = {config.m}, m* = {config.m_star}, {config.seeds} seeds, "
          f"t_max = {config.t_max:g}, {'norm-preserving ' if retract else ''}online SGD at {len(settings)} settings, "
          f"agreement measured by {args.measure}", flush=True)
    rows, results = compare(config, settings, epsilon=args.epsilon, tolerance=args.tolerance, measure=args.measure,
                            retract=retract, log=lambda text: print(text, flush=True))
    write_compare(rows, results, out)
    print()
    print(format_table(rows))
    print()
    print(format_distributions(rows))
    print()
    print(headline(rows))
    print(f"wrote {out}/: compare.md, compare.csv, overlay.png, config.json and one result folder per run")
    return 0
