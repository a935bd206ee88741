"""Re-execute the notebooks and save them with their outputs.

Usage (from the repository root, in an environment with jaxmoe's dependencies
and nbclient, nbformat and ipykernel, e.g. after ``pip install ".[test]"``):

    python notebooks/execute.py                      # all notebooks, at size "demo"
    python notebooks/execute.py quickstart.ipynb     # just one
    python notebooks/execute.py --size tiny --dry-run   # execute, report times, save nothing

The committed notebooks carry their outputs at size "demo" (the default of
``JAXMOE_NOTEBOOK_SIZE`` inside each notebook), so that figures show on
GitHub and in Colab without running anything. Rerun this script after
changing a notebook or the library, and commit the result.

Each notebook runs in a fresh kernel of *this* Python interpreter (not
whatever kernel named "python3" Jupyter would find), with the notebook's own
folder as working directory and the repository root first on PYTHONPATH: the
outputs come from the jaxmoe source beside this script (not from some other
installed copy), and the install cell, finding jaxmoe importable, installs
nothing. Execution counts are kept, timing metadata is not, so reruns give
small diffs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "jaxmoe-notebooks"


@contextlib.contextmanager
def kernel_manager():
    """A kernel manager whose only kernel runs ``sys.executable -m ipykernel_launcher``."""
    with tempfile.TemporaryDirectory() as tmp:
        write_kernel_spec(Path(tmp) / KERNEL_NAME, overrides={"display_name": "jaxmoe (this interpreter)"})
        yield AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]))


def execute(path: Path, size: str, timeout: int) -> tuple[nbformat.NotebookNode, float]:
    """Execute a copy of the notebook at `path` in a fresh kernel; return it and the wall time."""
    nb = nbformat.read(path, as_version=4)
    saved = {key: os.environ.get(key) for key in ("JAXMOE_NOTEBOOK_SIZE", "MPLBACKEND", "PYTHONPATH")}
    os.environ["JAXMOE_NOTEBOOK_SIZE"] = size
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), saved["PYTHONPATH"]]))
    os.environ.pop("MPLBACKEND", None)  # let the kernel use the inline backend, so figures are saved
    try:
        with kernel_manager() as km:
            client = NotebookClient(
                nb, km=km, timeout=timeout, record_timing=False, resources={"metadata": {"path": str(path.parent)}}
            )
            start = time.perf_counter()
            client.execute()
            wall = time.perf_counter() - start
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    # The kernelspec of the notebook as users see it, not the temporary one used here.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb, wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: every *.ipynb beside this script)")
    parser.add_argument("--size", default="demo", help="JAXMOE_NOTEBOOK_SIZE for the run (default: demo)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default: 1800)")
    parser.add_argument("--dry-run", action="store_true", help="execute and report times, but save nothing")
    args = parser.parse_args(argv)
    # A bare name means the notebook beside this script.
    paths = [(Path(p) if Path(p).exists() else HERE / p).resolve() for p in args.notebooks]
    paths = paths or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        nb, wall = execute(path, args.size, args.timeout)
        if not args.dry_run:
            nbformat.write(nb, path)
        size_kb = path.stat().st_size / 1024
        print(f"{path.name}: {wall:.0f} s at size {args.size}" + ("" if args.dry_run else f", saved ({size_kb:.0f} KiB)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
