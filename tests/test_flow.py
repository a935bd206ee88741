"""Gradient flow: monotone loss, dL/dt = −‖∇L‖², agreement with RK4, seeds, status.

All runs share one small problem and as few solver specifications as possible,
so that the compiled solves are reused across tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
from jaxmoe import MoE, simulate

from _problems import SMALL, compiled_programs  # SMALL is shared with other files, and so are its compiled solves


@pytest.fixture(scope="module")
def small_run():
    return simulate(SMALL)


def test_loss_never_increases(small_run):
    loss = small_run.loss
    assert np.all(np.isfinite(loss))
    increase = np.diff(loss, axis=1)
    # Allow only rounding: 1e-12 of the loss scale.
    assert increase.max() <= 1e-12 * loss.max()
    # And the flow does learn: the loss falls by at least half on every seed.
    assert np.all(loss[:, -1] < 0.5 * loss[:, 0])


def test_status_and_shapes(small_run):
    r = small_run
    assert r.status_names() == ["success"] * 4
    np.testing.assert_allclose(r.t_final, SMALL.t_max)
    assert r.loss.shape == (4, 41)
    assert r.expert_alignment.shape == r.router_alignment.shape == (4, 41, 4, 2)
    assert r.student_router0.shape == (4, 4, 12) and r.teacher_expert.shape == (4, 2, 12)
    assert np.all(np.abs(r.expert_alignment) <= 1 + 1e-12)
    # Saved alignments at t = 0 agree with the saved initial student and teacher.
    a0 = jaxmoe.observables.alignment(r.student_expert0[0], r.teacher_expert[0])
    np.testing.assert_allclose(r.expert_alignment[0, 0], a0, atol=1e-14)


def test_dloss_dt_is_minus_gradient_norm_squared(small_run):
    """Central differences of the saved loss against −‖∇L‖² at the saved states."""
    fine = SMALL.replace(seeds=1, t_max=2.0, num_times=401)  # spacing h = 0.005
    r = simulate(fine)
    h = r.times[1] - r.times[0]
    for index in (100, 200, 300):  # t = 0.5, 1.0, 1.5
        t = r.times[index]
        dl_dt = (r.loss[0, index + 1] - r.loss[0, index - 1]) / (2 * h)
        # The state at time t, from a run that stops there (same initialisation).
        # Same number of saved times as `fine`, so the compiled solve is reused.
        state = simulate(fine.replace(t_max=float(t)))
        student = MoE(jnp.asarray(state.student_router[0]), jnp.asarray(state.student_expert[0]))
        teacher = MoE(jnp.asarray(state.teacher_router[0]), jnp.asarray(state.teacher_expert[0]))
        grad = jax.grad(jaxmoe.population_loss)(student, teacher)
        norm_sq = float(jnp.sum(grad.router**2) + jnp.sum(grad.expert**2))
        # O(h²) differencing error; measured about 1e-6 relative here.
        assert dl_dt == pytest.approx(-norm_sq, rel=1e-4)


def test_one_compiled_solve_serves_every_seed_count_and_tolerance(small_run):
    """After `small_run`, other seed counts, tolerances and horizons compile no new solve
    (on a CPU the seeds run one at a time, `devices.in_blocks`; rtol, atol and t_max are traced)."""
    with compiled_programs() as compiled:
        runs = [simulate(SMALL.replace(**changes)) for changes in (dict(seeds=2), dict(seeds=7, rtol=1e-8, atol=1e-10), dict(seeds=3, t_max=5.0))]
    if jaxmoe.devices.solve_block() == 1:
        assert not {"jit(batched)", "jit(blocked)"} & set(compiled), compiled  # the solve, and the seeds' loop around it
    assert [r.status_names() for r in runs] == [["success"] * 2, ["success"] * 7, ["success"] * 3]
    # Two seeds are the batch's first two, to the last bit (the same program, seed by seed).
    for name in ("loss", "expert_alignment", "student_router", "num_steps"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(small_run, name)[:2], err_msg=name)
    assert runs[1].num_steps[0] != small_run.num_steps[0] and runs[2].times[-1] == 5.0


def test_one_compiled_solve_serves_another_number_of_saved_times(small_run):
    """The saved times are padded (`buckets.padded_size`): 33 times after 41 (both pad to
    64) compile no new solve and take the same steps; the times the two grids share
    (0, 5, 10, 15, 20) hold the same states, to the last bit."""
    with compiled_programs() as compiled:
        coarse = simulate(SMALL.replace(num_times=33))
    if jaxmoe.devices.solve_block() == 1:
        assert not {"jit(batched)", "jit(blocked)"} & set(compiled), compiled
    assert coarse.loss.shape == (4, 33) and coarse.expert_alignment.shape == (4, 33, 4, 2)
    np.testing.assert_array_equal(coarse.times[::8], small_run.times[::10])
    for name in ("loss", "expert_alignment", "router_alignment"):
        np.testing.assert_array_equal(getattr(coarse, name)[:, ::8], getattr(small_run, name)[:, ::10], err_msg=name)
    np.testing.assert_array_equal(coarse.num_steps, small_run.num_steps)
    np.testing.assert_array_equal(coarse.student_router, small_run.student_router)


def test_agrees_with_fixed_step_rk4():
    base = SMALL.replace(seeds=2, t_max=5.0)
    adaptive = simulate(base)
    rk4 = simulate(base.replace(solver="rk4", dt=2e-3, max_steps=3000))
    np.testing.assert_allclose(rk4.loss, adaptive.loss, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rk4.expert_alignment, adaptive.expert_alignment, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rk4.router_alignment, adaptive.router_alignment, rtol=0, atol=1e-6)
    assert rk4.num_steps.tolist() == [2500, 2500]


def test_seed_alone_equals_seed_in_batch(small_run):
    alone = simulate(SMALL, seed_index=[2])
    assert alone.seed_index.tolist() == [2]
    for name in ("loss", "expert_alignment", "router_alignment", "student_router", "teacher_expert"):
        np.testing.assert_allclose(getattr(alone, name)[0], getattr(small_run, name)[2], rtol=1e-12, atol=1e-13)


def test_replay_from_saved_initial_state(small_run):
    r = small_run
    teacher = MoE(jnp.asarray(r.teacher_router), jnp.asarray(r.teacher_expert))
    student = MoE(jnp.asarray(r.student_router0), jnp.asarray(r.student_expert0))
    replay = simulate(SMALL, initial=(teacher, student))
    np.testing.assert_allclose(replay.loss, r.loss, rtol=1e-12, atol=1e-13)


def test_early_stop_at_loss_threshold(small_run):
    threshold = float(np.median(small_run.loss[:, -1])) * 10
    r = simulate(SMALL.replace(loss_threshold=threshold))
    stopped = r.status_names()
    for s in range(4):
        if small_run.loss[s, -1] < threshold:
            assert stopped[s] == "converged"
            assert r.t_final[s] < SMALL.t_max
            after = r.times > r.t_final[s]
            # After the stop the loss is held at its value at the stopping time.
            assert np.all(r.loss[s, after] == r.loss[s, -1])
            assert r.loss[s, -1] <= threshold * (1 + 1e-9)
        else:
            assert stopped[s] == "success"


def test_step_limit_and_non_finite_spoil_no_other_seed(small_run):
    """One seed starts from a zero router (non-finite), one hits the step limit."""
    r = small_run
    teacher = MoE(jnp.asarray(r.teacher_router), jnp.asarray(r.teacher_expert))
    router0 = jnp.asarray(r.student_router0).at[1, 0].set(0.0)  # v̄ = 0/0
    student = MoE(router0, jnp.asarray(r.student_expert0))
    broken = simulate(SMALL, initial=(teacher, student))
    names = broken.status_names()
    assert names[1] == "non_finite"
    for s in (0, 2, 3):
        assert names[s] == "success"
        np.testing.assert_allclose(broken.loss[s], r.loss[s], rtol=1e-12, atol=1e-13)

    steps = np.sort(r.num_steps)
    limit = int(steps[1] + steps[2]) // 2  # between the 2nd and 3rd fastest seeds
    capped = simulate(SMALL.replace(max_steps=limit))
    for s in range(4):
        if r.num_steps[s] <= limit:
            assert capped.status_names()[s] == "success"
            np.testing.assert_allclose(capped.loss[s], r.loss[s], rtol=1e-12, atol=1e-13)
        else:
            assert capped.status_names()[s] == "step_limit"
            assert capped.t_final[s] < SMALL.t_max
            assert np.isnan(capped.loss[s, -1])


def test_log_time_grid():
    config = SMALL.replace(time_grid="log", num_times=5, t_first=1e-2)
    expected = [0.0, 0.2, 0.2 * 10 ** (2 / 3), 0.2 * 10 ** (4 / 3), 20.0]  # 0, then geometric
    np.testing.assert_allclose(jaxmoe.flow.time_grid(config), expected, rtol=1e-14)


def test_float32_runs():
    r = simulate(SMALL.replace(seeds=1, dtype="float32", rtol=1e-5, atol=1e-7, num_times=5))
    assert r.loss.dtype == np.float32
    assert r.status_names() == ["success"]


def test_observables_inside_the_solve_equal_those_after_it(small_run, monkeypatch):
    """Large states (full coordinates at large d) are observed inside the solve instead of being
    saved; both ways give the same numbers."""
    monkeypatch.setattr(jaxmoe.flow, "_SAVED_STATE_BUDGET", 0)
    inside = simulate(SMALL)
    np.testing.assert_array_equal(inside.num_steps, small_run.num_steps)
    for name in ("loss", "expert_alignment", "router_alignment"):
        np.testing.assert_allclose(getattr(inside, name), getattr(small_run, name), rtol=1e-12, atol=1e-13)
    for name in ("load", "quality"):
        np.testing.assert_allclose(inside.extra[name], small_run.extra[name], rtol=1e-12, atol=1e-13)
