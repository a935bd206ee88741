"""`simulate`: one entry point for every training method.

It resolves the configuration, draws each seed's teacher and student (the
same for every method: the draw depends on the seed and on the coordinates
used), hands them to the method — `flow.integrate` for gradient flow,
`discrete.train` for optax, online SGD and finite training sets — and wraps
the arrays in a `Result`. Both spread the seeds over all local devices
(`devices.py`); ``Result.run["devices"]`` records how many.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import discrete, flow
from .base import Model
from .config import SimulationConfig
from .devices import num_devices
from .families import Mixture
from .init import init_problem, uses_reduced
from .model import MoE
from .results import Result

__all__ = ["simulate"]


def _num_seeds(initial) -> int:
    if not (isinstance(initial, tuple) and len(initial) == 2 and all(isinstance(x, Model) for x in initial)):
        raise TypeError("initial must be a tuple (teacher, student) of jaxmoe.MoE or jaxmoe.families.Mixture")
    if initial[1].router.ndim != 3:
        raise ValueError("initial models need a leading seed axis: shapes (S, m*, D) and (S, m, D)")
    return initial[1].router.shape[0]


def _check_initial(initial, config: SimulationConfig, num_seeds: int) -> tuple[Model, Model]:
    teacher, student = initial
    dim = student.router.shape[-1]
    expected = {"teacher": (num_seeds, config.m_star, dim), "student": (num_seeds, config.m, dim)}
    gate, expert, teacher_gate, teacher_expert = (str(f) for f in config.families())
    wanted = {"teacher": (teacher_gate, teacher_expert), "student": (gate, expert)}
    kind = MoE if config.classic else Mixture
    for name, model in (("teacher", teacher), ("student", student)):
        if model.router.shape != expected[name]:
            raise ValueError(f"initial {name} must have shape {expected[name]}; got {model.router.shape}")
        if model.families != wanted[name]:
            raise ValueError(
                f"initial {name} uses gate {model.families[0]!r} and expert {model.families[1]!r}; "
                f"the configuration says {wanted[name][0]!r} and {wanted[name][1]!r}"
            )
        if not isinstance(model, kind):
            raise TypeError(f"initial {name} must be a {kind.__name__} for gate {gate!r} and expert {expert!r}")
    if config.method in ("online", "dataset") and dim != config.d:
        raise ValueError(f"method {config.method!r} samples inputs in d = {config.d} dimensions; initial vectors have {dim}")
    return teacher, student


def simulate(
    config: SimulationConfig | None = None,
    /,
    *,
    seed_index=None,
    initial: tuple[Model, Model] | None = None,
    transformation: optax.GradientTransformation | None = None,
    progress: bool = False,
    **changes,
) -> Result:
    """Train a batch of seeds by the configured method; report on the flow's time axis.

    ``method="flow"`` integrates the gradient flow ``dθ/dt = −∇L(θ)`` of the
    exact population loss ``L(θ) = ½ E[(f_student(x) − f_teacher(x))²]``
    (`flow.integrate`); the discrete methods take optimiser steps, step k
    reported at time ``t = k·η`` (`discrete.train`; docs/model.md §4).

    **Arguments:**

    - `config`: a `SimulationConfig`; defaults to the paper's Figure 1 setting
      under gradient flow.
    - `seed_index`: which seeds to run (default ``range(config.seeds)``). Seed
      k gives the same trajectory alone or in any batch, and the same initial
      teacher and student under every method that uses the same coordinates.
    - `initial`: optional ``(teacher, student)`` with a leading seed axis,
      ``(S, m*, D)`` and ``(S, m, D)``, to start from instead of drawing them
      from the seeds' keys — e.g. to replay a saved run. `seed_index` then only
      labels the seeds (and keys the data of the discrete methods).
    - `transformation`: for ``method="optax"``, ``"online"`` or ``"dataset"``,
      an `optax.GradientTransformation` to use instead of the named
      ``config.optimizer``; its learning rate must be ``config.learning_rate``,
      which sets the time axis.
    - `progress`: show a progress bar (for the flow it follows the slowest seed).
    - `**changes`: fields of `SimulationConfig` to override, e.g. ``d=200``.

    **Returns:** a `Result` of NumPy arrays (see `jaxmoe.results.Result`).

    Example::

        result = jaxmoe.simulate(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        print(jaxmoe.format_summary(result))
        sgd = jaxmoe.simulate(result.config, method="online", learning_rate=0.05, batch_size=64, t_max=10.0)
        assert np.array_equal(sgd.seed_index, result.seed_index)    # the same seeds: the same initial students
    """
    if config is None:
        config = SimulationConfig()
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config must be a SimulationConfig; got {type(config).__name__}")
    config = config.replace(**changes) if changes else config
    if transformation is not None:
        if config.method == "flow":
            raise ValueError("a transformation is used by the discrete methods; set method to optax, online or dataset")
        if not isinstance(transformation, optax.GradientTransformation):
            raise TypeError(f"transformation must be an optax.GradientTransformation; got {type(transformation).__name__}")
    if seed_index is None:
        seed_index = np.arange(config.seeds if initial is None else _num_seeds(initial))
    seed_index = np.asarray(seed_index)
    if seed_index.ndim != 1 or seed_index.size < 1 or seed_index.dtype.kind not in "iu" or np.any(seed_index < 0):
        raise ValueError("seed_index must be a non-empty 1-D array of non-negative integers")
    if initial is not None and _num_seeds(initial) != seed_index.size:
        raise ValueError(f"initial holds {_num_seeds(initial)} seeds but seed_index names {seed_index.size}")
    times = flow.time_grid(config)
    start = time.perf_counter()
    with jax.enable_x64(config.state_dtype == "float64"):
        dtype = jnp.dtype(config.state_dtype)
        if initial is None:
            teacher, student = init_problem(config, seed_index.astype(np.int32))
            mode = "reduced" if uses_reduced(config) else "full"
        else:
            teacher, student = _check_initial(initial, config, seed_index.size)
            mode = "given"
        teacher, student = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), (teacher, student))
        if config.method == "flow":
            out = flow.integrate(config, teacher, student, times, progress=progress)
        else:
            out = discrete.train(config, teacher, student, seed_index, times, transformation=transformation, progress=progress)
            times = out["times"]
        teacher, student = jax.device_get((teacher, student))
    wall = time.perf_counter() - start
    saved = out["saved"]
    extra = {}
    for who, model, suffix in (("student", student, "0"), ("teacher", teacher, ""), ("student", out["student"], "")):
        for name, value in model.arrays().items():
            if name not in ("router", "expert"):
                extra[f"{who}_{name}{suffix}"] = np.asarray(value)
    for name in ("load", "quality"):
        if name in saved:
            extra[name] = saved[name]
    return Result(
        config=config,
        times=np.asarray(times, dtype=config.state_dtype),
        seed_index=seed_index.astype(np.int64),
        loss=saved["loss"],
        expert_alignment=saved["expert_alignment"],
        router_alignment=saved["router_alignment"],
        train_loss=saved.get("train_loss"),
        status=np.asarray(out["status"]).astype(np.int8),
        t_final=np.asarray(out["t_final"]),
        num_steps=np.asarray(out["num_steps"]).astype(np.int64),
        student_router0=student.router,
        student_expert0=student.expert,
        teacher_router=teacher.router,
        teacher_expert=teacher.expert,
        student_router=out["router"],
        student_expert=out["expert"],
        extra=extra,
        run={
            "method": config.method,
            "optimizer": None if config.method == "flow" else ("custom" if transformation is not None else config.optimizer),
            "mode": mode,
            "d": config.d,
            "coordinates": int(student.router.shape[-1]),
            "wall_time_s": wall,
            "jax": jax.__version__,
            "device": jax.devices()[0].device_kind,
            # The seeds are split over every local device (devices.py).
            "devices": num_devices(),
            "python": platform.python_version(),
            **out.get("run", {}),
        },
    )
