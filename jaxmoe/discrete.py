"""Discrete-time training: optax steps on the exact loss, online SGD, finite data.

Every method reports on the gradient-flow time axis (docs/model.md §4): step k of
learning rate η sits at time t = k·η, so its curves overlay the flow's.

- ``optax``: any optax optimiser on the exact population loss (gradient
  descent when it is plain SGD);
- ``online``: every step draws a fresh batch of B inputs x ~ N(0, I_d) and
  follows the gradient of the empirical loss ``½ mean (f_student − f_teacher)²``
  (the method of the paper's Figure 1);
- ``dataset``: a fixed training set of n inputs per seed, full batch or
  minibatches of B drawn without replacement at every step; the training
  loss is saved beside the exact population loss.

With ``retract=True`` every step is followed by a rescaling of each router and
expert vector to its initial norm (`retract`): the flow keeps those norms, a
discrete step grows them.

The whole run is one `lax.scan` over saved times, each advancing all seeds
(`jax.vmap`) by the steps up to the next saved time; the scan is compiled once.
With several local devices the seeds are split between them
(`devices.shard_seeds`); each seed's data come from its own key, so the
numbers do not depend on the split.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .base import Model
from .buckets import padded, trimmed
from .config import SimulationConfig
from .devices import blocks_per_device, in_blocks, num_devices, seed_block, shard_index, shard_seeds
from .init import seed_key
from .observables import observe
from .progress import step_bar
from .quadrature import mixture_loss

__all__ = ["make_optimizer", "retract", "step_schedule", "train", "vector_norms"]

# Independent stream for the data of each seed (the initialisation uses the
# seed's key itself).
_DATA_STREAM = 0x5EED


def make_optimizer(config) -> optax.GradientTransformation:
    """The optax transformation a configuration names, at its learning rate.

    ``"sgd"``: ``optax.sgd(η)``, the step ``θ ← θ − η g``; ``"momentum"`` and
    ``"nesterov"``: ``optax.sgd`` with heavy-ball or Nesterov momentum μ;
    ``"adam"``: ``optax.adam(η)`` ("Adam: A Method for Stochastic
    Optimization", arXiv 1412.6980); ``"rmsprop"``: ``optax.rmsprop(η)``.

    **Arguments:** `config`, a `SimulationConfig` (or anything with
    ``optimizer``, ``learning_rate`` η and ``momentum`` μ).

    **Returns:** an `optax.GradientTransformation`.

    Example::

        opt = jaxmoe.make_optimizer(jaxmoe.SimulationConfig(optimizer="momentum", learning_rate=0.01))
        state = opt.init(jnp.zeros(3))
        updates, state = opt.update(jnp.ones(3), state)
        assert np.allclose(updates, -0.01)      # the first step: −η · gradient
    """
    lr = config.learning_rate
    return {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=config.momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=config.momentum, nesterov=True),
        "adam": lambda: optax.adam(lr),
        "rmsprop": lambda: optax.rmsprop(lr),
    }[config.optimizer]()


def step_schedule(config: SimulationConfig, times: np.ndarray) -> np.ndarray:
    """The step index of each saved time: ``k = round(t / η)``; time ``k·η`` is what is reported.

    Step k of learning rate η sits at gradient-flow time ``t = k·η`` (docs/model.md §4).

    **Arguments:** a `SimulationConfig` (its `learning_rate` η), `times` ``(T,)``.

    **Returns:** int64 array ``(T,)``.

    Example::

        config = jaxmoe.SimulationConfig(learning_rate=0.05)
        assert list(jaxmoe.discrete.step_schedule(config, np.array([0.0, 0.12, 1.0]))) == [0, 2, 20]
    """
    return np.rint(np.asarray(times) / config.learning_rate).astype(np.int64)


# The vectors the model reads through their directions only (v̄, w̄, ū): the
# flow keeps their norms, and the retraction puts them back after each step.
_DIRECTION_FIELDS = ("router", "expert", "group_router")


def vector_norms(model: Model) -> dict[str, jax.Array]:
    """The norm of every router and expert vector: ``{"router": (..., m), "expert": (..., m)}``
    (and ``"group_router"`` for a hierarchical gate), over the last axis.

    Example::

        norms = jaxmoe.discrete.vector_norms(jaxmoe.init_student(4, 50, key=jax.random.PRNGKey(0)))
        assert sorted(norms) == ["expert", "router"] and norms["expert"].shape == (4,)
    """
    return {
        name: jnp.linalg.norm(getattr(model, name), axis=-1)
        for name in _DIRECTION_FIELDS
        if getattr(model, name, None) is not None
    }


def retract(model: Model, norms: dict[str, jax.Array]) -> Model:
    """Rescale every router and expert vector to the given norms: ``v ← v · ‖v₀‖ / ‖v‖``.

    The model depends on these vectors only through their directions, so the
    function it computes is unchanged; the step is undone only in the radial
    direction, which the gradient flow never moves (docs/model.md §1).

    **Arguments:** `model`; `norms` as `vector_norms` returns them (usually
    of the initial model).

    **Returns:** the model with rescaled vectors.

    Example::

        student = jaxmoe.init_student(4, 50, key=jax.random.PRNGKey(0))
        moved = jax.tree_util.tree_map(lambda a: 1.5 * a, student)
        back = jaxmoe.discrete.retract(moved, jaxmoe.discrete.vector_norms(student))
        assert np.allclose(back.router, student.router) and np.allclose(back.expert, student.expert)
    """
    names = tuple(norms)
    scaled = tuple(
        getattr(model, name) * (norms[name] / jnp.linalg.norm(getattr(model, name), axis=-1))[..., None]
        for name in names
    )
    return eqx.tree_at(lambda m: tuple(getattr(m, name) for name in names), model, scaled)


def _empirical_loss(student: Model, teacher: Model, x, t=None) -> jax.Array:
    return 0.5 * jnp.mean((student.forward(x, t) - teacher.forward(x, t)) ** 2)


class _Spec(NamedTuple):
    """The static part of a configuration: what the compiled scan depends on.

    The learning rate η and the momentum μ are not in it: they reach the scan
    as traced (weakly typed) scalars, so that one compiled scan serves every
    η and μ, as one compiled solve serves every rtol and t_max."""

    method: str
    batch_size: int
    num_samples: int | None
    optimizer: str
    progress: bool
    retract: bool
    block: int | None  # seeds per vmapped block (`devices.seed_block`); None: all at once


class _Rates(NamedTuple):
    """What `make_optimizer` reads, with η and μ traced inside the compiled scan."""

    optimizer: str
    learning_rate: jax.Array
    momentum: jax.Array


@functools.lru_cache(maxsize=16)
def _compiled_streams(method: str, num_samples: int | None, d: int, dtype: str, base_seed: int):
    """Each seed's training set (``"dataset"``: n inputs x ~ N(0, I_d); else empty) and step key, jitted once."""

    def streams(index):
        data_key, step_key = jax.random.split(jax.random.fold_in(seed_key(base_seed, index), _DATA_STREAM))
        if method == "dataset":
            # Labels come from the teacher, inside the scan.
            data = jax.random.normal(data_key, (num_samples, d), dtype)
        else:
            data = jnp.zeros((0,), dtype)
        return data, step_key

    return jax.jit(jax.vmap(streams))


@functools.lru_cache(maxsize=16)
def _compiled_train(spec: _Spec, custom: optax.GradientTransformation | None):
    """One jitted scan per static specification (and per custom optimiser object)."""
    full_batch = spec.method == "dataset" and spec.batch_size >= spec.num_samples

    def gradient(student, teacher, data, key, t):
        if spec.method == "optax":
            return jax.grad(mixture_loss)(student, teacher, t)
        if spec.method == "online":
            x = jax.random.normal(key, (spec.batch_size, student.dim), student.router.dtype)
            return jax.grad(_empirical_loss)(student, teacher, x, t)
        if full_batch:
            return jax.grad(_empirical_loss)(student, teacher, data, t)
        rows = jax.random.permutation(key, spec.num_samples)[: spec.batch_size]
        return jax.grad(_empirical_loss)(student, teacher, data[rows], t)

    def observe_one(student, teacher, data, t):
        out = observe(student, teacher, t)
        if spec.method == "dataset":
            out["train_loss"] = _empirical_loss(student, teacher, data, t)
        return out

    observe_all = jax.vmap(observe_one, in_axes=(0, 0, 0, None))

    def run(student, teacher, data, keys, save_steps, learning_rate, momentum):
        optimizer = custom if custom is not None else make_optimizer(_Rates(spec.optimizer, learning_rate, momentum))
        opt_state = jax.vmap(optimizer.init)(student)
        norms = jax.vmap(vector_norms)(student)  # the norms the retraction keeps

        def step_one(k, student, opt_state, teacher, data, key, norms):
            # Step k sits at flow time k·η, which a temperature schedule reads.
            t = k * learning_rate
            grad = gradient(student, teacher, data, jax.random.fold_in(key, k), t)
            updates, opt_state = optimizer.update(grad, opt_state, student)
            student = optax.apply_updates(student, updates)
            if spec.retract:
                student = retract(student, norms)
            return student, opt_state

        step_all = jax.vmap(step_one, in_axes=(None, 0, 0, 0, 0, 0, 0))

        def interval(carry, target):
            student, opt_state, k = carry

            def body(k, state):
                return step_all(k, *state, teacher, data, keys, norms)

            student, opt_state = jax.lax.fori_loop(k, target, body, (student, opt_state))
            if spec.progress:
                # Unordered: ordered effects cannot span several devices, and
                # every device reports the same targets (`update` keeps the largest).
                jax.debug.callback(step_bar.update, shard_index(), target)
            return (student, opt_state, target), observe_all(student, teacher, data, target * learning_rate)

        (student, _, _), saved = jax.lax.scan(interval, (student, opt_state, jnp.asarray(0, save_steps.dtype)), save_steps)
        # (times, seeds, ...) → (seeds, times, ...)
        saved = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, 1), saved)
        return saved, student

    # Student, teacher, data and keys carry the seed axis; the step schedule is
    # shared. Each device runs its seeds in blocks (one block on an accelerator).
    return shard_seeds(in_blocks(jax.jit(run), 4, spec.block), num_batched=4)


