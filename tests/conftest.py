"""Test-session configuration: every test runs in float64.

jaxmoe never flips JAX's global configuration at import (README, "Architecture"); the test
suite opts in here, before any test module builds an array.
"""

import jax

jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free each test file's compiled programs when the file ends.

    Every compiled XLA CPU program holds a few hundred memory mappings
    (measured: about 270 per `simulate` compile, freed by `jax.clear_caches`).
    A pytest-xdist worker runs many files in one process, and with the
    docstring examples it came to the kernel's limit of 65 530 mappings:
    LLVM's mmap failed and the worker aborted in the middle of a compile
    (test_precision, twice in a row in `.ci/run`). Files share compiled
    functions within themselves (module-scoped fixtures), never across.
    """
    yield
    jax.clear_caches()
