"""Results: the arrays a run produces, saved and loaded without pickle.

A result folder holds

- ``config.json``: ``{"format": "jaxmoe.result", "version": 1, "config": …, "run": …}``,
  the `SimulationConfig` and facts about the run (wall time, mode, versions);
- ``result.npz``: the arrays below, read back with ``allow_pickle=False``;
- PNG figures and a text summary, written by the CLI.

Every file is written to a temporary name in the same folder and moved into
place with `os.replace`, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .config import SimulationConfig
from .files import read_header, write_atomic, write_header
from .observables import best_match

__all__ = ["Result", "STATUS_NAMES", "save", "load", "format_summary", "summary_csv", "write_summaries", "write_atomic"]

FORMAT = "jaxmoe.result"
VERSION = 1

# Per-seed solver outcome, stored as small integers in `Result.status`:
# success (reached t_max), converged (stopped early at the loss threshold),
# step_limit (max_steps reached first), non_finite (the state or the vector
# field became NaN/inf, so the step size collapsed), solver_error (anything else).
STATUS_NAMES = ("success", "converged", "step_limit", "non_finite", "solver_error")

# name -> (number of dimensions, dtype kind); checked on load. Expert weights
# have a hidden axis for mlp experts, (S, m, h, D): 3 or 4 dimensions.
_EXPERT_NDIM = (3, 4)
_ARRAYS = {
    "times": (1, "f"),
    "seed_index": (1, "i"),
    "loss": (2, "f"),
    "expert_alignment": (4, "f"),
    "router_alignment": (4, "f"),
    "status": (1, "i"),
    "t_final": (1, "f"),
    "num_steps": (1, "i"),
    "student_router0": (3, "f"),
    "student_expert0": (_EXPERT_NDIM, "f"),
    "teacher_router": (3, "f"),
    "teacher_expert": (_EXPERT_NDIM, "f"),
    "student_router": (3, "f"),
    "student_expert": (_EXPERT_NDIM, "f"),
}
# Arrays present only for some families or methods (`Result.extra`):
# the other parameters of a `jaxmoe.families.Mixture` (group routers, linear
# biases, mlp output weights) of the initial student, the teacher and the
# final student, and per-time routing observables.
_PARAMETERS = {"group_router": 3, "bias": 2, "output": 3}
_EXTRA = {
    **{f"{who}_{name}": (ndim, "f") for name, ndim in _PARAMETERS.items() for who in ("student", "teacher")},
    **{f"student_{name}0": (ndim, "f") for name, ndim in _PARAMETERS.items()},
    "load": (3, "f"),
    "quality": (3, "f"),
}


@dataclasses.dataclass(frozen=True)
class Result:
    """Everything a simulation returns, as NumPy arrays on the host.

    Shapes: S seeds, T saved times, m student and m* teacher experts, D the
    dimension of the coordinates simulated.

    - `times` (T,): gradient-flow times of the saved observables.
    - `seed_index` (S,): which seeds these are (see `SimulationConfig`).
    - `loss` (S, T): exact population loss.
    - `expert_alignment`, `router_alignment` (S, T, m, m*): w̄_i·w̄*_j and v̄_i·v̄*_j.
    - `status` (S,): index into `STATUS_NAMES`.
    - `t_final` (S,): the time each seed's solve ended (< t_max after an early
      stop or a failure). After an early stop the observables keep their
      values at `t_final`; after a failure they are NaN.
    - `num_steps` (S,): accepted solver steps.
    - `student_router0`, `student_expert0` (S, m, D) and `teacher_router`,
      `teacher_expert` (S, m*, D): the initial student and the teacher, so any
      run can be replayed; `student_router`, `student_expert` (S, m, D): the
      student at `t_final`.
    - `train_loss` (S, T) or None: the training-set loss (method "dataset").
    - `extra`: arrays that only some families have, by name: for a
      `jaxmoe.families.Mixture`, ``student_<name>0``, ``teacher_<name>``,
      ``student_<name>`` for each of ``group_router`` (S, ·, G, D), ``bias``
      (S, m) and ``output`` (S, m, h) it uses. Expert weights of mlp
      experts are (S, m, h, D). `models` rebuilds the models.
    - `config`: the `SimulationConfig`; `run`: facts about the run.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        assert result.loss.shape == (2, 301) and result.expert_alignment.shape == (2, 301, 4, 2)
        print(result.final_loss(), result.status_counts())
    """

    config: SimulationConfig
    times: np.ndarray
    seed_index: np.ndarray
    loss: np.ndarray
    expert_alignment: np.ndarray
    router_alignment: np.ndarray
    status: np.ndarray
    t_final: np.ndarray
    num_steps: np.ndarray
    student_router0: np.ndarray
    student_expert0: np.ndarray
    teacher_router: np.ndarray
    teacher_expert: np.ndarray
    student_router: np.ndarray
    student_expert: np.ndarray
    run: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_loss: np.ndarray | None = None
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_seeds(self) -> int:
        """S, the number of seeds."""
        return int(self.loss.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written to ``result.npz``, by name (`train_loss` only when present)."""
        out = {name: getattr(self, name) for name in _ARRAYS}
        if self.train_loss is not None:
            out["train_loss"] = self.train_loss
        out.update(self.extra)
        return out

    def models(self, which: str = "final"):
        """``(teacher, student)`` rebuilt with a leading seed axis: the student
        at `t_final` (``which="final"``) or at t = 0 (``"initial"``).

        `jaxmoe.MoE` for the paper's model, `jaxmoe.families.Mixture`
        otherwise; ``jaxmoe.simulate(result.config, initial=result.models("initial"))``
        replays the run.
        """
        if which not in ("final", "initial"):
            raise ValueError(f"which must be 'final' or 'initial'; got {which!r}")
        from .families import Mixture
        from .model import MoE

        suffix = "0" if which == "initial" else ""
        config = self.config
        student = {"router": getattr(self, f"student_router{suffix}"), "expert": getattr(self, f"student_expert{suffix}")}
        teacher = {"router": self.teacher_router, "expert": self.teacher_expert}
        for name in _PARAMETERS:
            student[name] = self.extra.get(f"student_{name}{suffix}")
            teacher[name] = self.extra.get(f"teacher_{name}")
        if config.classic:
            return (
                MoE(teacher["router"], teacher["expert"], config.gate, config.expert),
                MoE(student["router"], student["expert"], config.gate, config.expert),
            )
        gate, expert, teacher_gate, teacher_expert = config.families()
        return (
            Mixture(**teacher, gate=teacher_gate, expert_fn=teacher_expert),
            Mixture(**student, gate=gate, expert_fn=expert),
        )

    def status_names(self) -> list[str]:
        """``STATUS_NAMES[status[s]]`` for every seed s."""
        return [STATUS_NAMES[int(s)] for s in self.status]

    def status_counts(self) -> str:
        """``"success 30, step_limit 1, non_finite 1"``: seeds per outcome."""
        names = self.status_names()
        return ", ".join(f"{name} {names.count(name)}" for name in STATUS_NAMES if name in names)

    def final_loss(self) -> np.ndarray:
        """The last finite loss of each seed, shape (S,)."""
        finite = np.isfinite(self.loss)
        last = np.where(finite.any(axis=1), finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
        return np.where(finite.any(axis=1), self.loss[np.arange(self.num_seeds), last], np.nan)

    def final_expert_alignment(self) -> np.ndarray:
        """Expert alignments of the final student, shape (S, m, m*).

        Cosines of the expert vectors; for mlp experts (whose alignment is
        functional, `jaxmoe.observables.expert_alignment`) the last finite saved value.
        """
        if self.student_expert.ndim == 3 and self.teacher_expert.ndim == 3:
            return _cosines(self.student_expert, self.teacher_expert)
        finite = np.isfinite(self.loss)
        last = np.where(finite.any(axis=1), finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
        return self.expert_alignment[np.arange(self.num_seeds), last]

    def final_router_alignment(self) -> np.ndarray:
        """Router alignments of the final student, shape (S, m, m*)."""
        return _cosines(self.student_router, self.teacher_router)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.einsum("sid,sjd->sij", a, b)


def save(result: Result, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``result.npz`` into `folder` (created if needed).

    ``result.npz`` is written last: its presence marks a complete result.
    Both files are written by `write_atomic`.

    **Returns:** the folder, as a `pathlib.Path`.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        folder = jaxmoe.save(result, "runs/example")
        assert sorted(path.name for path in folder.iterdir()) == ["config.json", "result.npz"]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_header(folder / "config.json", FORMAT, VERSION, config=result.config.to_dict(), run=result.run)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result.arrays())
    write_atomic(folder / "result.npz", buffer.getvalue())
    return folder


def load(folder: str | os.PathLike) -> Result:
    """Read a result folder written by `save` (or the CLI). Never unpickles.

    **Returns:** the `Result`, arrays as saved (``np.load`` with
    ``allow_pickle=False``).

    **Raises:** `ValueError` with a one-line reason when the folder is missing,
    foreign, corrupted or inconsistent.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        jaxmoe.save(result, "runs/example")
        again = jaxmoe.load("runs/example")
        assert np.array_equal(again.loss, result.loss)
    """
    folder = Path(folder)
    config_path, npz_path = folder / "config.json", folder / "result.npz"
    if not config_path.is_file() or not npz_path.is_file():
        raise ValueError(f"{folder} is not a jaxmoe result folder (needs config.json and result.npz)")
    header = read_header(config_path, FORMAT, VERSION)
    config = SimulationConfig.from_dict(header.get("config"))
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{npz_path} cannot be read as an array archive: {err}") from None
    for name, (ndim, kind) in {**_ARRAYS, **_EXTRA}.items():
        if name not in arrays:
            if name in _EXTRA:
                continue
            raise ValueError(f"{npz_path} lacks the array {name!r}")
        ndims = ndim if isinstance(ndim, tuple) else (ndim,)
        if arrays[name].ndim not in ndims or arrays[name].dtype.kind != kind:
            raise ValueError(f"{npz_path}: array {name!r} has shape {arrays[name].shape} and dtype {arrays[name].dtype}")
    unknown = sorted(set(arrays) - set(_ARRAYS) - set(_EXTRA) - {"train_loss"})
    if unknown:
        raise ValueError(f"{npz_path} holds arrays this jaxmoe does not know: {unknown}")
    seeds, times = arrays["loss"].shape
    if arrays["times"].shape != (times,) or arrays["seed_index"].shape != (seeds,):
        raise ValueError(f"{npz_path}: arrays disagree on the number of seeds or times")
    train_loss = arrays.get("train_loss")
    if train_loss is not None and train_loss.shape != (seeds, times):
        raise ValueError(f"{npz_path}: train_loss has shape {train_loss.shape}; expected {(seeds, times)}")
    run = header.get("run") if isinstance(header.get("run"), dict) else {}
    extra = {name: arrays[name] for name in _EXTRA if name in arrays}
    return Result(config=config, run=run, train_loss=train_loss, extra=extra, **{name: arrays[name] for name in _ARRAYS})


def format_summary(result: Result) -> str:
    """A per-seed table: final loss, each teacher expert's best student expert, status.

    Columns ``j*`` read ``i:alignment``, the student expert i whose expert
    vector is best aligned with teacher expert j at the end, and its w̄_i·w̄*_j
    (`best_match` of the final student). The final loss is each seed's last
    finite loss (`Result.final_loss`).

    **Returns:** the table as one string, a header line then one line per seed.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        print(jaxmoe.format_summary(result))
    """
    index, value = best_match(result.final_expert_alignment())  # (S, m*)
    final = result.final_loss()
    m_star = index.shape[1]
    head = ["seed", "final loss", *[f"{j + 1}*" for j in range(m_star)], "t_final", "status"]
    rows = []
    for s in range(result.num_seeds):
        cells = [f"{index[s, j]:d}:{value[s, j]:+.3f}" for j in range(m_star)]
        rows.append(
            [str(result.seed_index[s]), f"{final[s]:.3e}", *cells, f"{result.t_final[s]:.4g}", result.status_names()[s]]
        )
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def summary_csv(result: Result) -> str:
    """One CSV row per seed: final loss, t_final, status, steps, and each teacher
    expert's best-aligned student expert with its alignment.

    Columns: ``seed, final_loss, t_final, status, num_steps``, then
    ``best_student_j`` and ``alignment_j`` for j = 1 … m* (as in `format_summary`).

    **Returns:** the CSV text, header included.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        print(jaxmoe.results.summary_csv(result))
    """
    index, value = best_match(result.final_expert_alignment())
    final = result.final_loss()
    out = io.StringIO()
    writer = csv.writer(out)
    m_star = index.shape[1]
    writer.writerow(
        ["seed", "final_loss", "t_final", "status", "num_steps"]
        + [f"best_student_{j + 1}" for j in range(m_star)]
        + [f"alignment_{j + 1}" for j in range(m_star)]
    )
    for s in range(result.num_seeds):
        writer.writerow(
            [int(result.seed_index[s]), f"{final[s]:.10e}", f"{result.t_final[s]:.6g}", result.status_names()[s], int(result.num_steps[s])]
            + [int(i) for i in index[s]]
            + [f"{v:.6f}" for v in value[s]]
        )
    return out.getvalue()


def write_summaries(result: Result, folder: str | os.PathLike) -> list[Path]:
    """``summary.txt`` (`format_summary`) and ``summary.csv`` (`summary_csv`), atomically.

    **Arguments:** a `Result` and an existing `folder`.

    **Returns:** the two paths written.

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        jaxmoe.save(result, "runs/example")
        paths = jaxmoe.results.write_summaries(result, "runs/example")
        assert [path.name for path in paths] == ["summary.txt", "summary.csv"]
    """
    folder = Path(folder)
    write_atomic(folder / "summary.txt", (format_summary(result) + "\n").encode())
    write_atomic(folder / "summary.csv", summary_csv(result).encode())
    return [folder / "summary.txt", folder / "summary.csv"]
