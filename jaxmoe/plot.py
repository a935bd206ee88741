"""Figures in the manner of the paper's Figure 1 (arXiv 2510.07205).

For one seed: for every teacher expert j, the alignments of all student
experts with it (thin), the student that ends best aligned in bold; routers
in one panel, experts in the other. Beside them, the loss of every seed on a
log scale. The time axis is gradient-flow time t, so figures from any method
overlay.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .files import write_atomic
from .results import Result
from .routing import routing_diagnostics

__all__ = ["colors", "figure", "plot_alignments", "plot_loss", "plot_routing", "pyplot", "save_figures", "write_png"]


def pyplot():
    import matplotlib

    # Figures are written to files; never try to open a window.
    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure(ax=None, **subplots):
    """``(figure, axes)``: new axes from ``plt.subplots(**subplots)``, or the given
    `ax` (one axes or a sequence of them) and its figure.

    New figures use ``constrained_layout=True`` and, unless ``MPLBACKEND`` is
    set, the non-interactive Agg backend.

    Example::

        import jaxmoe.plot
        fig, ax = jaxmoe.plot.figure(ncols=2, figsize=(8, 3))
        assert len(ax) == 2 and jaxmoe.plot.figure(ax[1]) == (fig, ax[1])   # given axes: their figure
    """
    if ax is None:
        return pyplot().subplots(constrained_layout=True, **subplots)
    first = ax[0] if isinstance(ax, (list, tuple, np.ndarray)) else ax
    return first.figure, ax


def colors(n):
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(j % cmap.N) for j in range(n)]


def _time_label(result: Result) -> str:
    if result.config.method == "flow":
        return "gradient-flow time t"
    return f"time t = steps × η (η = {result.config.learning_rate:g})"


def _time_axis(ax, result: Result, t_end: float | None = None) -> None:
    """Log time for log grids (t = 0 is then left off), linear otherwise;
    the axis ends where the plotted seeds stopped."""
    t_end = float(np.nanmax(result.t_final)) if t_end is None else t_end
    if result.config.time_grid == "log":
        ax.set_xscale("log")
        # Discrete methods round saved times to whole steps, so early ones can be 0.
        positive = result.times[result.times > 0]
        ax.set_xlim(positive[0] if positive.size else 1.0, max(t_end, positive[0] * 10 if positive.size else 10.0))
    else:
        ax.set_xlim(0.0, t_end)


def plot_alignments(result: Result, seed: int = 0, ax=None):
    """Router and expert alignments of one seed against time (two panels).

    The panels show ``v̄_i·v̄*_j(t)`` and ``w̄_i·w̄*_j(t)`` for every pair,
    coloured by teacher expert j, with the student that ends best aligned
    with each teacher drawn bold, as in Figure 1 of arXiv 2510.07205.

    **Arguments:** `result`, a `Result`; `seed` is a position in the result
    (0 ≤ seed < S); `ax`, optionally two matplotlib axes to draw into.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.plot
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        fig = jaxmoe.plot.plot_alignments(result, seed=1)
        fig.savefig("alignment.png")
    """
    if not 0 <= seed < result.num_seeds:
        raise ValueError(f"seed must be in 0..{result.num_seeds - 1}; got {seed}")
    fig, ax = figure(ax, ncols=2, figsize=(11, 4), sharey=True)
    t = result.times
    expert = result.expert_alignment[seed]  # (T, m, m*)
    router = result.router_alignment[seed]
    best = np.nanargmax(np.nan_to_num(expert[-1], nan=-np.inf), axis=0)  # (m*,)
    palette = colors(expert.shape[-1])
    for panel, values, title in ((ax[0], router, "router alignment $\\bar v_i\\cdot\\bar v^*_j$"),
                                 (ax[1], expert, "expert alignment $\\bar w_i\\cdot\\bar w^*_j$")):
        for j, color in enumerate(palette):
            panel.plot(t, values[:, :, j], color=color, lw=0.4, alpha=0.25)
            panel.plot(t, values[:, best[j], j], color=color, lw=2.0, label=f"teacher {j + 1}, student {best[j]}")
        panel.set_title(title)
        panel.set_xlabel(_time_label(result))
        panel.axhline(0.0, color="k", lw=0.5)
        panel.set_ylim(-1.05, 1.05)
        _time_axis(panel, result, float(result.t_final[seed]))
        panel.grid(alpha=0.3)
    ax[1].legend(fontsize=7, loc="lower right")
    config = result.config
    method = "gradient flow" if config.method == "flow" else f"{config.method} {config.optimizer}"
    fig.suptitle(
        f"seed {result.seed_index[seed]}: d = {config.d}, m = {config.m}, m* = {config.m_star}, "
        f"{config.gate} router, {config.expert} expert, {method}"
    )
    return fig


def plot_loss(result: Result, ax=None):
    """The population loss of every seed against time, on a log scale.

    The exact ``L(t) = ½ E[(f_student − f_teacher)²]``, one line per seed; for
    method ``"dataset"`` the training loss too, dashed.

    **Arguments:** `result`, a `Result`; `ax`, optionally one matplotlib axes.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.plot
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        fig = jaxmoe.plot.plot_loss(result)
    """
    fig, ax = figure(ax, figsize=(6, 4))
    for s in range(result.num_seeds):
        line, = ax.plot(result.times, result.loss[s], lw=1.0, label=f"seed {result.seed_index[s]}")
        if result.train_loss is not None:
            ax.plot(result.times, result.train_loss[s], lw=1.0, ls="--", color=line.get_color())
    if result.train_loss is not None:
        ax.set_title("population loss (solid), training loss (dashed)", fontsize=9)
    ax.set_yscale("log")
    _time_axis(ax, result)
    ax.set_xlabel(_time_label(result))
    ax.set_ylabel("population loss L")
    ax.grid(alpha=0.3, which="both")
    if result.num_seeds <= 10:
        ax.legend(fontsize=7)
    return fig


def write_png(fig, path: Path) -> None:
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def save_figures(result: Result, folder: str | os.PathLike, max_seeds: int = 4) -> list[Path]:
    """Write ``loss.png``, ``alignment_seed<k>.png`` for the first seeds, and
    ``routing_seed<k>.png`` (`plot_routing`) for the first seed.

    **Arguments:** `result`; `folder` (created if needed); `max_seeds`, how
    many seeds get an alignment figure (k is the seed index).

    **Returns:** the paths written.

    Example::

        import jaxmoe.plot
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        paths = jaxmoe.plot.save_figures(result, "runs/example", max_seeds=1)
        assert [path.name for path in paths] == ["loss.png", "alignment_seed0.png", "routing_seed0.png"]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "loss.png"]
    write_png(plot_loss(result), paths[0])
    for s in range(min(max_seeds, result.num_seeds)):
        path = folder / f"alignment_seed{result.seed_index[s]}.png"
        write_png(plot_alignments(result, s), path)
        paths.append(path)
    if "load" in result.extra:
        # Routing against time (issue 9): loads, their entropy and CV, and the effective temperature.
        path = folder / f"routing_seed{result.seed_index[0]}.png"
        fig = plot_routing(result.times, result.extra["load"], result.extra["quality"], seed=0,
                           time_label=_time_label(result))
        write_png(fig, path)
        paths.append(path)
    return paths


