"""Gradient flow on the exact population loss, vmapped over seeds.

The whole simulation, top to bottom:

1. each seed draws a teacher and a student from its own key (`init.py`);
2. the vector field is ``dθ/dt = −∇L(θ)``, with L the exact population loss
   (`population.py`) — no sampling anywhere;
3. diffrax integrates it, one solve per seed, compiled once: by default
   Tsit5 until its steps are stability-limited, then the stabilized
   Runge–Kutta–Chebyshev method RKC2 (`solvers.py`, docs/solvers.md), with
   PID step control. The state carries the loss of the solver's last
   vector-field evaluation beside the student (`solvers.AuxTerm`), so the
   stop event costs nothing. On an accelerator the seeds are vmapped (and
   split over the local devices, `devices.shard_seeds`); on a CPU they are
   solved one at a time (`devices.solve_block`);
4. the state is saved at the requested times and the observables
   (`observables.py`) are computed from it after the solve, plus each seed's
   initial and final student so the run can be replayed.

`jaxmoe.simulate` (simulation.py) draws the seeds and calls `integrate`.
A seed that hits the step limit or becomes non-finite is flagged in
`Result.status` (see `jaxmoe.results.STATUS_NAMES`); the other seeds are
unaffected (each seed keeps its own step size and stops on its own).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from .base import Model
from .buckets import padded, trimmed
from .config import SimulationConfig
from .devices import blocks_per_device, in_blocks, num_devices, shard_index, shard_seeds, solve_block
from .observables import expert_alignment, observe, router_alignment
from .pool import Phase, pool_facts, pool_solve
from .progress import SlowestSeedMeter, flow_bar
from .quadrature import mixture_loss
from .solvers import RKC2, AuxTerm, Tracked, state_norm

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

        geometric = jaxmoe.time_grid(jaxmoe.SimulationConfig(t_max=100.0, num_times=4))
        assert np.allclose(geometric, [0.0, 0.1, 3.16, 100.0], atol=0.01)
        linear = jaxmoe.time_grid(jaxmoe.SimulationConfig(t_max=100.0, num_times=3, time_grid="linear"))
        assert np.allclose(linear, [0.0, 50.0, 100.0])
    """
    if config.time_grid == "linear":
        return np.linspace(0.0, config.t_max, config.num_times)
    geometric = np.geomspace(config.t_first * config.t_max, config.t_max, config.num_times - 1)
    return np.concatenate([[0.0], geometric])


def vector_field(student: Model, teacher: Model, t=None) -> Model:
    """``dθ/dt = −∇L(θ)`` with respect to every array of the student.

    L is the exact `population_loss` (docs/model.md §1–2) for the paper's model,
    `jaxmoe.quadrature.mixture_loss` for other families
    (`jaxmoe.quadrature.mixture_loss`), differentiated by `jax.grad`. The paper's
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
        assert np.allclose(jnp.sum(field.router * student.router, axis=-1), 0.0, atol=1e-6)   # norms are conserved
    """
    return _field(t, student, teacher)[0]


# The default h·ρ at which solver "auto" hands over from Tsit5 to RKC2: a
# little inside Tsit5's real stability interval (which ends near 3.5), while
# its step controller still has room.
AUTO_SWITCH = 2.5


class _Spec(NamedTuple):
    """The static part of a configuration: what the compiled solve depends on
    (the model families are in the models' tree structure, which `jax.jit` keys on)."""

    solver: str
    dt: float | None
    max_steps: int
    progress: bool
    block: int | None  # seeds per vmapped block (`devices.solve_block`); None: all at once
    recovery_stop: bool  # whether the stop event checks full recovery (needs the alignments)
    save_states: bool  # save the state at the saved times and observe after the solve
    rkc_safety: float | None  # None: RKC2's own default
    auto_switch: float  # h·ρ at which "auto" hands over from Tsit5 to RKC2
    lanes: int | None  # seeds integrated at once by the seed pool (`pool.py`); None: no pool
    mixed: bool  # the vector field in float32, the state and the stop checks in float64


def _status_code(result) -> jax.Array:
    code = jnp.where(result == diffrax.RESULTS.event_occurred, 1, 4)
    code = jnp.where(result == diffrax.RESULTS.max_steps_reached, 2, code)
    code = jnp.where(result == diffrax.RESULTS.dt_min_reached, 3, code)
    return jnp.where(result == diffrax.RESULTS.successful, 0, code)


