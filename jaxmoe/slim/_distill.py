"""Training a slimmed student by gradient flow on the distillation loss.

The distillation loss of a stage is the exact population loss with the
previous stage's model in the teacher's place, mixed with the true teacher's:

    L_α(θ) = α · ½ E[(f_θ − f*)²] + (1 − α) · ½ E[(f_θ − f_prev)²]

Both terms are `jaxmoe.quadrature.mixture_loss` (the exact kernel of
docs/model.md §2 for the paper's model, the rule `loss_rule` picks for
other families), so the mixture is exact where the rule is. One exception:
for mlp experts both terms run their quasi-Monte Carlo rule in the input
coordinates, not in the frame of the span (``frame=False``): a slimmed
student's rows repeat the previous model's, and as they train they come
close to the teacher's, and the frame is discontinuous at both (measured
along an α = 1 stage of the mlp study, seed 0: the framed field's spectral
radius rose from 1.3 to 4.5 by t = 1 and to 1e6 at the step limit, 2000
steps before t = 10, while in the input coordinates it stayed at 0.40).
α = 1 is fine-tuning on the teacher (what `jaxmoe prune` does); α = 0 is
pure distillation. The flow
``dθ/dt = −∇L_α`` is integrated by diffrax (Tsit5, PID step control, as the
fine-tuning of `jaxmoe.prune`), each seed on its own step sizes; what is
saved is the loss against the true teacher, the quantity every stage is
judged by.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..base import Model
from ..devices import in_blocks, solve_block
from ..quadrature import mixture_loss
from ._schedule import check_alpha

__all__ = ["distillation_loss", "distill"]


def distillation_loss(student: Model, teacher: Model, previous: Model, alpha: float, t=None):
    """``α L(student, teacher) + (1 − α) L(student, previous)``, exact (one seed, no seed axis).

    A weight of 0 drops its term altogether, so α = 1 is exactly the loss
    `jaxmoe.simulate` trains on (for mlp experts: the same rule in the input
    coordinates, module docstring) and α = 0 exactly the loss against `previous`.

    Example::

        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        teacher, student = jaxmoe.init_teacher(2, 20, key=k1), jaxmoe.init_student(4, 20, key=k2)
        jaxmoe.slim.distillation_loss(student, teacher, teacher, 0.5)   # = population_loss(student, teacher)
    """
    alpha = float(alpha)
    total = 0.0
    # Out of the span's frame: a slimmed student starts as a copy of part of
    # `previous` and trains towards the teacher, and the frame of the
    # quasi-Monte Carlo rule (mlp experts) is discontinuous where rows repeat
    # (`jaxmoe.quadrature.quasi_monte_carlo_loss`, ``frame``).
    if alpha > 0:
        total = total + alpha * mixture_loss(student, teacher, t, frame=False)
    if alpha < 1:
        total = total + (1.0 - alpha) * mixture_loss(student, previous, t, frame=False)
    return total


def _status(result, finite) -> jax.Array:
    # The codes of jaxmoe.results.STATUS_NAMES (no early stop here, so never "converged").
    code = jnp.where(result == diffrax.RESULTS.max_steps_reached, 2, 4)
    code = jnp.where(result == diffrax.RESULTS.dt_min_reached, 3, code)
    code = jnp.where(result == diffrax.RESULTS.successful, 0, code)
    return jnp.where((code == 0) & ~finite, 3, code)


@functools.lru_cache(maxsize=16)
def _compiled(alpha: float, rtol: float, atol: float, max_steps: int):
    """One jitted solve per (α, tolerances, step limit); jax.jit keys on the models' families and shapes."""

    def field(t, student, args):
        teacher, previous = args
        gradient = jax.grad(distillation_loss)(student, teacher, previous, alpha, t)
        return jax.tree_util.tree_map(jnp.negative, gradient)

    def solve_one(student, teacher, previous, times):
        saveat = diffrax.SaveAt(
            subs=[
                diffrax.SubSaveAt(ts=times, fn=lambda t, y, args: mixture_loss(y, args[0], t)),
                diffrax.SubSaveAt(t1=True),
            ]
        )
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            t0=times[0],
            t1=times[-1],
            dt0=None,
            y0=student,
            args=(teacher, previous),
            saveat=saveat,
            # The controller of the project's flow (`jaxmoe.flow`): dtmin turns a
            # collapse of the step size (a non-finite state) into a prompt stop.
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.3, dtmin=1e-12 * times[-1]),
            max_steps=max_steps,
            throw=False,
        )
        loss, final = solution.ys
        final = jax.tree_util.tree_map(lambda x: x[0], final)
        reached = jnp.isfinite(solution.ts[0])
        finite = jnp.all(jnp.isfinite(jnp.where(reached, loss, 0.0)))
        for leaf in jax.tree_util.tree_leaves(final):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        # Times a failed seed never reached come back as inf: NaN loss there.
        loss = jnp.where(reached, loss, jnp.nan)
        return loss, final, _status(solution.result, finite), solution.stats["num_steps"]

    def batched(student, teacher, previous, times):
        if student.router.shape[0] == 1:
            # One seed alone: vmap would turn every branch of the loop into a select.
            one = jax.tree_util.tree_map(lambda x: x[0], (student, teacher, previous))
            return jax.tree_util.tree_map(lambda x: x[None], solve_one(*one, times))
        return jax.vmap(solve_one, in_axes=(0, 0, 0, None))(student, teacher, previous, times)

    # Seeds vmapped on an accelerator; one at a time on a CPU (`devices.solve_block`).
    return in_blocks(jax.jit(batched), 3, solve_block())


