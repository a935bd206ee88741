"""The `jaxmoe` command: a small end-to-end run, and one-line errors with exit code 2."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import jaxmoe
from jaxmoe.cli import main

from _problems import TINY as TINY_CONFIG  # the same run as TINY, shared with other files

TINY = ["simulate", "--d", "12", "--m", "3", "--m-star", "2", "--seeds", "2", "--t-max", "5",
        "--num-times", "6", "--quiet", "--figure-seeds", "1"]


def test_simulate_writes_a_complete_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "final loss" in printed and "status" in printed
    for name in ("config.json", "result.npz", "summary.txt", "summary.csv", "loss.png", "alignment_seed0.png"):
        assert (out / name).is_file(), name
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    result = jaxmoe.load(out)
    assert result.config.d == 12 and result.config.m == 3 and result.config.seeds == 2
    assert result.loss.shape == (2, 6)
    assert result.status_names() == ["success", "success"]
    header = json.loads((out / "config.json").read_text())
    assert header["format"] == "jaxmoe.result" and header["run"]["method"] == "flow"
    # The same configuration from Python gives the same numbers.
    again = jaxmoe.simulate(result.config)
    np.testing.assert_allclose(again.loss, result.loss, rtol=1e-12)
    # The same run again finds it complete; another configuration is refused unless asked for.
    assert main(TINY + ["--out", str(out)]) == 0
    assert "complete; nothing to do" in capsys.readouterr().out
    assert main(TINY + ["--out", str(out), "--t-max", "6"]) == 2
    assert "another configuration (t_max: 5.0 → 6.0)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--d", "0"], "d must be an integer ≥ 1"),
        (["--m=-3"], "m must be an integer ≥ 1"),
        (["--seeds", "0"], "seeds must be an integer ≥ 1"),
        (["--d", "4", "--m-star", "3"], "2·m_star ≤ d"),
        (["--rtol", "nan"], "rtol must be a finite number > 0"),
        (["--atol=-1e-9"], "atol must be a finite number > 0"),
        (["--t-max", "inf"], "t_max must be a finite number > 0"),
        (["--gate", "relu"], "unknown gate 'relu'; allowed: sigmoid, erf, softmax, temperature, activation, hierarchical, topk"),
        (["--expert", "he7"], "unknown expert 'he7'; allowed: he1, he2, he3, he4"),
        (["--solver", "euler"], "unknown solver 'euler'; allowed:"),
        (["--d", "ten"], "invalid int value: 'ten'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(flags, fragment, capsys):
    assert main(["simulate", *flags]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("jaxmoe: error: ")
    assert fragment in lines[0]
    assert captured.out == ""


def test_no_command_is_an_error(capsys):
    assert main([]) == 2
    assert "a command is required: simulate, sweep, compare, scaling, prune" in capsys.readouterr().err


def test_console_script_has_no_traceback(tmp_path):
    """The installed command (or `python -m jaxmoe`) reports bad input without a traceback."""
    command = [shutil.which("jaxmoe")] if shutil.which("jaxmoe") else [sys.executable, "-m", "jaxmoe"]
    done = subprocess.run(command + ["simulate", "--m-star", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "jaxmoe: error: m_star must be an integer ≥ 1; got 0"


def test_seeds_at_the_step_limit_are_flagged_and_the_rest_complete(tmp_path, capsys):
    """A deliberately starved configuration: a step limit some seeds cannot meet."""
    from jaxmoe.cli import parser
    from jaxmoe.cli._flags import config_from_args

    config = TINY_CONFIG
    assert config_from_args(parser().parse_args(TINY)) == config  # TINY's run
    steps = np.sort(jaxmoe.simulate(config).num_steps)
    assert steps[0] < steps[1]
    limit = int(steps[0] + steps[1]) // 2
    out = tmp_path / "starved"
    assert main(TINY + ["--max-steps", str(limit), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "status: success 1, step_limit 1" in printed
    assert "did not finish normally" in printed
    result = jaxmoe.load(out)
    assert sorted(result.status_names()) == ["step_limit", "success"]
    table = (out / "summary.csv").read_text()
    assert table.count(",step_limit,") == 1 and table.count(",success,") == 1
    ok = np.array(result.status_names()) == "success"
    assert np.isfinite(result.loss[ok]).all() and np.isnan(result.loss[~ok, -1]).all()


def test_every_configuration_field_has_a_flag():
    """The problem flags reach every `SimulationConfig` field, under the field's own name."""
    import dataclasses

    from jaxmoe.cli import parser

    args = parser().parse_args(["simulate"])
    fields = {f.name for f in dataclasses.fields(jaxmoe.SimulationConfig)}
    assert fields <= set(vars(args)), sorted(fields - set(vars(args)))
    args = parser().parse_args(["simulate", "--t-first", "0.01", "--recovery-epsilon", "0.05", "--time-grid", "log"])
    from jaxmoe.cli._flags import config_from_args

    config = config_from_args(args)
    assert config.t_first == 0.01 and config.recovery_epsilon == 0.05
    assert config_from_args(parser().parse_args(["simulate"])) == jaxmoe.SimulationConfig()


def test_an_internal_error_is_not_bad_input(tmp_path, monkeypatch):
    """Only bad input is a one-line usage error; a bug inside a run keeps its traceback."""
    import jaxmoe.chunks

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(jaxmoe.chunks, "run_chunked", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(TINY + ["--out", str(tmp_path / "run")])
