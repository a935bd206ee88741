"""Gradient flow on the exact population loss, vmapped over seeds.

The whole simulation, top to bottom:

1. each seed draws a teacher and a student from its own key (`init.py`);
2. the vector field is ``dθ/dt = −∇L(θ)``, with L the exact population loss
   (`population.py`) — no sampling anywhere;
3. diffrax integrates it with an adaptive Runge–Kutta method and PID step
   control, one solve per seed under `jax.vmap`, compiled once;
4. only the observables (`observables.py`) are saved, at the requested times,
   plus each seed's initial and final student so the run can be replayed.

A seed that hits the step limit or becomes non-finite is flagged in
`Result.status`; the other seeds are unaffected (each lane of the vmapped
solve keeps its own step size and stops on its own).
"""

from __future__ import annotations

import functools
import platform
import time
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .config import SimulationConfig
from .init import init_problem, uses_reduced
from .model import MoE
from .observables import observe
from .population import population_loss
from .results import STATUS_NAMES, Result

__all__ = ["simulate", "time_grid", "vector_field"]

_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "rk4": diffrax.Tsit5,  # replaced below: diffrax has no named RK4 solver
}


def time_grid(config: SimulationConfig) -> np.ndarray:
    """The saved times: linear on [0, t_max], or 0 then geometric up to t_max."""
    if config.time_grid == "linear":
        return np.linspace(0.0, config.t_max, config.num_times)
    geometric = np.geomspace(config.t_first * config.t_max, config.t_max, config.num_times - 1)
    return np.concatenate([[0.0], geometric])


def vector_field(student: MoE, teacher: MoE) -> MoE:
    """``−∇L`` with respect to the student's router and expert vectors."""
    gradient = jax.grad(population_loss)(student, teacher)
    return jax.tree_util.tree_map(jnp.negative, gradient)


class _Spec(NamedTuple):
    """The static part of a configuration: what the compiled solve depends on."""

    gate: str
    expert: str
    solver: str
    rtol: float
    atol: float
    dt: float | None
    max_steps: int
    progress: bool


class _RK4(diffrax.AbstractERK):
    """The classical fourth-order Runge–Kutta method (fixed steps, no error estimate)."""

    tableau = diffrax.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


def _status_code(result) -> jax.Array:
    code = jnp.where(result == diffrax.RESULTS.event_occurred, 1, 4)
    code = jnp.where(result == diffrax.RESULTS.max_steps_reached, 2, code)
    code = jnp.where(result == diffrax.RESULTS.dt_min_reached, 3, code)
    return jnp.where(result == diffrax.RESULTS.successful, 0, code)


@functools.lru_cache(maxsize=32)
def _compiled_solve(spec: _Spec):
    """One jitted, seed-vmapped solve per static specification."""
    solver = _RK4() if spec.solver == "rk4" else _SOLVERS[spec.solver]()

    def controller(t_max):
        if spec.solver == "rk4":
            return diffrax.ConstantStepSize()
        # A non-finite trial step is rejected and the step shrunk; dtmin turns
        # that collapse into a prompt stop instead of spinning to max_steps.
        # (Traced, not static, so that one compiled solve serves every t_max.)
        return diffrax.PIDController(
            rtol=spec.rtol, atol=spec.atol, pcoeff=0.3, icoeff=0.3, dtmin=1e-12 * t_max
        )

    def field(t, y, teacher):
        return vector_field(MoE(*y, spec.gate, spec.expert), teacher)

    def field_tuple(t, y, teacher):
        v = field(t, y, teacher)
        return (v.router, v.expert)

    def observables(t, y, teacher):
        return observe(MoE(*y, spec.gate, spec.expert), teacher)

    def stop(t, y, teacher, threshold, **kwargs):
        # Checked after every accepted step: converged, or broken beyond repair.
        loss = population_loss(MoE(*y, spec.gate, spec.expert), teacher)
        return (loss < threshold) | ~jnp.isfinite(loss)

    def solve_one(router0, expert0, teacher_router, teacher_expert, times, threshold):
        teacher = MoE(teacher_router, teacher_expert, spec.gate, spec.expert)
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=times, fn=observables), diffrax.SubSaveAt(t1=True)])
        event = diffrax.Event(functools.partial(stop, threshold=threshold))
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field_tuple),
            solver,
            t0=times[0],
            t1=times[-1],
            dt0=spec.dt,
            y0=(router0, expert0),
            args=teacher,
            saveat=saveat,
            stepsize_controller=controller(times[-1]),
            max_steps=spec.max_steps,
            event=event,
            throw=False,
            progress_meter=diffrax.TqdmProgressMeter(refresh_steps=50) if spec.progress else diffrax.NoProgressMeter(),
        )
        saved_ts, final_ts = solution.ts
        saved, (router, expert) = solution.ys
        router, expert = router[0], expert[0]  # the t1 save has a length-1 time axis
        status = _status_code(solution.result)
        # Times a seed never reached come back as inf. After an early stop they
        # hold the stopped state; after a failure they are NaN.
        reached = jnp.isfinite(saved_ts)
        final_obs = observe(MoE(router, expert, spec.gate, spec.expert), teacher)

        def fill(x, last):
            mask = reached.reshape(reached.shape + (1,) * (x.ndim - 1))
            filler = jnp.where(status == 1, last, jnp.nan)
            return jnp.where(mask, x, filler)

        saved = jax.tree_util.tree_map(fill, saved, final_obs)
        finite = jnp.isfinite(saved["loss"]).all() & jnp.isfinite(router).all() & jnp.isfinite(expert).all()
        status = jnp.where((status <= 1) & ~finite, 3, status)
        return saved, router, expert, final_ts[0], solution.stats["num_steps"], status

    batched = jax.vmap(solve_one, in_axes=(0, 0, 0, 0, None, None))
    return jax.jit(batched)


