"""The seed pool (`jaxmoe.pool`): fewer lanes than seeds, each seed's numbers those of the seed alone.

The references: the seeds solved one at a time by `diffrax.diffeqsolve`
(the CPU default), and the same seeds as one vmapped `diffeqsolve`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
from jaxmoe import MoE, SimulationConfig, simulate
from jaxmoe.pool import default_refill, pool_facts

from _problems import SMALL

# Short horizon, tight tolerances: rounding differences between a batched and
# an unbatched kernel stay at rounding level (past a saddle escape they grow).
PROBLEM = SMALL.replace(seeds=7)  # (d = 12, m = 4, m* = 2, t = 20, 41 times, rtol 1e-10)
FIELDS = ("loss", "expert_alignment", "router_alignment", "student_router", "student_expert", "t_final")


def _initial():
    """Seven seeds whose work differs: 2 and 5 move 100× slower (vectors ×10, dθ̄/dt ∝ 1/‖θ‖²),
    6 starts from a zero router (non-finite at once)."""
    from jaxmoe.init import init_problem

    teacher, student = init_problem(PROBLEM, np.arange(PROBLEM.seeds, dtype=np.int32))
    scale = jnp.ones(PROBLEM.seeds).at[jnp.array([2, 5])].set(10.0)[:, None, None]
    router = (student.router * scale).at[6, 0].set(0.0)
    return teacher, MoE(router, student.expert * scale)


@pytest.fixture(scope="module")
def alone():
    """Each seed solved by itself (the CPU default: one seed at a time, no vmap)."""
    return simulate(PROBLEM, initial=_initial())


@pytest.fixture(scope="module")
def capped(alone):
    """`PROBLEM` with a step limit between the two largest step counts: one seed hits it.

    Both pool tests run under it, with the same lanes and progress bar, so
    that they share three compiled solves (alone, vmapped, pooled).
    """
    steps = np.sort(alone.num_steps)
    return PROBLEM.replace(max_steps=int(steps[-2] + steps[-1]) // 2)


def _assert_same(actual, desired, rtol, skip=(), stopped=()):
    """Statuses, steps and every field equal within `rtol` of the field's scale.

    `stopped`: seeds that stop on the loss threshold, where a stopping time is
    a sum of step sizes. The step-size control reads a local error estimate of
    size rtol·‖θ‖ formed by cancellation, so a rounding difference of 1e-16 in
    θ moves each step by about 1e-8 of itself and the stop by up to 10·rtol of
    t_max (measured 2.4e-7 at t = 10). The saves before the stop agree within
    rtol (measured 2e-14); the stopped state is the trajectory at a shifted
    time, so it is held to rtol plus the shift times the field's speed over
    the last saved interval (twice that, for the speed's variation within it).
    """
    assert actual.status_names() == desired.status_names()
    np.testing.assert_array_equal(actual.num_steps, desired.num_steps)
    shift = np.abs(actual.t_final - desired.t_final)
    for name in FIELDS:
        a, b = getattr(actual, name), getattr(desired, name)
        keep = np.array([s not in skip for s in range(a.shape[0])])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        # Absolute slack at `rtol` of the array's scale: a loss that has fallen 1e-5-fold
        # carries the rounding of the state it came from.
        tol = 10 * rtol if name == "t_final" else rtol
        atol = np.full(a.shape, tol * np.nanmax(np.abs(b)))
        if name in ("loss", "expert_alignment", "router_alignment"):  # saved along the time axis
            for s in stopped:
                after = desired.times >= desired.t_final[s]  # the stopped state, filled in
                last = np.flatnonzero(~after)[-1]
                speed = np.abs(b[s, after][0] - b[s, last]) / (desired.t_final[s] - desired.times[last])
                atol[s, after] += 2 * shift[s] * speed
        a, b, atol = a[keep], b[keep], atol[keep]
        excess = np.where(np.isnan(b), 0.0, np.abs(a - b) - tol * np.abs(b) - atol)
        assert excess.max(initial=0.0) <= 0, f"{name}: {np.sum(excess > 0)} elements beyond tolerance, by up to {excess.max():.3g}"


def test_pool_gives_each_seed_its_own_result(alone, capped):
    """Three lanes for seven seeds whose work differs 10×, one non-finite, one capped by the step limit.

    Against the same seeds in one vmapped diffeqsolve (diffrax's loop, batched
    as the lanes are): identical. Against each seed solved alone: the same
    statuses and steps, numbers within 1e-8 of their scale (measured up to
    3.5e-9, in the state a seed stops at: a batched and an unbatched kernel
    round differently, and the step-size control carries that along). The capped seed's final state is the state after exactly
    its limit of steps, whose sizes that rounding moves by 5e-8, so it is
    held to the batched solve only.
    """
    steps = alone.num_steps
    fast, slow = steps[[2, 5]], steps[[0, 1, 3, 4]]
    assert slow.min() >= 10 * fast.max()
    solo = simulate(capped, initial=_initial())
    vmapped = simulate(capped.replace(lanes=PROBLEM.seeds), initial=_initial())
    pooled = simulate(capped.replace(lanes=3), initial=_initial(), progress=True)
    assert pooled.run["lanes"] == 3 and 0 < pooled.run["lane_utilisation"] <= 1
    names = solo.status_names()
    assert names[6] == "non_finite" and names.count("step_limit") == 1
    _assert_same(pooled, vmapped, rtol=0)
    _assert_same(pooled, solo, rtol=1e-8, skip=(names.index("step_limit"),))
    # The seeds the cap does not touch are as in the uncapped run.
    for s in np.flatnonzero(np.array(names) == "success"):
        np.testing.assert_allclose(pooled.loss[s], alone.loss[s], rtol=1e-8)


def test_pool_refilled_one_lane_at_a_time_stops_on_threshold(alone, capped, capsys):
    """Seeds stopping at the loss threshold on three lanes refilled one at a time, with a progress bar."""
    threshold = float(np.median(alone.loss[:6, -1]))
    config = capped.replace(loss_threshold=threshold)
    assert default_refill(3) == 1
    reference = simulate(config, initial=_initial())
    vmapped = simulate(config.replace(lanes=PROBLEM.seeds), initial=_initial())
    capsys.readouterr()
    pooled = simulate(config.replace(lanes=3), initial=_initial(), progress=True)
    assert "seeds" in capsys.readouterr().err  # the pool's bar counts finished seeds
    names = reference.status_names()
    assert "converged" in names
    _assert_same(pooled, vmapped, rtol=0)
    # A seed at the step limit is held to the batched solve only (as above).
    _assert_same(
        pooled, reference, rtol=1e-8, skip=[s for s, n in enumerate(names) if n == "step_limit"],
        stopped=[s for s, n in enumerate(names) if n == "converged"],
    )


def test_pool_is_the_vmapped_solve_step_for_step():
    """Over escapes (t = 200, where batched and unbatched rounding part by 1e-8), the pool still
    equals the same seeds in one vmapped diffeqsolve exactly: it is diffrax's loop, lane by lane."""
    config = SimulationConfig(d=12, m=4, m_star=2, seeds=5, t_max=200.0, num_times=21, solver="tsit5",
                              rtol=1e-7, recovery_epsilon=1e-2)
    vmapped = simulate(config, lanes=5)  # as many lanes as seeds: one vmapped solve
    pooled = simulate(config, lanes=2)
    assert "lanes" not in vmapped.run  # no queue: not a pool
    assert pooled.status_names() == vmapped.status_names()
    np.testing.assert_array_equal(pooled.num_steps, vmapped.num_steps)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(pooled, name), getattr(vmapped, name), err_msg=name)


def test_lane_utilisation_counts_lane_steps():
    # Two devices of 3 seeds on 2 lanes; the pools ran 10 and 6 iterations.
    facts = pool_facts(2, 3, np.array([4, 9, 3, 5, 2, 1]), np.array([4, 5, 3, 4, 2, 2]))
    assert facts == {"lanes": 2, "pool_iterations": 10, "lane_utilisation": 20 / (2 * 10 + 2 * 6)}
    assert default_refill(1) == 1 and default_refill(128) == 16


@pytest.mark.parametrize("lanes", [0, -1, 2.5, True])
def test_bad_lanes_are_refused(lanes):
    with pytest.raises(ValueError, match="lanes must be an integer"):
        SimulationConfig(lanes=lanes)


def test_lanes_and_mixed_are_for_the_flow():
    with pytest.raises(ValueError, match="lanes applies to method 'flow' only"):
        SimulationConfig(method="online", lanes=4)
    with pytest.raises(ValueError, match="dtype 'mixed' applies to method 'flow' only"):
        SimulationConfig(method="optax", dtype="mixed")
    assert jaxmoe.SimulationConfig(dtype="mixed").state_dtype == "float64"
