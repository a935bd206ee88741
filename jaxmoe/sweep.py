"""Grids over problem settings (`jaxmoe sweep GRID.toml`).

A grid file names `SimulationConfig` fields::

    [base]                 # shared by every point
    m = 4
    m_star = 2
    seeds = 16
    t_max = 200.0

    [grid]                 # one list per setting; the points are their product
    d = [100, 1000, 10000]
    method = ["flow", "online"]

Points are taken in the order of the product (the last setting varies
fastest). Each point is a result folder like `jaxmoe simulate` writes
(``config.json``, ``result.npz``, summaries, figures), run by
`jaxmoe.chunks.run_chunked`, so a killed sweep resumes where it stopped:
finished points are kept, and so are the finished chunks of the point in
progress. ``index.md`` and ``index.csv`` summarise the finished points; the
grid file itself is kept as ``grid.toml``, and a folder holding a sweep of
another grid is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from .chunks import FolderConflict, run_chunked
from .config import SimulationConfig
from .files import write_atomic
from .results import Result, write_summaries

__all__ = ["Point", "read_grid", "grid_points", "sweep", "index_row", "format_index"]

_FIELDS = tuple(f.name for f in dataclasses.fields(SimulationConfig))


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its folder name, the grid values that define it, its configuration.

    - `name`: ``"<k>-<key>=<value>-…"`` (k the point's position, three digits),
      characters other than letters, digits and ``_.=+-`` replaced by ``_``.
    - `values`: the [grid] settings of this point; `config`: the full
      `SimulationConfig` ([base] and `values`).

    Example::

        points = jaxmoe.grid_points({"m": 4, "m_star": 2, "seeds": 2, "t_max": 200.0}, {"d": [100, 400]})
        assert (points[1].name, points[1].values, points[1].config.d) == ("001-d=400", {"d": 400}, 400)
    """

    name: str
    values: dict[str, Any]
    config: SimulationConfig


def _folder_name(k: int, values: dict[str, Any]) -> str:
    parts = [f"{k:03d}"] + [f"{key}={value}" for key, value in values.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(parts))


def grid_points(base: dict[str, Any], grid: dict[str, list]) -> list[Point]:
    """The product of the `grid` lists on top of `base`, each point validated.

    Points follow ``itertools.product`` over the grid's keys in their order
    (the last key varies fastest).

    **Arguments:** `base`, settings shared by every point; `grid`, for each
    varied setting a non-empty list of values (both `SimulationConfig` fields).

    **Returns:** a list of `Point`, one per combination.

    **Raises:** `ValueError` naming the setting and the allowed names when a
    key is unknown, a grid entry is not a non-empty list, or a point is not a
    valid configuration.

    Example::

        points = jaxmoe.grid_points({"m": 4, "m_star": 2}, {"d": [100, 1000], "method": ["flow", "online"]})
        assert [p.name for p in points][:2] == ["000-d=100-method=flow", "001-d=100-method=online"]   # 4 in all
    """
    for where, table in (("[base]", base), ("[grid]", grid)):
        unknown = sorted(set(table) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where} names unknown settings {unknown}; allowed: {', '.join(_FIELDS)}")
    both = sorted(set(base) & set(grid))
    if both:
        raise ValueError(f"settings {both} appear in both [base] and [grid]; give each in one place")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"[grid] {key} must be a non-empty list of values; got {values!r}")
    keys = list(grid)
    points = []
    for k, combo in enumerate(itertools.product(*(grid[key] for key in keys))):
        values = dict(zip(keys, combo))
        try:
            config = SimulationConfig(**{**base, **values})
        except (TypeError, ValueError) as err:
            where = ", ".join(f"{key} = {value!r}" for key, value in values.items()) or "the base settings"
            raise ValueError(f"grid point {k} ({where}): {err}") from None
        points.append(Point(_folder_name(k, values), values, config))
    return points


