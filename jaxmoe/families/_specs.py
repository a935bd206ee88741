"""Gate and Expert: frozen, validated specifications of a family, parsed from strings."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from ..hermite import ACTIVATIONS, EXPERTS

# Independent gates: one activation per expert, no coupling between experts.
INDEPENDENT_GATES = tuple(sorted(ACTIVATIONS))  # ("erf", "sigmoid")
SOFTMAX_GATES = ("softmax", "temperature", "activation", "hierarchical", "topk")
GATES = INDEPENDENT_GATES + SOFTMAX_GATES
HERMITE_EXPERTS = tuple(sorted(EXPERTS))  # ("he1", …, "he4")
EXPERT_FAMILIES = HERMITE_EXPERTS + ("linear", "mlp")
GATE_ACTIVATIONS = ("tanh", "sigmoid")
MLP_ACTIVATIONS = ("sigmoid", "tanh", "gelu")

# Parameters each gate accepts (beyond its name). softmax is the τ = 1 case
# of temperature and takes none, so that "softmax" always means one thing.
_SCHEDULE = ("tau", "tau_final", "decay")
_GATE_PARAMS = {
    "sigmoid": (),
    "erf": (),
    "softmax": (),
    "temperature": _SCHEDULE,
    "activation": ("activation",) + _SCHEDULE,
    "hierarchical": ("groups",) + _SCHEDULE,
    "topk": ("k",) + _SCHEDULE,
}
_EXPERT_PARAMS = {**{name: () for name in HERMITE_EXPERTS}, "linear": (), "mlp": ("hidden", "activation")}
# Short keys accepted in strings ("act=tanh").
_ALIASES = {"act": "activation"}


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_positive(name: str, value) -> float:
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def _parse(text: str, what: str, known: dict) -> tuple[str, dict]:
    """``"name:key=value,key=value"`` → (name, {key: value}) with numbers converted."""
    if not isinstance(text, str):
        raise ValueError(f"a {what} is a name or a '{what}' string; got {text!r}")
    # The name is matched exactly (no case folding, no stripping): a name that
    # is almost right is more likely a mistake than a wish.
    name, _, rest = text.partition(":")
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(known)}")
    params = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key, value = _ALIASES.get(key.strip(), key.strip()), value.strip()
        if not eq or not key or not value:
            raise ValueError(f"{what} parameters are key=value pairs separated by commas; got {item!r} in {text!r}")
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                pass
        params[key] = value
    return name, params


def _from_string(cls, text: str, what: str, known: dict):
    """`Gate` or `Expert` from its string; a key the family does not take is a one-line error."""
    name, params = _parse(text, what, known)
    try:
        return cls(name, **params)
    except TypeError:
        bad = sorted(set(params) - set(known[name]))
        raise ValueError(f"{what} {name!r} takes {', '.join(known[name]) or 'no parameters'}; got {bad}") from None


@dataclasses.dataclass(frozen=True)
class Gate:
    """How the m experts are weighted at input x: a frozen, hashable specification.

    **Arguments:**

    - `name`: one of `GATES` (module docstring).
    - `tau`: the temperature τ > 0 of the softmax-type gates (default 1),
      or its value at t = 0 with a schedule.
    - `tau_final`, `decay`: an optional schedule over gradient-flow time t,
      ``τ(t) = τ_final + (τ − τ_final) e^(−t/decay)`` (both or neither). An
      exponential because it is smooth in t (the ODE solver sees a smooth
      vector field), is τ at t = 0, and settles at τ_final; ``tau_final < tau``
      anneals from dense to sparse routing.
    - `activation`: for ``"activation"``, act ∈ `GATE_ACTIVATIONS` (default tanh).
    - `groups`: for ``"hierarchical"``, the number of groups G (must divide m;
      checked when a `Mixture` is built).
    - `k`: for ``"topk"``, the number of experts kept (1 ≤ k ≤ m; checked
      when a `Mixture` is built).

    **Raises:** `ValueError` with one line naming what is allowed.

    Example::

        from jaxmoe.families import Gate
        assert Gate.from_string("temperature:tau=0.5") == Gate("temperature", tau=0.5)
        schedule = Gate("temperature", tau=1.0, tau_final=0.1, decay=50.0)
        assert np.allclose(schedule.temperature(50.0), 0.1 + 0.9 / np.e)
    """

    name: str
    tau: float = 1.0
    tau_final: float | None = None
    decay: float | None = None
    activation: str | None = None
    groups: int | None = None
    k: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in _GATE_PARAMS:
            raise ValueError(f"unknown gate {self.name!r}; allowed: {', '.join(GATES)}")
        allowed = _GATE_PARAMS[self.name]
        defaults = {"tau": 1.0, "tau_final": None, "decay": None, "activation": None, "groups": None, "k": None}
        for field, default in defaults.items():
            if field not in allowed and getattr(self, field) != default:
                takes = ", ".join(allowed) if allowed else "no parameters"
                raise ValueError(f"gate {self.name!r} takes {takes}; got {field}={getattr(self, field)!r}")
        object.__setattr__(self, "tau", check_positive("tau", self.tau))
        if (self.tau_final is None) != (self.decay is None):
            raise ValueError("a temperature schedule needs both tau_final and decay (or neither)")
        if self.tau_final is not None:
            object.__setattr__(self, "tau_final", check_positive("tau_final", self.tau_final))
            object.__setattr__(self, "decay", check_positive("decay", self.decay))
        if self.name == "activation":
            act = "tanh" if self.activation is None else self.activation
            if act not in GATE_ACTIVATIONS:
                raise ValueError(f"unknown gate activation {act!r}; allowed: {', '.join(GATE_ACTIVATIONS)}")
            object.__setattr__(self, "activation", act)
        field = {"hierarchical": "groups", "topk": "k"}.get(self.name)
        if field is not None:
            value = getattr(self, field)
            if not is_int(value) or value < 1:
                raise ValueError(f"gate {self.name!r} needs {field}, an integer ≥ 1; got {value!r}")

    @classmethod
    def from_string(cls, text: str) -> Gate:
        """Parse ``"name"`` or ``"name:key=value,..."`` (``act`` abbreviates ``activation``)."""
        return _from_string(cls, text, "gate", _GATE_PARAMS)

    def __str__(self) -> str:
        params = []
        for field in _GATE_PARAMS[self.name]:
            value = getattr(self, field)
            if value is not None and not (field == "tau" and value == 1.0):
                params.append(f"{'act' if field == 'activation' else field}={value}")
        return self.name + (":" + ",".join(params) if params else "")

    @property
    def independent(self) -> bool:
        """True for σ(v̄_i·x) gates that do not couple experts (sigmoid, erf)."""
        return self.name in INDEPENDENT_GATES

    def temperature(self, t=None):
        """τ at gradient-flow time t (``None`` means t = 0): τ, or the schedule's value."""
        if self.tau_final is None or t is None:
            return self.tau
        return self.tau_final + (self.tau - self.tau_final) * jnp.exp(-jnp.asarray(t) / self.decay)


