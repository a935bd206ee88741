"""`jaxmoe scaling`: exponent fits, the router-after-expert delay, and the command."""

import numpy as np
import pytest

import jaxmoe
from jaxmoe.censored_scaling import censored_exponent, censored_fits, km_exponent
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


def test_censored_fits_keep_the_late_seeds():
    # t ∝ √d with log-normal scatter, censored at a horizon that grows slower: a fifth of the seeds at d = 10⁵.
    rng = np.random.default_rng(1)
    dims = np.array([1e2, 1e3, 1e4, 1e5])
    latent = [2.0 * d**0.5 * np.exp(0.5 * rng.standard_normal(64)) for d in dims]
    horizon = [80.0 * (d / 100) ** 0.33 for d in dims]
    times = [np.minimum(t, h) for t, h in zip(latent, horizon)]
    observed = [t < h for t, h in zip(latent, horizon)]
    assert 10 <= np.sum(~observed[-1]) <= 35 and np.sum(~observed[0]) == 0
    b, low, high, a, sigma = censored_exponent(dims, times, observed, bootstrap=200)
    assert low < 0.5 < high and high - low < 0.1 and sigma == pytest.approx(0.5, abs=0.08)
    dropped = fit_exponent(dims, [np.where(o, t, np.inf) for t, o in zip(times, observed)], bootstrap=10)[0]
    assert dropped < low  # leaving the censored seeds out biases the exponent down
    kb, klow, khigh, medians = km_exponent(dims, times, observed, bootstrap=200)
    assert klow < 0.5 < khigh and np.all(np.isfinite(medians))
    # Median of 2√d·exp(0.5 ε): 2√d; the KM medians within 25% of it.
    np.testing.assert_allclose(medians, 2.0 * dims**0.5, rtol=0.25)


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
    # The censored fit: its table, and the counts agree with the seeds that lack a recovery.
    assert "Tobit exponent b" in printed and (out / "censored_fit.csv").is_file()
    fit = censored_fits({60: jaxmoe.load(out / "d60"), 240: r}, 0.05, bootstrap=10)[0]
    assert fit.censored[1] == int(np.sum(~np.isfinite(jaxmoe.agreement.kth_recoveries(r, 0.05)[:, 0])))
    assert fit.seeds == (4, 4)
    # A stopped run resumes: the dimensions already saved are loaded, not simulated again.
    (out / "scaling.md").unlink()
    assert main(["scaling", "--m", "3", "--m-star", "1", "--seeds", "4", "--dims", "60,240",
                 "--horizon", "300", "--bootstrap", "50", "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already holds this run") == 2
    assert (out / "scaling.csv").read_text().strip().splitlines() == rows
    # --refit rewrites the tables from the saved results.
    (out / "censored_fit.md").unlink()
    assert main(["scaling", "--refit", str(out), "--bootstrap", "20"]) == 0
    assert "Tobit exponent b" in capsys.readouterr().out and (out / "censored_fit.md").is_file()
    assert main(["scaling", "--refit", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--dims", "100"], "at least two distinct dimensions"),
        (["--dims", "100,abc"], "integers separated by commas"),
        (["--dims", "4,100", "--m-star", "3"], "2·m_star ≤ d"),
        (["--epsilon", "0"], "--epsilon must be in (0, 1)"),
        (["--bootstrap", "3"], "--bootstrap must be at least 10"),
        (["--chunk", "0"], "--chunk must be an integer ≥ 1"),
    ],
)
def test_bad_input(flags, fragment, capsys):
    assert main(["scaling", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