def train(
    config: SimulationConfig,
    teacher: Model,
    student: Model,
    seed_index: np.ndarray,
    times: np.ndarray,
    *,
    transformation: optax.GradientTransformation | None = None,
    progress: bool = False,
) -> dict:
    """Discrete training of a batch of seeds (arrays with a leading seed axis).

    Each step applies the optimiser to a gradient g_k (for plain SGD,
    ``θ_{k+1} = θ_k − η g_k``): the gradient of the exact population loss
    (``"optax"``), or of the empirical loss
    ``½ (1/B) Σ_b (f_student(x_b) − f_teacher(x_b))²`` over a fresh Gaussian
    batch (``"online"``) or a batch of the seed's training set
    (``"dataset"``). With ``config.retract`` every vector is then rescaled
    to its norm at the start (`retract`). `jaxmoe.simulate` is the usual entry point.

    **Arguments:**

    - `config`: the `SimulationConfig` (method, optimizer, η, B, n).
    - `teacher`, `student`: `jaxmoe.MoE` or `jaxmoe.families.Mixture` with arrays ``(S, m*, D)``, ``(S, m, D)``;
      D = d for ``"online"`` and ``"dataset"``.
    - `seed_index`: ``(S,)``, keys the data of each seed (`seed_key`).
    - `times`: the requested saved times ``(T,)``, rounded to whole steps.
    - `transformation`: an optax transformation used instead of
      ``config.optimizer`` (its step must be ``config.learning_rate``).
    - `progress`: a progress bar over steps.

    **Returns:** a dict: ``saved``, the observables (``{"loss": (S, T),
    "expert_alignment", "router_alignment": (S, T, m, m*)}`` and, for
    ``dataset``, ``"train_loss": (S, T)``); the final ``router`` and
    ``expert`` ``(S, m, D)``; ``t_final``, ``num_steps`` and ``status`` per
    seed ``(S,)``; and the ``times`` actually saved (multiples of η), ``(T,)``.

    Example::

        config = jaxmoe.SimulationConfig(d=100, m=4, m_star=2, seeds=2, t_max=15.0, time_grid="linear",
                                         method="online", learning_rate=0.05, batch_size=64)   # 301 times, one per step
        teacher, student = jaxmoe.init.init_problem(config, np.arange(2))   # d coordinates
        out = jaxmoe.discrete.train(config, teacher, student, np.arange(2), jaxmoe.time_grid(config))
        assert out["saved"]["loss"].shape == (2, 301) and np.allclose(out["times"][:3], [0.0, 0.05, 0.1])
    """
    save_steps = step_schedule(config, times)
    dtype = student.router.dtype

    # Padded (the last index repeated) and trimmed, as the draws are, so that one
    # compiled stream serves many seed counts; a seed's stream depends on its index only.
    streams = _compiled_streams(config.method, config.num_samples, config.d, np.dtype(dtype).name, config.base_seed)
    data, keys = trimmed(streams(jnp.asarray(padded(np.asarray(seed_index, np.int32)))), len(seed_index))
    spec = _Spec(
        config.method, config.batch_size, config.num_samples, config.optimizer, progress, config.retract,
        seed_block(config.m, config.m_star),
    )
    run = _compiled_train(spec, transformation)
    if progress:
        blocks = blocks_per_device(len(seed_index), spec.block)
        step_bar.open(int(save_steps[-1]), num_devices(), blocks)
    try:
        # η and μ as Python floats: traced, and weakly typed as the constants were.
        # The schedule is padded with its last step (no further steps, the
        # same state observed again) and the saves trimmed, so that one
        # compiled scan serves many numbers of saved times (`buckets.padded`).
        saved, final = run(student, teacher, data, keys, jnp.asarray(padded(save_steps)), float(config.learning_rate), float(config.momentum))
        saved, final = jax.device_get((saved, final))
        saved = trimmed(saved, len(save_steps), axis=1)
    finally:
        if progress:
            step_bar.close()
    loss = saved["loss"]
    finite = np.isfinite(loss)
    # A seed that diverged is flagged; its non-finite values stay as they are.
    status = np.where(finite.all(axis=1), 0, 3).astype(np.int8)
    last_finite = np.where(finite.any(axis=1), finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
    times_saved = save_steps * config.learning_rate
    t_final = np.where(status == 0, times_saved[-1], times_saved[last_finite])
    return dict(
        saved=saved,
        student=final,
        router=final.router,
        expert=final.expert,
        t_final=t_final,
        num_steps=np.full(len(seed_index), int(save_steps[-1])),
        status=status,
        times=times_saved,
    )
