"""Staged slimming with distillation against one-shot pruning (arXiv 2506.18349), in the exact loss.

Each cell is one `jaxmoe slim` invocation (a setting, a start point, an α)
writing its own folder under --runs; a rerun skips finished cells, so a
stopped run loses at most the cell in progress. Then one table over all cells
is written to benchmarks/results/slim-<machine>.md.

    python benchmarks/slim.py --runs runs/slim --seeds 8            # what was run on a 2-core CPU
    python benchmarks/slim.py --runs runs/slim --seeds 16 --budget 200   # the full experiment (GPU)

Settings: ``fig1`` is the paper's Figure 1 setting (d = 1000, m = 25, m* = 5),
slimmed over experts, one-shot to 5 against 15→10→5 and 10→5; ``mlp`` is
d = 20, m = m* = 2 with mlp experts of 8 hidden units against a teacher of 2,
slimmed over hidden units, one-shot to 2 against 8→4→2 and 8→6→4→2. Start points: the
end of the run, and (per seed, re-simulated) when its K-th teacher expert is
recovered.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_lines, machine_name, write_atomically  # noqa: E402

from jaxmoe.cli import main  # noqa: E402
from jaxmoe.prune import DEFAULT_FLOOR  # noqa: E402
from jaxmoe.slim import load_slim  # noqa: E402

SETTINGS = {
    "fig1": {
        "simulate": [],  # the defaults: d = 1000, m = 25, m* = 5
        "slim": ["--axis", "experts", "--schedule", "15,10,5", "--schedule", "10,5"],
        "starts": ["end", "recovered:4", "recovered:3"],
    },
    "mlp": {
        "simulate": [
            "--d",
            "20",
            "--m",
            "2",
            "--m-star",
            "2",
            "--expert",
            "mlp:hidden=8,act=tanh",
            "--teacher-expert",
            "mlp:hidden=2,act=tanh",
            "--t-max",
            "300",
        ],
        "slim": ["--axis", "hidden", "--schedule", "8,4,2", "--schedule", "8,6,4,2"],
        "starts": ["end", "recovered:1"],
    },
}
ALPHAS = ("0", "0.5", "1")


def command(args, *argv) -> list[str]:
    print("$ jaxmoe " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"jaxmoe {' '.join(argv)} ended with {code}")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return list(argv)


def run_cells(args) -> list[tuple[str, str, str, Path]]:
    cells = []
    for name in args.settings:
        setting = SETTINGS[name]
        run = args.runs / name / "run"
        if not (run / "result.npz").exists() and not args.table_only:
            command(args, "simulate", *setting["simulate"], "--seeds", str(args.seeds), "--out", str(run), "--quiet")
        for start in args.starts or setting["starts"]:
            for alpha in args.alphas:
                out = args.runs / name / start.replace(":", "") / f"alpha{alpha}"
                if args.table_only:
                    if (out / "slim.npz").exists():
                        cells.append((name, start, alpha, out))
                    continue
                if not (out / "slim.npz").exists():
                    command(
                        args,
                        "slim",
                        str(run),
                        *setting["slim"],
                        "--alpha",
                        alpha,
                        "--at",
                        start,
                        "--t-max",
                        str(args.budget),
                        "--seeds",
                        str(args.seeds),
                        "--rtol",
                        str(args.rtol),
                        "--atol",
                        str(args.atol),
                        "--num-times",
                        "41",
                        "--out",
                        str(out),
                        "--quiet",
                        "--overwrite",
                    )
                cells.append((name, start, alpha, out))
    return cells


def table(cells) -> list[str]:
    lines = [
        "| setting | start | schedule | α | seeds | L after each pruning (median) | L final median [q1, q3] | "
        "÷ one-shot, same α (median) | lower / higher than one-shot | ÷ prune (one-shot, α = 1) | "
        "lower / higher than prune | all recovered | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    finals = {}
    for name, start, _alpha, folder in cells:
        header, arrays = load_slim(folder)
        for r, run in enumerate(header["runs"]):
            finals[(name, start, tuple(run["schedule"]), float(run["alpha"]))] = (folder, r, header, arrays)
    for (name, start, schedule, alpha), (_folder, r, header, arrays) in finals.items():
        final = np.maximum(arrays[f"r{r}_loss_trained"][:, -1], DEFAULT_FLOOR)  # the float64 floor ties
        pruned = arrays[f"r{r}_loss_pruned"]
        q1, med, q3 = np.nanpercentile(final, [25, 50, 75])
        cells_out = []
        for base_alpha in (alpha, 1.0):
            base = finals.get((name, start, (schedule[-1],), base_alpha))
            if base is None or (len(schedule) == 1 and base_alpha == alpha):
                cells_out += ["—", "—"]
                continue
            other = np.maximum(base[3][f"r{base[1]}_loss_trained"][:, -1], DEFAULT_FLOOR)
            cells_out += [f"{np.median(final / other):.3g}", f"{int(np.sum(final < other))} / {int(np.sum(final > other))}"]
        recovered = int(np.sum(np.min(arrays[f"r{r}_best_alignment"], axis=1) >= 1 - header["settings"]["epsilon"]))
        lines.append(
            f"| {name} | {start} | {'→'.join(map(str, schedule))} | {alpha:g} | {final.size} | "
            + " / ".join(f"{np.nanmedian(v):.3g}" for v in pruned.T)
            + f" | {med:.2e} [{q1:.1e}, {q3:.1e}] | "
            + " | ".join(cells_out)
            + f" | {recovered}/{final.size} | {header['runs'][r]['wall_time_s']:.0f} |"
        )
    return lines


def main_(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/slim"))
    p.add_argument("--settings", default="fig1,mlp")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--alphas", default=",".join(ALPHAS))
    p.add_argument("--budget", type=float, default=100.0)
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--atol", type=float, default=1e-10)
    p.add_argument("--starts", default=None, help="start points instead of each setting's own, comma-separated")
    p.add_argument("--table-only", action="store_true", help="tabulate the finished cells, run nothing")
    args = p.parse_args(argv)
    args.starts = args.starts.split(",") if args.starts else None
    args.settings = args.settings.split(",")
    args.alphas = args.alphas.split(",")
    start = time.perf_counter()
    cells = run_cells(args)
    lines = [
        "# Staged slimming with distillation against one-shot pruning",
        "",
        *machine_lines(),
        "",
        f"`python benchmarks/slim.py --runs {args.runs} --settings {','.join(args.settings)} --seeds {args.seeds} "
        f"--alphas {','.join(args.alphas)} --budget {args.budget:g} --rtol {args.rtol:g} --atol {args.atol:g}` "
        f"({time.perf_counter() - start:.0f} s in this call; cells already done are read back). Losses below "
        f"{DEFAULT_FLOOR:g} count as {DEFAULT_FLOOR:g} (float64's floor), so two runs there tie.",
        "",
        *table(cells),
        "",
    ]
    path = RESULTS / f"slim-{'-'.join(args.settings)}-{args.seeds}seeds-{machine_name()}.md"
    write_atomically(path, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
