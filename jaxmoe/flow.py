"""Gradient flow on the exact population loss, vmapped over seeds.

The whole simulation, top to bottom:

1. each seed draws a teacher and a student from its own key (`init.py`);
2. the vector field is ``dθ/dt = −∇L(θ)``, with L the exact population loss
   (`population.py`) — no sampling anywhere;
3. diffrax integrates it with an adaptive Runge–Kutta method and PID step
   control, one solve per seed under `jax.vmap`, compiled once; with several
   local devices the seeds are split between them (`devices.shard_seeds`),
   each device running its own solve;
4. only the observables (`observables.py`) are saved, at the requested times,
   plus each seed's initial and final student so the run can be replayed.

`jaxmoe.simulate` (simulation.py) draws the seeds and calls `integrate`.
A seed that hits the step limit or becomes non-finite is flagged in
`Result.status` (see `jaxmoe.results.STATUS_NAMES`); the other seeds are
unaffected (each lane of the vmapped solve keeps its own step size and stops
on its own).
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from .config import SimulationConfig
from .devices import blocks_per_device, in_blocks, num_devices, seed_block, shard_index, shard_seeds
from .models import Model, model_loss
from .observables import observe

__all__ = ["integrate", "time_grid", "vector_field"]

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


_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "rk4": _RK4,
}


def time_grid(config: SimulationConfig) -> np.ndarray:
    """The saved times: linear on [0, t_max], or 0 then geometric up to t_max.

    With T = `num_times`: ``"linear"`` gives ``t_k = k·t_max/(T − 1)``, k = 0 … T − 1;
    ``"log"`` gives ``t_0 = 0`` and ``t_k = t_max·t_first^{(T−1−k)/(T−2)}``,
    k = 1 … T − 1 (geometric from ``t_first·t_max`` to ``t_max``).

    **Arguments:** a `SimulationConfig`. **Returns:** float64 NumPy array ``(T,)``.

    Example::

        jaxmoe.time_grid(jaxmoe.SimulationConfig(t_max=100.0, num_times=4))                       # [0, 0.1, 3.16, 100]
        jaxmoe.time_grid(jaxmoe.SimulationConfig(t_max=100.0, num_times=3, time_grid="linear"))   # [0, 50, 100]
    """
    if config.time_grid == "linear":
        return np.linspace(0.0, config.t_max, config.num_times)
    geometric = np.geomspace(config.t_first * config.t_max, config.t_max, config.num_times - 1)
    return np.concatenate([[0.0], geometric])


def vector_field(student: Model, teacher: Model, t=None) -> Model:
    """``dθ/dt = −∇L(θ)`` with respect to every array of the student.

    L is the exact `population_loss` (DESIGN §1–2) for the paper's model,
    `jaxmoe.quadrature.mixture_loss` for other families
    (`jaxmoe.models.model_loss`), differentiated by `jax.grad`. The paper's
    L depends on v_i, w_i only through their directions, so
    ``v_i·∂L/∂v_i = w_i·∂L/∂w_i = 0``: the flow conserves every norm (so do
    the routers of every gate family, which enter as unit vectors).

    **Arguments:** one `student` ``(m, D)``, one `teacher` ``(m*, D)``
    (`jaxmoe.MoE` or `jaxmoe.families.Mixture`); `t`, the flow time (for a
    temperature schedule).

    **Returns:** a model of the student's type holding ``−∂L/∂θ`` for each array.

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher, student = jaxmoe.init_teacher(2, 20, key=k1), jaxmoe.init_student(4, 20, key=k2)
        field = jaxmoe.flow.vector_field(student, teacher)
        jnp.sum(field.router * student.router, axis=-1)      # ≈ 0: norms are conserved
    """
    gradient = jax.grad(model_loss)(student, teacher, t)
    return jax.tree_util.tree_map(jnp.negative, gradient)


class _Spec(NamedTuple):
    """The static part of a configuration: what the compiled solve depends on
    (the model families are in the models' tree structure, which `jax.jit` keys on)."""

    solver: str
    rtol: float
    atol: float
    dt: float | None
    max_steps: int
    progress: bool
    block: int | None  # seeds per vmapped block (`devices.seed_block`); None: all at once
    # Whether the stop event needs the observables (a loss threshold or a
    # recovery stop); without, it checks the state for non-finite values
    # only, and the solve compiles one loss evaluation fewer.
    stop_on_observables: bool = True


def _status_code(result) -> jax.Array:
    code = jnp.where(result == diffrax.RESULTS.event_occurred, 1, 4)
    code = jnp.where(result == diffrax.RESULTS.max_steps_reached, 2, code)
    code = jnp.where(result == diffrax.RESULTS.dt_min_reached, 3, code)
    return jnp.where(result == diffrax.RESULTS.successful, 0, code)


class _Progress:
    """One tqdm bar (percent of t_max) for a solve whose seeds may be split over devices.

    diffrax's `TqdmProgressMeter` opens a bar per compiled solve; with the
    seeds spread over devices every device runs its own solve, and one bar
    each would fight over the terminal. Instead every device reports the
    progress of its slowest seed here, and the bar shows the slowest device.
    """

    def __init__(self):
        self.bar = None
        self.done = np.zeros(0)  # per device: finished blocks + fraction of the current one
        self.last = np.zeros(0)
        self.blocks = 1
        self.lock = threading.Lock()  # devices report from their own threads

    def open(self, devices: int, blocks: int = 1):
        """`blocks`: seed blocks each device runs one after another (`devices.in_blocks`)."""
        import tqdm

        self.done, self.last, self.blocks = np.zeros(devices), np.zeros(devices), blocks
        self.bar = tqdm.tqdm(total=100, unit="%", bar_format="{percentage:.2f}%|{bar}| [{elapsed}<{remaining}]")

    def report(self, device, fraction):
        fraction = float(fraction)
        with self.lock:
            if self.bar is None or not np.isfinite(fraction):
                return
            device = int(device)
            # Within a block the slowest running seed only moves forward, so a
            # step back means the device has started its next block.
            if fraction < self.last[device] and self.done[device] < self.blocks - 1:
                self.done[device] = np.floor(self.done[device]) + 1
            self.last[device] = fraction
            self.done[device] = max(self.done[device], np.floor(self.done[device]) + fraction)
            self.bar.n = round(100 * float(self.done.min()) / self.blocks, 2)
            self.bar.refresh()

    def close(self, finished: bool):
        with self.lock:
            if self.bar is not None:
                if finished:  # seeds that stopped early count as done
                    self.bar.n = 100
                self.bar.close()
                self.bar = None


_progress = _Progress()


class _SlowestSeedMeter(diffrax.AbstractProgressMeter):
    """Feeds `_progress` from inside the compiled solve: this device's slowest running seed.

    Reports every `refresh_steps` steps, through a host callback that does
    not return anything (so it costs the solve nothing but the call).

    Under vmap a seed that has stopped (early stop or failure) keeps its
    frozen state while the loop body still runs for it; counting it would
    freeze the bar at the first seed to stop. Its step counter is frozen too,
    so the seeds still running are those whose counter equals the largest.
    """

    refresh_steps: int = 50

    def init(self):
        return jnp.asarray(0), shard_index()

    def step(self, state, progress):
        count, block = state
        newest = eqxi.unvmap_max(count)
        due = eqxi.nonbatchable(newest % self.refresh_steps == 0)
        slowest = -eqxi.unvmap_max(jnp.where(count == newest, -progress, -jnp.inf))
        jax.lax.cond(
            due,
            lambda: jax.debug.callback(_progress.report, eqxi.unvmap_max(block), slowest),
            lambda: None,
        )
        return count + 1, block

    def close(self, state):
        del state  # `integrate` closes the host bar once every device is done


@functools.lru_cache(maxsize=32)
def _compiled_solve(spec: _Spec):
    """One jitted, seed-vmapped solve per static specification."""
    solver = _SOLVERS[spec.solver]()

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
        return vector_field(y, teacher, t)

    def observables(t, y, teacher):
        return observe(y, teacher, t)

    def stop(t, y, teacher, threshold, recovered_at, **kwargs):
        # Checked after every accepted step: converged (loss below the
        # threshold, or every teacher expert recovered in expert and router
        # alignment), or broken beyond repair.
        if not spec.stop_on_observables:
            finite = jnp.asarray(True)
            for leaf in jax.tree_util.tree_leaves(y):
                finite = finite & jnp.isfinite(leaf).all()
            return ~finite
        obs = observe(y, teacher, t)
        loss = obs["loss"]
        recovered = jnp.all(jnp.max(obs["expert_alignment"], axis=0) >= recovered_at) & jnp.all(
            jnp.max(obs["router_alignment"], axis=0) >= recovered_at
        )
        return (loss < threshold) | recovered | ~jnp.isfinite(loss)

    def solve_one(student0, teacher, times, threshold, recovered_at):
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=times, fn=observables), diffrax.SubSaveAt(t1=True)])
        event = diffrax.Event(functools.partial(stop, threshold=threshold, recovered_at=recovered_at))
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            solver,
            t0=times[0],
            t1=times[-1],
            dt0=spec.dt,
            y0=student0,
            args=teacher,
            saveat=saveat,
            stepsize_controller=controller(times[-1]),
            max_steps=spec.max_steps,
            event=event,
            throw=False,
            progress_meter=_SlowestSeedMeter() if spec.progress else diffrax.NoProgressMeter(),
        )
        saved_ts, final_ts = solution.ts
        saved, student = solution.ys
        student = jax.tree_util.tree_map(lambda x: x[0], student)  # the t1 save has a length-1 time axis
        status = _status_code(solution.result)
        # Times a seed never reached come back as inf. After an early stop they
        # hold the stopped state; after a failure they are NaN.
        reached = jnp.isfinite(saved_ts)
        final_obs = observe(student, teacher, final_ts[0])

        def fill(x, last):
            mask = reached.reshape(reached.shape + (1,) * (x.ndim - 1))
            filler = jnp.where(status == 1, last, jnp.nan)
            return jnp.where(mask, x, filler)

        saved = jax.tree_util.tree_map(fill, saved, final_obs)
        finite = jnp.isfinite(saved["loss"]).all()
        for leaf in jax.tree_util.tree_leaves(student):
            finite = finite & jnp.isfinite(leaf).all()
        status = jnp.where((status <= 1) & ~finite, 3, status)
        return saved, student, final_ts[0], solution.stats["num_steps"], status

    batched = jax.vmap(solve_one, in_axes=(0, 0, None, None, None))
    # Student and teacher carry the seed axis; times and thresholds are shared.
    # Each device runs its seeds in blocks (one block on an accelerator); a
    # block's while loop ends when its own seeds are done.
    return shard_seeds(in_blocks(jax.jit(batched), 2, spec.block), num_batched=2)