def read_grid(path: str | Path) -> list[Point]:
    """Parse a grid file (see the module docstring) into its points.

    **Arguments:** the path of a TOML file with tables ``[base]`` and ``[grid]``.

    **Returns:** the points, as `grid_points` gives them.

    **Raises:** `ValueError` with a one-line reason for a missing or unreadable
    file, invalid TOML, other tables, or an invalid point.

    Example::

        import pathlib
        pathlib.Path("grid.toml").write_text('''
            [base]
            m = 4
            m_star = 2
            [grid]
            d = [100, 1000]
        ''')
        points = jaxmoe.read_grid("grid.toml")
        assert [p.config.d for p in points] == [100, 1000]
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"grid file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"grid file {path} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"grid file {path} is not valid TOML: {err}") from None
    extra = sorted(set(data) - {"base", "grid"})
    if extra:
        raise ValueError(f"grid file {path} has unknown tables or keys {extra}; allowed: [base], [grid]")
    base, grid = data.get("base", {}), data.get("grid", {})
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise ValueError(f"grid file {path}: [base] and [grid] must be tables")
    return grid_points(base, grid)


def index_row(point: Point, result: Result, epsilon: float = 0.05) -> dict[str, Any]:
    """One line of the index: grid values, outcomes per status, and medians over seeds.

    Keys: ``point``, the grid values, ``seeds``; ``ok`` (status success or
    converged) and ``failed``; ``statuses``; ``median_final_loss``; and
    ``median_first_recovery``, the median over seeds of
    ``min_j min{t : max_i w̄_i·w̄*_j(t) ≥ 1 − ε}`` (NaN if no seed recovered any
    teacher expert); ``wall_time_s``.

    **Returns:** a dict, one row of ``index.md`` / ``index.csv``.

    Example::

        points = jaxmoe.grid_points({"m": 4, "m_star": 2, "seeds": 2, "t_max": 200.0}, {"d": [100, 400]})
        row = jaxmoe.sweep.index_row(points[0], jaxmoe.simulate(points[0].config))
        print(row)      # the point's settings, final losses, recovery times, statuses
    """
    from .observables import recovery

    names = result.status_names()
    times = recovery(result.expert_alignment, result.times, epsilon)[0]  # (S, m*), inf if never
    first = np.where(np.isfinite(times), times, np.inf).min(axis=1)
    first = np.where(np.isfinite(first), first, np.nan)
    final = result.final_loss()
    row = {"point": point.name, **point.values, "seeds": result.num_seeds}
    row["ok"] = sum(n in ("success", "converged") for n in names)
    row["failed"] = result.num_seeds - row["ok"]
    row["statuses"] = " ".join(f"{n}:{names.count(n)}" for n in dict.fromkeys(names))
    row["median_final_loss"] = float(np.nanmedian(final)) if np.isfinite(final).any() else float("nan")
    row["median_first_recovery"] = float(np.nanmedian(first)) if np.isfinite(first).any() else float("nan")
    row["wall_time_s"] = float(result.run.get("wall_time_s", float("nan")))
    return row


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_index(rows: list[dict[str, Any]]) -> str:
    """The index as a markdown table: one column per key seen in any row, one line per row.

    Example::

        points = jaxmoe.grid_points({"m": 4, "m_star": 2, "seeds": 2, "t_max": 200.0}, {"d": [100, 400]})
        rows = [jaxmoe.sweep.index_row(p, jaxmoe.simulate(p.config)) for p in points]
        print(jaxmoe.sweep.format_index(rows))
    """
    if not rows:
        return "(no finished points)"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def _index_csv(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def sweep(
    points: list[Point],
    folder: str | Path,
    *,
    chunk: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    figure_seeds: int = 2,
    source: str | None = None,
    log=print,
) -> list[dict[str, Any]] | None:
    """Run every point into ``folder/<point name>``, resuming what is finished.

    **Arguments:** `points` from `read_grid` or `grid_points`; `chunk` seeds
    per chunk within a point; `source`, the grid file's text, kept as
    ``grid.toml`` and compared on a rerun; `overwrite` discards a sweep of a
    different grid.

    **Returns:** the index rows (process 0), ``None`` on other processes.

    **Raises:** `ValueError` if `folder` holds a sweep of another grid.

    Each point is written by `jaxmoe.chunks.run_chunked` (resumable), then its
    summaries and figures (`figure_seeds` seeds); `log` receives progress lines.

    Example::

        points = jaxmoe.grid_points({"m": 4, "m_star": 2, "seeds": 2, "t_max": 200.0}, {"d": [100, 400]})
        rows = jaxmoe.sweep.sweep(points, "runs/sweep", progress=False)   # also jaxmoe.run_sweep
        print(jaxmoe.sweep.format_index(rows))
    """
    import jax

    from .plot import save_figures

    folder = Path(folder)
    leader = jax.process_index() == 0
    folder.mkdir(parents=True, exist_ok=True)
    manifest = "\n".join(f"{p.name}: {p.config.to_json()}" for p in points)
    marker = folder / "points.txt"
    if marker.is_file() and marker.read_text() != manifest:
        if not overwrite:
            raise FolderConflict(f"{folder} holds a sweep of another grid; choose another --out or pass --overwrite")
        if leader:
            for p in folder.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    if leader:
        write_atomic(marker, manifest.encode())
        if source is not None:
            write_atomic(folder / "grid.toml", source.encode())
    rows = []
    for k, point in enumerate(points):
        out = folder / point.name
        values = ", ".join(f"{key} = {value!r}" for key, value in point.values.items())
        log(f"[{k + 1}/{len(points)}] {point.name}: {values or 'base settings'}")
        result = run_chunked(point.config, out, chunk=chunk, progress=progress, log=log)
        if not leader:
            continue
        if not (out / "summary.csv").is_file():
            write_summaries(result, out)
            save_figures(result, out, max_seeds=figure_seeds)
        rows.append(index_row(point, result))
        write_atomic(folder / "index.md", (format_index(rows) + "\n").encode())
        write_atomic(folder / "index.csv", _index_csv(rows).encode())
    return rows if leader else None

