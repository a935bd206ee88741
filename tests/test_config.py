"""SimulationConfig: validation with one-line messages, and JSON round trip."""

import math

import pytest

from jaxmoe import SimulationConfig


def test_defaults_are_the_papers_figure_1_setting():
    config = SimulationConfig()
    assert (config.m_star, config.m, config.d) == (5, 25, 1000)
    assert config.gate == "sigmoid" and config.expert == "he3"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"d": 0}, "d must be an integer ≥ 1"),
        ({"m": 2.5}, "m must be an integer ≥ 1"),
        ({"m_star": True}, "m_star must be an integer ≥ 1"),
        ({"d": 5, "m_star": 3}, "2·m_star ≤ d"),
        ({"seeds": -1}, "seeds must be an integer ≥ 1"),
        ({"num_times": 1}, "num_times must be at least 2"),
        ({"t_max": -1.0}, "t_max must be a finite number > 0"),
        ({"t_max": math.inf}, "t_max must be a finite number > 0"),
        ({"rtol": math.nan}, "rtol must be a finite number > 0"),
        ({"atol": 0.0}, "atol must be a finite number > 0"),
        ({"loss_threshold": -1.0}, "loss_threshold must be a finite number > 0"),
        ({"t_first": 1.5}, "t_first must be a fraction"),
        ({"gate": "relu"}, "unknown gate 'relu'; allowed: sigmoid, erf, softmax, temperature, activation, hierarchical, topk"),
        ({"expert": "he9"}, "unknown expert 'he9'; allowed: he1, he2, he3, he4, linear, mlp"),
        ({"teacher": "fixed"}, "unknown teacher 'fixed'; allowed: random, axis"),
        ({"mode": "approx"}, "unknown mode 'approx'; allowed: reduced, full"),
        ({"dtype": "float16"}, "unknown dtype 'float16'; allowed: float64, float32"),
        ({"solver": "rk4"}, "solver 'rk4' takes a fixed step"),
        ({"base_seed": -2}, "base_seed must be an integer ≥ 0"),
    ],
)
def test_bad_values_raise_value_error(changes, message):
    with pytest.raises(ValueError) as err:
        SimulationConfig(**changes)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"gate": "temperature:tau=0"}, "tau must be a finite number > 0; got 0"),
        ({"gate": "temperature:tau=-1"}, "tau must be a finite number > 0; got -1"),
        ({"gate": "temperature:tau=1,tau_final=0.1"}, "a temperature schedule needs both tau_final and decay"),
        ({"gate": "topk:k=5"}, "topk gate: k must be in 1..m = 1..4; got k = 5"),
        ({"gate": "topk:k=0"}, "gate 'topk' needs k, an integer ≥ 1; got 0"),
        ({"teacher_gate": "topk:k=3"}, "topk gate: k must be in 1..m_star = 1..2; got k = 3"),
        ({"expert": "mlp:hidden=0"}, "expert 'mlp' needs hidden, an integer ≥ 1; got 0"),
        ({"expert": "mlp"}, "expert 'mlp' needs hidden, an integer ≥ 1; got None"),
        ({"gate": "hierarchical:groups=3"}, "hierarchical gate: groups = 3 must divide m = 4"),
        ({"gate": "softmax:tau=2"}, "gate 'softmax' takes no parameters; got tau=2"),
        ({"expert": "mlp:hidden=2,act=relu"}, "unknown mlp activation 'relu'; allowed: sigmoid, tanh, gelu"),
        ({"gate": "activation:act=relu"}, "unknown gate activation 'relu'; allowed: tanh, sigmoid"),
        ({"gate": "temperature:tau"}, "gate parameters are key=value pairs"),
        ({"teacher_expert": "he7"}, "teacher_expert: unknown expert 'he7'"),
        ({"expert": "mlp:hidden=8", "d": 15}, "the teacher needs 18 orthonormal vectors for m_star = 2, so d ≥ 18"),
    ],
)
def test_bad_families_raise_one_line_value_errors(changes, message):
    # Issue 8, point 4: τ ≤ 0, k outside 1..m, h < 1, groups that do not divide m.
    with pytest.raises(ValueError) as err:
        SimulationConfig(**{"d": 100, "m": 4, "m_star": 2, **changes})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_family_strings_are_stored_canonically():
    config = SimulationConfig(d=100, m=4, m_star=2, gate="activation:tau=0.5", expert="mlp:act=gelu,hidden=3")
    assert config.gate == "activation:act=tanh,tau=0.5" and config.expert == "mlp:hidden=3,act=gelu"
    assert not config.classic and SimulationConfig(d=100, m=4, m_star=2).classic
    # A teacher family equal to the student's is stored as None, so equal problems compare equal.
    assert config.replace(teacher_gate=config.gate) == config
    assert SimulationConfig.from_dict(config.to_dict()) == config


def test_json_round_trip_and_unknown_keys():
    config = SimulationConfig(d=77, m=3, m_star=2, loss_threshold=None, dt=0.5)
    assert SimulationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown configuration keys"):
        SimulationConfig.from_dict({**config.to_dict(), "colour": "blue"})


def test_frozen():
    config = SimulationConfig()
    with pytest.raises(AttributeError):
        config.d = 5  # type: ignore[misc]
    assert config.replace(d=10).d == 10
