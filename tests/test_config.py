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
        ({"gate": "relu"}, "unknown gate 'relu'; allowed: erf, sigmoid"),
        ({"expert": "he9"}, "unknown expert 'he9'; allowed: he1, he2, he3, he4"),
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
