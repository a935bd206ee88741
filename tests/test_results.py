"""Result folders: round trip, atomic writes, and rejection of anything foreign."""

import json
import os

import numpy as np
import pytest

import jaxmoe
from jaxmoe.files import write_atomic

from _problems import TINY

CONFIG = TINY.replace(t_max=2.0)  # d = 12, m = 3, m* = 2, 2 seeds, 6 times


@pytest.fixture(scope="module")
def result():
    return jaxmoe.simulate(CONFIG)


def test_round_trip(result, tmp_path):
    jaxmoe.save(result, tmp_path)
    loaded = jaxmoe.load(tmp_path)
    assert loaded.config == result.config
    for name, array in result.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], array)
        assert loaded.arrays()[name].dtype == array.dtype
    assert loaded.run["method"] == "flow"
    table = jaxmoe.format_summary(loaded)
    assert len(table.splitlines()) == 1 + CONFIG.seeds


def test_load_rejects_missing_and_foreign_folders(result, tmp_path):
    with pytest.raises(ValueError, match="not a jaxmoe result folder"):
        jaxmoe.load(tmp_path / "nowhere")
    jaxmoe.save(result, tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        jaxmoe.load(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps({**header, "format": "something else"}))
    with pytest.raises(ValueError, match="not a jaxmoe result header"):
        jaxmoe.load(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps({**header, "config": {**header["config"], "d": -1}}))
    with pytest.raises(ValueError, match="d must be an integer"):
        jaxmoe.load(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps(header))
    (tmp_path / "result.npz").write_bytes(b"PK\x03\x04 this is not an archive")
    with pytest.raises(ValueError, match="cannot be read"):
        jaxmoe.load(tmp_path)


def test_load_never_unpickles(result, tmp_path):
    jaxmoe.save(result, tmp_path)
    arrays = result.arrays()
    arrays["loss"] = np.array([{"payload": 1}], dtype=object)  # would need pickle
    np.savez(tmp_path / "result.npz", **arrays)
    with pytest.raises(ValueError, match="cannot be read"):
        jaxmoe.load(tmp_path)


def test_load_checks_arrays(result, tmp_path):
    jaxmoe.save(result, tmp_path)
    arrays = result.arrays()
    del arrays["status"]
    np.savez(tmp_path / "result.npz", **arrays)
    with pytest.raises(ValueError, match="lacks the array 'status'"):
        jaxmoe.load(tmp_path)
    arrays = result.arrays()
    arrays["times"] = arrays["times"][:-1]
    np.savez(tmp_path / "result.npz", **arrays)
    with pytest.raises(ValueError, match="disagree"):
        jaxmoe.load(tmp_path)


def test_write_atomic_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    write_atomic(path, b"old")


    with pytest.raises(TypeError):
        write_atomic(path, object())  # fails while writing
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_final_loss_skips_nan_tail(result):
    loss = result.loss.copy()
    loss[0, -2:] = np.nan
    patched = jaxmoe.Result(**{**result.__dict__, "loss": loss})
    assert patched.final_loss()[0] == loss[0, -3]
    assert patched.final_loss()[1] == loss[1, -1]
