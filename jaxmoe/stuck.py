"""Seeds that have not converged by the horizon: what holds them, and how long they take (`jaxmoe stuck`).

In the paper's Figure 1 setting (m = 25, m* = 5, d = 1000) about half the
seeds have not reached L < 1e-6 by t = 1000. Each such seed is put in one
class from its final alignments (teacher expert j *recovered*:
``max_i w̄_i·w̄*_j ≥ 1 − ε``):

- ``shared``: a teacher expert not recovered, with two or more student
  experts each aligned to it at ``w̄_i·w̄*_j ≥ share_level`` (they split it
  between them, e.g. 0.81 each, and neither reaches 1 − ε);
- ``unrecovered``: a teacher expert that no student expert aligns to at
  ``share_level`` (not recovered at all), and none shared;
- ``slow``: every teacher expert recovered in expert and router alignment,
  the loss still above the threshold;
- ``other``: the rest (a teacher expert held by one student between
  `share_level` and 1 − ε, or a router behind its expert).

The unconverged seeds are then run again, from the same keys, to a longer
horizon (`extend`), one result folder per seed (resumable), and each class's
time to convergence is estimated by Kaplan–Meier (seeds still unconverged
at the new horizon are censored there).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .chunks import concatenate
from .files import write_atomic, write_header
from .phase import full_recovery
from .results import STATUS_NAMES, Result, load, save
from .stats import wilson_interval
from .survival import kaplan_meier, km_median, km_quantile

__all__ = [
    "STUCK_CLASSES",
    "classify",
    "shared_alignment",
    "extend_seeds",
    "stuck_rows",
    "format_stuck",
    "format_transitions",
    "plot_stuck",
    "write_stuck",
]

STUCK_CLASSES = ("shared", "unrecovered", "slow", "other")
_CONVERGED = STATUS_NAMES.index("converged")


def classify(result: Result, epsilon: float = 0.05, share_level: float = 0.5, *, by_status: bool = True) -> np.ndarray:
    """The class of every seed at the end of its run (module docstring); ``"converged"`` for converged seeds.

    **Arguments:** a `Result` (its last saved alignments are the final state:
    a seed that stops early keeps its final values); `epsilon`; `share_level`;
    `by_status`: if False, converged seeds are classed by their final state
    too (a seed can reach the loss threshold with a teacher expert shared),
    and ``"slow"`` then reads "every teacher expert recovered".

    **Returns:** ``(S,)`` strings from ``("converged",) + STUCK_CLASSES``.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        jaxmoe.stuck.classify(result)       # e.g. ['converged', 'shared']
    """
    expert = np.nan_to_num(result.expert_alignment[:, -1], nan=-1.0)  # (S, m, m*)
    router = np.nan_to_num(result.router_alignment[:, -1], nan=-1.0)
    recovered = expert.max(axis=1) >= 1.0 - epsilon  # (S, m*)
    holders = np.sum(expert >= share_level, axis=1)  # (S, m*)
    shared = np.any(~recovered & (holders >= 2), axis=1)
    missing = np.any(holders == 0, axis=1)
    complete = np.all(recovered & (router.max(axis=1) >= 1.0 - epsilon), axis=1)
    label = np.where(shared, "shared", np.where(missing, "unrecovered", np.where(complete, "slow", "other")))
    if not by_status:
        return label.astype(object)
    return np.where(np.asarray(result.status) == _CONVERGED, "converged", label).astype(object)


def shared_alignment(result: Result, epsilon: float = 0.05, share_level: float = 0.5) -> np.ndarray:
    """Per seed, the mean final alignment of the student experts sharing a teacher expert (NaN: none shared)."""
    expert = np.nan_to_num(result.expert_alignment[:, -1], nan=-1.0)
    out = np.full(result.num_seeds, np.nan)
    for s in range(result.num_seeds):
        for j in range(expert.shape[2]):
            column = expert[s, :, j]
            if column.max() < 1.0 - epsilon and np.sum(column >= share_level) >= 2:
                out[s] = float(np.mean(column[column >= share_level]))
                break
    return out


def extend_seeds(
    result: Result, seeds, t_max: float, folder: str | Path, *, batch: int = 1, overwrite: bool = False, progress: bool = False, log=print
) -> Result:
    """Run `seeds` (seed indices of `result`) again to `t_max`, `batch` seeds per solve, resuming finished batches.

    The configuration is the result's with only ``t_max`` changed, so each
    seed starts from the same key and follows the same flow. Each batch is
    saved as ``folder/seeds<first>-<last>/`` (on a CPU one seed per batch
    costs nothing; on an accelerator a large batch fills it).

    **Returns:** the joined `Result` of those seeds (in the order given).

    **Raises:** `jaxmoe.chunks.FolderConflict` if a batch folder holds a rerun
    of another configuration (another horizon), unless `overwrite`: then it
    is run again.
    """
    from .chunks import FolderConflict, finished
    from .simulation import simulate

    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer ≥ 1; got {batch!r}")
    seeds = [int(s) for s in seeds]
    folder = Path(folder)
    # One configuration for every batch (the run's, to the new horizon), so the parts join into one Result.
    config = result.config.replace(t_max=float(t_max))
    parts = []
    for start in range(0, len(seeds), batch):
        group = seeds[start : start + batch]
        where = folder / f"seeds{group[0]:06d}-{group[-1]:06d}"
        try:
            done = finished(where, config) and list(load(where).seed_index) == group
        except FolderConflict:
            if not overwrite:
                raise
            done = False
        if done:
            parts.append(load(where))
            continue
        log(f"[{start + len(group)}/{len(seeds)}] seeds {group[0]}–{group[-1]} to t = {t_max:g} ...")
        part = simulate(config, seed_index=group, progress=progress)
        save(part, where)
        parts.append(part)
    return concatenate(parts)


def _converged_time(result: Result) -> tuple[np.ndarray, np.ndarray]:
    converged = np.asarray(result.status) == _CONVERGED
    return np.asarray(result.t_final, float), converged


def stuck_rows(result: Result, extended: Result | None, epsilon: float = 0.05) -> list[dict]:
    """One row per class: seeds, share of all seeds (Wilson 95%), and resolution in the extended run.

    Keys: ``class``, ``seeds``, ``share``, ``share_low``, ``share_high``, and
    when `extended` is given (the unconverged seeds run to a longer horizon):
    ``resolved`` (converged by its horizon), ``median_time`` (Kaplan–Meier
    median time to convergence, ``inf`` when half or more never converged),
    ``q25``, ``q75`` (KM quartiles, likewise); ``recovered`` and
    ``recovery_median``: the same for full recovery of every teacher expert
    at alignment 1 − ε (`jaxmoe.phase.full_recovery`), which a seed can
    reach before, after or without reaching the loss threshold.
    """
    labels = classify(result, epsilon)
    total = result.num_seeds
    extended_by_seed = {}
    if extended is not None:
        times, converged = _converged_time(extended)
        extended_by_seed = {int(s): (t, c) for s, t, c in zip(extended.seed_index, times, converged)}
        rt, rc = full_recovery(extended, epsilon)
        recovered_by_seed = {int(s): (t, c) for s, t, c in zip(extended.seed_index, rt, rc)}
    rows = []
    for name in ("converged",) + STUCK_CLASSES:
        pick = labels == name
        count = int(pick.sum())
        low, high = wilson_interval(count, total)
        row = {"class": name, "seeds": count, "share": count / total, "share_low": low, "share_high": high}
        if extended is not None and name != "converged":
            pairs = [extended_by_seed[int(s)] for s in np.asarray(result.seed_index)[pick] if int(s) in extended_by_seed]
            t = np.array([p[0] for p in pairs], float)
            c = np.array([p[1] for p in pairs], bool)
            row["resolved"] = int(c.sum())
            row["extended"] = len(pairs)
            if len(pairs):
                row.update(median_time=km_median(t, c), q25=km_quantile(t, c, 0.25), q75=km_quantile(t, c, 0.75))
                rt, rc = np.array([recovered_by_seed[int(s)] for s in np.asarray(result.seed_index)[pick] if int(s) in recovered_by_seed]).T
                row.update(recovered=int(rc.sum()), recovery_median=km_median(rt, rc.astype(bool)))
        rows.append(row)
    return rows


def format_stuck(rows: list[dict], horizon: float, extend: float | None) -> str:
    """The class table in markdown."""
    head = f"| class at t = {horizon:g} | seeds | share (Wilson 95%) |"
    if extend is not None:
        head += (
            f" converged by t = {extend:g} | KM median time to converge | KM q25 – q75 "
            f"| every teacher expert recovered by t = {extend:g} | KM median time to recover |"
        )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = f"| {r['class']} | {r['seeds']} | {r['share']:.0%} [{r['share_low']:.0%}, {r['share_high']:.0%}] |"
        if extend is not None:
            if "resolved" in r and r.get("extended"):
                line += (
                    f" {r['resolved']} of {r['extended']} | {r['median_time']:.4g} | {r['q25']:.4g} – {r['q75']:.4g} "
                    f"| {r['recovered']} of {r['extended']} | {r['recovery_median']:.4g} |"
                )
            else:
                line += " — | — | — | — | — |"
        lines.append(line)
    return "\n".join(lines)


def format_transitions(result: Result, extended: Result, epsilon: float = 0.05) -> str:
    """A markdown cross-table: class at the run's horizon (rows) against the final state at the extended horizon.

    Columns: the structure of the final state (`classify` with
    ``by_status=False``: every teacher expert recovered, shared, unrecovered,
    other) and how many of the row's seeds reached the loss threshold.
    """
    before = dict(zip((int(s) for s in result.seed_index), classify(result, epsilon)))
    after = classify(extended, epsilon, by_status=False)
    converged = np.asarray(extended.status) == _CONVERGED
    names = ("slow", "shared", "unrecovered", "other")
    heads = ("every teacher expert recovered", "shared", "unrecovered", "other")
    lines = [
        f"| class at t = {result.config.t_max:g} | seeds | final state at t = {extended.config.t_max:g}: "
        + " | ".join(heads)
        + " | loss below the threshold |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for name in STUCK_CLASSES:
        mine = np.array([before[int(s)] == name for s in extended.seed_index])
        if mine.any():
            counts = [int(np.sum(mine & (after == b))) for b in names]
            lines.append(f"| {name} | {int(mine.sum())} | " + " | ".join(str(c) for c in counts) + f" | {int(np.sum(mine & converged))} |")
    return "\n".join(lines)


def plot_stuck(result: Result, extended: Result, epsilon: float = 0.05):
    """Kaplan–Meier curves of the time to convergence of the unconverged seeds, one per class."""
    from .plot import colors, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    labels = classify(result, epsilon)
    by_seed = dict(zip((int(s) for s in result.seed_index), labels))
    times, converged = _converged_time(extended)
    classes = [c for c in STUCK_CLASSES if any(by_seed[int(s)] == c for s in extended.seed_index)]
    for name, color in zip(classes, colors(len(classes))):
        pick = np.array([by_seed[int(s)] == name for s in extended.seed_index])
        events, survival = kaplan_meier(times[pick], converged[pick])
        x = np.concatenate([[result.config.t_max], events, [extended.config.t_max]])
        y = np.concatenate([[1.0], survival, [survival[-1] if survival.size else 1.0]])
        ax.step(x, y, where="post", color=color, label=f"{name} ({int(pick.sum())} seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("time t")
    threshold = extended.config.loss_threshold
    ax.set_ylabel("share of the class not yet converged" + (f" (L ≥ {threshold:g})" if threshold else "") + ", Kaplan–Meier")
    ax.set_title(f"seeds unconverged at t = {result.config.t_max:g}, run on to t = {extended.config.t_max:g}", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def _finite(row: dict) -> dict:
    """JSON has no inf: a time never reached is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def write_stuck(result: Result, extended: Result | None, folder: str | Path, epsilon: float = 0.05) -> list[Path]:
    """``stuck.md`` (class table), ``stuck.csv`` (per seed) and, with `extended`, ``stuck.png`` in `folder`."""
    from .plot import write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extend = None if extended is None else extended.config.t_max
    rows = stuck_rows(result, extended, epsilon)
    labels = classify(result, epsilon)
    sharing = shared_alignment(result, epsilon)
    later = {}
    if extended is not None:
        ext_labels = classify(extended, epsilon)
        later = {int(s): (t, st, lab) for s, t, st, lab in zip(extended.seed_index, extended.t_final, extended.status, ext_labels)}
    out = io.StringIO()
    out.write("seed,class,shared_alignment,status,t_final,extended_status,extended_t_final,extended_class\n")
    for s, seed in enumerate(result.seed_index):
        t, st, lab = later.get(int(seed), (math.nan, None, ""))
        out.write(
            f"{int(seed)},{labels[s]},{sharing[s]:.4f},{STATUS_NAMES[int(result.status[s])]},{result.t_final[s]:.6g},"
            f"{'' if st is None else STATUS_NAMES[int(st)]},{t:.6g},{lab}\n"
        )
    write_atomic(folder / "stuck.csv", out.getvalue().encode())
    text = format_stuck(rows, result.config.t_max, extend)
    shared = sharing[np.isfinite(sharing) & (labels != "converged")]
    if shared.size:
        text += (
            f"\n\nshared seeds: the sharing students' mean alignment {np.median(shared):.3f} (median over seeds; "
            f"range {shared.min():.3f} – {shared.max():.3f})"
        )
    sharing_converged = int(np.sum(np.isfinite(sharing) & (labels == "converged")))
    if sharing_converged:
        text += f"\n\nconverged seeds whose final state still shares a teacher expert: {sharing_converged}"
    if extended is not None:
        text += "\n\n" + format_transitions(result, extended, epsilon)
    write_atomic(folder / "stuck.md", (text + "\n").encode())
    write_header(
        folder / "stuck.json", "jaxmoe.stuck", 1,
        epsilon=epsilon, horizon=result.config.t_max, extend=extend, rows=[_finite(r) for r in rows],
    )
    paths = [folder / "stuck.md", folder / "stuck.csv", folder / "stuck.json"]
    if extended is not None and extended.num_seeds:
        write_png(plot_stuck(result, extended, epsilon), folder / "stuck.png")
        paths.append(folder / "stuck.png")
    return paths
