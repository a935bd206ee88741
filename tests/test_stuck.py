"""Unconverged seeds (jaxmoe.stuck, `jaxmoe stuck`) and the recovery-probability diagram (jaxmoe.phase, `jaxmoe phase`)."""

import numpy as np
import pytest

import jaxmoe
from jaxmoe.cli import main
from jaxmoe.phase import full_recovery, phase_points
from jaxmoe.stuck import classify, shared_alignment, stuck_rows


def _result(expert, router, status, t_final, times):
    """A Result holding given alignments (S, T, m, m*); the parameters are placeholders."""
    s, _, m, k = expert.shape
    zeros = lambda n: np.zeros((s, n, 4))  # noqa: E731
    return jaxmoe.Result(
        config=jaxmoe.SimulationConfig(d=20, m=m, m_star=k, t_max=float(times[-1])),
        times=times,
        seed_index=np.arange(s),
        loss=np.ones((s, len(times))),
        expert_alignment=expert,
        router_alignment=router,
        status=np.asarray(status, np.int8),
        t_final=np.asarray(t_final, float),
        num_steps=np.ones(s, int),
        student_router0=zeros(m),
        student_expert0=zeros(m),
        teacher_router=zeros(k),
        teacher_expert=zeros(k),
        student_router=zeros(m),
        student_expert=zeros(m),
    )


def test_classes_of_constructed_final_states():
    times = np.array([0.0, 10.0])
    final = np.array(
        [
            [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],  # converged (status 1)
            [[0.81, 0.0], [0.80, 0.0], [0.0, 0.99]],  # teacher 0 split between students 0 and 1
            [[0.99, 0.0], [0.0, 0.2], [0.1, 0.3]],  # teacher 1: nobody at 0.5
            [[0.99, 0.0], [0.0, 0.97], [0.0, 0.0]],  # both recovered, loss not yet below the threshold
            [[0.9, 0.0], [0.3, 0.99], [0.0, 0.0]],  # teacher 0 held by one student at 0.9
        ]
    )
    expert = np.stack([np.zeros_like(final), final], axis=1)
    router = expert.copy()
    result = _result(expert, router, [1, 0, 0, 0, 0], [5.0, 10, 10, 10, 10], times)
    assert list(classify(result)) == ["converged", "shared", "unrecovered", "slow", "other"]
    # By the final state alone, the converged seed reads as every teacher expert recovered.
    assert classify(result, by_status=False)[0] == "slow"
    np.testing.assert_allclose(shared_alignment(result), [np.nan, 0.805, np.nan, np.nan, np.nan])
    # A router behind its recovered expert is "other", not "slow".
    router[3, 1, 1, 1] = 0.5
    assert classify(_result(expert, router, [1, 0, 0, 0, 0], [5.0, 10, 10, 10, 10], times))[3] == "other"
    rows = {r["class"]: r for r in stuck_rows(result, None)}
    assert rows["shared"]["seeds"] == 1 and rows["converged"]["share"] == 0.2
    assert rows["shared"]["share_low"] == pytest.approx(jaxmoe.stats.wilson_interval(1, 5)[0])


def test_full_recovery_needs_every_expert_and_router():
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    expert = np.zeros((3, 5, 2, 1))
    router = np.zeros((3, 5, 2, 1))
    expert[0, 2:, 0, 0] = router[0, 3:, 1, 0] = 0.97  # seed 0: expert at t = 2, a router at t = 3
    expert[1, 1:, 0, 0] = 0.99  # seed 1: the router never
    expert[2, 4:, 1, 0] = router[2, 4:, 1, 0] = 0.96  # seed 2: at the last saved time, after its stop at 3.5
    result = _result(expert, router, [1, 0, 1], [3.0, 4.0, 3.5], times)
    t, observed = full_recovery(result)
    np.testing.assert_array_equal(observed, [True, False, True])
    np.testing.assert_allclose(t, [3.0, 4.0, 3.5])  # seed 1 censored at its t_final


def test_phase_points_set_the_grid():
    points = phase_points(jaxmoe.SimulationConfig(m_star=2, seeds=3), (1, 3), (100, 1000, 10000))
    assert [p.config.m for p in points] == [2, 2, 2, 6, 6, 6]
    assert points[4].name == "004-ratio=3-d=1000" and points[4].values == {"ratio": 3, "m": 6, "d": 1000}
    assert [p.config.t_max for p in points[:3]] == [3000.0, 3000.0, pytest.approx(3000 * 10**0.5)]
    assert all(p.config.recovery_epsilon == 0.05 and p.config.loss_threshold is None for p in points)
    with pytest.raises(ValueError, match="distinct integers ≥ 1"):
        phase_points(jaxmoe.SimulationConfig(), (0, 2), (100,))


def test_phase_and_stuck_commands(tmp_path, capsys):
    out = tmp_path / "phase"
    # One point keeps the compilations few (phase_points, above, holds the grid; jaxmoe.sweep runs grids).
    flags = ["phase", "--m-star", "1", "--ratios", "2", "--dims", "60", "--seeds", "3", "--horizon", "10", "--quiet", "--out", str(out)]
    assert main(flags) == 0
    printed = capsys.readouterr().out
    assert "fully recovered" in printed and "| 2 | 2 | 60 | 3 |" in printed
    for name in ("phase.md", "phase.csv", "phase.png", "index.md", "000-ratio=2-d=60/result.npz"):
        assert (out / name).is_file(), name
    rows = (out / "phase.csv").read_text().splitlines()
    assert rows[0].startswith("ratio,m,d,seeds,recovered,share,low,high") and len(rows) == 2
    # The points' results are the stuck command's input: seeds with status success did not recover.
    run = out / "000-ratio=2-d=60"
    r = jaxmoe.load(run)
    assert main(["stuck", str(run), "--extend", "80", "--quiet"]) == 0
    printed = capsys.readouterr().out
    stuck = int(np.sum(r.status != 1))
    assert stuck >= 2  # so that the rerun joins several parts
    assert f"{stuck} not converged" in printed and "converged by t = 80" in printed
    assert "every teacher expert recovered by t = 80" in printed
    lines = (run / "stuck" / "stuck.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 and len(list((run / "stuck" / "extended").iterdir())) == stuck
    assert main(["stuck", str(run), "--extend", "5"]) == 2  # below the run's horizon
    assert "--extend must exceed" in capsys.readouterr().err
    # Reruns to another horizon in the folder are refused (before any simulation), not mixed in.
    (run / "stuck" / "stuck.md").unlink()
    assert main(["stuck", str(run), "--extend", "90", "--quiet"]) == 2
    assert "pass --overwrite to run them again" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["phase", "--ratios", "0,2"], "distinct integers ≥ 1"),
        (["phase", "--ratios", "1,x"], "--ratios takes integers"),
        (["phase", "--dims", "4", "--m-star", "5"], "2·m_star ≤ d"),
        (["phase", "--epsilon", "1"], "--epsilon must be in (0, 1)"),
        (["phase", "--chunk", "0"], "--chunk must be an integer ≥ 1"),
        (["stuck", "no-such-folder"], "no-such-folder"),
        (["stuck", "x", "--batch", "0"], "--batch must be an integer ≥ 1"),
        (["stuck", "x", "--extend", "-1"], "--extend must be a finite number ≥ 0"),
    ],
)
def test_bad_input(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
