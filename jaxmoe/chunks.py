"""Large runs in chunks of seeds: resumable, and shared between processes.

``jaxmoe simulate --seeds 10000 --chunk 256 --out RUN`` runs seeds
``[0, 256)``, ``[256, 512)``, … one chunk at a time. Each finished chunk is
saved atomically as a small result folder under ``RUN/chunks/``; when all are
done they are merged into ``RUN/config.json`` and ``RUN/result.npz`` and the
chunk folders are removed. Killing the process at any moment loses at most
the chunk in progress: the same command resumes from the finished chunks and
recomputes none of them. Because a seed's trajectory depends only on its key
and on the chunk it runs in, the merged result is identical to an
uninterrupted run with the same ``--chunk``.

``RUN/chunks/manifest.json`` records the configuration and the chunk size;
a folder holding another configuration or chunk size is refused, never mixed.

Several processes (``jax.distributed``, see `jaxmoe.hosts`) share the chunks:
process p runs chunks p, p + P, p + 2P, …; after a barrier process 0 merges.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .files import read_header, write_header
from .results import FORMAT, VERSION, Result, load, save

__all__ = ["FolderConflict", "chunk_ranges", "concatenate", "config_difference", "finished", "run_chunked"]

MANIFEST = "jaxmoe.chunks"



class FolderConflict(ValueError):
    """The output folder holds another run (another configuration, chunk size or a foreign file).

    A `ValueError` with a one-line message; the command line reports it as
    bad input and suggests ``--overwrite``. Other exceptions from a run are
    not bad input and keep their traceback.
    """

def chunk_ranges(seeds: int, chunk: int) -> list[tuple[int, int]]:
    """Half-open seed ranges ``[start, stop)`` of at most `chunk` seeds.

    Chunk c is ``[c·chunk, min((c + 1)·chunk, seeds))``, c = 0 … ⌈seeds/chunk⌉ − 1.

    Example::

        assert jaxmoe.chunks.chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    """
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be an integer ≥ 1; got {chunk!r}")
    return [(start, min(start + chunk, seeds)) for start in range(0, seeds, chunk)]


def concatenate(parts: list[Result]) -> Result:
    """One `Result` from results of disjoint seed sets with one configuration.

    Per-seed arrays are joined along the seed axis in the given order; the
    saved times must agree. The run facts are the first part's, with the wall
    times summed.

    **Arguments:** a non-empty list of `Result` objects.

    **Returns:** a `Result` with S = the sum of the parts' seeds.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=4, t_max=200.0)
        parts = [jaxmoe.simulate(config, seed_index=[0, 1]), jaxmoe.simulate(config, seed_index=[2, 3])]
        joined = jaxmoe.chunks.concatenate(parts)
        assert list(joined.seed_index) == [0, 1, 2, 3] and joined.loss.shape == (4, 301)
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    for part in parts[1:]:
        if part.config != first.config or not np.array_equal(part.times, first.times):
            raise ValueError("results to concatenate must share their configuration and saved times")
    joined = {name: np.concatenate([p.arrays()[name] for p in parts]) for name in first.arrays() if name != "times"}
    extra = {name: joined.pop(name) for name in first.extra}
    run = dict(first.run)
    run["wall_time_s"] = float(sum(p.run.get("wall_time_s", 0.0) for p in parts))
    return Result(config=first.config, times=first.times, run=run, extra=extra, **joined)


def config_difference(old: dict, new: dict) -> str:
    """``"t_max: 100.0 → 200.0, seeds: 8 → 16"``: the fields that differ.

    **Arguments:** two configuration dicts (`SimulationConfig.to_dict`).

    **Returns:** one line naming each differing key with its old and new value
    (keys in sorted order; empty when they agree).

    Example::

        difference = jaxmoe.chunks.config_difference({"seeds": 8, "t_max": 100.0}, {"seeds": 8, "t_max": 200.0})
        assert difference == "t_max: 100.0 → 200.0"
    """
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _header_config(folder: Path) -> dict | None:
    try:
        return read_header(folder / "config.json", FORMAT, VERSION).get("config")
    except ValueError:
        return None


def finished(folder: str | Path, config: SimulationConfig) -> bool:
    """Whether `folder` holds the complete result of `config`.

    Complete means ``result.npz`` exists (it is written last); the
    configuration is compared field by field with ``config.json``.

    **Returns:** a bool.

    **Raises:** `ValueError` if it holds the result of another configuration.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        jaxmoe.save(jaxmoe.simulate(config), "runs/example")
        assert jaxmoe.chunks.finished("runs/example", config)       # another config raises ValueError
        assert not jaxmoe.chunks.finished("runs/elsewhere", config)  # nothing there yet
    """
    folder = Path(folder)
    if not (folder / "result.npz").is_file():
        return False
    old = _header_config(folder)
    if old != config.to_dict():
        what = config_difference(old, config.to_dict()) if isinstance(old, dict) else "unreadable config.json"
        raise FolderConflict(f"{folder} holds a finished run of another configuration ({what}); "
                         "choose another output folder or overwrite it")
    return True


