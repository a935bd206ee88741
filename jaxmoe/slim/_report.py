"""Tables, the figure and the saved folder of a slimming experiment."""

from __future__ import annotations

import csv
import io
import os
import warnings
import zipfile
from pathlib import Path

import jax
import numpy as np

from ..files import read_header, write_atomic, write_header
from ..plot import colors, figure, write_png
from ..prune import DEFAULT_FLOOR
from ..results import STATUS_NAMES
from ._experiment import SlimResult, SlimRun

__all__ = ["baseline_of", "format_slim_table", "slim_csv", "plot_slim", "save_slim", "load_slim"]

FORMAT = "jaxmoe.slim"
VERSION = 1


def baseline_of(out: SlimResult, run: SlimRun) -> SlimRun:
    """The one-shot run to the same final size at the same α: what `run` is compared with."""
    return next(r for r in out.runs if r.one_shot and r.schedule[-1] == run.schedule[-1] and r.alpha == run.alpha)


def _quartiles(x: np.ndarray) -> tuple[float, float, float]:
    x = np.asarray(x, float)
    if not np.isfinite(x).any():
        return (np.nan,) * 3
    return tuple(float(v) for v in np.nanpercentile(x, [25, 50, 75]))


def format_slim_table(out: SlimResult, epsilon: float | None = None) -> str:
    """One line per (schedule, α), medians over seeds.

    Columns: the schedule and α; the median loss against the teacher right
    after each pruning (``/``-separated, one per stage); the final loss,
    median [quartiles]; the median over seeds of the worst teacher expert's
    best alignment; how many seeds recovered every teacher expert (best
    alignment ≥ 1 − ε); against one-shot pruning at the same α and final
    size, the median ratio of final losses and the seeds where this schedule
    ends lower (losses below `jaxmoe.prune.DEFAULT_FLOOR`, 1e-12, count as
    the floor, so two runs at float64's floor tie);
    the training time; wall seconds; seeds whose solver failed.
    """
    epsilon = out.settings["epsilon"] if epsilon is None else epsilon
    head = [
        "schedule",
        "α",
        "L after each pruning (median)",
        "L final median [q1, q3]",
        "min align",
        "recovered",
        "÷ one-shot",
        "lower",
        "time",
        "wall s",
        "failed",
    ]
    rows = []
    for run in out.runs:
        base = baseline_of(out, run)
        q1, med, q3 = _quartiles(run.loss_final)
        # Losses at the float64 floor (exact zeros included) compare as equal.
        mine, theirs = np.maximum(run.loss_final, DEFAULT_FLOOR), np.maximum(base.loss_final, DEFAULT_FLOOR)
        ratio = mine / theirs
        lower = int(np.sum(mine < theirs))
        worst = np.min(run.best_alignment, axis=1)
        rows.append(
            [
                "→".join(str(s) for s in run.schedule),
                f"{run.alpha:g}",
                " / ".join(f"{np.nanmedian(v):.3g}" for v in run.loss_pruned.T),
                f"{med:.3e} [{q1:.2e}, {q3:.2e}]",
                f"{np.nanmedian(worst):.4f}",
                f"{int(np.sum(worst >= 1 - epsilon))}/{worst.size}",
                "—" if run is base else f"{np.nanmedian(ratio):.3g}",
                "—" if run is base else f"{lower}/{ratio.size}",
                f"{run.training_time:g}",
                f"{run.wall_time_s:.1f}",
                str(int(np.sum(run.status != 0))),
            ]
        )
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def slim_csv(out: SlimResult) -> str:
    """One row per (schedule, α, seed): start, the loss after each pruning and each stage's training,
    final loss, best alignment per teacher expert, status, training and wall time.

    Stage columns ``pruned_k``, ``trained_k`` (k from 1) are empty past a schedule's last stage.
    """
    stages = max(len(r.stages) for r in out.runs)
    m_star = out.runs[0].best_alignment.shape[1]
    head = (
        ["schedule", "alpha", "seed", "t_start", "loss_start", "loss_final", "status", "training_time", "wall_time_s"]
        + [f"{w}_{k + 1}" for k in range(stages) for w in ("pruned", "trained")]
        + [f"best_alignment_{j + 1}" for j in range(m_star)]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(head)
    f = lambda x: f"{x:.10e}"
    for run in out.runs:
        for s, seed in enumerate(out.seed_index):
            cells = []
            for k in range(stages):
                cells += [f(run.loss_pruned[s, k]), f(run.loss_trained[s, k])] if k < len(run.stages) else ["", ""]
            writer.writerow(
                [
                    "-".join(str(v) for v in run.schedule),
                    f"{run.alpha:g}",
                    int(seed),
                    f"{out.t_start[s]:.6g}",
                    f(out.loss_start[s]),
                    f(run.loss_final[s]),
                    STATUS_NAMES[int(run.status[s])],
                    f"{run.training_time:g}",
                    f"{run.wall_time_s:.3f}",
                ]
                + cells
                + [f"{a:.6f}" for a in run.best_alignment[s]]
            )
    return buffer.getvalue()


def plot_slim(out: SlimResult, ax=None):
    """Loss against the teacher over cumulative training time, one panel per α, one line per schedule.

    Lines are medians over seeds, bands the quartiles; a dot marks each
    pruning instant at the median loss right after it (the jump from the
    line's previous value is the pruning's cost). Log loss, linear time.

    **Returns:** the matplotlib figure.
    """
    alphas = sorted({r.alpha for r in out.runs})
    fig, ax = figure(ax, ncols=len(alphas), figsize=(4.8 * len(alphas), 4.2), sharey=True, squeeze=False)
    ax = ax[0]
    schedules = list(dict.fromkeys(r.schedule for r in out.runs))

    palette = dict(zip(schedules, colors(len(schedules))))
    for a, alpha in zip(ax, alphas):
        for run in (r for r in out.runs if r.alpha == alpha):
            times, loss = run.curve()
            loss = np.where(loss > 0, loss, np.nan)
            with warnings.catch_warnings():  # exact zeros (NaN on a log axis) leave whole columns empty
                warnings.simplefilter("ignore", RuntimeWarning)
                q1, med, q3 = (np.nanpercentile(loss, q, axis=0) for q in (25, 50, 75))
                pruned = np.nanmedian(np.where(run.loss_pruned > 0, run.loss_pruned, np.nan), axis=0)
            color = palette[run.schedule]
            a.plot(times, med, color=color, lw=1.5, label="→".join(str(s) for s in run.schedule) + (" (one-shot)" if run.one_shot else ""))
            a.fill_between(times, q1, q3, color=color, alpha=0.15, lw=0)
            a.plot(run.prune_times(), pruned, "o", color=color, ms=4)
        a.set_yscale("log")
        a.set_xlabel("cumulative training time (pruning instants: dots)")
        a.set_title(f"α = {alpha:g} ({'teacher only' if alpha == 1 else 'distillation only' if alpha == 0 else 'mixed'})", fontsize=9)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    ax[0].set_ylabel("population loss against the teacher")
    config = out.config
    # Two lines: a single panel is too narrow for one.
    fig.suptitle(
        f"d = {config.d}, m = {config.m}, m* = {config.m_star}, expert {config.expert}\n"
        f"slimming {out.axis} from {out.start}, rule {out.rule}; medians of {out.seed_index.size} seeds",
        fontsize=9,
    )
    return fig


def save_slim(out: SlimResult, folder: str | os.PathLike, *, source: str | None = None) -> list[Path]:
    """Write ``slim.json`` (settings, schedules), ``slim.csv``, ``slim.txt``, ``loss.png`` and, last,
    ``slim.npz`` (every array; its presence marks a complete folder), each atomically.

    `load_slim` reads it back without unpickling.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "source": source,
        "config": out.config.to_dict(),
        "start": out.start,
        "axis": out.axis,
        "rule": out.rule,
        "settings": out.settings,
        "runs": [
            {"label": r.label, "schedule": list(r.schedule), "alpha": r.alpha, "training_time": r.training_time, "wall_time_s": r.wall_time_s}
            for r in out.runs
        ],
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }
    arrays = {"seed_index": out.seed_index, "skipped": out.skipped.astype(np.int64), "t_start": out.t_start, "loss_start": out.loss_start}
    for r, run in enumerate(out.runs):
        times, loss = run.curve()
        arrays.update(
            {
                f"r{r}_schedule": np.asarray(run.schedule, np.int64),
                f"r{r}_alpha": np.asarray(run.alpha),
                f"r{r}_curve_times": times,
                f"r{r}_curve_loss": loss,
                f"r{r}_prune_times": run.prune_times(),
                f"r{r}_loss_pruned": run.loss_pruned,
                f"r{r}_loss_trained": run.loss_trained,
                f"r{r}_status": np.stack([s.status for s in run.stages], axis=1),
                f"r{r}_num_steps": np.stack([s.num_steps for s in run.stages], axis=1),
                f"r{r}_best_alignment": run.best_alignment,
            }
        )
        for k, stage in enumerate(run.stages):
            arrays[f"r{r}_kept{k}"] = stage.kept
            arrays[f"r{r}_matched_score{k}"] = stage.matched_score
        for name, value in run.student.arrays().items():
            arrays[f"r{r}_student_{name}"] = np.asarray(value)
    paths = [folder / name for name in ("slim.json", "slim.csv", "slim.txt", "loss.png", "slim.npz")]
    write_header(paths[0], FORMAT, VERSION, **header)
    write_atomic(paths[1], slim_csv(out).encode())
    write_atomic(paths[2], (format_slim_table(out) + "\n").encode())
    write_png(plot_slim(out), paths[3])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(paths[4], buffer.getvalue())
    return paths


def load_slim(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a folder written by `save_slim`: ``(header, arrays)``; never unpickles.

    **Raises:** `ValueError` (one line) for a missing, foreign or unreadable folder.
    """
    folder = Path(folder)
    if not (folder / "slim.json").is_file() or not (folder / "slim.npz").is_file():
        raise ValueError(f"{folder} is not a jaxmoe slim folder (needs slim.json and slim.npz)")
    header = read_header(folder / "slim.json", FORMAT, VERSION)
    try:
        with np.load(folder / "slim.npz", allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{folder / 'slim.npz'} cannot be read as an array archive: {err}") from None
    return header, arrays
