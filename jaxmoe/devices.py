"""Spreading the seed axis over the local devices.

Seeds never talk to each other, so a batch of seeds splits across devices
with no communication at all: each device runs the same compiled function on
its own block of seeds. `shard_seeds` wraps a seed-batched function so that
this happens whenever more than one local device is present, with no change
to the caller; on one device it returns the function itself.

`jax.shard_map` is used rather than letting the compiler propagate a
`NamedSharding` through the program: under shard_map each device runs its own
copy of the program, so a `while_loop` (diffrax's adaptive solve) stops when
*its own* seeds are done, with no cross-device reduction of the loop
condition at every step.

Agreement with one device: same seeds, same statuses and step counts, values
equal to rounding. XLA compiles a multi-device program through its SPMD
pipeline, which simplifies a few expressions differently (e.g. it keeps
``a / b`` where the single-device pipeline multiplies by ``1 / b``), so single
evaluations can differ in the last bit and trajectories by what those bits
grow to (about 1e-12 relative over a short flow).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Int, Shaped

__all__ = ["AXIS", "num_devices", "shard_index", "shard_seeds"]

# The mesh axis the seeds are split along.
AXIS = "seeds"


def num_devices() -> int:
    """How many devices a seed batch is spread over: all local devices.

    Example::

        jaxmoe.devices.num_devices()     # 1 on a machine with one CPU device
    """
    return len(jax.local_devices())


def shard_index() -> Int[Array, ""]:
    """Which block of seeds the calling code runs on: 0 to `num_devices()` − 1.

    For code traced inside a `shard_seeds` function (e.g. to report progress
    per device); 0 when the seeds are not split.

    **Returns:** an int32 scalar, ``jax.lax.axis_index("seeds")`` under shard_map.

    Example::

        jaxmoe.devices.shard_index()     # 0: not inside a sharded function
    """
    try:
        return jax.lax.axis_index(AXIS)
    except NameError:  # not under shard_map: one block
        return jnp.asarray(0, jnp.int32)


def _pad(x: Shaped[Array, "S ..."], pad: int) -> Shaped[Array, "S+pad ..."]:
    """Repeat the last seed `pad` times.

    A copy of a real seed runs exactly like it, so padded lanes stay finite
    and never trip a non-finite stop or lengthen the solve.
    """
    if pad == 0:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)


def _num_seeds(batched) -> int:
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree_util.tree_leaves(batched)}
    if len(sizes) != 1:
        raise ValueError(f"seed-batched arguments disagree on the number of seeds: {sorted(sizes)}")
    return sizes.pop()


def shard_seeds(fn: Callable, num_batched: int, *, devices=None) -> Callable:
    """Run `fn` with its seed axis split over the local devices.

    **Arguments:**

    - `fn`: a function (typically jitted and `vmap`ped over seeds) whose first
      `num_batched` positional arguments are PyTrees of arrays with a leading
      seed axis (S, …), the rest replicated; every output leaf must have the
      leading seed axis too. It must not communicate across seeds.
    - `num_batched`: how many leading arguments carry the seed axis.
    - `devices`: the devices to use (default: all local devices).

    **Returns:** `fn` itself on a single device (no overhead, identical
    results); otherwise a jitted function with `fn`'s signature that pads the
    seed axis to a multiple of the device count, runs `fn` under
    `jax.shard_map` over a one-axis mesh named ``"seeds"`` (each device gets
    a contiguous block of seeds) and trims the padding from every output.
    Build it once and keep it (e.g. under `functools.lru_cache`): the
    returned function caches its compilation per argument shape.

    Example::

        f = jaxmoe.devices.shard_seeds(jax.jit(jax.vmap(jnp.sin)), num_batched=1)
        f(jnp.arange(10.0))    # = jnp.sin(jnp.arange(10.0)), seeds split over the local devices
    """
    devices = jax.local_devices() if devices is None else list(devices)
    count = len(devices)
    if count == 1:
        return fn
    mesh = Mesh(np.asarray(devices), (AXIS,))
    in_specs = (PartitionSpec(AXIS),) * num_batched

    def padded(*args):
        batched, replicated = args[:num_batched], args[num_batched:]
        seeds = _num_seeds(batched)
        batched = jax.tree_util.tree_map(lambda x: _pad(x, -seeds % count), batched)
        # check_vma=False: diffrax's while loop starts parts of its carry
        # from replicated arguments (the times) and updates them with
        # per-device values, which the varying-axis check rejects; nothing in
        # `fn` communicates across devices, so the check has nothing to protect.
        mapped = jax.shard_map(
            fn,
            mesh=mesh,
            in_specs=in_specs + (PartitionSpec(),) * len(replicated),
            out_specs=PartitionSpec(AXIS),
            check_vma=False,
        )
        return jax.tree_util.tree_map(lambda x: x[:seeds], mapped(*batched, *replicated))

    return jax.jit(padded)