def _check_manifest(folder: Path, config: SimulationConfig, chunk: int) -> None:
    """Write the chunk manifest, or refuse a folder made for another run."""
    path = folder / "manifest.json"
    wanted = {"chunk": chunk, "config": config.to_dict()}
    if not path.is_file():
        # Every process may get here at once; each writes the same bytes atomically.
        write_header(path, MANIFEST, 1, **wanted)
        return
    try:
        found = read_header(path, MANIFEST, 1)
    except ValueError as err:
        raise FolderConflict(f"{err}; remove {folder} or overwrite it") from None
    if found.get("config") != wanted["config"]:
        raise FolderConflict(
            f"{folder.parent} holds unfinished chunks of another configuration "
            f"({config_difference(found.get('config') or {}, wanted['config'])}); "
            "choose another output folder or overwrite it"
        )
    if found.get("chunk") != chunk:
        raise FolderConflict(
            f"{folder.parent} holds chunks of {found.get('chunk')} seeds; rerun with --chunk {found.get('chunk')} "
            "to resume, or overwrite it"
        )


def _process() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


def run_chunked(
    config: SimulationConfig,
    folder: str | Path,
    *,
    chunk: int | None = None,
    progress: bool = True,
    log=print,
) -> Result | None:
    """Simulate `config` chunk by chunk into `folder`, resuming what is there.

    **Arguments:**

    - `config`: the run; all ``config.seeds`` seeds are simulated.
    - `folder`: the result folder. Finished chunks live in ``folder/chunks``
      until the merge.
    - `chunk`: seeds per chunk (default: the seeds divided evenly among the
      processes, so one process runs everything at once).
    - `progress`: a bar over seeds with an ETA (on process 0), or the solver's
      own bar when the process has a single chunk.

    **Returns:** the merged `Result` on process 0 (also saved in `folder`);
    ``None`` on the other processes.

    **Raises:** `ValueError` if `folder` holds another configuration or chunk size.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=4, t_max=200.0)
        result = jaxmoe.run_chunked(config, "runs/chunked", chunk=2, progress=False)
        assert list(result.seed_index) == [0, 1, 2, 3]    # rerunning the line loads it back
    """
    from .simulation import simulate

    folder = Path(folder)
    process, processes = _process()
    if chunk is None:
        chunk = math.ceil(config.seeds / processes)
    ranges = chunk_ranges(config.seeds, chunk)
    if finished(folder, config):
        log(f"{folder} already holds this run, complete; nothing to do")
        return load(folder) if process == 0 else None
    folder.mkdir(parents=True, exist_ok=True)
    if len(ranges) == 1 and processes == 1:
        result = simulate(config, progress=progress)
        save(result, folder)
        return result
    chunks = folder / "chunks"
    chunks.mkdir(exist_ok=True)
    _check_manifest(chunks, config, chunk)
    mine = [c for c in range(len(ranges)) if c % processes == process]
    done = [c for c in mine if (chunks / f"{c:06d}" / "result.npz").is_file()]
    todo = [c for c in mine if c not in done]
    if done:
        log(f"resuming: {len(done)} of {len(mine)} chunks already finished in {chunks}")
    bar = None
    if progress and process == 0 and len(mine) > 1:
        from tqdm.auto import tqdm

        size = lambda cs: sum(ranges[c][1] - ranges[c][0] for c in cs)  # noqa: E731
        bar = tqdm(total=size(mine), initial=size(done), unit="seed", desc="seeds", dynamic_ncols=True)
    for c in todo:
        start, stop = ranges[c]
        part = simulate(config, seed_index=np.arange(start, stop), progress=progress and len(mine) == 1)
        save(part, chunks / f"{c:06d}")
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    if processes > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxmoe: every chunk saved")
    if process != 0:
        return None
    begin = time.perf_counter()
    missing = [c for c in range(len(ranges)) if not (chunks / f"{c:06d}" / "result.npz").is_file()]
    if missing:
        raise FolderConflict(f"chunks {missing} are missing from {chunks}; rerun the same command to finish them")
    merged = concatenate([load(chunks / f"{c:06d}") for c in range(len(ranges))])
    merged.run.update(chunk=chunk, chunks=len(ranges), processes=processes)
    save(merged, folder)
    # result.npz is complete from here on, so a kill during the cleanup is harmless.
    shutil.rmtree(chunks)
    log(f"merged {len(ranges)} chunks in {time.perf_counter() - begin:.1f} s")
    return merged
