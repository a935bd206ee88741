"""Every gate and expert family through the simulator (issue 8, points 1 and 3).

Eight student–teacher problems cover every gate (sigmoid, erf, softmax,
temperature, activation with tanh and with sigmoid,
hierarchical, top-k) and every expert family (He1–He4, linear, mlp with
sigmoid, tanh and GELU units). Each runs as gradient flow in the reduced
coordinates and by one discrete method (the methods rotate: optax SGD in
reduced coordinates, online SGD and a finite training set in d), and is
checked for what each method guarantees:

- gradient flow decreases the loss at every saved time (it is a gradient
  flow of that very loss) and by a stated margin over the run — except
  under a temperature schedule, where the loss itself changes with t
  (teacher and student alike); there the saved loss must be the loss at
  the saved time, not at t = 0;
- the discrete methods end below where they started, and report the same
  observables on the same time axis;
- every seed finishes with status success and finite arrays, and the result
  survives a save/load round trip and rebuilds its models.

The reduced coordinates are checked pathwise: the flow from a d-dimensional
initialisation and from its projection on the span of the vectors give the
same losses. Sizes are tiny (d = 30, m = 4, m* = 2, 2 seeds) and the flow
uses classical Runge–Kutta at a fixed step (20 steps), to keep compilation short.
"""

import jax
import numpy as np
import pytest

import jaxmoe
from jaxmoe.cli import main
from jaxmoe.families import Mixture
from jaxmoe.flow import vector_field
from jaxmoe.init import init_problem, project_to_span
from jaxmoe.quadrature import mixture_loss

BASE = jaxmoe.SimulationConfig(
    d=30, m=4, m_star=2, seeds=2, t_max=2.0, num_times=5, time_grid="linear", solver="rk4", dt=0.1,
    loss_threshold=None,
)
DISCRETE = {
    "optax": dict(method="optax", optimizer="sgd", learning_rate=0.1),
    "online": dict(method="online", learning_rate=0.05, batch_size=128),
    "dataset": dict(method="dataset", learning_rate=0.1, num_samples=256, batch_size=256),
}
# (gate, expert, discrete method): every gate and every expert family at least once.
CASES = [
    ("softmax", "he1", "optax"),
    ("temperature:tau=1,tau_final=0.25,decay=0.5", "he2", "online"),
    ("activation:act=tanh,tau=0.5", "he3", "dataset"),
    ("activation:act=sigmoid,tau=0.25", "he4", "optax"),
    ("hierarchical:groups=2", "linear", "online"),
    ("topk:k=2", "mlp:hidden=2,act=sigmoid", "dataset"),
    ("erf", "mlp:hidden=2,act=tanh", "optax"),
    ("sigmoid", "mlp:hidden=2,act=gelu", "online"),
]


def _check_result(result, config):
    assert result.status_names() == ["success"] * config.seeds
    assert np.isfinite(result.loss).all()
    assert np.all(np.abs(result.expert_alignment) <= 1 + 1e-9)
    assert np.all(np.abs(result.router_alignment) <= 1 + 1e-9)
    teacher, student = result.models("final")
    assert isinstance(student, Mixture) and str(student.gate) == config.gate and str(student.expert_fn) == config.expert


@pytest.mark.parametrize("gate, expert, method", CASES, ids=[f"{g}+{e}" for g, e, _ in CASES])
def test_every_family_trains_by_flow_and_a_discrete_method(gate, expert, method, tmp_path):
    config = BASE.replace(gate=gate, expert=expert)
    flow = jaxmoe.simulate(config)
    assert flow.run["mode"] == "reduced"
    _check_result(flow, config)
    if "decay" in gate:
        teacher, student = flow.models("final")
        at_end = jax.vmap(mixture_loss, in_axes=(0, 0, None))(student, teacher, config.t_max)
        at_start = jax.vmap(mixture_loss)(student, teacher)
        np.testing.assert_allclose(flow.loss[:, -1], at_end, rtol=1e-12)
        assert np.all(np.abs(at_end - at_start) > 1e-2 * at_end)
    else:
        # Gradient flow of L decreases L: at every saved time, and by at least 1% over t ∈ [0, 2].
        assert np.all(np.diff(flow.loss, axis=1) <= 1e-12 * flow.loss[:, :-1]), flow.loss
        assert np.all(flow.loss[:, -1] < 0.99 * flow.loss[:, 0]), flow.loss
    # A result of any family round-trips through its folder.
    jaxmoe.save(flow, tmp_path / "flow")
    again = jaxmoe.load(tmp_path / "flow")
    assert again.config == config and sorted(again.extra) == sorted(flow.extra)
    for name, value in flow.extra.items():
        np.testing.assert_array_equal(again.extra[name], value)

    discrete = jaxmoe.simulate(config.replace(**DISCRETE[method]))
    _check_result(discrete, discrete.config)
    assert discrete.run["mode"] == ("reduced" if method == "optax" else "full")
    if "decay" not in gate:  # under a schedule the loss moves with τ(t) (above)
        assert np.all(discrete.loss[:, -1] < discrete.loss[:, 0]), discrete.loss


