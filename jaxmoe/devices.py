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

from .buckets import trimmed

__all__ = [
    "AXIS", "num_devices", "shard_index", "shard_seeds", "in_blocks", "seed_block", "solve_block", "blocks_per_device",
]

# The mesh axis the seeds are split along.
AXIS = "seeds"


def num_devices() -> int:
    """How many devices a seed batch is spread over: all local devices.

    Example::

        assert jaxmoe.devices.num_devices() == len(jax.local_devices())   # 1 on a CPU
    """
    return len(jax.local_devices())


def shard_index() -> Int[Array, ""]:
    """Which block of seeds the calling code runs on: 0 to `num_devices()` − 1.

    For code traced inside a `shard_seeds` function (e.g. to report progress
    per device); 0 when the seeds are not split.

    **Returns:** an int32 scalar, ``jax.lax.axis_index("seeds")`` under shard_map.

    Example::

        assert jaxmoe.devices.shard_index() == 0     # not inside a sharded function
    """
    try:
        return jax.lax.axis_index(AXIS)
    except NameError:  # not under shard_map: one block
        return jnp.asarray(0, jnp.int32)


def _pad(x: Shaped[Array, "S ..."], pad: int) -> Shaped[Array, "padded ..."]:
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
        assert np.allclose(f(jnp.arange(10.0)), jnp.sin(jnp.arange(10.0)))   # seeds split over the local devices
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
        return trimmed(mapped(*batched, *replicated), seeds)

    return jax.jit(padded)


# Seeds × (m + m*)² kept below this in one vmapped block on a CPU: at the
# Figure 1 size (m + m* = 30) that is 16 seeds. Measured there (2-core EPYC,
# best of 3): the vmapped gradient costs 0.72 ms a seed at 16 seeds, the same
# as one seed at a time, but 4.6 ms a seed at 64 seeds, where the kernel's
# intermediates (a few MB a seed) no longer fit in the caches.
_CPU_BLOCK_BUDGET = 16 * 30**2


def seed_block(m: int, m_star: int, platform: str | None = None) -> int | None:
    """Seeds per vmapped block on this platform, or ``None`` for one block.

    On a CPU a large vmapped batch is memory-bound, so seeds run in blocks of
    ``⌊14400 / (m + m*)²⌋`` (at least 1), one block after another. An
    accelerator takes the whole batch at once.

    Example::

        assert jaxmoe.devices.seed_block(25, 5, "cpu") == 16
        assert jaxmoe.devices.seed_block(4, 2, "gpu") is None
    """
    platform = jax.default_backend() if platform is None else platform
    if platform != "cpu":
        return None
    return max(1, _CPU_BLOCK_BUDGET // (m + m_star) ** 2)


def solve_block(platform: str | None = None) -> int | None:
    """Seeds per vmapped block of an *adaptive* solve (the gradient flow), or ``None`` for one block.

    A vmapped adaptive solve steps every seed until its slowest is done, and
    under vmap every branch of the solver's loop becomes a select over all
    seeds. On a CPU, where batching does not make the kernel cheaper a seed
    (`seed_block`), that only costs: measured on 2 cores, 16 seeds to
    t = 400 with the auto solver at rtol 1e-7 took 7.4 s one seed at a time,
    17.6 s in blocks of 4 and 33.3 s as one block of 16 (m = 8, m* = 3);
    with Tsit5 at m = 4, m* = 2: 2.2 s, 3.5 s, 3.6 s. So a CPU solves one
    seed at a time (`in_blocks` with blocks of 1, each solved without
    vmap); an accelerator takes the whole batch at once.

    Example::

        assert jaxmoe.devices.solve_block("cpu") == 1
        assert jaxmoe.devices.solve_block("gpu") is None
    """
    platform = jax.default_backend() if platform is None else platform
    return 1 if platform == "cpu" else None


def blocks_per_device(seeds: int, block: int | None) -> int:
    """How many blocks each device runs one after another for `seeds` seeds
    (`shard_seeds` splits them over the devices, `in_blocks` cuts each share).

    Example::

        if jaxmoe.devices.num_devices() == 1:
            assert jaxmoe.devices.blocks_per_device(40, 16) == 3   # ⌈40 / 16⌉
    """
    per_device = -(-seeds // num_devices())
    return 1 if block is None or per_device <= block else -(-per_device // block)


def in_blocks(fn: Callable, num_batched: int, block: int | None) -> Callable:
    """Run a seed-batched `fn` on blocks of `block` seeds, one block after another.

    **Arguments:** as for `shard_seeds` (`fn` batched over the leading axis of
    its first `num_batched` arguments, outputs batched too); `block` seeds
    per block, or ``None`` to return `fn` itself.

    **Returns:** a function with `fn`'s signature. With more than `block`
    seeds it pads the seed axis (repeating the last seed) to a multiple of
    `block`, runs `fn` on each block and trims the padding; otherwise it
    calls `fn` directly. Called on arrays, it calls `fn` once per block from
    Python, so a jitted `fn` compiles once per block shape, whatever the
    number of seeds; called inside a trace (e.g. under `shard_seeds`), the
    blocks are a `jax.lax.map` in the one program. A seed's numbers do not
    depend on the block it runs in.

    Example::

        f = jaxmoe.devices.in_blocks(jax.vmap(jnp.sin), 1, block=4)
        assert np.allclose(f(jnp.arange(10.0)), jnp.sin(jnp.arange(10.0)))   # computed as 3 blocks of 4
    """
    if block is None:
        return fn

    def blocked(*args):
        batched, replicated = args[:num_batched], args[num_batched:]
        seeds = _num_seeds(batched)
        if seeds <= block:
            return fn(*args)
        blocks = -(-seeds // block)
        # Explicit sizes, not -1: a seed may carry an empty array (no data).
        stacked = jax.tree_util.tree_map(
            lambda x: _pad(x, blocks * block - seeds).reshape((blocks, block) + x.shape[1:]), batched
        )
        out = jax.lax.map(lambda b: fn(*b, *replicated), stacked)
        return jax.tree_util.tree_map(lambda x: x.reshape((blocks * block,) + x.shape[2:])[:seeds], out)

    traced = jax.jit(blocked)

    def each_block(*args):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args)):
            return traced(*args)
        batched, replicated = args[:num_batched], args[num_batched:]
        seeds = _num_seeds(batched)
        if seeds <= block:
            return fn(*args)
        # The blocks are cut and joined on the host: slicing device arrays
        # eagerly would compile a program per block offset. (Blocks are for
        # a CPU, `seed_block` and `solve_block`, where the host is the device.)
        blocks = -(-seeds // block)
        pad = blocks * block - seeds
        host = jax.tree_util.tree_map(lambda x: np.concatenate([x, np.repeat(np.asarray(x)[-1:], pad, axis=0)]), batched)
        outs = []
        for start in range(0, blocks * block, block):
            part = jax.tree_util.tree_map(lambda x, start=start: x[start : start + block], host)
            outs.append(jax.device_get(fn(*part, *replicated)))
        return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)[:seeds]), *outs)

    return each_block