def integrate(config: SimulationConfig, teacher: Model, student: Model, times: np.ndarray, *, progress: bool = False) -> dict:
    """Gradient flow ``dθ/dt = −∇L(θ)`` of a batch of seeds (models with a leading seed axis).

    Solved by diffrax (``config.solver`` with PID step control, or fixed-step
    rk4), each seed stopping on its own at the loss threshold, at full
    recovery (``config.recovery_epsilon``) or when its state turns non-finite.
    `jaxmoe.simulate` is the usual entry point; this is the step it calls.

    **Arguments:**

    - `config`: the `SimulationConfig` (solver, tolerances, stopping rules).
    - `teacher`, `student`: `jaxmoe.MoE` or `jaxmoe.families.Mixture` with
      arrays ``(S, m*, D)`` and ``(S, m, D)``, in the dtype to integrate in.
    - `times`: the saved times ``(T,)``, from 0 (e.g. `time_grid`).
    - `progress`: show a progress bar (the slowest running seed).

    **Returns:** a dict of host arrays: ``saved``, the observables at `times`
    (``{"loss": (S, T), "expert_alignment": (S, T, m, m*), "router_alignment":
    (S, T, m, m*)}``); the final ``student`` (a model with a seed axis) and
    its ``router`` and ``expert`` ``(S, m, D)``; and
    per seed ``t_final``, ``num_steps`` and ``status`` (an index into
    `STATUS_NAMES`), each ``(S,)``.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=200.0)
        teacher, student = jaxmoe.init.init_problem(config, np.arange(2))
        out = jaxmoe.flow.integrate(config, teacher, student, jaxmoe.time_grid(config))
        out["saved"]["loss"].shape, out["status"]        # (2, 301), one status per seed
    """
    if config.solver == "rk4" and config.max_steps < np.ceil(config.t_max / config.dt):
        raise ValueError(
            f"rk4 with dt = {config.dt} needs {int(np.ceil(config.t_max / config.dt))} steps; "
            f"max_steps is {config.max_steps}"
        )
    spec = _Spec(
        solver=config.solver,
        rtol=config.rtol,
        atol=config.atol,
        dt=config.dt,
        max_steps=config.max_steps,
        progress=progress,
        block=seed_block(config.m, config.m_star),
        stop_on_observables=config.loss_threshold is not None or config.recovery_epsilon is not None,
    )
    dtype = student.router.dtype
    # Without a threshold the stopping event still catches non-finite seeds.
    threshold = jnp.asarray(config.loss_threshold or -1.0, dtype)
    # Alignments never exceed 1, so 2 disables the recovery stop.
    recovered_at = jnp.asarray(2.0 if config.recovery_epsilon is None else 1.0 - config.recovery_epsilon, dtype)
    solve = _compiled_solve(spec)
    if progress:
        blocks = blocks_per_device(student.router.shape[0], spec.block)
        _progress.open(num_devices(), blocks)
    finished = False
    try:
        saved, final, t_final, num_steps, status = solve(
            student, teacher, jnp.asarray(times, dtype), threshold, recovered_at
        )
        out = jax.device_get(dict(saved=saved, student=final, t_final=t_final, num_steps=num_steps, status=status))
        out["router"], out["expert"] = out["student"].router, out["student"].expert
        finished = True
    finally:
        if progress:
            _progress.close(finished)
    return out
