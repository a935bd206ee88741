"""Gate and expert families, and the general mixture of experts built from them.

    f(θ, x) = Σ_i g_i(x) E_i(x)

A model is a gate g (how the m experts are weighted at input x) composed with
experts E_i (what each one computes), each chosen by name with parameters
(issue #8). `Gate` and `Expert` are frozen, hashable, validated specifications
(usable as static fields under `jax.jit`); `Mixture` is the PyTree holding the
arrays each family needs; `mixture_forward` evaluates f.

**Gates** (routers enter through unit vectors v̄ = v/‖v‖, as in the paper, so
that a temperature τ and nothing else sets the sharpness; otherwise the norm
of v and τ would be two names for one thing):

- ``"sigmoid"``, ``"erf"``: independent gates g_i = σ(v̄_i·x) (the paper's
  router; the population loss of these with Hermite experts is exact,
  `jaxmoe.population`).
- ``"softmax"``: g = softmax_i(v̄_i·x).
- ``"temperature"``: g = softmax_i(v̄_i·x / τ), τ fixed or a schedule over
  training time (`Gate.temperature`).
- ``"activation"``: g = softmax_i(act(v̄_i·x) / τ), act ∈ {tanh, sigmoid}.
- ``"hierarchical"``: G groups of E = m/G experts (expert i in group i // E):
  g_i = softmax_g(ū_g·x / τ)[group(i)] · softmax_{j ∈ group(i)}(v̄_j·x / τ).
- ``"topk"``: softmax over the k largest logits v̄_i·x / τ, zero elsewhere.

**Experts:**

- ``"he1"`` … ``"he4"``: He_k(w̄_i·x) on a unit vector (the paper's expert;
  a unit w̄ because He_k of a scaled projection is no longer an orthogonal
  polynomial of a standard Gaussian, which the exact kernel relies on).
- ``"linear"``: w_i·x + b_i, not normalised (the norm of w is the expert's
  scale; there is nothing else to carry it).
- ``"mlp"``: Σ_r a_ir act(W_ir·x), h hidden units, act ∈ {sigmoid, tanh,
  gelu}, not normalised (the first-layer norms set how far each unit is into
  its nonlinearity, an essential parameter of a two-layer network).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .hermite import ACTIVATIONS, EXPERTS
from .model import unit

__all__ = [
    "Gate",
    "Expert",
    "GATES",
    "EXPERT_FAMILIES",
    "GATE_ACTIVATIONS",
    "MLP_ACTIVATIONS",
    "Mixture",
    "gate_weights",
    "expert_values",
    "mixture_forward",
    "init_mixture_teacher",
    "init_mixture_student",
    "is_classic",
    "num_vectors",
    "mixture_from_rows",
]

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


def _is_int(x) -> bool:
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

        Gate.from_string("temperature:tau=0.5") == Gate("temperature", tau=0.5)   # True
        Gate("temperature", tau=1.0, tau_final=0.1, decay=50.0).temperature(50.0)  # 0.1 + 0.9/e
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
            if not _is_int(value) or value < 1:
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

        Expert.from_string("mlp:hidden=4,act=gelu") == Expert("mlp", hidden=4, activation="gelu")  # True
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
        if not _is_int(self.hidden) or self.hidden < 1:
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


class Mixture(eqx.Module):
    """A mixture of experts of any gate and expert family: ``f(θ, x) = Σ_i g_i(x) E_i(x)``.

    The same class serves as teacher and as student. Under `jax.vmap` the
    arrays carry leading batch axes (one per seed).

    **Arguments:**

    - `router`: router vectors v_i, shape ``(m, D)`` (used through v̄_i).
    - `expert`: expert weights: ``(m, D)`` for He_k (used through w̄_i) and
      linear; ``(m, h, D)`` for mlp (the first layer W_ir).
    - `group_router`: ``(G, D)`` group routers u_g for ``"hierarchical"``
      (used through ū_g), else ``None``.
    - `bias`: ``(m,)`` biases b_i for ``"linear"``, else ``None``.
    - `output`: ``(m, h)`` output weights a_ir for ``"mlp"``, else ``None``.
    - `gate`, `expert_fn`: `Gate` and `Expert` specifications or their
      strings. Static: not leaves of the PyTree.

    **Raises:** `ValueError` (one line) for shapes that do not fit the
    families, groups that do not divide m, or k outside 1..m.
    """

    router: Float[Array, "m D"]
    expert: Array
    group_router: Array | None = None
    bias: Array | None = None
    output: Array | None = None
    gate: Gate = eqx.field(static=True, default=Gate("sigmoid"), converter=as_gate)
    expert_fn: Expert = eqx.field(static=True, default=Expert("he3"), converter=as_expert)

    def __check_init__(self):
        shape_r = getattr(self.router, "shape", None)
        shape_e = getattr(self.expert, "shape", None)
        if shape_r is None or shape_e is None or len(shape_r) != 2:
            return  # placeholders built by JAX transformations, or batched arrays under vmap
        m, dim = shape_r
        gate, expert = self.gate, self.expert_fn
        want = (m, expert.hidden, dim) if expert.name == "mlp" else (m, dim)
        if tuple(shape_e) != want:
            raise ValueError(f"expert {str(expert)!r} needs expert weights of shape {want}; got {tuple(shape_e)}")
        if expert.name == "linear" and (self.bias is None or tuple(self.bias.shape) != (m,)):
            raise ValueError(f"expert 'linear' needs bias of shape ({m},); got {getattr(self.bias, 'shape', None)}")
        if expert.name == "mlp" and (self.output is None or tuple(self.output.shape) != (m, expert.hidden)):
            raise ValueError(
                f"expert 'mlp' needs output weights of shape {(m, expert.hidden)}; got {getattr(self.output, 'shape', None)}"
            )
        if gate.name == "hierarchical":
            if m % gate.groups != 0:
                raise ValueError(f"hierarchical gate: groups = {gate.groups} must divide m = {m}")
            if self.group_router is None or tuple(self.group_router.shape) != (gate.groups, dim):
                raise ValueError(
                    f"hierarchical gate needs group_router of shape {(gate.groups, dim)}; "
                    f"got {getattr(self.group_router, 'shape', None)}"
                )
        if gate.name == "topk" and not 1 <= gate.k <= m:
            raise ValueError(f"topk gate: k must be in 1..m = 1..{m}; got {gate.k}")

    @property
    def num_experts(self) -> int:
        """m, the number of experts."""
        return self.router.shape[-2]

    @property
    def dim(self) -> int:
        """D, the dimension of the coordinates (d, or the reduced dimension)."""
        return self.router.shape[-1]


def gate_weights(model: Mixture, x: Float[Array, "n D"], t=None) -> Float[Array, "n m"]:
    """The gate g_i(x) for each input and expert, at gradient-flow time `t` (for a τ schedule)."""
    gate = model.gate
    logits = x @ unit(model.router).T  # (n, m)
    if gate.independent:
        return ACTIVATIONS[gate.name](logits)
    tau = gate.temperature(t)
    if gate.name == "activation":
        act = jnp.tanh if gate.activation == "tanh" else jax.nn.sigmoid
        logits = act(logits)
    logits = logits / tau
    if gate.name in ("softmax", "temperature", "activation"):
        return jax.nn.softmax(logits, axis=-1)
    if gate.name == "hierarchical":
        n, m = logits.shape
        groups = gate.groups
        outer = jax.nn.softmax(x @ unit(model.group_router).T / tau, axis=-1)  # (n, G)
        inner = jax.nn.softmax(logits.reshape(n, groups, m // groups), axis=-1)  # (n, G, E)
        return (outer[:, :, None] * inner).reshape(n, m)
    # topk: the k-th largest logit is the threshold; ties have probability zero.
    threshold = jax.lax.top_k(logits, gate.k)[0][:, -1:]
    kept = logits >= threshold
    masked = jnp.where(kept, logits, -jnp.inf)
    return jax.nn.softmax(masked, axis=-1)


def expert_values(model: Mixture, x: Float[Array, "n D"]) -> Float[Array, "n m"]:
    """Each expert's output E_i(x): shape ``(n, m)``."""
    expert = model.expert_fn
    if expert.hermite:
        return EXPERTS[expert.name](x @ unit(model.expert).T)
    if expert.name == "linear":
        return x @ model.expert.T + model.bias
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "gelu": lambda z: jax.nn.gelu(z, approximate=False)}
    pre = jnp.einsum("nd,mhd->nmh", x, model.expert)
    return jnp.einsum("nmh,mh->nm", act[expert.activation](pre), model.output)