def _num_seeds(initial, config) -> int:
    if not (isinstance(initial, tuple) and len(initial) == 2 and all(isinstance(x, MoE) for x in initial)):
        raise TypeError("initial must be a tuple (teacher, student) of jaxmoe.MoE")
    if initial[1].router.ndim != 3:
        raise ValueError("initial models need a leading seed axis: shapes (S, m*, D) and (S, m, D)")
    return initial[1].router.shape[0]


def _check_initial(initial, config: SimulationConfig, num_seeds: int) -> tuple[MoE, MoE]:
    teacher, student = initial
    _num_seeds(initial, config)
    dim = student.router.shape[-1]
    expected = {"teacher": (num_seeds, config.m_star, dim), "student": (num_seeds, config.m, dim)}
    for name, model in (("teacher", teacher), ("student", student)):
        if model.router.shape != expected[name]:
            raise ValueError(f"initial {name} must have shape {expected[name]}; got {model.router.shape}")
        if model.gate.name != config.gate or model.expert_fn.name != config.expert:
            raise ValueError(
                f"initial {name} uses gate {model.gate.name!r} and expert {model.expert_fn.name!r}; "
                f"the configuration says {config.gate!r} and {config.expert!r}"
            )
    return teacher, student


def simulate(
    config: SimulationConfig | None = None,
    /,
    *,
    seed_index=None,
    initial: tuple[MoE, MoE] | None = None,
    progress: bool = False,
    **changes,
) -> Result:
    """Integrate the gradient flow ``dθ/dt = −∇L(θ)`` for a batch of seeds.

    **Arguments:**

    - `config`: a `SimulationConfig`; defaults to the paper's Figure 1 setting.
    - `seed_index`: which seeds to run (default ``range(config.seeds)``). Seed
      k gives the same trajectory alone or in any batch.
    - `initial`: optional ``(teacher, student)`` with a leading seed axis,
      ``(S, m*, D)`` and ``(S, m, D)``, to start from instead of drawing them
      from the seeds' keys — e.g. to replay a saved run, or to start from a
      hand-made configuration. `seed_index` then only labels the seeds.
    - `progress`: show a progress bar (tracks the slowest seed).
    - `**changes`: fields of `SimulationConfig` to override, e.g. ``d=200``.

    **Returns:** a `Result` of NumPy arrays (see `jaxmoe.results.Result`).

    Example::

        result = jaxmoe.simulate(d=100, m=6, m_star=2, seeds=3, t_max=200.0)
        print(jaxmoe.format_summary(result))
    """
    if config is None:
        config = SimulationConfig()
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config must be a SimulationConfig; got {type(config).__name__}")
    config = config.replace(**changes) if changes else config
    if seed_index is None:
        seed_index = np.arange(config.seeds if initial is None else _num_seeds(initial, config))
    seed_index = np.asarray(seed_index)
    if seed_index.ndim != 1 or seed_index.size < 1 or seed_index.dtype.kind not in "iu" or np.any(seed_index < 0):
        raise ValueError("seed_index must be a non-empty 1-D array of non-negative integers")
    times = time_grid(config)
    if config.solver == "rk4" and config.max_steps < np.ceil(config.t_max / config.dt):
        raise ValueError(
            f"rk4 with dt = {config.dt} needs {int(np.ceil(config.t_max / config.dt))} steps; "
            f"max_steps is {config.max_steps}"
        )
    spec = _Spec(
        gate=config.gate,
        expert=config.expert,
        solver=config.solver,
        rtol=config.rtol,
        atol=config.atol,
        dt=config.dt,
        max_steps=config.max_steps,
        progress=progress,
    )
    start = time.perf_counter()
    with jax.enable_x64(config.dtype == "float64"):
        dtype = jnp.dtype(config.dtype)
        if initial is None:
            teacher, student = init_problem(config, seed_index.astype(np.int32))
        else:
            teacher, student = _check_initial(initial, config, seed_index.size)
        # Without a threshold the stopping event still catches non-finite seeds.
        threshold = jnp.asarray(config.loss_threshold or -1.0, dtype)
        saved, router, expert, t_final, num_steps, status = _compiled_solve(spec)(
            student.router.astype(dtype),
            student.expert.astype(dtype),
            teacher.router.astype(dtype),
            teacher.expert.astype(dtype),
            jnp.asarray(times, dtype),
            threshold,
        )
        host = jax.device_get(
            dict(saved=saved, router=router, expert=expert, t_final=t_final, num_steps=num_steps, status=status,
                 student=student, teacher=teacher)
        )
    wall = time.perf_counter() - start
    return Result(
        config=config,
        times=times.astype(config.dtype),
        seed_index=seed_index.astype(np.int64),
        loss=host["saved"]["loss"],
        expert_alignment=host["saved"]["expert_alignment"],
        router_alignment=host["saved"]["router_alignment"],
        status=host["status"].astype(np.int8),
        t_final=host["t_final"],
        num_steps=host["num_steps"].astype(np.int64),
        student_router0=host["student"].router,
        student_expert0=host["student"].expert,
        teacher_router=host["teacher"].router,
        teacher_expert=host["teacher"].expert,
        student_router=host["router"],
        student_expert=host["expert"],
        run={
            "method": "gradient_flow",
            "mode": "reduced" if initial is None and uses_reduced(config) else ("full" if initial is None else "given"),
            "coordinates": int(host["router"].shape[-1]),
            "wall_time_s": wall,
            "d": config.d,
            "jax": jax.__version__,
            "device": jax.devices()[0].device_kind,
            "python": platform.python_version(),
        },
    )
