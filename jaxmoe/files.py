"""Files a run writes: atomic writes and the versioned JSON header every result folder starts with.

Every command writes its folder's ``config.json`` as
``{"format": "jaxmoe.<kind>", "version": n, …}`` through `write_header` and
reads it back through `read_header`, so a folder of one kind is never read
as another and a header from a newer jaxmoe is refused with one line.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_header", "read_header"]


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent, old, or complete.

    The bytes go to a temporary file in the same folder, are flushed to disk
    (`os.fsync`) and moved over `path` with `os.replace`, which is atomic on
    POSIX file systems; on any error the temporary file is removed.

    **Arguments:** `path` (its folder must exist), `data` bytes.

    Example::

        import pathlib
        jaxmoe.files.write_atomic("note.txt", "hello".encode())
        assert pathlib.Path("note.txt").read_text() == "hello"
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_header(path: str | os.PathLike, kind: str, version: int, **fields: Any) -> None:
    """Write ``{"format": kind, "version": version, **fields}`` as JSON to `path`, atomically.

    Keys are sorted and indented, so equal headers are equal bytes (several
    processes of a chunked run may write the same manifest at once).

    Example::

        jaxmoe.files.write_header("config.json", "jaxmoe.example", 1, config={"d": 100})
    """
    header = {"format": kind, "version": version, **fields}
    write_atomic(path, (json.dumps(header, indent=2, sort_keys=True) + "\n").encode())


def read_header(path: str | os.PathLike, kind: str, version: int) -> dict[str, Any]:
    """The header at `path`, checked to be of `kind` and `version`.

    **Raises:** `ValueError` (one line) when the file is missing, is not
    JSON, is of another format, or has another version.

    Example::

        jaxmoe.files.write_header("config.json", "jaxmoe.example", 1, config={"d": 100})
        assert jaxmoe.files.read_header("config.json", "jaxmoe.example", 1)["config"] == {"d": 100}
    """
    path = Path(path)
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist (a {kind} folder starts with it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(header, dict) or header.get("format") != kind:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path} is not a {kind.replace('.', ' ')} header (format {found!r}, {kind!r} expected)")
    if header.get("version") != version:
        raise ValueError(f"{path} has version {header.get('version')!r}; this jaxmoe reads version {version}")
    return header
