"""Large runs: chunks saved one by one, killed and resumed; several processes; grids."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxmoe
import jaxmoe.simulation
from jaxmoe.chunks import chunk_ranges, concatenate, run_chunked
from jaxmoe.cli import main
from jaxmoe.sweep import grid_points, read_grid

# Small enough to be quick, long enough (a few hundred solver steps per chunk)
# that a sweep of 8 one-seed chunks can be killed half way.
FLAGS = ["--d", "12", "--m", "3", "--m-star", "2", "--t-max", "40", "--num-times", "6", "--quiet", "--figure-seeds", "1"]
CONFIG = jaxmoe.SimulationConfig(d=12, m=3, m_star=2, t_max=40.0, num_times=6, seeds=8)
# The child processes compile as this one does (conftest.py), and no other XLA flag (a device count) reaches them.
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ.get("JAXMOE_TEST_XLA_FLAGS", "")}


def _same(a: jaxmoe.Result, b: jaxmoe.Result) -> None:
    """Bit-for-bit equality of every array."""
    assert a.config == b.config
    for name, value in a.arrays().items():
        np.testing.assert_array_equal(value, b.arrays()[name], err_msg=name)


def test_chunk_ranges_and_concatenate():
    assert chunk_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_ranges(2, 5) == [(0, 2)]
    with pytest.raises(ValueError, match="chunk must be an integer ≥ 1"):
        chunk_ranges(4, 0)
    # Two-seed batches of the problem of test_cli's TINY run: compiled once for both files.
    small = CONFIG.replace(t_max=5.0, seeds=4)
    parts = [jaxmoe.simulate(small, seed_index=np.array([0, 1])), jaxmoe.simulate(small, seed_index=np.array([2, 3]))]
    joined = concatenate(parts)
    np.testing.assert_array_equal(joined.seed_index, [0, 1, 2, 3])
    for name, value in joined.arrays().items():
        if name != "times":
            np.testing.assert_array_equal(value, np.concatenate([p.arrays()[name] for p in parts]), err_msg=name)
    assert joined.run["wall_time_s"] == parts[0].run["wall_time_s"] + parts[1].run["wall_time_s"]
    with pytest.raises(ValueError, match="share their configuration"):
        concatenate([parts[0], jaxmoe.simulate(small.replace(t_max=6.0), seed_index=np.array([2, 3]))])


def test_killed_run_resumes_without_recomputing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "jaxmoe", "simulate", *FLAGS, "--seeds", "8", "--chunk", "1", "--out", str(out)]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while not list(out.glob("chunks/*/result.npz")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no chunk finished in 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.stderr.close()
    finished = sorted(p.parent.name for p in out.glob("chunks/*/result.npz"))
    assert not (out / "result.npz").exists() and 1 <= len(finished) < 8
    assert not list(out.rglob("*.tmp")), "a killed run left a half-written file"

    # A different configuration or chunk size in the same folder is refused, never mixed.
    assert main(["simulate", *FLAGS, "--seeds", "8", "--chunk", "1", "--t-max", "30", "--out", str(out)]) == 2
    assert "another configuration (t_max: 40.0 → 30.0)" in capsys.readouterr().err
    assert main(["simulate", *FLAGS, "--seeds", "8", "--chunk", "2", "--out", str(out)]) == 2
    assert "rerun with --chunk 1" in capsys.readouterr().err

    # The same command resumes: only the unfinished chunks are simulated.
    calls = []
    original = jaxmoe.simulation.simulate

    def counting(config, /, **kwargs):
        calls.append(int(kwargs["seed_index"][0]))
        return original(config, **kwargs)

    monkeypatch.setattr(jaxmoe.simulation, "simulate", counting)
    assert main(["simulate", *FLAGS, "--seeds", "8", "--chunk", "1", "--out", str(out)]) == 0
    assert f"resuming: {len(finished)} of 8 chunks already finished" in capsys.readouterr().out
    assert sorted(calls) == sorted(set(range(8)) - {int(name) for name in finished})
    assert not (out / "chunks").exists()
    resumed = jaxmoe.load(out)
    assert resumed.run["chunks"] == 8

    # … and ends identical to an uninterrupted run with the same chunks.
    monkeypatch.setattr(jaxmoe.simulation, "simulate", original)
    uninterrupted = run_chunked(CONFIG, tmp_path / "whole", chunk=1, progress=False, log=lambda _: None)
    _same(resumed, uninterrupted)
    # Rerunning a finished run does nothing.
    assert main(["simulate", *FLAGS, "--seeds", "8", "--chunk", "1", "--out", str(out)]) == 0
    assert "complete; nothing to do" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_result(tmp_path):
    out = tmp_path / "two"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxmoe", "simulate", *FLAGS, "--seeds", "4", "--t-max", "10", "--out", str(out),
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(k)],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for k in range(2)
    ]
    logs = [p.communicate(timeout=300)[0].decode() for p in procs]
    # The logs' ends in full: the list's repr would be cut to its first characters.
    assert [p.returncode for p in procs] == [0, 0], "\n".join(f"process {k}:\n{log[-4000:]}" for k, log in enumerate(logs))
    assert "process 1 of 2" in logs[1] and "process 0 merges" in logs[1]
    two = jaxmoe.load(out)
    assert two.run["processes"] == 2 and two.run["chunks"] == 2
    # The one-process reference in two-seed batches (compiled already by other tests).
    reference = CONFIG.replace(seeds=4, t_max=10.0)
    one = concatenate([jaxmoe.simulate(reference, seed_index=np.arange(k, k + 2)) for k in (0, 2)])
    np.testing.assert_array_equal(two.seed_index, one.seed_index)
    np.testing.assert_array_equal(two.status, one.status)
    # Process 0 ran seeds 0–1 and process 1 seeds 2–3, each in a process of its
    # own: the same numbers up to rounding.
    for name in ("loss", "expert_alignment", "router_alignment", "student_router", "student_expert"):
        np.testing.assert_allclose(getattr(two, name), getattr(one, name), rtol=1e-12, atol=1e-14, err_msg=name)
    for name in ("teacher_router", "teacher_expert", "student_router0", "student_expert0"):
        np.testing.assert_array_equal(getattr(two, name), getattr(one, name), err_msg=name)


def test_sweep_runs_a_grid_and_resumes(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nm = 3\nm_star = 2\nseeds = 2\nt_max = 5.0\nnum_times = 6\nd = 12\n\n'
                    '[grid]\nrtol = [1e-6, 1e-8]\nmethod = ["flow", "optax"]\n')
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out), "--quiet", "--figure-seeds", "1"]) == 0
    points = read_grid(grid)
    assert [p.values for p in points] == [
        {"rtol": 1e-6, "method": "flow"}, {"rtol": 1e-6, "method": "optax"},
        {"rtol": 1e-8, "method": "flow"}, {"rtol": 1e-8, "method": "optax"},
    ]
    index = (out / "index.csv").read_text().splitlines()
    assert index[0].startswith("point,rtol,method,seeds,ok,failed") and len(index) == 5
    for p in points:
        result = jaxmoe.load(out / p.name)
        assert result.config == p.config
        assert (out / p.name / "summary.csv").is_file()
    capsys.readouterr()
    # Rerunning the same grid recomputes nothing; a changed grid is refused.
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.count("complete; nothing to do") == 4
    grid.write_text(grid.read_text().replace("seeds = 2", "seeds = 3"))
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 2
    assert "holds a sweep of another grid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[grid]\nfoo = [1]\n", "unknown settings ['foo']; allowed: d, m, m_star"),
        ("[grid]\nd = 3\n", "[grid] d must be a non-empty list"),
        ("[grid]\nd = []\n", "[grid] d must be a non-empty list"),
        ("[base]\nd = 100\n[grid]\nd = [10]\n", "appear in both [base] and [grid]"),
        ("[grid]\nm = [2, 0]\n", "grid point 1 (m = 0): m must be an integer ≥ 1"),
        ("[grid]\nmethod = ['sgd']\n", "unknown method 'sgd'; allowed: flow, optax, online, dataset"),
        ("[points]\nd = [1]\n", "unknown tables or keys ['points']"),
        ("[grid\n", "is not valid TOML"),
    ],
)
def test_bad_grid_files_are_one_line_errors(tmp_path, capsys, text, fragment):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--chunk", "0"], "--chunk must be an integer ≥ 1"),
        (["--num-processes", "2"], "several processes need all of --coordinator"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "coordinator must be HOST:PORT"),
        (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "process_id must be in 0 … 1"),
    ],
)
def test_bad_scale_flags_are_one_line_errors(flags, fragment, capsys):
    assert main(["simulate", *FLAGS, *flags]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err


def test_grid_points_in_python():
    points = grid_points({"m": 3, "m_star": 2}, {"d": [10, 20]})
    assert [p.config.d for p in points] == [10, 20] and points[0].name == "000-d=10"