def test_temperature_schedule_reaches_the_vector_field():
    # τ(t) anneals from 1 to 0.25: the vector field at t = 2 is not the one at t = 0.
    config = BASE.replace(gate="temperature:tau=1,tau_final=0.25,decay=0.5", expert="he2")
    teacher, student = init_problem(config, np.arange(1))
    one = jax.tree_util.tree_map(lambda x: x[0], (teacher, student))
    field = jax.jit(vector_field)
    early, late = field(one[1], one[0], 0.0), field(one[1], one[0], 2.0)
    change = np.linalg.norm(late.router - early.router) / np.linalg.norm(early.router)
    assert change > 0.05, change
    # Without a schedule, time does not enter.
    fixed = jax.tree_util.tree_map(lambda x: x[0], init_problem(config.replace(gate="temperature:tau=1"), np.arange(1)))
    np.testing.assert_array_equal(field(fixed[1], fixed[0], 0.0).router, field(fixed[1], fixed[0], 2.0).router)


def test_reduced_coordinates_follow_the_full_flow_pathwise():
    # A full d-dimensional draw, and its coordinates in the span of its vectors:
    # the loss depends only on inner products, so the two flows agree.
    config = BASE.replace(gate="hierarchical:groups=2", expert="linear", mode="full")
    teacher, student = init_problem(config, np.arange(2))
    full = jaxmoe.simulate(config, initial=(teacher, student))
    reduced = jaxmoe.simulate(config, initial=project_to_span(teacher, student))
    assert full.run["coordinates"] == 30 and reduced.run["coordinates"] == 16
    np.testing.assert_allclose(reduced.loss, full.loss, rtol=1e-9)
    np.testing.assert_allclose(reduced.expert_alignment, full.expert_alignment, atol=1e-9)


def test_initial_models_must_match_the_configuration():
    config = BASE.replace(gate="softmax", expert="linear")
    teacher, student = init_problem(config, np.arange(2))
    with pytest.raises(ValueError, match="initial teacher uses gate 'softmax' and expert 'linear'; the configuration says 'softmax' and 'he1'"):
        jaxmoe.simulate(config.replace(expert="he1"), initial=(teacher, student))
    with pytest.raises(TypeError, match="initial must be a tuple"):
        jaxmoe.simulate(config, initial=(teacher, "student"))


def test_prune_refuses_other_families_in_one_line(tmp_path):
    import jaxmoe.prune

    result = jaxmoe.simulate(BASE.replace(gate="softmax", expert="he1"))
    with pytest.raises(ValueError, match="pruning supports the paper's model"):
        jaxmoe.prune.select_experts(result)


def test_cli_gate_and_expert_flags(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["simulate", "--d", "30", "--m", "4", "--m-star", "2", "--seeds", "2", "--t-max", "2",
            "--num-times", "5", "--time-grid", "linear", "--solver", "rk4", "--dt", "0.1", "--no-early-stop",
            "--quiet", "--figure-seeds", "1", "--gate", "softmax", "--expert", "he1", "--out", str(out)]
    assert main(args) == 0
    result = jaxmoe.load(out)
    assert result.config.gate == "softmax" and result.config.expert == "he1"
    assert "final loss" in capsys.readouterr().out
    # Bad family strings: exit code 2, one line naming what is allowed, no traceback.
    for flag, value, message in [
        ("--gate", "soft", "unknown gate 'soft'; allowed: sigmoid, erf, softmax, temperature, activation, hierarchical, topk"),
        ("--expert", "mlp:hidden=0", "expert 'mlp' needs hidden, an integer ≥ 1; got 0"),
        ("--gate", "temperature:tau=-2", "tau must be a finite number > 0; got -2"),
        ("--gate", "topk:k=7", "topk gate: k must be in 1..m = 1..4; got k = 7"),
        ("--gate", "hierarchical:groups=3", "hierarchical gate: groups = 3 must divide m = 4"),
    ]:
        bad = [a if a != "he1" else "linear" for a in args[:-2]] + [flag, value]
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