def mixture_forward(model: Mixture, x: Float[Array, "n D"], t=None) -> Float[Array, " n"]:
    """``f(θ, x) = Σ_i g_i(x) E_i(x)`` for a batch of inputs.

    **Arguments:**

    - `model`: the `Mixture`.
    - `x`: inputs, shape ``(n, D)``.
    - `t`: gradient-flow time, used only by a gate with a temperature
      schedule (``None``: t = 0).

    **Returns:** the outputs, shape ``(n,)``.

    Example::

        teacher = init_mixture_teacher(2, 6, "topk:k=1", "linear", key=jax.random.PRNGKey(0))
        mixture_forward(teacher, jnp.ones((3, 6))).shape       # (3,)
    """
    if x.ndim != 2 or x.shape[-1] != model.dim:
        raise ValueError(f"x must have shape (n, {model.dim}); got {x.shape}")
    return jnp.sum(gate_weights(model, x, t) * expert_values(model, x), axis=-1)


# ---------------------------------------------------------------------------
# Initialisation


def check_size(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _frame(count: int, dim: int, key, dtype):
    """``count`` orthonormal rows in R^dim: Haar-random with a key, else the first axes."""
    if key is None:
        return jnp.eye(count, dim, dtype=dtype)
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, count), dtype))
    return (q * jnp.sign(jnp.diagonal(r))[None, :]).T


