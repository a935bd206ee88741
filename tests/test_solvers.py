"""Solvers for stiff gradient flows (`jaxmoe.solvers`): order, stability, agreement, seeds, events, float32.

Every solver here has a plain reference beside it: the exact solution of a
linear gradient flow, Tsit5 at a tight tolerance, the spectrum of a dense
Hessian. One small MoE problem is shared, so the compiled solves are reused.
"""

import subprocess
import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
from jaxmoe import SimulationConfig, simulate
from jaxmoe.solvers import RKC2, rkc2_stability_bound, rkc2_stages, spectral_radius

from _problems import SMALL as SHARED

# A linear gradient flow y' = −A y (L = ½ yᵀAy) with eigenvalues spread over
# four decades, in a rotated basis so that no coordinate is special.
_EIGENVALUES = np.geomspace(1e-2, 50.0, 12)
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 12)))[0]
_A = jnp.asarray(_Q @ np.diag(_EIGENVALUES) @ _Q.T)
_Y0 = jnp.asarray(np.random.default_rng(1).normal(size=12))


def _exact(t):
    return jnp.asarray(_Q @ (np.exp(-_EIGENVALUES * t) * (_Q.T @ np.asarray(_Y0))))


_LINEAR = diffrax.ODETerm(lambda t, y, args: -_A @ y)


def _fixed_step_error(steps: int, t1: float = 4.0, start: float = 1.0) -> float:
    """Error at t1 of fixed steps from the exact state at `start` (its stiffest modes have decayed,
    as on a gradient flow between escapes: the slow modes carry the error)."""
    y0 = _exact(start)
    solution = diffrax.diffeqsolve(_LINEAR, RKC2(), 0.0, t1, t1 / steps, y0, max_steps=steps + 1)
    return float(jnp.max(jnp.abs(solution.ys[-1] - _exact(start + t1))))


def test_stage_rule_covers_the_spectrum():
    for h_rho in (0.1, 1.0, 3.0, 36.0, 500.0, 1e4):
        s = int(rkc2_stages(h_rho, safety=1.25))
        assert rkc2_stability_bound(s) >= 1.25 * h_rho
        assert s == 2 or rkc2_stability_bound(s - 1) < 1.25 * h_rho  # and no more stages than that
    assert int(rkc2_stages(jnp.inf)) == 256


def test_rkc2_second_order_on_a_stiff_linear_flow():
    """Fixed steps with h·λ_max from 25 to 6 (7 to 4 stages): observed order 2 (measured 1.97, 1.91)."""
    errors = [_fixed_step_error(n) for n in (8, 16, 32)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), (errors, orders)


def test_rkc2_stable_far_beyond_explicit_limits():
    """h·λ_max = 500 (Tsit5 would need h·λ ≲ 3.5): the solution decays, it does not blow up."""
    solution = diffrax.diffeqsolve(_LINEAR, RKC2(), 0.0, 100.0, 10.0, _Y0, max_steps=11)
    assert float(jnp.max(jnp.abs(solution.ys[-1]))) <= float(jnp.max(jnp.abs(_Y0)))


def test_rkc2_adaptive_meets_its_tolerance():
    ts = jnp.linspace(0.0, 20.0, 21)
    solution = diffrax.diffeqsolve(
        _LINEAR, RKC2(), 0.0, 20.0, None, _Y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-9),
        saveat=diffrax.SaveAt(ts=ts), max_steps=20000,
    )
    error = float(jnp.max(jnp.abs(solution.ys - jnp.stack([_exact(float(t)) for t in ts]))))
    assert error < 1e-5  # measured 2e-6: global error of a few times the local tolerance


def test_rkc2_evaluations_grow_like_the_root_of_the_stiffness():
    """λ_max = 1e3 over t ≤ 50: Tsit5 is stability-limited (h ≲ 3.5e-3, ≥ 14,000 steps, 6
    evaluations each); RKC2 takes s ≈ √(1.9 h λ_max) stages and far fewer evaluations."""
    stiff = jnp.asarray(_Q @ np.diag(np.geomspace(1e-2, 1e3, 12)) @ _Q.T)
    count = {"n": 0}

    def tick():
        count["n"] += 1

    def field(t, y, args):
        jax.debug.callback(tick)
        return -stiff @ y

    runs = {}
    for name, solver in (("rkc2", RKC2()), ("tsit5", diffrax.Tsit5())):
        count["n"] = 0
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, 50.0, None, _Y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-8), max_steps=100_000,
        )
        jax.effects_barrier()
        runs[name] = (count["n"], solution.ys[-1])
    np.testing.assert_allclose(runs["rkc2"][1], runs["tsit5"][1], atol=1e-5)
    assert runs["tsit5"][0] > 5 * runs["rkc2"][0], runs


def _small_problem():
    config = SimulationConfig(d=12, m=4, m_star=2, seeds=1)
    teacher, student = jaxmoe.init.init_problem(config, np.arange(1, dtype=np.int32))
    return jax.tree_util.tree_map(lambda x: x[0], (teacher, student))


def test_spectral_radius_matches_the_dense_hessian():
    teacher, student = _small_problem()
    flat, unflatten = jax.flatten_util.ravel_pytree(student)

    def rate(y):
        return -jax.flatten_util.ravel_pytree(jax.grad(jaxmoe.population_loss)(unflatten(y), teacher))[0]

    hessian = jax.jacfwd(rate)(flat)
    exact = float(np.max(np.abs(np.linalg.eigvalsh(np.asarray((hessian + hessian.T) / 2)))))
    estimate = float(spectral_radius(rate, flat, iterations=300))
    assert estimate == pytest.approx(exact, rel=1e-3)
    assert estimate <= exact * (1 + 1e-6)  # the power iterate's norm approaches ρ from below


