"""`jaxmoe compare`: flow against online SGD from the same seeds."""

import numpy as np
import pytest

import jaxmoe
from jaxmoe import SimulationConfig
from jaxmoe.cli import main
from jaxmoe.compare import compare, format_table, headline, write_compare

# Tight tolerances: the flow on span coordinates must match the full flow to 1e-8.
CONFIG = SimulationConfig(d=16, m=3, m_star=2, seeds=2, t_max=2.0, num_times=5, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def comparison():
    return compare(CONFIG, [(0.05, 64), (0.01, 2048)], log=lambda text: None)


def test_rows_and_shared_initialisation(comparison):
    rows, results = comparison
    assert [r.method for r in rows] == ["flow", "online", "online"]
    flow, coarse, fine = results.values()
    # SGD starts from the d-dimensional draw; the flow from its exact span coordinates.
    assert coarse.student_router0.shape[-1] == 16 and flow.student_router0.shape[-1] == 10
    np.testing.assert_allclose(coarse.expert_alignment[:, 0], flow.expert_alignment[:, 0], atol=1e-12)
    np.testing.assert_allclose(coarse.loss[:, 0], flow.loss[:, 0], rtol=1e-10)
    assert rows[1].samples == 40 * 64 and rows[2].steps == 200
    # The finer, larger-batch run follows the flow more closely.
    assert rows[2].max_deviation < rows[1].max_deviation
    assert rows[0].within and rows[0].max_deviation == 0.0
    assert len(rows[0].recovery_time) == 2


def test_flow_on_span_coordinates_is_the_full_flow(comparison):
    _, results = comparison
    full = jaxmoe.simulate(CONFIG.replace(mode="full", time_grid="linear", loss_threshold=None))
    np.testing.assert_allclose(results["flow"].loss, full.loss, rtol=1e-8)
    np.testing.assert_allclose(results["flow"].expert_alignment, full.expert_alignment, atol=1e-8)


def test_outputs(comparison, tmp_path):
    rows, results = comparison
    table = format_table(rows)
    assert table.count("\n") == 4 and "| flow |" in table
    assert "tolerance" in headline(rows) or "cheapest" in headline(rows)
    write_compare(rows, results, tmp_path)
    for name in ("compare.md", "compare.csv", "overlay.png", "config.json"):
        assert (tmp_path / name).is_file()
    assert jaxmoe.load(tmp_path / "flow").loss.shape == (2, 5)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--settings", "0.1"], "eta:batch pairs"),
        (["--settings", "0:64"], "learning_rate must be a finite number > 0"),
        (["--settings", "0.1:0"], "batch_size must be an integer ≥ 1"),
        (["--tolerance", "2"], "--tolerance must be in (0, 1)"),
    ],
)
def test_bad_input(flags, fragment, capsys):
    assert main(["compare", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