def init_mixture_teacher(
    m_star: int, dim: int, gate="sigmoid", expert_fn="he3", *, key: PRNGKeyArray | None = None, dtype=None
) -> Mixture:
    """A teacher whose router, group-router and expert directions are orthonormal.

    All ``m*`` routers, the ``G`` group routers (hierarchical) and the expert
    directions (one per He/linear expert, h per mlp expert) form one
    orthonormal frame, as in the paper's teacher (docs/model.md §1): every feature
    is distinct and of unit size, so recovering one tells nothing about
    another. Linear biases are 0 (the teacher is a pure projection); mlp
    output weights are 1/√h (output of order 1 whatever h).

    **Arguments:** `m_star` experts in dimension `dim` (needs the frame to
    fit: m*·(1 + h) + G ≤ D, h = 1 for He/linear); the `gate` and `expert_fn`
    specifications; `key` for a Haar-random frame (``None``: the first axes,
    routers, then group routers, then experts); `dtype`.

    **Returns:** a `Mixture` with ``m_star`` experts.
    """
    check_size("m_star", m_star)
    check_size("dim", dim)
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = dtype or jnp.zeros(()).dtype
    hidden = expert.hidden if expert.name == "mlp" else 1
    groups = gate.groups if gate.name == "hierarchical" else 0
    count = m_star * (1 + hidden) + groups
    if count > dim:
        raise ValueError(f"the teacher needs {count} orthonormal directions; got dim = {dim}")
    frame = _frame(count, dim, key, dtype)
    router, group_router, rest = frame[:m_star], frame[m_star : m_star + groups], frame[m_star + groups :]
    bias = output = None
    if expert.name == "mlp":
        weights = rest.reshape(m_star, hidden, dim)
        output = jnp.full((m_star, hidden), 1.0 / math.sqrt(hidden), dtype)
    else:
        weights = rest
        if expert.name == "linear":
            bias = jnp.zeros((m_star,), dtype)
    return Mixture(router, weights, group_router if groups else None, bias, output, gate, expert)


