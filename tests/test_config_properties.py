"""Property-based tests of SimulationConfig validation (hypothesis).

Valid configurations are generated field by field, respecting the cross-field
rules (2·m* ≤ d, rk4 needs dt ≤ t_max, the dataset method needs num_samples,
discrete methods take at most 1e8 steps); they must construct, survive
`to_dict`/`from_dict` and JSON exactly (values and types), and `replace` must
validate again. Invalid values are generated one field at a time on top of a
valid configuration: every one must raise ValueError or TypeError with a
one-line message that names the field — through the constructor, `replace`
and `from_dict` alike. No JAX computation happens here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxmoe.config import DTYPES, METHODS, MODES, OPTIMIZERS, SOLVERS, TEACHERS, TIME_GRIDS, SimulationConfig
from jaxmoe.families import EXPERT_FAMILIES, GATES

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = {
    # Gates and experts are family strings ("temperature:tau=0.5"); the name
    # before the colon is what must be one of these.
    "gate": GATES,
    "expert": EXPERT_FAMILIES,
    "teacher": TEACHERS,
    "mode": MODES,
    "time_grid": TIME_GRIDS,
    "solver": SOLVERS,
    "dtype": DTYPES,
    "method": METHODS,
    "optimizer": OPTIMIZERS,
}

# ---------------------------------------------------------------------------
# Valid values

# One valid string per family, whatever m, m* and d (groups = 1 divides every
# m, k = 1 ≤ m, an mlp of width 1 needs the 2m* ≤ d of the paper's teacher).
# In canonical form, which the configuration keeps as given.
VALID_GATES = (
    "sigmoid", "erf", "softmax", "temperature:tau=0.5", "activation:act=tanh", "hierarchical:groups=1", "topk:k=1"
)
VALID_EXPERTS = ("he1", "he2", "he3", "he4", "linear", "mlp:hidden=1,act=tanh")

positive_float = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
# Real fields accept ints too (not bools); an int must have a finite float value.
positive_real = st.one_of(positive_float, st.integers(1, 10**300))
open_unit = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)


@st.composite
def valid_kwargs(draw) -> dict:
    m_star = draw(st.integers(1, 64))
    method = draw(st.sampled_from(METHODS))
    solver = draw(st.sampled_from(SOLVERS))
    t_max = draw(positive_real)
    learning_rate = draw(positive_real)
    if method != "flow" and t_max / learning_rate > 1e8:
        learning_rate = t_max / 1e7  # at most 1e8 steps
    dt = draw(st.one_of(st.none(), positive_real))
    if solver == "rk4" and dt is None:
        dt = t_max
    if dt is not None:
        dt = min(dt, t_max)  # dt ≤ t_max
    num_samples = draw(st.one_of(st.none(), st.integers(1, 10**9)))
    if method == "dataset" and num_samples is None:
        num_samples = draw(st.integers(1, 10**9))
    gate, expert = draw(st.sampled_from(VALID_GATES)), draw(st.sampled_from(VALID_EXPERTS))
    # The teacher's families are stored only where they differ from the student's.
    teacher_gate = draw(st.sampled_from((None,) + VALID_GATES).filter(lambda g: g != gate))
    teacher_expert = draw(st.sampled_from((None,) + VALID_EXPERTS).filter(lambda e: e != expert))
    # A hierarchical teacher adds its group router to the 2m* vectors of its frame.
    hierarchical = (teacher_gate or gate).startswith("hierarchical")
    return dict(
        d=draw(st.integers(2 * m_star + hierarchical, 2**40)),
        m=draw(st.integers(1, 2**20)),
        m_star=m_star,
        gate=gate,
        expert=expert,
        teacher_gate=teacher_gate,
        teacher_expert=teacher_expert,
        teacher=draw(st.sampled_from(TEACHERS)),
        mode=draw(st.sampled_from(MODES)),
        seeds=draw(st.integers(1, 10**6)),
        base_seed=draw(st.integers(0, 2**32 - 1)),
        t_max=t_max,
        num_times=draw(st.integers(2, 10**6)),
        time_grid=draw(st.sampled_from(TIME_GRIDS)),
        t_first=draw(open_unit),
        solver=solver,
        rtol=draw(positive_real),
        atol=draw(positive_real),
        dt=dt,
        rkc_safety=draw(st.none() | st.floats(1.0, 1e6)) if solver in ("rkc2", "auto") else None,
        auto_switch=draw(st.none() | st.floats(0.0, 3.5, exclude_min=True)) if solver == "auto" else None,
        max_steps=draw(st.integers(1, 2**40)),
        loss_threshold=draw(st.one_of(st.none(), positive_real)),
        recovery_epsilon=draw(st.one_of(st.none(), open_unit)),
        dtype=draw(st.sampled_from(DTYPES if method == "flow" and solver == "auto" else [d for d in DTYPES if d != "mixed"])),
        lanes=draw(st.none() | st.integers(1, 2**20)) if method == "flow" else None,
        method=method,
        optimizer=draw(st.sampled_from(OPTIMIZERS)),
        learning_rate=learning_rate,
        momentum=draw(st.floats(min_value=0.0, max_value=1.0, exclude_max=True)),
        batch_size=draw(st.integers(1, 10**9)),
        num_samples=num_samples,
        # Norm-preserving steps: discrete methods with He_k experts only.
        retract=draw(st.booleans()) if method != "flow" and expert.startswith("he") else False,
    )


valid_configs = valid_kwargs().map(lambda kwargs: SimulationConfig(**kwargs))

# ---------------------------------------------------------------------------
# Invalid values, per field

wrong_type = st.one_of(
    st.text(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.just(np.arange(100)),  # a multi-line repr
    st.just(1j),
)
bad_count = st.one_of(
    st.integers(max_value=0),
    st.floats(),  # floats are not ints, not even 3.0
    st.integers(1, 10).map(float),
    st.booleans(),
    st.none(),
    wrong_type,
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
bad_positive_real = st.one_of(
    st.floats(max_value=0.0),
    st.integers(max_value=0),
    non_finite,
    st.booleans(),
    st.integers(10**309, 10**400),  # finite ints too large for a float
    wrong_type,
)
bad_open_unit = st.one_of(
    st.floats(max_value=0.0),
    st.floats(min_value=1.0),
    st.integers(),  # no int lies strictly between 0 and 1
    non_finite,
    st.booleans(),
    wrong_type,
)
bad_momentum = st.one_of(
    st.floats(max_value=0.0, exclude_max=True),
    st.floats(min_value=1.0),
    st.integers(max_value=-1),
    st.integers(min_value=1),
    non_finite,
    st.booleans(),
    st.none(),
    wrong_type,
)


def bad_name(field: str):
    allowed = NAMES[field]
    return st.one_of(
        st.text(max_size=12).filter(lambda s: s.partition(":")[0] not in allowed),
        st.sampled_from(allowed).map(str.upper),
        st.sampled_from(allowed).map(lambda s: f" {s}"),
        st.integers(),
        st.none(),
        st.booleans(),
        st.lists(st.sampled_from(allowed), min_size=1, max_size=2),
        st.just(np.array(allowed)),  # an array would compare element-wise
        st.floats(),
    )


INVALID = {
    **{name: bad_count for name in ("d", "m", "m_star", "seeds", "max_steps", "batch_size")},
    "num_times": bad_count | st.just(1),
    "base_seed": st.one_of(
        st.integers(max_value=-1), st.integers(min_value=2**32), st.floats(), st.booleans(), st.none(), wrong_type
    ),
    "num_samples": bad_count.filter(lambda v: v is not None),
    "lanes": bad_count.filter(lambda v: v is not None),
    **{name: bad_positive_real | st.none() for name in ("t_max", "rtol", "atol", "learning_rate")},
    **{name: bad_positive_real for name in ("dt", "loss_threshold")},
    "t_first": bad_open_unit | st.none(),
    "recovery_epsilon": bad_open_unit,
    "momentum": bad_momentum,
    "retract": st.one_of(st.integers(), st.none(), st.floats(), wrong_type, st.just(np.bool_(True))),
    # Invalid for every solver (a solver that does not use them refuses any value).
    "rkc_safety": st.one_of(st.floats(max_value=1.0, exclude_max=True), st.integers(max_value=0), non_finite,
                            st.booleans(), wrong_type),
    "auto_switch": st.one_of(st.floats(max_value=0.0), st.floats(min_value=3.5, exclude_min=True),
                             st.integers(max_value=0), non_finite, st.booleans(), wrong_type),
    **{name: bad_name(name) for name in NAMES},
    # None means "the student's family", so it is the one non-string allowed.
    "teacher_gate": bad_name("gate").filter(lambda v: v is not None),
    "teacher_expert": bad_name("expert").filter(lambda v: v is not None),
}


REAL_FIELDS = ["t_max", "rtol", "atol", "learning_rate", "dt", "loss_threshold"]
ARRAYS = [np.arange(100), np.array([1, 2]), np.array(["a", "b"])]


def test_every_field_has_an_invalid_strategy():
    assert set(INVALID) == {f.name for f in dataclasses.fields(SimulationConfig)}


# ---------------------------------------------------------------------------
# Helpers


def _names(message: str, *fields: str) -> bool:
    return all(re.search(rf"(?<!\w){re.escape(f)}(?!\w)", message) for f in fields)


def assert_rejected(build, *fields: str, max_length: int = 200) -> str:
    """`build()` raises ValueError or TypeError with a one-line message naming `fields`."""
    with pytest.raises((ValueError, TypeError)) as err:
        build()
    message = str(err.value)
    assert message and "\n" not in message and len(message) < max_length, message
    assert _names(message, *fields), f"{message!r} does not name {fields}"
    return message


# ---------------------------------------------------------------------------
# Valid configurations


@FAST
@given(valid_kwargs())
def test_valid_values_construct_and_keep_their_values(kwargs):
    config = SimulationConfig(**kwargs)
    assert config.to_dict() == kwargs
    assert all(type(getattr(config, name)) is type(value) for name, value in kwargs.items())


@FAST
@given(valid_configs)
def test_dict_and_json_round_trip_exactly(config):
    assert SimulationConfig.from_dict(config.to_dict()) == config
    text = config.to_json()
    again = SimulationConfig.from_dict(json.loads(text))
    assert again == config
    assert again.to_json() == text
    # Exactly: the same types (an int stays an int) and bit-identical floats.
    for name, value in config.to_dict().items():
        other = getattr(again, name)
        assert type(other) is type(value), name
        if isinstance(value, float):
            assert math.copysign(1.0, other) == math.copysign(1.0, value) and other == value, name


@FAST
@given(valid_configs, valid_kwargs(), st.data())
def test_replace_with_valid_values_equals_constructing(config, other, data):
    fields = data.draw(st.sets(st.sampled_from(sorted(other)), max_size=len(other)))
    changes = {name: other[name] for name in fields}
    merged = {**config.to_dict(), **changes}
    try:
        expected = SimulationConfig(**merged)
    except (ValueError, TypeError) as err:
        # Mixing two valid configurations can break a cross-field rule;
        # replace must then refuse in exactly the same words.
        with pytest.raises(type(err)) as again:
            config.replace(**changes)
        assert str(again.value) == str(err)
    else:
        assert config.replace(**changes) == expected


# ---------------------------------------------------------------------------
# Invalid values, one field at a time


@pytest.mark.parametrize("field", sorted(INVALID))
@settings(FAST, max_examples=10)
@given(config=valid_configs, data=st.data())
def test_an_invalid_field_is_named_in_a_one_line_error(field, config, data):
    value = data.draw(INVALID[field], label="value")
    kwargs = {**config.to_dict(), field: value}
    message = assert_rejected(lambda: SimulationConfig(**kwargs), field)
    # replace and from_dict validate the same way, with the same words.
    assert assert_rejected(lambda: config.replace(**{field: value}), field) == message
    assert assert_rejected(lambda: SimulationConfig.from_dict(kwargs), field) == message


@FAST
@given(valid_configs, st.sampled_from(sorted(NAMES)), st.data())
def test_unknown_names_list_what_is_allowed(config, field, data):
    value = data.draw(st.text(min_size=1, max_size=12).filter(lambda s: s.partition(":")[0] not in NAMES[field]))
    message = assert_rejected(lambda: config.replace(**{field: value}), field)
    assert message.startswith(f"unknown {field} ")
    assert all(name in message for name in NAMES[field])


@FAST
@given(valid_configs, st.sampled_from(REAL_FIELDS), non_finite)
def test_non_finite_tolerances_and_times_are_rejected(config, field, value):
    assert_rejected(lambda: config.replace(**{field: value}), field)


@FAST
@given(valid_configs, st.sampled_from(["d", "m", "m_star", "seeds", "num_times", "max_steps", "batch_size",
                                       "num_samples", "base_seed"]), st.booleans())
def test_bools_are_not_integers(config, field, value):
    assert_rejected(lambda: config.replace(**{field: value}), field)


@FAST
@given(valid_configs, st.sampled_from(REAL_FIELDS), st.integers(10**309, 10**5000))
def test_ints_too_large_for_a_float_are_rejected(config, field, value):
    assert_rejected(lambda: config.replace(**{field: value}), field)


@FAST
@given(valid_configs, st.sampled_from(sorted(INVALID)), st.sampled_from(ARRAYS))
def test_arrays_are_rejected_on_one_line(config, field, value):
    assert_rejected(lambda: config.replace(**{field: value}), field)


@FAST
@given(valid_configs, st.integers(min_value=2**32))
def test_base_seed_fits_a_prng_key(config, base_seed):
    # PRNGKey keeps 32 bits without x64 (2**32 would repeat seed 0) and at most 64 with it.
    assert_rejected(lambda: config.replace(base_seed=base_seed), "base_seed")


# ---------------------------------------------------------------------------
# Inconsistent combinations


@FAST
@given(valid_configs, st.data())
def test_teacher_needs_two_m_star_dimensions(config, data):
    m_star = data.draw(st.integers(1, 10**6))
    d = data.draw(st.integers(1, 2 * m_star - 1))
    assert_rejected(lambda: config.replace(m_star=m_star, d=d), "m_star", "d")


@FAST
@given(valid_configs)
def test_rk4_needs_a_step(config):
    assert_rejected(lambda: config.replace(solver="rk4", dt=None), "rk4", "dt")


@FAST
@given(valid_configs)
def test_dataset_needs_num_samples(config):
    flow_only = dict(lanes=None, dtype="float32" if config.dtype == "mixed" else config.dtype)
    assert_rejected(lambda: config.replace(method="dataset", num_samples=None, **flow_only), "dataset", "num_samples")


@FAST
@given(valid_configs, st.sampled_from([m for m in METHODS if m != "flow"]), positive_float, st.floats(1.01, 1e6))
def test_discrete_methods_take_at_most_1e8_steps(config, method, learning_rate, factor):
    t_max = learning_rate * 1e8 * factor
    assume(math.isfinite(t_max) and t_max / learning_rate > 1e8)
    changes = dict(method=method, num_samples=config.num_samples or 1, learning_rate=learning_rate, t_max=t_max,
                   retract=False, dt=None, solver="tsit5", rkc_safety=None, auto_switch=None, lanes=None,
                   dtype="float32" if config.dtype == "mixed" else config.dtype)
    assert_rejected(lambda: config.replace(**changes), "t_max", "learning_rate")
    # The same rule does not apply to gradient flow.
    assert config.replace(**{**changes, "method": "flow"}).t_max == t_max


@FAST
@given(valid_configs, positive_float, st.floats(1.0, 1e6, exclude_min=True))
def test_dt_must_not_exceed_t_max(config, t_max, factor):
    dt = t_max * factor
    assume(math.isfinite(dt) and dt > t_max)
    changes = dict(t_max=t_max, dt=dt, method="flow", retract=False)
    assert_rejected(lambda: config.replace(**changes), "dt", "t_max")


@FAST
@given(valid_configs, st.sampled_from(["flow"] + [e for e in VALID_EXPERTS if not e.startswith("he")]))
def test_retract_needs_a_discrete_method_and_hermite_experts(config, what):
    flow_only = dict(lanes=None, dtype="float32" if config.dtype == "mixed" else config.dtype)
    if what == "flow":
        assert_rejected(lambda: config.replace(method="flow", retract=True), "retract", "flow")
    else:
        changes = dict(method="online", expert=what, retract=True, **flow_only)
        assert_rejected(lambda: config.replace(**changes), "retract", "expert")


@FAST
@given(valid_configs, st.text(min_size=1, max_size=10))
def test_from_dict_rejects_unknown_keys(config, key):
    assume(key not in {f.name for f in dataclasses.fields(SimulationConfig)})
    assert_rejected(lambda: SimulationConfig.from_dict({**config.to_dict(), key: 1}), "unknown configuration keys",
                    max_length=400)
