"""Test-session configuration: every test runs in float64.

jaxmoe never flips JAX's global configuration at import (README, "Architecture"); the test
suite opts in here, before any test module builds an array.
"""

import atexit
import os
import shutil
import tempfile

# One persistent compilation cache for the whole session: the xdist workers
# and every subprocess a test starts (the command line, killed-and-resumed
# chunks) inherit it from the process that loads this file first, so a
# program compiled once is read back wherever it recurs (each file's
# in-memory caches are freed when it ends, below). The cache lives and dies
# with the session: nothing carries over between runs.
if "JAXMOE_TEST_CACHE" not in os.environ:
    os.environ["JAXMOE_TEST_CACHE"] = tempfile.mkdtemp(prefix="jaxmoe-test-cache-")
    atexit.register(shutil.rmtree, os.environ["JAXMOE_TEST_CACHE"], ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JAXMOE_TEST_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# diffrax checks its save times at run time through equinox's runtime errors,
# a host callback, and JAX never caches a program holding one (so no solve
# would be cached). The suite's save times are valid by construction
# (`jaxmoe.flow.time_grid`, and each test's own), so in tests that check
# returns NaN instead of raising. Set before equinox is imported, which reads it then.
os.environ.setdefault("EQX_ON_ERROR", "nan")
# XLA's CPU backend at LLVM -O1 without its expensive passes: most of the
# suite's time is compiling, and most of a compile is LLVM optimising the
# kernels (measured: an auto solve at m = 4, m* = 2 compiles in 7.2 s
# instead of 10.8 s and runs as fast, 2.0 s to t = 200; a seed-vmapped draw,
# mostly threefry, in 0.9 s instead of 2.3 s; the whole suite, -O1 alone,
# 1076 s instead of 1200 s). The numbers move by rounding only (the auto
# solve's saves by 1e-13; some draws by an ulp), as they do between CPUs
# whose vector widths differ, so no test can lean on the bits of one
# optimisation level; every process a test starts inherits these flags (a
# test that compares processes bit for bit passes `JAXMOE_TEST_XLA_FLAGS` on).
os.environ.setdefault("JAXMOE_TEST_XLA_FLAGS", "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true")
if os.environ["JAXMOE_TEST_XLA_FLAGS"] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {os.environ['JAXMOE_TEST_XLA_FLAGS']}".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402

# Half the kernel's usual limit of 65 530 memory mappings per process.
_MAPPINGS_BEFORE_CLEARING = 32_000


def _mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux: no count, so always clear
        return None


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free the compiled programs when a file ends, once the process holds many of them.

    Every compiled XLA CPU program holds a few hundred memory mappings
    (measured: about 270 per `simulate` compile, freed by `jax.clear_caches`).
    A pytest-xdist worker runs many files in one process, and with the
    docstring examples it came to the kernel's limit of 65 530 mappings:
    LLVM's mmap failed and the worker aborted in the middle of a compile
    (test_precision, twice in a row in `.ci/run`). Clearing after every file
    kept it far below that, but it also threw away every program the next
    files share (the same solve at the same sizes traces and compiles again,
    and the persistent cache saves only the compile); so the caches go only
    when the process nears half that limit.
    """
    yield
    count = _mappings()
    if count is None or count > _MAPPINGS_BEFORE_CLEARING:
        jax.clear_caches()
