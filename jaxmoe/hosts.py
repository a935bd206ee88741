"""Several processes (hosts) on one run, through `jax.distributed`.

JAX already coordinates multi-process jobs: `jax.distributed.initialize`
connects each process to a coordinator and gives it ``jax.process_index()``
among ``jax.process_count()``. jaxmoe adds no process pool of its own: each
process simulates its share of the chunks (`jaxmoe.chunks`), a barrier
(`multihost_utils.sync_global_devices`) waits for all, and process 0 merges.

The settings come from flags or from the usual environment variables:
``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID``.
"""

from __future__ import annotations

import os

__all__ = ["distributed_settings", "initialize"]


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer; got {text!r}") from None


def distributed_settings(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> tuple[str, int, int] | None:
    """The validated ``(coordinator, num_processes, process_id)``, or ``None`` for one process.

    Arguments left as ``None`` are read from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
    All three must be known, or none.

    **Raises:** `ValueError` when only some are known, the coordinator is not
    HOST:PORT, or ``process_id`` is not in 0 … num_processes − 1.

    Example::

        import jaxmoe.hosts
        assert jaxmoe.hosts.distributed_settings("10.0.0.1:1234", 2, 0) == ("10.0.0.1:1234", 2, 0)
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(
            "several processes need all of --coordinator HOST:PORT, --num-processes and --process-id "
            "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator must be HOST:PORT; got {coordinator!r}")
    if isinstance(num_processes, bool) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer ≥ 1; got {num_processes!r}")
    if isinstance(process_id, bool) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in 0 … {num_processes - 1}; got {process_id!r}")
    return coordinator, num_processes, process_id


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> int:
    """Join a multi-process job if one is configured; return the number of processes.

    Calls `jax.distributed.initialize` with the settings of
    `distributed_settings` when they name more than one process; otherwise
    does nothing. Must run before anything else touches a JAX device.

    Example::

        import jaxmoe.hosts
        assert jaxmoe.hosts.initialize() == 1     # no job configured (no flags, no JAX_* variables): nothing done
    """
    settings = distributed_settings(coordinator, num_processes, process_id)
    if settings is None or settings[1] == 1:
        return 1
    import jax

    address, count, index = settings
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
    return count
