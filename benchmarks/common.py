"""What every benchmark shares: naming the machine and writing results atomically."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import jax

from jaxmoe.files import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name() -> str:
    """A file-name-safe label of the kind of machine: accelerator or CPU model, and cores.

    The host name is left out on purpose: reruns on the same kind of machine
    replace their earlier results instead of piling up.
    """
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu-{_slug(cpu_model(), 32)}-{os.cpu_count()}cores"
    return f"{device.platform}-{_slug(device.device_kind, 32)}"


def machine_lines() -> list[str]:
    """Markdown bullet lines describing the machine and the date."""
    device = jax.devices()[0]
    return [
        f"- machine: {cpu_model()} ({os.cpu_count()} logical cores); JAX {jax.__version__} on "
        f"{device.platform} (`{device.device_kind}`)",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def write_atomically(path: Path, data: bytes | str) -> None:
    """`jaxmoe.results.write_atomic`, creating the folder and encoding text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data.encode() if isinstance(data, str) else data)