def _solver(name: str, spec: _Spec, *, stiffness: float | None = None) -> Tracked:
    """The diffrax solver for `name`, wrapped so that the state carries the loss (`solvers.Tracked`)."""
    # With the field in float32 (the first phase of mixed precision) the
    # power iteration's finite difference is sized for float32 rounding.
    eps = float(np.finfo(np.float32).eps) if spec.mixed and stiffness is not None else None
    if name == "rkc2":
        inner = RKC2(difference_eps=eps) if spec.rkc_safety is None else RKC2(safety=spec.rkc_safety, difference_eps=eps)
    else:
        inner = _SOLVERS[name]()
    return Tracked(inner, stiffness=stiffness, difference_eps=eps, noise=_MIXED_NOISE if eps is not None else None)


# Jitted, though only called inside the solve: traced once, not once per stage and
# solver (tracing the auto solve at m = 4, m* = 2: 9.5 s → 4.8 s; compiling unchanged).
@jax.jit
def _field(t, student, teacher):
    """``(−∇L, aux)``: the gradient flow and, from the same evaluation, the loss (`solvers.AuxTerm`)."""
    loss, gradient = jax.value_and_grad(mixture_loss)(student, teacher, t)
    rate = jax.tree_util.tree_map(jnp.negative, gradient)
    return rate, {"loss": loss, "stiff": jnp.zeros_like(loss)}


# The float32 field's rounding as a rate, for the error control (`solvers.Tracked`'s
# `noise`): measured at the Figure 1 size, −∇L in float32 is off by 1e-7 rms
# and 1.5e-6 at most. Without this floor the controller at rtol 1e-7 shrinks
# the steps to resolve rounding (measured: 1.7× the steps to t = 100, 6–10× to
# t = 1000, where the steps never grew to the stability limit and the switch to
# RKC2 never came); with it, 1.02–1.14× the float64 steps.
_MIXED_NOISE = 2e-7


def _field_mixed(t, student, teacher):
    """`_field` evaluated in float32 on a float64 state; the rate and loss come back as float64.

    The solver's linear combinations, the error norm, the saved states and
    the stop checks stay in float64; only the kernel (nearly all the work)
    runs in float32. Its rounding is about 1e-7 of the O(m + m*) terms the
    loss and the gradient are differences of (measured at the Figure 1
    size: 1e-7 rms, 1.5e-6 at most in −∇L), which is safe while the flow
    is far from converged and not stiff, and is why mixed precision uses it
    in the first phase of the auto solver only (docs/solvers.md). The loss
    returned here carries that rounding, so the stop event recomputes it in
    float64 near the threshold (`_compiled_solve`).
    """
    wide = jax.tree_util.tree_leaves(student)[0].dtype
    narrow = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
    rate, aux = _field(None if t is None else jnp.asarray(t, jnp.float32), narrow(student), narrow(teacher))
    return jax.tree_util.tree_map(lambda x: x.astype(wide), (rate, aux))


