"""The notebooks in notebooks/ run from top to bottom.

Every notebook is executed at size ``JAXMOE_NOTEBOOK_SIZE=tiny`` in a fresh
kernel of the interpreter running the tests (a temporary kernelspec pointing
at ``sys.executable``, so neither a kernel registered elsewhere nor a
``jupyter kernelspec install`` is involved), with notebooks/ as working
directory. Each notebook is read into memory and executed there: the
committed files, which carry their "demo" outputs, are never written.

A tiny notebook spends nearly all its time tracing and compiling JAX
programs, one process on one core; so the three kernels run at the same time
(the first test that needs them waits for all three), which on a 2-core
machine takes about half as long as one after the other. Each notebook's
outcome is still its own test.

Needs nbclient, nbformat and ipykernel (the ``test`` extra); skipped without them.
"""

import asyncio
import os
import sys
from pathlib import Path

import pytest

import jaxmoe

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbclient.exceptions import CellExecutionError, CellTimeoutError  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ("ode_vs_sgd.ipynb", "quickstart.ipynb", "scaling_and_pruning.ipynb")
KERNEL_NAME = "jaxmoe-test-kernel"
# Seconds allowed per cell at size "tiny" (the slowest takes about 30 s on a
# loaded 2-core machine, almost all of it compilation) and for a kernel to start.
CELL_TIMEOUT = 300
STARTUP_TIMEOUT = 120


def test_the_expected_notebooks():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == list(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_with_demo_outputs(name):
    """The committed notebook was run top to bottom at size demo (notebooks/execute.py), without errors."""
    path = NOTEBOOKS / name
    assert path.stat().st_size < 1_500_000
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "demo" in printed and "tiny {" not in printed


async def _execute(name: str, kernel_dir: Path):
    """Execute notebook `name` in memory; return ``(notebook, error or None)``."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        startup_timeout=STARTUP_TIMEOUT,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        await client.async_execute()
    except (CellExecutionError, CellTimeoutError) as err:
        return nb, err
    assert km.kernel_spec.argv[0] == sys.executable
    return nb, None


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook executed at size tiny, all at once: ``{name: (notebook, error or None)}``."""
    kernel_dir = tmp_path_factory.mktemp("kernels")
    kernelspec.write_kernel_spec(kernel_dir / KERNEL_NAME, overrides={"display_name": "jaxmoe tests"})
    before = {name: (NOTEBOOKS / name).read_bytes() for name in EXPECTED}

    async def run_all():
        return await asyncio.gather(*(_execute(name, kernel_dir) for name in EXPECTED))

    with pytest.MonkeyPatch.context() as env:  # the kernels inherit this environment
        env.setenv("JAXMOE_NOTEBOOK_SIZE", "tiny")
        env.delenv("JAXMOE_SOURCE", raising=False)
        # The kernels import the jaxmoe under test (so the install cell never installs anything).
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(jaxmoe.__file__).parent.parent), os.environ.get("PYTHONPATH")])))
        outcomes = asyncio.run(run_all())
    for name in EXPECTED:
        assert (NOTEBOOKS / name).read_bytes() == before[name], f"{name} was written during the test"
    return dict(zip(EXPECTED, outcomes))


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs(name, executed):
    nb, error = executed[name]
    if error is not None:
        pytest.fail(f"{name}: a cell failed at size tiny:\n{error}", pytrace=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    # The size cell read the environment.
    printed = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "tiny" in printed
