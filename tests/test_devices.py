"""Seeds spread over four devices give the one-device results.

JAX fixes its device count when it starts, so the four CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``) need a fresh
process. The one-device reference runs the same script in a process of its
own as well, on the CPU: the test process itself may sit on a GPU, whose
numbers are not the CPU's. The two processes run at the same time.

Agreement: identical statuses and step counts, every saved value within
1e-11 of its array's largest magnitude. Exact equality is out of reach: XLA
compiles the four-device program through its SPMD pipeline, which rewrites a
few divisions differently (see `jaxmoe.devices`); measured on these problems:
the flow, online SGD and the pool differ by 4e-15, 3e-15 and 4e-15 of their
scales (5e-13 on a longer full-mode flow in 20 dimensions). A seed on the wrong device, a lost
padding lane or a shared random stream would differ by order one.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# 6 seeds on 4 devices: the seed axis is padded to 8 and trimmed back. The
# problems are the suite's shared TINY ones (the flow, and online SGD as in
# `test_seed_blocks_give_the_whole_batch_result`), so the session's compilation
# cache serves the one-device process and this file's in-process tests with
# the same programs (the device-count flag is not part of JAX's cache key).
SCRIPT = r"""
import sys

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np

import jaxmoe

out, devices = sys.argv[1], int(sys.argv[2])
assert jax.local_device_count() == devices, jax.local_devices()
sys.path.insert(0, "tests")
from _problems import TINY  # d = 12, m = 3, m* = 2, 6 saved times, reduced coordinates

problem = TINY.replace(seeds=6)
runs = {
    "flow": dict(),
    "online": dict(method="online", learning_rate=0.05, batch_size=8, t_max=0.5),
    # The seed pool on each device: 12 seeds are 3 a device, on 2 lanes each.
    "pool": dict(seeds=12, lanes=2),
}
arrays = {}
for name, changes in runs.items():
    # The sharded runs show their progress bars too: one bar, fed by every device.
    result = jaxmoe.simulate(problem.replace(**changes), progress=devices > 1)
    arrays[f"{name}/devices"] = result.run["devices"]
    for field in (
        "loss", "expert_alignment", "router_alignment", "student_router", "student_expert",
        "t_final", "num_steps", "status",
    ):
        arrays[f"{name}/{field}"] = getattr(result, field)
np.savez(out, **arrays)
"""

EXACT = ("num_steps", "status")
TOLERANCE = 1e-11  # of each array's largest magnitude (measured: 4e-15; see above)


def _launch(out: pathlib.Path, devices: int) -> subprocess.Popen:
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}")
    root = pathlib.Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), str(devices)],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{devices: (arrays, stderr)}`` for one and for four CPU devices."""
    folder = tmp_path_factory.mktemp("devices")
    started = {n: _launch(folder / f"{n}.npz", n) for n in (1, 4)}
    finished = {}
    for n, process in started.items():
        try:
            _, err = process.communicate(timeout=300)
        finally:
            process.kill()  # no-op once it has exited
        assert process.returncode == 0, f"{n} device(s):\n{err[-4000:]}"
        finished[n] = dict(np.load(folder / f"{n}.npz")), err
    return finished


def test_four_devices_are_used(runs):
    four, _ = runs[4]
    one, _ = runs[1]
    assert four["flow/devices"] == four["online/devices"] == 4
    assert one["flow/devices"] == one["online/devices"] == 1


@pytest.mark.parametrize("method", ["flow", "online", "pool"])
def test_four_devices_match_one(runs, method):
    one, _ = runs[1]
    four, _ = runs[4]
    assert one[f"{method}/status"].shape == (12 if method == "pool" else 6,)
    for key in (k for k in one if k.startswith(method + "/") and not k.endswith("/devices")):
        if key.split("/")[1] in EXACT:
            np.testing.assert_array_equal(four[key], one[key], err_msg=key)
        else:
            scale = np.max(np.abs(one[key]))
            np.testing.assert_allclose(four[key], one[key], rtol=0, atol=TOLERANCE * scale, err_msg=key)


def test_progress_is_one_bar(runs):
    """diffrax would open one bar per device; tqdm moves the cursor up (ESC [A) to redraw a second one."""
    _, err = runs[4]
    assert "100" in err  # the bars ran to the end
    assert "\x1b[A" not in err


def test_seed_blocks_give_the_whole_batch_result(monkeypatch, capsys):
    """On a CPU a large batch runs in vmapped blocks, one after another
    (`devices.in_blocks`); 5 seeds in blocks of 2 (3 blocks, the last padded)
    must give the one-block numbers to rounding, and one progress bar."""
    import jaxmoe
    import jaxmoe.discrete
    import jaxmoe.flow

    from _problems import TINY

    config = TINY.replace(seeds=5, t_max=3.0)  # d = 12, m = 3, m* = 2, 6 times
    online = config.replace(method="online", batch_size=8, t_max=0.5, learning_rate=0.05)
    whole = {"flow": jaxmoe.simulate(config), "online": jaxmoe.simulate(online)}
    monkeypatch.setattr(jaxmoe.flow, "solve_block", lambda: 2)
    monkeypatch.setattr(jaxmoe.discrete, "seed_block", lambda m, m_star: 2)
    capsys.readouterr()
    blocked = {"flow": jaxmoe.simulate(config, progress=True), "online": jaxmoe.simulate(online, progress=True)}
    err = capsys.readouterr().err
    assert "100.00%" in err and err.count("%|") >= 1
    for name in whole:
        np.testing.assert_array_equal(blocked[name].status, whole[name].status)
        np.testing.assert_array_equal(blocked[name].num_steps, whole[name].num_steps)
        for key in ("loss", "expert_alignment", "router_alignment", "student_router", "student_expert"):
            np.testing.assert_allclose(getattr(blocked[name], key), getattr(whole[name], key),
                                       rtol=1e-12, atol=1e-14, err_msg=f"{name} {key}")


def test_in_blocks_pads_and_trims():
    import jax.numpy as jnp

    from jaxmoe.devices import in_blocks, seed_block, solve_block

    f = in_blocks(lambda x, y: (jnp.sin(x) + y, x[:, :0]), 1, block=4)
    x = jnp.arange(20.0).reshape(10, 2)
    out, empty = f(x, 1.0)
    np.testing.assert_allclose(out, jnp.sin(x) + 1.0, rtol=1e-15)
    assert empty.shape == (10, 0)
    assert seed_block(25, 5, "cpu") == 16 and seed_block(4, 2, "cpu") == 400 and seed_block(25, 5, "gpu") is None
    assert solve_block("cpu") == 1 and solve_block("gpu") is None