@functools.lru_cache(maxsize=32)
def _compiled_solve(spec: _Spec):
    """One jitted, seed-batched solve per static specification."""
    term = AuxTerm(_field)
    # Mixed precision: float32 while the flow is not stiff (auto's first phase).
    first_term = AuxTerm(_field_mixed) if spec.mixed else term

    def controller(t_max, rtol, atol):
        if spec.solver == "rk4":
            return diffrax.ConstantStepSize()
        # A non-finite trial step is rejected and the step shrunk; dtmin turns
        # that collapse into a prompt stop instead of spinning to max_steps.
        # (Traced, not static, as are the tolerances, so that one compiled
        # solve serves every t_max, rtol and atol.)
        # The norm reads the student only: the loss carried beside it is not integrated.
        return diffrax.PIDController(
            rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.3, dtmin=1e-12 * t_max, norm=state_norm
        )

    def stop(t, y, teacher, threshold, recovered_at, switch=False, **kwargs):
        # Checked after every accepted step, on the loss the step's last
        # vector-field evaluation gave: converged (loss below the threshold,
        # or every teacher expert recovered in expert and router alignment),
        # or broken beyond repair; in the first phase of "auto", also once the
        # steps are stability-limited.
        student, aux = y
        loss = aux["loss"]
        if spec.mixed and switch:
            # The carried loss is float32-accurate: within a wide margin of
            # the threshold, decide on the float64 loss. Gated for the whole
            # batch (under vmap a per-seed cond would evaluate it always).
            margin = 1e-4 * (student.router.shape[-2] + teacher.router.shape[-2])
            near = loss < threshold + margin
            loss = jax.lax.cond(
                eqxi.unvmap_any(near), lambda: jnp.where(near, mixture_loss(student, teacher, t), loss), lambda: loss
            )
        done = (loss < threshold) | ~jnp.isfinite(loss)
        if spec.recovery_stop:
            recovered = jnp.all(jnp.max(expert_alignment(student, teacher), axis=0) >= recovered_at) & jnp.all(
                jnp.max(router_alignment(student, teacher), axis=0) >= recovered_at
            )
            done = done | recovered
        if switch:
            done = done | (aux["stiff"] > 0)
        return done

    def save_fn(t, y, teacher):
        return y[0] if spec.save_states else observe(y[0], teacher, t)

    def initial(student0, teacher, t0):
        loss0 = mixture_loss(student0, teacher, t0)
        return student0, {"loss": loss0, "stiff": jnp.zeros_like(loss0)}

    def switches(t, y, teacher, result, threshold, recovered_at):
        """After the first phase of "auto": whether the seed goes on with RKC2 (it became stiff, not done)."""
        stiff = (result == diffrax.RESULTS.event_occurred) & (y[1]["stiff"] > 0)
        return stiff & ~stop(t, y, teacher, threshold, recovered_at)

    def phase(solver, y0, teacher, t0, times, threshold, recovered_at, tolerances, switch, start, index=0):
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=times, fn=save_fn), diffrax.SubSaveAt(t1=True)])
        event = diffrax.Event(functools.partial(stop, threshold=threshold, recovered_at=recovered_at, switch=switch))
        return diffrax.diffeqsolve(
            first_term if index == 0 else term,
            solver,
            t0=t0,
            t1=times[-1],
            dt0=spec.dt,
            y0=y0,
            args=teacher,
            saveat=saveat,
            stepsize_controller=controller(times[-1], *tolerances),
            max_steps=spec.max_steps,
            event=event,
            throw=False,
            progress_meter=SlowestSeedMeter(start=start, phase=index) if spec.progress else diffrax.NoProgressMeter(),
        )

    def integrate_one(student0, teacher, times, threshold, recovered_at, tolerances):
        """One seed by `diffrax.diffeqsolve`: saved times and values, final time and student, result, steps."""
        y0 = initial(student0, teacher, times[0])
        if spec.solver != "auto":
            solution = phase(
                _solver(spec.solver, spec), y0, teacher, times[0], times, threshold, recovered_at, tolerances, False, 0.0
            )
            saved_ts, final_ts = solution.ts
            saved, final = solution.ys
            final = jax.tree_util.tree_map(lambda x: x[0], final)  # the t1 save has a length-1 time axis
            return saved_ts, saved, final_ts[0], final, solution.result, solution.stats["num_steps"]
        # Tsit5 while its steps are set by accuracy, then RKC2 from the
        # first stability-limited step on (docs/solvers.md).
        first = phase(
            _solver("tsit5", spec, stiffness=spec.auto_switch), y0, teacher, times[0], times, threshold,
            recovered_at, tolerances, True, 0.0,
        )
        ts1, final_ts1 = first.ts
        saved1, final1 = first.ys
        y_switch = jax.tree_util.tree_map(lambda x: x[0], final1)
        switched = switches(final_ts1[0], y_switch, teacher, first.result, threshold, recovered_at)
        # A seed that has stopped runs an empty second phase (t0 = t_max).
        t_switch = jnp.where(switched, final_ts1[0], times[-1])
        second = phase(
            _solver("rkc2", spec), y_switch, teacher, t_switch, jnp.maximum(times, t_switch), threshold,
            recovered_at, tolerances, False, t_switch / times[-1], 1,
        )
        ts2, final_ts2 = second.ts
        saved2, final2 = second.ys
        first_part = jnp.isfinite(ts1)
        saved_ts = jnp.where(first_part, ts1, jnp.where(switched, ts2, ts1))

        def pick(a, b):
            mask = first_part.reshape(first_part.shape + (1,) * (a.ndim - 1))
            return jnp.where(mask | ~switched, a, b)

        saved = jax.tree_util.tree_map(pick, saved1, saved2)
        final = jax.tree_util.tree_map(lambda a, b: jnp.where(switched, b[0], a[0]), final1, final2)
        final_t = jnp.where(switched, final_ts2[0], final_ts1[0])
        result = diffrax.RESULTS.where(switched, second.result, first.result)
        num_steps = first.stats["num_steps"] + jnp.where(switched, second.stats["num_steps"], 0)
        return saved_ts, saved, final_t, final, result, num_steps

    def finish_one(saved_ts, saved, final_t, final, result, num_steps, teacher):
        """Observables at the saved times, unreached times filled, and the seed's status."""
        student = final[0]  # final is the state (student, aux)
        status = _status_code(result)
        # Times a seed never reached come back as inf. After an early stop they
        # hold the stopped state; after a failure they are NaN.
        reached = jnp.isfinite(saved_ts)
        if spec.save_states:
            # Observed after the solve, a few saved times at a time: inside the
            # solver loop each save would be a separate small evaluation.
            states = jax.tree_util.tree_map(
                lambda x: jnp.where(reached.reshape(reached.shape + (1,) * (x.ndim - 1)), x, 0), saved
            )
            saved = _observe_times(states, teacher, jnp.where(reached, saved_ts, 0))
        final_obs = observe(student, teacher, final_t)

        def fill(x, last):
            mask = reached.reshape(reached.shape + (1,) * (x.ndim - 1))
            filler = jnp.where(status == 1, last, jnp.nan)
            return jnp.where(mask, x, filler)

        saved = jax.tree_util.tree_map(fill, saved, final_obs)
        finite = jnp.isfinite(saved["loss"]).all()
        for leaf in jax.tree_util.tree_leaves(student):
            finite = finite & jnp.isfinite(leaf).all()
        status = jnp.where((status <= 1) & ~finite, 3, status)
        return saved, student, final_t, num_steps, status

    def solve_one(student0, teacher, times, threshold, recovered_at, tolerances):
        raw = integrate_one(student0, teacher, times, threshold, recovered_at, tolerances)
        return finish_one(*raw, teacher) + (jnp.asarray(0, jnp.int32),)

    def pooled(student, teacher, times, threshold, recovered_at, tolerances):
        """The seeds on `spec.lanes` lanes fed from a queue (`pool.py`)."""
        tsit5 = "tsit5" if spec.solver == "auto" else spec.solver
        first_stop = functools.partial(stop, threshold=threshold, recovered_at=recovered_at, switch=spec.solver == "auto")
        phases = [Phase(first_term, _solver(tsit5, spec, stiffness=spec.auto_switch if spec.solver == "auto" else None),
                        lambda t, y, args: first_stop(t, y, args))]
        handover = None
        if spec.solver == "auto":
            second_stop = functools.partial(stop, threshold=threshold, recovered_at=recovered_at)
            phases.append(Phase(term, _solver("rkc2", spec), lambda t, y, args: second_stop(t, y, args)))
            handover = lambda index, t, y, args, result: switches(t, y, args, result, threshold, recovered_at)
        on_finish = None
        if spec.progress:
            on_finish = lambda count: jax.debug.callback(flow_bar.report_seeds, shard_index(), count)
        out = pool_solve(
            phases, controller(times[-1], *tolerances), initial=initial, save_fn=save_fn, students=student, args=teacher,
            times=times, lanes=spec.lanes, max_steps=spec.max_steps, dt0=spec.dt, handover=handover,
            on_finish=on_finish,
        )
        finished = jax.vmap(finish_one)(
            out["ts"], out["saved"], out["t_final"], out["y_final"], out["result"], out["num_steps"], teacher
        )
        return finished + (out["finished_at"],)

    vmapped = jax.vmap(solve_one, in_axes=(0, 0, None, None, None, None))

    def batched(student, teacher, *shared):
        seeds = student.router.shape[0]
        if spec.lanes is not None and spec.lanes < seeds:
            return pooled(student, teacher, *shared)
        if seeds == 1:
            # One seed: solve it without vmap, whose batching rules turn every
            # branch of diffrax's loop into a select (measured: 20% a step).
            one = jax.tree_util.tree_map(lambda x: x[0], (student, teacher))
            return jax.tree_util.tree_map(lambda x: x[None], solve_one(*one, *shared))
        return vmapped(student, teacher, *shared)

    # Student and teacher carry the seed axis; times and thresholds are shared.
    # Each device runs its seeds in blocks (one block on an accelerator, or
    # the seed pool); a block's loop ends when its own seeds are done.
    return shard_seeds(in_blocks(jax.jit(batched), 2, spec.block), num_batched=2)


