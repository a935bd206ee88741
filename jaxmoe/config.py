"""The one frozen, validated description of a simulation.

The CLI, notebooks, benchmarks and the result files all build or read this
same object, so there is one place that says what a valid problem is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

from .families import Expert, Gate, is_classic, is_int, num_vectors

__all__ = ["SimulationConfig", "SOLVERS", "TIME_GRIDS", "TEACHERS", "MODES", "DTYPES", "METHODS", "OPTIMIZERS"]

SOLVERS = ("tsit5", "dopri5", "dopri8", "heun", "rk4", "rkc2", "auto")
# The solvers that size their stages from the spectral radius (jaxmoe.solvers.RKC2).
STABILIZED_SOLVERS = ("rkc2", "auto")
TIME_GRIDS = ("log", "linear")
TEACHERS = ("random", "axis")
MODES = ("reduced", "full")
DTYPES = ("float64", "float32", "mixed")
METHODS = ("flow", "optax", "online", "dataset")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop")
# Optimisers whose update commutes with rotations of the coordinates: they can
# run in the reduced coordinates. Adam and RMSprop scale each coordinate on
# its own, so they need the d coordinates of the actual parameter vectors.
ROTATION_EQUIVARIANT = ("sgd", "momentum", "nesterov")


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_finite_real(x) -> bool:
    """A real number with a finite float value (an int too large for a float is not)."""
    try:
        return _is_real(x) and math.isfinite(x)
    except OverflowError:
        return False


def _show(value, limit: int = 60) -> str:
    """``repr(value)`` on one line and at most `limit` characters, for error messages."""
    try:
        text = " ".join(repr(value).split())
    except ValueError:  # an int with more digits than Python will print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """A student–teacher problem and how to simulate it.

    **Problem** (docs/model.md §1):

    - `d`: input dimension.
    - `m`: student experts.
    - `m_star`: teacher experts (needs 2·m_star ≤ d).
    - `gate`: the gate, a `jaxmoe.families.Gate` string: the paper's
      independent ``"sigmoid"`` (default) or ``"erf"`` router, or
      ``"softmax"``, ``"temperature:tau=0.5"`` (a schedule:
      ``"temperature:tau=1,tau_final=0.1,decay=50"``),
      ``"activation:act=tanh,tau=0.5"``, ``"hierarchical:groups=2"``,
      ``"topk:k=2"``. Stored in its canonical form (`Gate.__str__`).
    - `expert`: the expert family, a `jaxmoe.families.Expert` string:
      ``"he1"`` … ``"he4"`` (default He3), ``"linear"``, or
      ``"mlp:hidden=4,act=gelu"`` (act: sigmoid, tanh, gelu).
    - `teacher_gate`, `teacher_expert`: the teacher's families when they
      differ from the student's (``None``: the same).
    - `teacher`: ``"random"`` (a Haar-random orthonormal frame per seed) or
      ``"axis"`` (the first 2m* coordinate axes).
    - `mode`: ``"reduced"`` (default) simulates the exact d-dimensional flow in
      the 2(m + m*) coordinates of the span of the teacher and the initial
      student, at a cost independent of d (docs/model.md §3); it falls back to the
      full coordinates when d ≤ 2(m + m*). ``"full"`` always uses d
      coordinates. The teacher frame only matters in full mode.

    **Seeds:** seed index ``s`` (0 ≤ s < `seeds`) uses the key
    ``jax.random.fold_in(jax.random.PRNGKey(base_seed), s)``, so a seed gives the
    same run alone or in any batch.

    **Time and solver** (gradient-flow time t, docs/model.md §4):

    - `t_max`: end time; `num_times` saved times on a `time_grid` (``"log"``:
      0 then geometric from ``t_max·t_first`` to `t_max`; ``"linear"``).
    - `solver`: ``"auto"`` (default): Tsit5 until its steps are
      stability-limited (``h·ρ ≥ auto_switch``, ρ the spectral radius of
      ∇²L), then the stabilized second-order Runge–Kutta–Chebyshev method
      ``"rkc2"`` (`jaxmoe.solvers`; docs/solvers.md); ``"rkc2"`` throughout;
      or an explicit Runge–Kutta method of diffrax (``"tsit5"``,
      ``"dopri5"``, ``"dopri8"``, ``"heun"``). All with PID step control at
      relative/absolute tolerances `rtol`, `atol` (the default 1e-7 gives
      the second-order auto solver the accuracy Tsit5 has at 1e-6);
      `max_steps` per seed (for ``"auto"``, per phase). ``"rk4"`` is the
      classical fixed-step method with step `dt` (for tests and comparisons).
    - `rkc_safety`: margin on ρ when RKC2 sizes its stages (rkc2, auto;
      ``None``: 1.25); `auto_switch`: the ``h·ρ`` at which auto hands over
      (auto only; ``None``: 2.5; Tsit5's real stability limit is about 3.5).
    - `loss_threshold`: stop a seed early once its loss falls below this
      (``None``: never). The default run (the paper's Figure 1 setting) stops
      each seed at L < 1e-6 or t = 1000, by when every seed has recovered
      all teacher experts.
    - `recovery_epsilon`: if set, also stop a seed once every teacher expert
      is recovered, in expert *and* router alignment: ``max_i w̄_i·w̄*_j ≥ 1 − ε``
      and ``max_i v̄_i·v̄*_j ≥ 1 − ε`` for every j (flow only).
    - `dtype`: ``"float64"`` (default), ``"float32"``, or ``"mixed"`` (flow
      with solver auto only): the vector field in float32 until the flow
      turns stiff (auto's hand-over to RKC2), float64 after; the state, the
      solver's arithmetic, the saved observables and the stop checks always
      in float64 (docs/solvers.md, "Precision").
    - `lanes`: seeds integrated at once on each device (flow only). With
      fewer lanes than seeds, the seeds form a queue and a lane that
      finishes its seed takes the next one (the seed pool, `jaxmoe.pool`),
      so a batch is not held back by its slowest seed. ``None`` (default):
      one seed at a time on a CPU (where batching does not pay), every seed
      at once on an accelerator.

    **Method** (docs/model.md §4: every method reports on the gradient-flow time axis):

    - `method`: ``"flow"`` (gradient flow, the default); ``"optax"`` (an optax
      `optimizer` on the exact population loss); ``"online"`` (online SGD:
      every step a fresh batch of `batch_size` Gaussian inputs in d
      dimensions, the paper's method); ``"dataset"`` (a fixed training set of
      `num_samples` inputs, full-batch when `batch_size` ≥ `num_samples`,
      else minibatches).
    - `optimizer`: ``"sgd"``, ``"momentum"``, ``"nesterov"`` (with
      `momentum`), ``"adam"``, ``"rmsprop"``; used by the discrete methods
      (online and dataset training use it too). `learning_rate` η: step k
      sits at time t = k·η.
    - `retract`: norm-preserving training (discrete methods, He_k experts):
      after every step each router and expert vector is rescaled to its norm
      at the start, as the flow keeps it (the loss depends on directions
      only, so the flow's velocity is orthogonal to each vector; a discrete
      step is not, and grows the norms by O(η²) per step).

    **Raises:** `ValueError` with a one-line message naming the field, for any
    invalid value or combination (e.g. 2·m_star > d, ``"rk4"`` without `dt`,
    ``"dataset"`` without `num_samples`).

    Example::

        config = jaxmoe.SimulationConfig(d=1000, m=25, m_star=5, seeds=8, t_max=500.0)
        sgd = config.replace(method="online", learning_rate=0.01, batch_size=512)
        assert jaxmoe.SimulationConfig.from_dict(sgd.to_dict()) == sgd
    """

    d: int = 1000
    m: int = 25
    m_star: int = 5
    gate: str = "sigmoid"
    expert: str = "he3"
    teacher_gate: str | None = None
    teacher_expert: str | None = None
    teacher: Literal["random", "axis"] = "random"
    mode: Literal["reduced", "full"] = "reduced"
    seeds: int = 4
    base_seed: int = 0
    t_max: float = 1000.0
    num_times: int = 301
    time_grid: Literal["log", "linear"] = "log"
    t_first: float = 1e-3
    solver: str = "auto"
    rtol: float = 1e-7
    atol: float = 1e-10
    dt: float | None = None
    max_steps: int = 200_000
    rkc_safety: float | None = None
    auto_switch: float | None = None
    lanes: int | None = None
    loss_threshold: float | None = 1e-6
    recovery_epsilon: float | None = None
    dtype: Literal["float64", "float32"] = "float64"
    method: Literal["flow", "optax", "online", "dataset"] = "flow"
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 256
    num_samples: int | None = None
    retract: bool = False

    def __post_init__(self):
        for name in ("d", "m", "m_star", "seeds", "num_times", "max_steps"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1; got {_show(value)}")
        if self.num_times < 2:
            raise ValueError(f"num_times must be at least 2; got {self.num_times}")
        # PRNGKey takes at most 64 bits, and without x64 only the low 32 (then 2³² would repeat seed 0).
        if not is_int(self.base_seed) or not 0 <= self.base_seed < 2**32:
            raise ValueError(f"base_seed must be an integer ≥ 0 and < 2**32; got {_show(self.base_seed)}")
        self._check_families()
        positive = {"t_max": self.t_max, "rtol": self.rtol, "atol": self.atol}
        if self.dt is not None:
            positive["dt"] = self.dt
        if self.loss_threshold is not None:
            positive["loss_threshold"] = self.loss_threshold
        for name, value in positive.items():
            if not _is_finite_real(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0; got {_show(value)}")
        if self.recovery_epsilon is not None and (
            not _is_real(self.recovery_epsilon) or not 0 < self.recovery_epsilon < 1
        ):
            raise ValueError(f"recovery_epsilon must be in (0, 1); got {_show(self.recovery_epsilon)}")
        if not _is_real(self.t_first) or not 0 < self.t_first < 1:
            raise ValueError(f"t_first must be a fraction of t_max in (0, 1); got {_show(self.t_first)}")
        choices = {
            "teacher": (self.teacher, TEACHERS),
            "mode": (self.mode, MODES),
            "time_grid": (self.time_grid, TIME_GRIDS),
            "solver": (self.solver, SOLVERS),
            "dtype": (self.dtype, DTYPES),
        }
        for name, (value, allowed) in choices.items():
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"unknown {name} {_show(value)}; allowed: {', '.join(allowed)}")
        if self.solver == "rk4" and self.dt is None:
            raise ValueError("solver 'rk4' takes a fixed step: set dt > 0")
        if self.rkc_safety is not None:
            if self.solver not in STABILIZED_SOLVERS:
                raise ValueError(
                    f"rkc_safety applies to the solvers {', '.join(STABILIZED_SOLVERS)}; got solver {self.solver!r}"
                )
            if not _is_finite_real(self.rkc_safety) or self.rkc_safety < 1:
                raise ValueError(f"rkc_safety must be a finite number ≥ 1; got {_show(self.rkc_safety)}")
        if self.auto_switch is not None:
            if self.solver != "auto":
                raise ValueError(f"auto_switch applies to the solver 'auto' only; got solver {self.solver!r}")
            if not _is_finite_real(self.auto_switch) or not 0 < self.auto_switch <= 3.5:
                raise ValueError(
                    f"auto_switch must be in (0, 3.5] (h·ρ where Tsit5 hands over to RKC2); got {_show(self.auto_switch)}"
                )
        for name, value in (("method", self.method), ("optimizer", self.optimizer)):
            allowed = METHODS if name == "method" else OPTIMIZERS
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"unknown {name} {_show(value)}; allowed: {', '.join(allowed)}")
        if not _is_finite_real(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0; got {_show(self.learning_rate)}")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {_show(self.momentum)}")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer ≥ 1; got {_show(self.batch_size)}")
        if self.num_samples is not None and (not is_int(self.num_samples) or self.num_samples < 1):
            raise ValueError(f"num_samples must be an integer ≥ 1; got {_show(self.num_samples)}")
        if self.lanes is not None and (not is_int(self.lanes) or self.lanes < 1):
            raise ValueError(f"lanes must be an integer ≥ 1 or None; got {_show(self.lanes)}")
        if self.method != "flow" and self.lanes is not None:
            raise ValueError(f"lanes applies to method 'flow' only; got method {self.method!r}")
        if self.method != "flow" and self.dtype == "mixed":
            raise ValueError(f"dtype 'mixed' applies to method 'flow' only; got method {self.method!r}")
        if self.method == "flow" and self.dtype == "mixed" and self.solver != "auto":
            raise ValueError(f"dtype 'mixed' needs solver 'auto' (float32 before the flow turns stiff); got {self.solver!r}")
        if not isinstance(self.retract, bool):
            raise ValueError(f"retract must be True or False; got {_show(self.retract)}")
        if self.retract and self.method == "flow":
            raise ValueError("retract applies to the discrete methods optax, online, dataset (the flow keeps every norm); got method 'flow'")
        if self.retract and not Expert.from_string(self.expert).name.startswith("he"):
            raise ValueError(
                f"retract needs experts used through their direction (he1 … he4); got expert {self.expert!r}"
            )
        if self.method == "dataset" and self.num_samples is None:
            raise ValueError("method 'dataset' needs num_samples, the size of the training set")
        if self.method != "flow" and self.t_max / self.learning_rate > 1e8:
            raise ValueError(
                f"t_max / learning_rate = {self.t_max / self.learning_rate:.3g} steps; at most 1e8 are allowed"
            )
        if self.dt is not None and self.dt > self.t_max:
            raise ValueError(f"dt must not exceed t_max; got dt = {self.dt}, t_max = {self.t_max}")

    def _check_families(self) -> None:
        """Parse the four family strings into canonical form and check them against m, m* and d."""
        specs = {}
        for name, kind, default in (
            ("gate", Gate, None),
            ("expert", Expert, None),
            ("teacher_gate", Gate, "gate"),
            ("teacher_expert", Expert, "expert"),
        ):
            value = getattr(self, name)
            if value is None and default is not None:
                specs[name] = specs[default]
                continue
            if isinstance(value, (Gate, Expert)):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string such as {'softmax' if kind is Gate else 'he3'!r}; got {_show(value)}")
            try:
                spec = kind.from_string(value)
            except ValueError as error:
                # The student's fields are named by the message itself ("unknown gate …").
                raise ValueError(f"{name}: {error}" if name.startswith("teacher") else str(error)) from None
            specs[name] = spec
            object.__setattr__(self, name, str(spec))
        # The teacher's families are stored only where they differ.
        for name, default in (("teacher_gate", "gate"), ("teacher_expert", "expert")):
            if getattr(self, name) == getattr(self, default):
                object.__setattr__(self, name, None)
        for who, size, gate in (("m", self.m, specs["gate"]), ("m_star", self.m_star, specs["teacher_gate"])):
            if gate.name == "hierarchical" and size % gate.groups != 0:
                raise ValueError(f"hierarchical gate: groups = {gate.groups} must divide {who} = {size}")
            if gate.name == "topk" and not 1 <= gate.k <= size:
                raise ValueError(f"topk gate: k must be in 1..{who} = 1..{size}; got k = {gate.k}")
        need = num_vectors(self.m_star, specs["teacher_gate"], specs["teacher_expert"])
        if need > self.d:
            if self.classic:
                raise ValueError(
                    f"the teacher needs 2·m_star ≤ d orthonormal vectors; got m_star = {self.m_star}, d = {self.d}"
                )
            raise ValueError(
                f"the teacher needs {need} orthonormal vectors for m_star = {self.m_star}, so d ≥ {need}; got d = {self.d}"
            )

    @property
    def classic(self) -> bool:
        """True for the paper's model: independent sigmoid/erf gates and He_k experts, on both sides.

        It runs on `jaxmoe.MoE` with the exact kernel of docs/model.md §2; every
        other family runs on `jaxmoe.families.Mixture` (`jaxmoe.quadrature`).
        """
        return self.teacher_gate is None and self.teacher_expert is None and is_classic(self.gate, self.expert)

    def families(self) -> tuple[Gate, Expert, Gate, Expert]:
        """``(gate, expert, teacher_gate, teacher_expert)`` as specifications."""
        gate, expert = Gate.from_string(self.gate), Expert.from_string(self.expert)
        teacher_gate = gate if self.teacher_gate is None else Gate.from_string(self.teacher_gate)
        teacher_expert = expert if self.teacher_expert is None else Expert.from_string(self.teacher_expert)
        return gate, expert, teacher_gate, teacher_expert

    @property
    def state_dtype(self) -> str:
        """The dtype of the integrated state: float64 for ``dtype="mixed"``, else `dtype`."""
        return "float64" if self.dtype == "mixed" else self.dtype

    def replace(self, **changes) -> SimulationConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name: plain JSON-ready values (`from_dict` reverses it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationConfig:
        """Rebuild from `to_dict` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError("a configuration must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # The allowed names fill most of the line; the unknown ones get what is left.
            raise ValueError(f"unknown configuration keys {_show(unknown, 40)}; allowed: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> str:
        """`to_dict` as indented JSON with sorted keys."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
