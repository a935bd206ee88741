"""Seeds spread over four devices give the one-device results.

JAX fixes its device count when it starts, so the four CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``) need a fresh
process. The one-device reference runs the same script in a process of its
own as well, on the CPU: the test process itself may sit on a GPU, whose
numbers are not the CPU's. The two processes run at the same time.

Agreement: identical statuses and step counts, every saved value within
1e-11 of its array's largest magnitude. Exact equality is out of reach: XLA
compiles the four-device program through its SPMD pipeline, which rewrites a
few divisions differently (see `jaxmoe.devices`); measured: the flow differs by
5e-13 of its scale, online SGD by 1e-14. A seed on the wrong device, a lost
padding lane or a shared random stream would differ by order one.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# 6 seeds on 4 devices: the seed axis is padded to 8 and trimmed back.
SCRIPT = r"""
import sys

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np

import jaxmoe

out, devices = sys.argv[1], int(sys.argv[2])
assert jax.local_device_count() == devices, jax.local_devices()
problem = dict(d=20, m=3, m_star=2, seeds=6, t_max=2.0, num_times=5, time_grid="linear", mode="full")
runs = {
    "flow": dict(),
    "online": dict(method="online", learning_rate=0.05, batch_size=64),
}
arrays = {}
for name, changes in runs.items():
    # The sharded runs show their progress bars too: one bar, fed by every device.
    result = jaxmoe.simulate(progress=devices > 1, **problem, **changes)
    arrays[f"{name}/devices"] = result.run["devices"]
    for field in (
        "loss", "expert_alignment", "router_alignment", "student_router", "student_expert",
        "t_final", "num_steps", "status",
    ):
        arrays[f"{name}/{field}"] = getattr(result, field)
np.savez(out, **arrays)
"""

EXACT = ("num_steps", "status")
TOLERANCE = 1e-11  # of each array's largest magnitude (measured: 5e-13)


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


@pytest.mark.parametrize("method", ["flow", "online"])
def test_four_devices_match_one(runs, method):
    one, _ = runs[1]
    four, _ = runs[4]
    assert one[f"{method}/status"].shape == (6,)
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