def _observe_times(states: Model, teacher: Model, ts) -> dict:
    """`observe` at every saved time, `_OBSERVED_AT_ONCE` times at once (`devices.in_blocks`).

    Measured on a CPU at the Figure 1 size, 301 times inside a whole solve:
    8 at a time 0.16 s (4: 0.19 s, 1: 0.27 s), all at once 0.89 s, where the
    routing quadrature's intermediates (4096 nodes × experts, per time) fall
    out of the caches.
    """
    at_times = jax.vmap(lambda state, t, teacher: observe(state, teacher, t), in_axes=(0, 0, None))
    return in_blocks(at_times, 2, _OBSERVED_AT_ONCE)(states, ts, teacher)


_OBSERVED_AT_ONCE = 8

# Above this many saved numbers per seed (state size × saved times) the
# observables are computed inside the solve instead (e.g. full coordinates at
# large d), so that the saved states never take much memory.
_SAVED_STATE_BUDGET = 2_000_000


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
        assert out["saved"]["loss"].shape == (2, 301) and out["status"].shape == (2,)   # one status per seed
    """
    if config.solver == "rk4" and config.max_steps < (needed := int(np.ceil(config.t_max / config.dt))):
        raise ValueError(f"rk4 with dt = {config.dt} needs {needed} steps; max_steps is {config.max_steps}")
    # Padded saved times (the last repeated; saves trimmed after the solve): one compiled
    # solve serves many numbers of saved times (`buckets.padded`); the steps ignore them.
    num_saved, times = len(times), padded(times)
    state_size = sum(int(np.prod(np.shape(leaf)[1:])) for leaf in jax.tree_util.tree_leaves(student))
    seeds = student.router.shape[0]
    per_device = -(-seeds // num_devices())
    lanes = config.lanes
    if lanes == 1:
        lanes = None  # one lane: the seeds one after another, each solved alone
        block = 1
    else:
        block = solve_block() if lanes is None else None
    pooled = lanes is not None and lanes < per_device
    spec = _Spec(
        solver=config.solver,
        dt=config.dt,
        max_steps=config.max_steps,
        progress=progress,
        block=block,
        recovery_stop=config.recovery_epsilon is not None,
        save_states=state_size * len(times) <= _SAVED_STATE_BUDGET,
        rkc_safety=config.rkc_safety,
        auto_switch=AUTO_SWITCH if config.auto_switch is None else config.auto_switch,
        lanes=lanes,
        mixed=config.dtype == "mixed",
    )
    dtype = student.router.dtype
    # Without a threshold the stopping event still catches non-finite seeds.
    threshold = jnp.asarray(config.loss_threshold or -1.0, dtype)
    # Alignments never exceed 1, so 2 disables the recovery stop.
    recovered_at = jnp.asarray(2.0 if config.recovery_epsilon is None else 1.0 - config.recovery_epsilon, dtype)
    # Traced, in the state's dtype (as a Python float would be taken).
    tolerances = jnp.asarray([config.rtol, config.atol], dtype)
    solve = _compiled_solve(spec)
    if progress:
        if pooled:
            flow_bar.open_seeds(num_devices(), seeds)
        else:
            flow_bar.open(num_devices(), blocks_per_device(seeds, spec.block))
    finished = False
    try:
        saved, final, t_final, num_steps, status, finished_at = solve(
            student, teacher, jnp.asarray(times, dtype), threshold, recovered_at, tolerances
        )
        out = jax.device_get(dict(saved=saved, student=final, t_final=t_final, num_steps=num_steps, status=status))
        out["saved"] = trimmed(out["saved"], num_saved, axis=1)
        out["router"], out["expert"] = out["student"].router, out["student"].expert
        out["run"] = pool_facts(lanes, per_device, np.asarray(finished_at), out["num_steps"]) if pooled else {}
        finished = True
    finally:
        if progress:
            flow_bar.close(finished)
    return out