def is_classic(gate, expert_fn) -> bool:
    """True for the paper's families: an independent sigmoid/erf gate and an He_k expert.

    These run on `jaxmoe.MoE` with the exact kernel of docs/model.md §2.

    Example::

        is_classic("sigmoid", "he3"), is_classic("softmax", "he3")   # (True, False)
    """
    return as_gate(gate).independent and as_expert(expert_fn).hermite


def num_vectors(m: int, gate="sigmoid", expert_fn="he3") -> int:
    """How many vectors in R^D a model of m experts has: m routers, G group routers, m·h expert rows.

    h = 1 for He and linear experts, the hidden width for mlp experts. This is
    the model's share of the reduced coordinates (`jaxmoe.init.init_mixture_reduced`),
    and for a teacher the size of its orthonormal frame.

    Example::

        num_vectors(4, "hierarchical:groups=2", "mlp:hidden=3")   # 4 + 2 + 12 = 18
    """
    gate, expert = as_gate(gate), as_expert(expert_fn)
    hidden = expert.hidden if expert.name == "mlp" else 1
    groups = gate.groups if gate.name == "hierarchical" else 0
    return m * (1 + hidden) + groups


def mixture_from_rows(
    rows: Float[Array, "n D"], m: int, gate, expert_fn, *, output_key: PRNGKeyArray | None = None
) -> Mixture:
    """A student `Mixture` from its ``num_vectors(m, gate, expert_fn)`` raw vectors, in order:
    routers (m), group routers (G), expert rows (m·h).

    Then, as in the paper's initialisation: for He experts each router is
    orthogonalised against its own expert; linear biases start at 0; mlp
    output weights are N(0, 1/h) from `output_key` (required for mlp).
    Shared by `init_mixture_student` (rows in d dimensions) and
    `jaxmoe.init.init_mixture_reduced` (rows in reduced coordinates), so the two differ
    only in how the rows are drawn.
    """
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = rows.dtype
    groups = gate.groups if gate.name == "hierarchical" else 0
    router, group_router, rest = rows[:m], rows[m : m + groups], rows[m + groups :]
    bias = output = None
    if expert.name == "mlp":
        if output_key is None:
            raise ValueError("an mlp student needs output_key for its output weights")
        weights = rest.reshape(m, expert.hidden, rows.shape[-1])
        output = jax.random.normal(output_key, (m, expert.hidden), dtype) / math.sqrt(expert.hidden)
    else:
        weights = rest
        if expert.hermite:
            w = unit(weights)
            router = router - jnp.sum(router * w, axis=-1, keepdims=True) * w
        else:
            bias = jnp.zeros((m,), dtype)
    return Mixture(router, weights, group_router if groups else None, bias, output, gate, expert)


def init_mixture_student(
    m: int, dim: int, gate="sigmoid", expert_fn="he3", *, key: PRNGKeyArray, dtype=None
) -> Mixture:
    """A student drawn in D coordinates, the paper's law extended to every family.

    Every vector (router, group router, expert, mlp first-layer row) is
    N(0, I_D/D): norm ≈ 1, overlap with any fixed direction of order D^(-1/2)
    (the paper's initialisation, docs/model.md §1). For He experts each router is
    then orthogonalised against its own expert, as in the paper. Linear biases
    start at 0; mlp output weights are N(0, 1/h) (`mixture_from_rows`).

    **Arguments:** `m` experts in dimension `dim`; `gate`, `expert_fn`; the
    PRNG `key`; `dtype`.

    **Returns:** a `Mixture` with ``m`` experts.

    Example::

        student = init_mixture_student(4, 50, "softmax", "linear", key=jax.random.PRNGKey(1))
        student.router.shape, student.bias.shape     # (4, 50), (4,)
    """
    check_size("m", m)
    check_size("dim", dim)
    gate, expert = as_gate(gate), as_expert(expert_fn)
    dtype = dtype or jnp.zeros(()).dtype
    k_rows, k_output = jax.random.split(key)
    rows = jax.random.normal(k_rows, (num_vectors(m, gate, expert), dim), dtype) / math.sqrt(dim)
    return mixture_from_rows(rows, m, gate, expert, output_key=k_output)
