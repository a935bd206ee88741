"""Figures, tables and the saved folder of a pruning experiment."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_atomic
from ..plot import figure, write_png
from ..results import save
from ._experiment import PruneResult

# ---------------------------------------------------------------------------
# Figures and tables


def _positive(values: np.ndarray) -> np.ndarray:
    # A log axis cannot show the exact zeros the loss reaches at the teacher.
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def plot_prune_loss(pruned: PruneResult, ax=None):
    """The loss of every seed before and after pruning, on one time axis.

    Left: the run's loss up to its end t_final, then the fine-tuning's loss at
    t_final + t; a dotted vertical line marks each seed's pruning. Right: the
    same curves against the time since pruning, t − t_final, zoomed on the
    fine-tuning (the run's last stretch at negative times), with the fitted
    ``e^{a − r t}`` dashed black over the fit's window. Linear time, log loss:
    linear convergence is a straight line.

    **Arguments:** `pruned`, a `PruneResult`; `ax`: optionally a pair of
    matplotlib axes.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        fig = jaxmoe.prune.plot_prune_loss(pruned)
    """
    fig, ax = figure(ax, ncols=2, figsize=(12, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    original, finetune, fit = pruned.original, pruned.finetune, pruned.fit
    # The zoom ends a little after the last seed's loss reaches exact zero
    # (or at the end of the fine-tuning).
    positive = np.isfinite(finetune.loss) & (finetune.loss > 0)
    last = max((finetune.times[np.flatnonzero(row)[-1]] for row in positive if row.any()), default=finetune.times[-1])
    zoom = min(float(finetune.times[-1]), 1.1 * float(last)) or float(finetune.times[-1])
    for s in range(finetune.num_seeds):
        t_prune = float(original.t_final[s])
        before = original.times <= t_prune
        t_run = np.append(original.times[before], t_prune)
        l_run = _positive(np.append(original.loss[s, before], pruned.loss_before[s]))
        l_fine = _positive(finetune.loss[s])
        line, = ax[0].plot(t_run, l_run, lw=1.2, label=f"seed {original.seed_index[s]}")
        color = line.get_color()
        ax[0].plot(t_prune + finetune.times, l_fine, lw=1.2, color=color)
        ax[0].axvline(t_prune, color=color, ls=":", lw=0.8)
        # From the last saved time left of the zoom, so the line enters from the edge.
        first = max(int(np.searchsorted(t_run, t_prune - 0.25 * zoom)) - 1, 0)
        ax[1].plot(t_run[first:] - t_prune, l_run[first:], lw=1.2, color=color)
        ax[1].plot(finetune.times, l_fine, lw=1.2, color=color)
        if np.isfinite(fit.rate[s]):
            t = np.linspace(fit.t_start[s], fit.t_end[s], 20)
            ax[1].plot(t, np.exp(fit.intercept[s] - fit.rate[s] * t), color="k", ls="--", lw=1.0)
    ax[1].axvline(0.0, color="k", ls=":", lw=0.8)
    ax[1].set_xlim(-0.25 * zoom, zoom)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("time t (pruning dotted, then fine-tuning)")
    ax[1].set_xlabel("time since pruning t − t_final")
    ax[0].set_ylabel("population loss L")
    config = original.config
    ax[0].set_title(f"d = {config.d}, m = {config.m} → m* = {config.m_star} (rule {pruned.selection.rule})", fontsize=9)
    ax[1].set_title("fine-tuning; fitted linear rate dashed", fontsize=9)
    for a in ax:
        a.grid(alpha=0.3, which="both")
    if finetune.num_seeds <= 10:
        ax[0].legend(fontsize=7)
    return fig


def plot_spectrum(pruned: PruneResult, ax=None):
    """The tangent Hessian eigenvalues at the end of fine-tuning, every seed (ascending).

    Log scale when all are positive, else symmetric-log with a line at 0.

    **Arguments:** `pruned`, a `PruneResult`; `ax`, optionally one matplotlib axes.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        fig = jaxmoe.prune.plot_spectrum(pruned)
    """
    fig, ax = figure(ax, figsize=(6, 4))
    tangent = pruned.tangent_eigenvalues
    for s in range(tangent.shape[0]):
        ax.plot(np.arange(1, tangent.shape[1] + 1), tangent[s], ".", ms=4, label=f"seed {pruned.finetune.seed_index[s]}")
    if np.all(tangent > 0):
        ax.set_yscale("log")
    else:  # a non-positive eigenvalue must stay visible
        ax.set_yscale("symlog", linthresh=1e-6 * float(np.max(np.abs(tangent))))
        ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("eigenvalue of the tangent Hessian")
    ax.set_title("Hessian of L at the end point, norm directions removed", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if tangent.shape[0] <= 10:
        ax.legend(fontsize=7)
    return fig


def _rows(pruned: PruneResult) -> tuple[list[str], list[list[Any]]]:
    sel, fit, finetune = pruned.selection, pruned.fit, pruned.finetune
    m_star = sel.kept.shape[1]
    head = ["seed", "status", "flags", "loss_before", "loss_pruned", "loss_final", "rate", "predicted_rate",
            "rate_t_start", "rate_t_end", "rate_points", "tangent_min", "tangent_max", "strongly_convex"]
    for name in ("kept", "alignment", "router_alignment", "contribution"):
        head += [f"{name}_{j + 1}" for j in range(m_star)]
    flags, status = pruned.flags(), finetune.status_names()
    rows = []
    for s in range(finetune.num_seeds):
        rows.append(
            [int(finetune.seed_index[s]), status[s], flags[s], pruned.loss_before[s], pruned.loss_pruned[s],
             pruned.loss_final[s], fit.rate[s], pruned.predicted_rate[s], fit.t_start[s], fit.t_end[s],
             int(fit.num_points[s]), pruned.smallest_tangent[s], pruned.largest_tangent[s],
             bool(pruned.strongly_convex[s])]
            + [int(i) for i in sel.kept[s]] + list(sel.alignment[s]) + list(sel.router_alignment[s])
            + list(sel.contribution[s])
        )
    return head, rows


def prune_csv(pruned: PruneResult) -> str:
    """One row per seed: status and flags, losses before/after, rate, tangent extremes, kept experts.

    Columns ``kept_j``, ``alignment_j``, ``router_alignment_j``,
    ``contribution_j`` describe teacher expert j's kept student (j from 1).

    **Returns:** the CSV text, header included.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        print(jaxmoe.prune.prune_csv(pruned))
    """
    head, rows = _rows(pruned)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(head)
    for row in rows:
        # NumPy's float64 is a float: every real number gets ten digits.
        writer.writerow([f"{x:.10e}" if isinstance(x, float) else x for x in row])
    return out.getvalue()


def format_prune_table(pruned: PruneResult) -> str:
    """A per-seed text table: kept experts, losses, fitted rate against 2λ_min, λ_max, status.

    **Returns:** the table as one string.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        print(jaxmoe.prune.format_prune_table(pruned))
    """
    sel, fit = pruned.selection, pruned.fit
    head = ["seed", "kept (j*: i)", "min align", "L before", "L pruned", "L final", "rate r", "2 λ_min", "λ_max", "status"]
    rows = []
    for s, (status, flags) in enumerate(zip(pruned.finetune.status_names(), pruned.flags())):
        kept = " ".join(f"{j + 1}:{i}" for j, i in enumerate(sel.kept[s]))
        rows.append([
            str(pruned.finetune.seed_index[s]), kept, f"{np.min(sel.alignment[s]):+.4f}",
            f"{pruned.loss_before[s]:.3e}", f"{pruned.loss_pruned[s]:.3e}", f"{pruned.loss_final[s]:.3e}",
            f"{fit.rate[s]:.5g}", f"{pruned.predicted_rate[s]:.5g}", f"{pruned.largest_tangent[s]:.5g}",
            status + (f" ({flags})" if flags else ""),
        ])
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def save_prune(pruned: PruneResult, folder: str | os.PathLike) -> list[Path]:
    """Write the experiment's folder; `jaxmoe.load(folder)` reads the fine-tuning back.

    Files: ``prune.csv`` and ``prune.txt`` (the per-seed table), ``prune.npz``
    (selection, fit and eigenvalue arrays), ``loss.png``
    (`plot_prune_loss`), ``spectrum.png`` (`plot_spectrum`), and, last, the
    fine-tuning `Result` by `jaxmoe.save`: ``config.json`` (its configuration;
    the prune settings under ``run["prune"]``) and ``result.npz``, whose
    presence marks a complete folder.

    **Returns:** the paths written.

    Example::

        import jaxmoe.prune
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        pruned = jaxmoe.prune.prune(result)
        jaxmoe.prune.save_prune(pruned, "runs/example/prune")
        assert jaxmoe.load("runs/example/prune").config.m == 2     # m*
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in ("prune.csv", "prune.txt", "prune.npz", "loss.png", "spectrum.png")]
    write_atomic(paths[0], prune_csv(pruned).encode())
    write_atomic(paths[1], (format_prune_table(pruned) + "\n").encode())
    sel, fit = pruned.selection, pruned.fit
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, seed_index=pruned.finetune.seed_index, kept=sel.kept, alignment=sel.alignment,
        router_alignment=sel.router_alignment, contribution=sel.contribution, below_threshold=sel.below_threshold,
        loss_before=pruned.loss_before, loss_pruned=pruned.loss_pruned, loss_final=pruned.loss_final,
        rate=fit.rate, rate_intercept=fit.intercept, rate_t_start=fit.t_start, rate_t_end=fit.t_end,
        rate_points=fit.num_points, hessian_eigenvalues=pruned.hessian_eigenvalues,
        tangent_eigenvalues=pruned.tangent_eigenvalues,
    )
    write_atomic(paths[2], buffer.getvalue())
    write_png(plot_prune_loss(pruned), paths[3])
    write_png(plot_spectrum(pruned), paths[4])
    save(pruned.finetune, folder)
    return [folder / "config.json", folder / "result.npz", *paths]
