"""Discrete training: GD → gradient flow as η → 0, online SGD → GD as B grows,
Adam, finite training sets, shared initialisations, and bad input."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmoe import MoE, SimulationConfig, simulate

from _problems import compiled_programs

# Full coordinates, so that every method starts from the same draw of each seed.
BASE = SimulationConfig(
    d=12, m=3, m_star=2, seeds=2, t_max=2.0, num_times=9, time_grid="linear", mode="full",
    loss_threshold=None, rtol=1e-10, atol=1e-12,
)


@pytest.fixture(scope="module")
def flow():
    return simulate(BASE)


def _deviation(a, b):
    """Largest difference of loss and alignment curves over the run."""
    return max(
        np.max(np.abs(a.loss - b.loss)),
        np.max(np.abs(a.expert_alignment - b.expert_alignment)),
        np.max(np.abs(a.router_alignment - b.router_alignment)),
    )


@pytest.fixture(scope="module")
def gd():
    return {eta: simulate(BASE, method="optax", optimizer="sgd", learning_rate=eta) for eta in (0.01, 0.005)}


def test_gradient_descent_approaches_flow_in_proportion_to_eta(flow, gd):
    err = {eta: _deviation(r, flow) for eta, r in gd.items()}
    # Measured: 0.050 at η = 0.01 (the fast initial transient dominates).
    assert err[0.01] < 0.1
    # First-order method: halving η halves the error.
    assert 0.4 <= err[0.005] / err[0.01] <= 0.6
    np.testing.assert_allclose(gd[0.01].times, flow.times, rtol=1e-12)
    assert gd[0.01].num_steps.tolist() == [200, 200]


def test_one_compiled_scan_serves_every_learning_rate_and_number_of_times(gd):
    """After `gd`, another η, t_max and number of saved times (13 against 9: both pad to 16,
    `buckets.padded_size`) compile no new scan: η is traced, the step schedule padded."""
    longer = BASE.replace(t_max=3.0, num_times=13)  # the 9 times of BASE, then 4 more
    with compiled_programs() as compiled:
        slow = simulate(longer, method="optax", optimizer="sgd", learning_rate=0.01)
        fast = simulate(longer, method="optax", optimizer="sgd", learning_rate=0.02)
    assert "jit(run)" not in compiled, compiled
    # The same steps from the same draw: the first 9 saves are gd's, to the last bit.
    np.testing.assert_array_equal(slow.times[:9], gd[0.01].times)
    np.testing.assert_array_equal(slow.loss[:, :9], gd[0.01].loss)
    np.testing.assert_array_equal(slow.expert_alignment[:, :9], gd[0.01].expert_alignment)
    assert slow.loss.shape == (2, 13) and slow.num_steps.tolist() == [300, 300] and fast.num_steps.tolist() == [150, 150]
    # η = 0.02 is a different run: first order in η, it sits farther from η = 0.01 than η = 0.005 does.
    assert np.max(np.abs(fast.loss[:, :9] - gd[0.01].loss)) > np.max(np.abs(gd[0.005].loss - gd[0.01].loss)) > 0


def test_online_sgd_with_large_batch_approaches_gd():
    """Over a short horizon, 8 seeds: the median deviation shrinks like 1/√B.

    The gradient noise of a cubic expert is heavy-tailed, so single seeds
    scatter; the median is the robust summary (measured ratio 0.094 for 64×
    the batch, against 1/√64 = 0.125).
    """
    base = BASE.replace(t_max=0.5, seeds=8, num_times=6)
    reference = simulate(base, method="optax", learning_rate=0.01)
    median = {}
    for batch in (256, 16384):
        online = simulate(base, method="online", learning_rate=0.01, batch_size=batch)
        median[batch] = np.median(np.max(np.abs(online.loss - reference.loss), axis=1))
    assert median[16384] < 0.25 * median[256]
    assert median[16384] < 0.05


def test_retraction_keeps_every_norm():
    """Norm-preserving online SGD: every router and expert vector keeps its initial norm to 1e-12.

    Plain online SGD at the same (η, B) grows them (measured: up to 0.94×
    for routers and 1.9× for experts by t = 2), so the bound can fail.
    """
    runs = {r: simulate(BASE, method="online", learning_rate=0.05, batch_size=64, retract=r) for r in (False, True)}
    drift = {
        r: max(np.max(np.abs(np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1) - 1))
               for a, b in ((res.student_router, res.student_router0), (res.student_expert, res.student_expert0)))
        for r, res in runs.items()
    }
    assert drift[True] <= 1e-12
    assert drift[False] > 0.1
    assert runs[True].config.retract and runs[True].run["method"] == "online"
    # The same draws and batches: the runs differ only by the rescaling.
    np.testing.assert_array_equal(runs[True].student_expert0, runs[False].student_expert0)
    assert np.all(np.isfinite(runs[True].loss))


def test_adam_decreases_the_loss(flow):
    adam = simulate(BASE, method="optax", optimizer="adam", learning_rate=0.01)
    assert np.all(adam.loss[:, -1] < 0.5 * adam.loss[:, 0])
    assert adam.run["mode"] == "full" and adam.run["optimizer"] == "adam"


def test_small_training_set_overfits():
    r = simulate(BASE, method="dataset", num_samples=16, batch_size=16, learning_rate=0.02, t_max=8.0)
    assert r.train_loss is not None and r.train_loss.shape == r.loss.shape
    assert np.all(r.train_loss[:, -1] < r.loss[:, -1])
    # Minibatches of a larger set run too, and record both losses.
    mb = simulate(BASE, method="dataset", num_samples=64, batch_size=8, learning_rate=0.01)
    assert np.all(np.isfinite(mb.train_loss)) and np.all(mb.loss[:, -1] < mb.loss[:, 0])


def test_every_method_starts_from_the_same_draw(flow, gd):
    online = simulate(BASE.replace(t_max=0.1, num_times=2), method="online", learning_rate=0.05)
    for other in (gd[0.01], online):
        np.testing.assert_array_equal(other.student_router0, flow.student_router0)
        np.testing.assert_array_equal(other.student_expert0, flow.student_expert0)
        np.testing.assert_array_equal(other.teacher_router, flow.teacher_router)
    # In reduced coordinates, gradient flow and SGD on the exact loss share their draw too.
    reduced = BASE.replace(d=100, mode="reduced", t_max=0.1, num_times=2)
    a, b = simulate(reduced), simulate(reduced, method="optax", learning_rate=0.05)
    assert a.run["mode"] == b.run["mode"] == "reduced"
    np.testing.assert_array_equal(a.student_router0, b.student_router0)


def test_custom_transformation_equals_named(gd):
    custom = simulate(BASE, method="optax", learning_rate=0.01, transformation=optax.sgd(0.01))
    np.testing.assert_allclose(custom.loss, gd[0.01].loss, rtol=1e-12)
    assert custom.run["optimizer"] == "custom"


def test_diverging_seed_is_flagged_and_spoils_no_other(flow):
    teacher = MoE(jnp.asarray(flow.teacher_router), jnp.asarray(flow.teacher_expert))
    router0 = jnp.asarray(flow.student_router0).at[0, 1].set(0.0)
    student = MoE(router0, jnp.asarray(flow.student_expert0))
    r = simulate(BASE, method="optax", learning_rate=0.01, initial=(teacher, student))
    assert r.status_names() == ["non_finite", "success"]
    clean = simulate(BASE, method="optax", learning_rate=0.01)
    np.testing.assert_allclose(r.loss[1], clean.loss[1], rtol=1e-12)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": -0.1}, "learning_rate must be a finite number > 0"),
        ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; allowed: sgd, momentum, nesterov, adam, rmsprop"),
        ({"method": "dataset", "num_samples": 0}, "num_samples must be an integer ≥ 1"),
        ({"method": "dataset"}, "method 'dataset' needs num_samples"),
        ({"method": "sgd"}, "unknown method 'sgd'; allowed: flow, optax, online, dataset"),
        ({"retract": True}, "retract applies to the discrete methods optax, online, dataset"),
        ({"retract": 1, "method": "online"}, "retract must be True or False; got 1"),
        ({"retract": True, "method": "online", "expert": "linear"}, r"retract needs experts used through their direction"),
    ],
)
def test_bad_input(changes, message):
    with pytest.raises(ValueError, match=message):
        BASE.replace(**changes)


def test_transformation_needs_a_discrete_method():
    with pytest.raises(ValueError, match="discrete methods"):
        simulate(BASE, transformation=optax.sgd(0.1))
    with pytest.raises(TypeError, match="GradientTransformation"):
        simulate(BASE, method="optax", transformation="adam")
