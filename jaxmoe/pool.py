"""A seed pool: a fixed number of lanes fed from a queue of seeds, in one compiled loop.

A vmapped adaptive solve (`diffrax.diffeqsolve` under `jax.vmap`) steps
every seed until its slowest one stops: in the Figure 1 setting the slowest
of 1000 seeds takes about 3× the mean seed's steps, so two thirds of the
batch's work is spent on seeds that are already done. Here a batch has
``lanes`` lanes. Each lane integrates one seed; when that seed stops
(threshold, recovery, horizon, step limit, failure) the lane writes the
seed's results and takes the next seed from the queue. So a batch costs
about the sum of its seeds' steps over ``lanes``, plus the tail where the
last seeds finish.

The loop is diffrax's own, written out over lanes (diffrax's ``loop`` in
``_integrate.py``, the parts a gradient flow uses): the solver's
`init`/`step`, the step-size controller's `init`/`adapt_step_size`, the
clipping of the last step to ``t1``, a boolean stop event checked after
every step, the saved times interpolated with the solver's dense output,
``max_steps`` per phase. A seed therefore takes exactly the steps it takes
in `diffrax.diffeqsolve`, and its numbers agree to rounding
(tests/test_pool.py holds them together).

A solve may have several *phases* (``solver="auto"``: Tsit5, then RKC2 from
the first stability-limited step). When a seed's phase stops, `handover`
decides whether it continues in the next phase from where it stopped (a
fresh solver and controller, as a second `diffeqsolve` would start) or is
done.

Work per loop iteration, in order:

1. lanes waiting to start a phase are initialised, at most `refill` of them
   an iteration (gathered, initialised under vmap, scattered back), so a
   lane that frees up costs the others little;
2. every running lane takes one step; a phase's step runs only if some lane
   is in that phase, and lanes not in it are fed a copy of one that is, so
   the masked-out work stays finite and as cheap as real work;
3. the saved times each lane's step passed are interpolated and written
   straight into the per-seed outputs;
4. lanes whose seed stopped hand over to the next phase, or write the seed's
   final state and take the next seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

__all__ = ["Phase", "pool_solve", "default_refill", "pool_facts"]


class Phase(NamedTuple):
    """One phase of a solve: its diffrax term and solver, and its stop condition ``stop(t, y, args) → bool``."""

    term: diffrax.AbstractTerm
    solver: diffrax.AbstractAdaptiveSolver
    stop: Callable[[Array, PyTree, PyTree], Array]


def default_refill(lanes: int) -> int:
    """Lanes initialised per loop iteration at most: an eighth of the pool (at least 1).

    A phase's initialisation costs about 25 evaluations of the vector field
    (the controller's first step size, the power iteration's cold start)
    and runs vmapped over the lanes it initialises; capping it keeps a
    freed lane from costing every other lane that much. Example::

        assert jaxmoe.pool.default_refill(128) == 16
    """
    return max(1, lanes // 8)


def _select(mask, a, b):
    """Per lane: a where mask else b (mask has the lane axis only)."""
    return jtu.tree_map(lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y), a, b)


def _clip_to_end(tprev, tnext, t1, t1_clip_floor, keep_step):
    # diffrax's rule: a step ending within 100 ULP of t1 ends at t1.
    clip = tnext > t1_clip_floor
    tclip = jnp.where(keep_step, t1, tprev + 0.5 * (t1 - tprev))
    return jnp.where(clip, tclip, tnext)


class _Lane(NamedTuple):
    seed: Array  # index into the queue; S when the lane is idle
    phase: Array
    waiting: Array  # the phase has not been initialised yet
    tprev: Array
    tnext: Array
    t1_floor: Array
    y: PyTree
    args: PyTree
    solver_states: tuple
    controller_state: PyTree
    result: Any  # diffrax.RESULTS item
    steps: Array  # steps of this phase (max_steps applies per phase)
    total: Array  # steps of the finished phases
    save_index: Array


def pool_solve(
    phases: Sequence[Phase],
    controller: diffrax.AbstractStepSizeController,
    *,
    initial: Callable[[PyTree, PyTree, Array], PyTree],
    save_fn: Callable[[Array, PyTree, PyTree], PyTree],
    students: PyTree,
    args: PyTree,
    times: Array,
    lanes: int,
    max_steps: int,
    dt0: float | None = None,
    handover: Callable[[int, Array, PyTree, PyTree, Any], Array] | None = None,
    refill: int | None = None,
    on_finish: Callable[[Array], Any] | None = None,
) -> dict:
    """Solve ``S`` seeds on `lanes` lanes, each seed from ``times[0]`` to ``times[-1]``.

    **Arguments:**

    - `phases`: the term, solver and stop condition of each phase, in order.
    - `controller`: the step-size controller (its ``t1`` clipping is done
      here, as diffrax does it).
    - `initial(student, args, t0)`: the solver state ``y0`` of a seed (e.g.
      the student and the loss carried beside it).
    - `save_fn(t, y, args)`: what to save at each requested time.
    - `students`, `args`: per-seed PyTrees with a leading seed axis ``S``.
    - `times`: the saved times ``(T,)``; the solve runs over
      ``[times[0], times[-1]]``.
    - `lanes`: seeds integrated at once (at most S are used).
    - `max_steps`: steps per seed and phase; `dt0`: the first step (None: the
      controller picks it).
    - `handover(phase, t, y, args, result)`: whether a seed whose phase
      stopped continues in the next phase (None: never).
    - `refill`: lanes initialised per iteration at most (`default_refill`).
    - `on_finish(count)`: called (traced, inside the loop) with the number of
      seeds this pool has finished, each time that number grows; e.g. a
      `jax.debug.callback` that moves a progress bar.

    **Returns:** a dict with leading seed axis: ``ts`` ``(S, T)`` (inf where
    a seed never got), ``saved`` (`save_fn`'s output, ``(S, T, …)``),
    ``t_final``, ``y_final``, ``result`` (a `diffrax.RESULTS` item),
    ``num_steps`` (all phases), ``finished_at`` (the loop iteration in which
    the seed finished); and ``lane_steps``, the lane-steps that advanced a
    seed, and ``iterations``, the loop iterations (scalars).
    """
    num_seeds = jtu.tree_leaves(students)[0].shape[0]
    lanes = max(1, min(int(lanes), num_seeds))
    refill = default_refill(lanes) if refill is None else max(1, min(int(refill), lanes))
    t0, t1 = times[0], times[-1]
    dtype = jnp.result_type(times)
    num_times = times.shape[0]
    t1_floor = t1
    for _ in range(100):
        t1_floor = eqxi.prevbefore(t1_floor)

    def seed_arrays(seed):
        index = jnp.minimum(seed, num_seeds - 1)
        return jtu.tree_map(lambda x: x[index], (students, args))

    # Shapes of a lane's state, from the first seed (nothing is computed here).
    student0, args0 = seed_arrays(jnp.asarray(0))
    y_struct = jax.eval_shape(initial, student0, args0, t0)

    def solver_state_struct(phase):
        return jax.eval_shape(lambda y: phase.solver.init(phase.term, t0, t1, y, args0), y_struct)

    solver_structs = tuple(solver_state_struct(p) for p in phases)
    controller_struct = jax.eval_shape(
        lambda y: controller.init(phases[0].term, t0, t1, y, dt0, args0, phases[0].solver.func,
                                  phases[0].solver.error_order(phases[0].term))[1],
        y_struct,
    )
    zeros = lambda struct: jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), struct)
    save_struct = jax.eval_shape(save_fn, t0, y_struct, args0)

    # ---- one lane ---------------------------------------------------------------

    def init_lane(index: int, lane: _Lane) -> _Lane:
        term, solver, stop = phases[index]
        # A new seed starts from its student; a handed-over one from its state.
        y0 = initial(lane.y[0], lane.args, lane.tprev) if index == 0 else lane.y
        tstart = lane.tprev
        error_order = solver.error_order(term)
        tnext, controller_state = controller.init(term, tstart, t1, y0, dt0, lane.args, solver.func, error_order)
        tnext = jnp.minimum(tnext, t1)
        state = solver.init(term, tstart, tnext, y0, lane.args)
        states = tuple(state if k == index else s for k, s in enumerate(lane.solver_states))
        result = diffrax.RESULTS.where(stop(tstart, y0, lane.args), diffrax.RESULTS.event_occurred,
                                       diffrax.RESULTS.successful)
        return lane._replace(
            waiting=jnp.asarray(False), tnext=tnext, y=y0, solver_states=states,
            controller_state=controller_state, result=result, steps=jnp.asarray(0, jnp.int32),
        )

    def step_lane(index: int, lane: _Lane):
        term, solver, stop = phases[index]
        y, y_error, dense_info, state, solver_result = solver.step(
            term, lane.tprev, lane.tnext, lane.y, lane.args, lane.solver_states[index], False
        )
        y_error = jtu.tree_map(lambda x: jnp.where(jnp.isnan(x), jnp.inf, x), y_error)
        keep, tprev, tnext, _, controller_state, controller_result = controller.adapt_step_size(
            lane.tprev, lane.tnext, lane.y, y, lane.args, y_error, solver.error_order(term), lane.controller_state
        )
        tprev = jnp.minimum(tprev, t1)
        tnext = _clip_to_end(tprev, tnext, t1, lane.t1_floor, keep)
        keep_tree = lambda a, b: jtu.tree_map(lambda x, z: jnp.where(keep, x, z), a, b)
        y = keep_tree(y, lane.y)
        state = keep_tree(state, lane.solver_states[index])
        solver_result = diffrax.RESULTS.where(keep, solver_result, diffrax.RESULTS.successful)
        ok = diffrax.is_okay(lane.result)
        result = diffrax.RESULTS.where(ok, solver_result, lane.result)
        result = diffrax.RESULTS.where(diffrax.is_okay(result), controller_result, result)
        result = diffrax.RESULTS.where(stop(tprev, y, lane.args), diffrax.RESULTS.event_occurred, result)
        states = tuple(state if k == index else s for k, s in enumerate(lane.solver_states))
        new = lane._replace(
            tprev=tprev, tnext=tnext, y=y, solver_states=states, controller_state=controller_state,
            result=result, steps=lane.steps + 1,
        )
        # What the saves need: the step's interval and dense output, and whether it was kept.
        return new, (keep, lane.tprev, lane.tnext, dense_info)

    def running(lane: _Lane):
        return (
            (lane.seed < num_seeds) & ~lane.waiting & (lane.tprev < t1)
            & diffrax.is_successful(lane.result) & (lane.steps < max_steps)
        )

    # ---- the pool ----------------------------------------------------------------

    def init_some(lanes_state: _Lane) -> _Lane:
        waiting = lanes_state.waiting & (lanes_state.seed < num_seeds)
        (picked,) = jnp.nonzero(waiting, size=refill, fill_value=0)
        valid = jnp.arange(refill) < jnp.sum(waiting)
        chosen = jtu.tree_map(lambda x: x[picked], lanes_state)
        for index in range(len(phases)):
            mine = valid & (chosen.phase == index)

            def run(chosen=chosen, mine=mine, index=index):
                # Lanes not in this phase get a copy of one that is (finite, same cost).
                donor = jtu.tree_map(lambda x: x[jnp.argmax(mine)], chosen)
                inputs = _select(mine, chosen, jtu.tree_map(lambda x: jnp.broadcast_to(x, (refill,) + x.shape), donor))
                return _select(mine, jax.vmap(functools.partial(init_lane, index))(inputs), chosen)

            chosen = jax.lax.cond(jnp.any(mine), run, lambda chosen=chosen: chosen)
        target = jnp.where(valid, picked, lanes)  # out of range: dropped
        return jtu.tree_map(lambda x, c: x.at[target].set(c, mode="drop"), lanes_state, chosen)

    def step_phase(index: int, carry):
        lanes_state, outputs, useful = carry
        mine = running(lanes_state) & (lanes_state.phase == index)

        def run():
            donor = jtu.tree_map(lambda x: x[jnp.argmax(mine)], lanes_state)
            inputs = _select(mine, lanes_state, jtu.tree_map(lambda x: jnp.broadcast_to(x, (lanes,) + x.shape), donor))
            stepped, (keep, tprev, tnext, dense_info) = jax.vmap(functools.partial(step_lane, index))(inputs)
            interpolation = phases[index].solver.interpolation_cls

            def pending(save_index):
                return mine & keep & (save_index < num_times) & (times[jnp.minimum(save_index, num_times - 1)] <= tnext)

            def save_body(c):
                save_index, out_ts, out_saved = c
                due = pending(save_index)
                t_save = times[jnp.minimum(save_index, num_times - 1)]

                def one(info, a, b, t, lane_args):
                    y_t = interpolation(t0=a, t1=b, **info).evaluate(t)
                    return save_fn(t, y_t, lane_args)

                values = jax.vmap(one)(dense_info, tprev, tnext, t_save, stepped.args)
                rows = jnp.where(due, stepped.seed, num_seeds)
                out_ts = out_ts.at[rows, save_index].set(t_save, mode="drop")
                out_saved = jtu.tree_map(lambda o, v: o.at[rows, save_index].set(v, mode="drop"), out_saved, values)
                return save_index + due.astype(save_index.dtype), out_ts, out_saved

            save_index, out_ts, out_saved = jax.lax.while_loop(
                lambda c: jnp.any(pending(c[0])), save_body,
                (stepped.save_index, outputs["ts"], outputs["saved"]),
            )
            stepped = stepped._replace(save_index=save_index)
            return _select(mine, stepped, lanes_state), dict(outputs, ts=out_ts, saved=out_saved)

        lanes_state, outputs = jax.lax.cond(jnp.any(mine), run, lambda: (lanes_state, outputs))
        return lanes_state, outputs, useful + jnp.sum(mine, dtype=useful.dtype)

    def finish(lanes_state: _Lane, outputs: dict, next_seed, finished, iteration):
        active = (lanes_state.seed < num_seeds) & ~lanes_state.waiting
        stopped = active & ~running(lanes_state)

        def run():
            lane = lanes_state
            # diffrax's final status: still running after max_steps is max_steps_reached.
            unfinished = (lane.tprev < t1) & diffrax.is_successful(lane.result)
            result = jax.vmap(lambda u, r: diffrax.RESULTS.where(u, diffrax.RESULTS.max_steps_reached, r))(unfinished, lane.result)
            if handover is None or len(phases) == 1:
                onward = jnp.zeros_like(stopped)
            else:
                go = jax.vmap(lambda p, t, y, a, r: jax.lax.switch(
                    jnp.minimum(p, len(phases) - 2),
                    [functools.partial(handover, k) for k in range(len(phases) - 1)], t, y, a, r,
                ))(lane.phase, lane.tprev, lane.y, lane.args, result)
                onward = stopped & go & (lane.phase < len(phases) - 1)
            done = stopped & ~onward
            rows = jnp.where(done, lane.seed, num_seeds)
            out = dict(outputs)
            out["t_final"] = outputs["t_final"].at[rows].set(lane.tprev, mode="drop")
            out["y_final"] = jtu.tree_map(lambda o, v: o.at[rows].set(v, mode="drop"), outputs["y_final"], lane.y)
            out["result"] = jtu.tree_map(lambda o, v: o.at[rows].set(v, mode="drop"), outputs["result"], result)
            out["num_steps"] = outputs["num_steps"].at[rows].set(lane.total + lane.steps, mode="drop")
            out["finished_at"] = outputs["finished_at"].at[rows].set(iteration, mode="drop")
            # Handed over: the next phase starts where this one stopped.
            lane = lane._replace(
                phase=jnp.where(onward, lane.phase + 1, lane.phase),
                waiting=lane.waiting | onward,
                total=jnp.where(onward, lane.total + lane.steps, lane.total),
                steps=jnp.where(onward, 0, lane.steps),
            )
            # Done: take the next seed from the queue.
            rank = jnp.cumsum(done, dtype=next_seed.dtype) - 1
            seed = jnp.where(done, next_seed + rank, lane.seed)
            fresh = done & (seed < num_seeds)
            new_student, new_args = jax.vmap(seed_arrays)(seed)
            lane = lane._replace(
                seed=jnp.where(done & ~fresh, num_seeds, seed),
                phase=jnp.where(done, 0, lane.phase),
                waiting=lane.waiting | fresh,
                tprev=jnp.where(fresh, t0, lane.tprev),
                y=_select(fresh, (new_student, lane.y[1]), lane.y),
                args=_select(fresh, new_args, lane.args),
                total=jnp.where(done, 0, lane.total),
                steps=jnp.where(done, 0, lane.steps),
                save_index=jnp.where(fresh, 0, lane.save_index),
            )
            count = finished + jnp.sum(done, dtype=finished.dtype)
            if on_finish is not None:
                jax.lax.cond(jnp.any(done), lambda: on_finish(count), lambda: None)
            return lane, out, next_seed + jnp.sum(done, dtype=next_seed.dtype), count

        return jax.lax.cond(jnp.any(stopped), run, lambda: (lanes_state, outputs, next_seed, finished))

    # ---- start: the first `lanes` seeds, initialised together ---------------------

    first = jnp.arange(lanes)
    first_students, first_args = jax.vmap(seed_arrays)(first)
    # Only the student is read: `init_lane` builds the rest of y0 (the loss) itself.
    y_placeholder = (first_students, jax.vmap(lambda _: zeros(y_struct[1]))(first))
    lanes_state = _Lane(
        seed=first,
        phase=jnp.zeros(lanes, jnp.int32),
        waiting=jnp.ones(lanes, bool),
        tprev=jnp.full(lanes, t0, dtype),
        tnext=jnp.full(lanes, t0, dtype),
        t1_floor=jnp.full(lanes, t1_floor, dtype),
        y=y_placeholder,
        args=first_args,
        solver_states=tuple(jax.vmap(lambda _, s=s: zeros(s))(first) for s in solver_structs),
        controller_state=jax.vmap(lambda _: zeros(controller_struct))(first),
        result=jax.vmap(lambda _: diffrax.RESULTS.successful)(first),
        steps=jnp.zeros(lanes, jnp.int32),
        total=jnp.zeros(lanes, jnp.int32),
        save_index=jnp.zeros(lanes, jnp.int32),
    )
    lanes_state = jax.vmap(functools.partial(init_lane, 0))(lanes_state)

    outputs = dict(
        ts=jnp.full((num_seeds, num_times), jnp.inf, dtype),
        saved=jtu.tree_map(lambda s: jnp.full((num_seeds, num_times) + s.shape, jnp.inf, s.dtype), save_struct),
        t_final=jnp.zeros(num_seeds, dtype),
        y_final=jtu.tree_map(lambda s: jnp.zeros((num_seeds,) + s.shape, s.dtype), y_struct),
        result=jax.vmap(lambda _: diffrax.RESULTS.successful)(jnp.arange(num_seeds)),
        num_steps=jnp.zeros(num_seeds, jnp.int32),
        finished_at=jnp.zeros(num_seeds, jnp.int32),
    )

    def body(carry):
        lanes_state, outputs, next_seed, finished, useful, iteration = carry
        waiting = lanes_state.waiting & (lanes_state.seed < num_seeds)
        lanes_state = jax.lax.cond(jnp.any(waiting), init_some, lambda s: s, lanes_state)
        for index in range(len(phases)):
            lanes_state, outputs, useful = step_phase(index, (lanes_state, outputs, useful))
        lanes_state, outputs, next_seed, finished = finish(lanes_state, outputs, next_seed, finished, iteration)
        return lanes_state, outputs, next_seed, finished, useful, iteration + 1

    def cond(carry):
        return carry[3] < num_seeds

    carry = (lanes_state, outputs, jnp.asarray(lanes, jnp.int32), jnp.asarray(0, jnp.int32),
             jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
    _, outputs, _, _, useful, iterations = jax.lax.while_loop(cond, body, carry)
    return dict(outputs, lane_steps=useful, iterations=iterations)


def pool_facts(lanes: int, per_device: int, finished_at: np.ndarray, num_steps: np.ndarray) -> dict:
    """The seed pool's lanes, loop iterations and lane utilisation (lane-steps that advanced a seed ÷ lane-steps run).

    Each device runs its own pool on a contiguous share of ``per_device``
    seeds (`devices.shard_seeds`); a pool runs until its last seed is done.
    """
    lane_steps = 0
    for start in range(0, finished_at.size, per_device):
        share = finished_at[start : start + per_device]
        lane_steps += min(lanes, share.size) * (int(share.max()) + 1)
    return {
        "lanes": int(lanes),
        "pool_iterations": int(finished_at.max()) + 1,
        "lane_utilisation": float(np.sum(num_steps)) / lane_steps,
    }