# The small MoE problem long enough to turn stiff (h·ρ reaches Tsit5's limit
# near t ≈ 20 at rtol 1e-6), with seeds that stop at different times.
SMALL = SHARED.replace(t_max=300.0, time_grid="log", rtol=1e-7, atol=1e-10)  # 4 seeds, 41 times


@pytest.fixture(scope="module")
def tight():
    return simulate(SMALL.replace(rtol=1e-11, atol=1e-13))


@pytest.mark.parametrize("solver", ["rkc2", "auto"])
def test_stiff_solvers_match_tight_tsit5(solver, tight):
    r = simulate(SMALL.replace(solver=solver))
    assert r.status_names() == ["success"] * 4
    for name in ("expert_alignment", "router_alignment"):
        np.testing.assert_allclose(getattr(r, name), getattr(tight, name), rtol=0, atol=1e-4)
    # Measured: rkc2 1.1e-4 relative at worst (inside an escape), auto less.
    np.testing.assert_allclose(r.loss, tight.loss, rtol=3e-4, atol=1e-9)


@pytest.mark.parametrize("vmapped", [False, True], ids=["cpu-one-at-a-time", "vmapped"])
@pytest.mark.parametrize("solver", ["rkc2", "auto"])
def test_stiff_solvers_seed_alone_equals_seed_in_batch_with_early_stops(solver, vmapped, tight, monkeypatch):
    """On a CPU seeds are solved one at a time; vmapped (as on an accelerator) every seed keeps
    its own step size, stage count, phase and stopping time."""
    threshold = float(np.median(tight.loss[:, -1])) * 3  # some seeds stop early, some do not
    config = SMALL.replace(solver=solver, loss_threshold=threshold)
    if vmapped:
        monkeypatch.setattr(jaxmoe.flow, "solve_block", lambda: None)
    batch = simulate(config)
    monkeypatch.undo()
    assert {"converged", "success"} <= set(batch.status_names())
    for s in range(4):
        alone = simulate(config, seed_index=[s])
        assert alone.status_names() == [batch.status_names()[s]]
        assert alone.num_steps[0] == batch.num_steps[s]
        # A batched and an unbatched kernel round differently; the difference is
        # absolute in θ (‖θ‖ ~ 1), so an alignment near 0 carries it in full:
        # slack 1e-11 of the field's scale beside rtol 1e-9 (measured 1.1e-12
        # on an alignment of 1.6e-6, vmapped rkc2).
        for name in ("loss", "expert_alignment", "router_alignment", "student_router"):
            a, b = getattr(alone, name)[0], getattr(batch, name)[s]
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * np.abs(b).max(), err_msg=name)
        if batch.status_names()[s] == "converged":
            assert batch.loss[s, -1] < threshold
            assert batch.t_final[s] < SMALL.t_max


def test_auto_stops_on_full_recovery():
    r = simulate(SMALL.replace(solver="auto", recovery_epsilon=0.05, seeds=2))
    for s in range(2):
        if r.status_names()[s] == "converged":
            final = r.t_final[s]
            assert final < SMALL.t_max
            assert np.all(r.expert_alignment[s, -1].max(axis=0) >= 0.95)
            assert np.all(r.router_alignment[s, -1].max(axis=0) >= 0.95)


@pytest.mark.parametrize("solver", ["rkc2", "auto"])
def test_stiff_solvers_in_float32(solver):
    """float32 draws its own initial states; the reference is tight float64 Tsit5 from the same ones."""
    config = SMALL.replace(solver=solver, dtype="float32", rtol=1e-6, atol=1e-8, seeds=2)
    r = simulate(config)
    assert r.loss.dtype == np.float32
    assert r.status_names() == ["success"] * 2
    initial = (
        jaxmoe.MoE(jnp.asarray(r.teacher_router, jnp.float64), jnp.asarray(r.teacher_expert, jnp.float64)),
        jaxmoe.MoE(jnp.asarray(r.student_router0, jnp.float64), jnp.asarray(r.student_expert0, jnp.float64)),
    )
    reference = simulate(SMALL.replace(seeds=2, rtol=1e-11, atol=1e-13), initial=initial)
    np.testing.assert_allclose(r.expert_alignment, reference.expert_alignment, rtol=0, atol=2e-3)
    np.testing.assert_allclose(r.router_alignment, reference.router_alignment, rtol=0, atol=2e-3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(solver="rkc3"), "unknown solver 'rkc3'; allowed: tsit5, dopri5, dopri8, heun, rk4, rkc2, auto"),
        (dict(solver="tsit5", rkc_safety=1.5), "rkc_safety applies to the solvers rkc2, auto; got solver 'tsit5'"),
        (dict(solver="rkc2", rkc_safety=0.5), "rkc_safety must be a finite number ≥ 1; got 0.5"),
        (dict(solver="rkc2", auto_switch=2.0), "auto_switch applies to the solver 'auto' only; got solver 'rkc2'"),
        (dict(solver="auto", auto_switch=5.0), "auto_switch must be in (0, 3.5]"),
    ],
)
def test_bad_solver_options(changes, message):
    with pytest.raises(ValueError, match=None) as error:
        SimulationConfig(**changes)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--solver", "rkc3"], "unknown solver 'rkc3'"),
        (["--auto-switch", "2", "--solver", "rkc2"], "auto_switch applies to the solver 'auto' only"),
        (["--solver", "tsit5", "--rkc-safety", "2"], "rkc_safety applies to the solvers rkc2, auto"),
    ],
)
def test_cli_bad_solver_options(flags, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jaxmoe", "simulate", *flags, "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