@dataclasses.dataclass(frozen=True)
class Expert:
    """What each expert computes: a frozen, hashable specification.

    **Arguments:**

    - `name`: one of `EXPERT_FAMILIES` (module docstring).
    - `hidden`: for ``"mlp"``, the number of hidden units h ≥ 1.
    - `activation`: for ``"mlp"``, act ∈ `MLP_ACTIVATIONS` (default tanh).
      GELU is the exact one, z Φ(z), not the tanh approximation.

    **Raises:** `ValueError` with one line naming what is allowed.

    Example::

        from jaxmoe.families import Expert
        assert Expert.from_string("mlp:hidden=4,act=gelu") == Expert("mlp", hidden=4, activation="gelu")
    """

    name: str
    hidden: int | None = None
    activation: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in _EXPERT_PARAMS:
            raise ValueError(f"unknown expert {self.name!r}; allowed: {', '.join(EXPERT_FAMILIES)}")
        if self.name != "mlp":
            for field in ("hidden", "activation"):
                if getattr(self, field) is not None:
                    raise ValueError(f"expert {self.name!r} takes no parameters; got {field}={getattr(self, field)!r}")
            return
        if not is_int(self.hidden) or self.hidden < 1:
            raise ValueError(f"expert 'mlp' needs hidden, an integer ≥ 1; got {self.hidden!r}")
        act = "tanh" if self.activation is None else self.activation
        if act not in MLP_ACTIVATIONS:
            raise ValueError(f"unknown mlp activation {act!r}; allowed: {', '.join(MLP_ACTIVATIONS)}")
        object.__setattr__(self, "activation", act)

    @classmethod
    def from_string(cls, text: str) -> Expert:
        """Parse ``"he3"``, ``"linear"`` or ``"mlp:hidden=4,act=gelu"``."""
        return _from_string(cls, text, "expert", _EXPERT_PARAMS)

    def __str__(self) -> str:
        return f"mlp:hidden={self.hidden},act={self.activation}" if self.name == "mlp" else self.name

    @property
    def hermite(self) -> bool:
        """True for the He_k(w̄·x) experts that the exact kernel knows."""
        return self.name in HERMITE_EXPERTS

    @property
    def degree(self) -> int | None:
        """The polynomial degree of the expert: k for He_k, 1 for linear, None for mlp (not a polynomial)."""
        if self.hermite:
            return EXPERTS[self.name].degree
        return 1 if self.name == "linear" else None


def as_gate(spec) -> Gate:
    return spec if isinstance(spec, Gate) else Gate.from_string(spec)


def as_expert(spec) -> Expert:
    return spec if isinstance(spec, Expert) else Expert.from_string(spec)