def distill(
    teacher: Model,
    previous: Model,
    student: Model,
    *,
    alpha: float,
    t_max: float,
    num_times: int = 51,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 200_000,
) -> dict:
    """Gradient flow of a batch of seeds on the distillation loss `distillation_loss`.

    **Arguments:**

    - `teacher`, `previous`, `student`: models with a leading seed axis (the
      true teacher, the previous stage's model, the slimmed student to train),
      in float64 or float32.
    - `alpha` in [0, 1]; `t_max` > 0, the stage's time budget; `num_times`
      saved times on a linear grid from 0; `rtol`, `atol`, `max_steps`: the
      solver's tolerances and step limit per seed.

    **Returns:** a dict of host arrays: ``times`` (T,), ``loss`` (S, T) against
    the true teacher (NaN past a seed's failure), ``student`` (the final
    model, seed axis), ``status`` (S,) (indices into `jaxmoe.STATUS_NAMES`:
    success, step_limit, non_finite, solver_error), ``num_steps`` (S,).

    Example::

        teacher = jaxmoe.MoE(jnp.eye(4)[None, :2], jnp.eye(4)[None, 2:])
        out = jaxmoe.slim.distill(teacher, teacher, teacher, alpha=0.0, t_max=1.0)
        out["loss"][0, -1]   # 0: the teacher is a fixed point
    """
    alpha = check_alpha(alpha)
    if not np.isfinite(t_max) or t_max <= 0:
        raise ValueError(f"t_max must be a finite number > 0; got {t_max!r}")
    if num_times < 2:
        raise ValueError(f"num_times must be at least 2; got {num_times}")
    dtype = student.router.dtype
    times = np.linspace(0.0, float(t_max), int(num_times))
    solve = _compiled(alpha, float(rtol), float(atol), int(max_steps))
    loss, final, status, steps = solve(student, teacher, previous, jnp.asarray(times, dtype))
    loss, final, status, steps = jax.device_get((loss, final, status, steps))
    return {
        "times": times,
        "loss": np.asarray(loss),
        "student": final,
        "status": np.asarray(status).astype(np.int8),
        "num_steps": np.asarray(steps).astype(np.int64),
    }
