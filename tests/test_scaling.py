"""`jaxmoe scaling`: exponent fits, the router-after-expert delay, and the command."""

import numpy as np
import pytest

import jaxmoe
from jaxmoe.cli import main
from jaxmoe.scaling import fit_exponent, guided_delay


def test_fit_recovers_a_known_power_law():
    rng = np.random.default_rng(0)
    dims = np.array([1e2, 1e3, 1e4, 1e5])
    times = [3.0 * d**0.5 * np.exp(0.05 * rng.standard_normal(40)) for d in dims]
    b, low, high, a = fit_exponent(dims, times, bootstrap=300)
    assert b == pytest.approx(0.5, abs=0.01)
    assert low < 0.5 < high and high - low < 0.03
    assert a == pytest.approx(3.0, rel=0.05)
    # Seeds that never recovered (inf) are left out, not fitted.
    times[0][:5] = np.inf
    assert fit_exponent(dims, times, bootstrap=50)[0] == pytest.approx(0.5, abs=0.01)


def test_guided_delay_on_a_constructed_trajectory():
    times = np.linspace(0.0, 10.0, 11)
    expert = np.zeros((1, 11, 2, 1))
    router = np.zeros((1, 11, 2, 1))
    expert[0, :, 1, 0] = np.clip(times / 4.0, 0, 1)  # student 1 reaches 0.95 at t = 3.8
    router[0, :, 1, 0] = np.clip(times / 8.0, 0, 1)  # its router at t = 7.6
    router[0, :, 0, 0] = 1.0  # another student's router: irrelevant
    result = jaxmoe.Result(
        config=jaxmoe.SimulationConfig(d=10, m=2, m_star=1), times=times, seed_index=np.array([0]),
        loss=np.ones((1, 11)), expert_alignment=expert, router_alignment=router, status=np.zeros(1, np.int8),
        t_final=np.array([10.0]), num_steps=np.array([1]), student_router0=np.zeros((1, 2, 4)),
        student_expert0=np.zeros((1, 2, 4)), teacher_router=np.zeros((1, 1, 4)), teacher_expert=np.zeros((1, 1, 4)),
        student_router=np.zeros((1, 2, 4)), student_expert=np.zeros((1, 2, 4)),
    )
    np.testing.assert_allclose(guided_delay(result), [[3.8]], rtol=1e-12)
    # Timed at alignment 0.5: the expert at t = 2, its router at t = 4.
    np.testing.assert_allclose(guided_delay(result, level=0.5), [[2.0]], rtol=1e-12)
    with pytest.raises(ValueError, match="level must be in"):
        guided_delay(result, level=1.5)


def test_scaling_command_writes_its_folder(tmp_path, capsys):
    out = tmp_path / "scaling"
    code = main(["scaling", "--m", "3", "--m-star", "1", "--seeds", "4", "--dims", "60,240",
                 "--horizon", "300", "--bootstrap", "50", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "exponent b" in printed and "router after expert" in printed
    for name in ("scaling.md", "scaling.csv", "fit.csv", "scaling.png", "config.json", "d60/result.npz", "d240/result.npz"):
        assert (out / name).is_file(), name
    r = jaxmoe.load(out / "d240")
    assert r.run["mode"] == "reduced" and r.config.recovery_epsilon == 0.05
    # Seeds stop once recovered: the stop comes before the horizon.
    assert np.all(r.t_final[r.status == 1] < 300)
    rows = (out / "scaling.csv").read_text().strip().splitlines()
    assert rows[0].startswith("d,seed,recovery_1") and len(rows) == 1 + 8


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--dims", "100"], "at least two distinct dimensions"),
        (["--dims", "100,abc"], "integers separated by commas"),
        (["--dims", "4,100", "--m-star", "3"], "2·m_star ≤ d"),
        (["--epsilon", "0"], "--epsilon must be in (0, 1)"),
        (["--bootstrap", "3"], "--bootstrap must be at least 10"),
    ],
)
def test_bad_input(flags, fragment, capsys):
    assert main(["scaling", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