def plot_routing(times, load, quality, *, seed: int = 0, ax=None, time_label: str = "gradient-flow time t"):
    """Routing against training time: per-expert load; load entropy (as a share of log m) and CV;
    effective inverse temperature β̂.

    **Arguments:** `times` ``(T,)``; `load`, `quality` ``(T, m)`` or ``(S, T, m)``
    (then `seed` picks one; the entropy and CV panel also shows every seed faintly);
    `ax`: three axes to draw into (default: a new figure); `time_label`.

    **Returns:** the matplotlib figure.

    Example::

        import jaxmoe.plot
        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        fig = jaxmoe.plot.plot_routing(result.times, result.extra["load"], result.extra["quality"], seed=0)
    """
    load, quality, times = np.asarray(load, float), np.asarray(quality, float), np.asarray(times, float)
    if load.ndim == 2:
        load, quality = load[None], quality[None]
    if load.ndim != 3 or load.shape != quality.shape or load.shape[1] != times.shape[0]:
        raise ValueError(f"load and quality must have shape (T, m) or (S, T, m) with T = {times.shape[0]}; "
                         f"got {load.shape} and {quality.shape}")
    if not 0 <= seed < load.shape[0]:
        raise ValueError(f"seed must be in 0..{load.shape[0] - 1}; got {seed}")
    fig, ax = figure(ax, ncols=3, figsize=(14, 4))
    m = load.shape[-1]
    diag = routing_diagnostics(load, quality)
    positive = times > 0
    scale = "log" if positive.sum() > 1 and times[positive].max() / times[positive].min() > 100 else "linear"
    for i, color in enumerate(colors(m)):
        ax[0].plot(times, load[seed, :, i], color=color, lw=1)
    if np.allclose(load[seed].sum(axis=-1), 1.0, atol=1e-6):
        # Only a gate whose weights sum to one (softmax-type) has 1/m as its balanced load.
        ax[0].axhline(1.0 / m, color="k", ls=":", lw=0.8, label="uniform 1/m")
        ax[0].legend(fontsize=7)
    ax[0].set_ylabel("load E[g_i(x)]")
    share = diag["entropy"] / np.log(m) if m > 1 else diag["entropy"]
    for s in range(load.shape[0]):
        faint = dict(alpha=0.25, lw=0.6) if s != seed else dict(lw=1.5)
        ax[1].plot(times, share[s], color="C0", **faint)
        ax[1].plot(times, diag["cv"][s], color="C3", **faint)
    ax[1].plot([], [], color="C0", label="entropy / log m")
    ax[1].plot([], [], color="C3", label="CV of the load")
    ax[1].set_ylabel("load balance")
    ax[1].legend(fontsize=7)
    ax[2].plot(times, diag["beta"][seed], color="C2")
    ax[2].axhline(0.0, color="k", lw=0.5)
    ax[2].set_ylabel("effective inverse temperature β")
    for a in ax:
        a.set_xscale(scale)
        a.set_xlabel(time_label)
        a.grid(alpha=0.3, which="both")
    ax[0].set_title(f"seed {seed}: load per expert", fontsize=9)
    return fig
