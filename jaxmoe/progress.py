"""Progress bars fed from inside compiled solves and scans, one per process whatever the devices.

The compiled code reports through host callbacks that return nothing, so a
bar costs the computation only the call. Each device reports from its own
thread and in no set order; the bars show the device furthest behind.

- `FlowProgress` (`flow_bar`): the gradient flow, as a percentage of t_max
  (the slowest running seed), or finished seeds for the seed pool;
  `SlowestSeedMeter` feeds it from inside diffrax's loop.
- `StepProgress` (`step_bar`): discrete training, in optimisation steps.
"""

from __future__ import annotations

import threading

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from .devices import shard_index

__all__ = ["FlowProgress", "SlowestSeedMeter", "StepProgress", "flow_bar", "step_bar"]


class FlowProgress:
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
        self.phase = np.zeros(0, int)
        self.blocks = 1
        self.lock = threading.Lock()  # devices report from their own threads

    def open(self, devices: int, blocks: int = 1):
        """`blocks`: seed blocks each device runs one after another (`devices.in_blocks`)."""
        import tqdm

        self.done, self.last, self.blocks = np.zeros(devices), np.zeros(devices), blocks
        self.phase = np.zeros(devices, int)
        self.bar = tqdm.tqdm(total=100, unit="%", bar_format="{percentage:.2f}%|{bar}| [{elapsed}<{remaining}]")

    def open_seeds(self, devices: int, seeds: int):
        """A bar of finished seeds (the seed pool), each device reporting its own count."""
        import tqdm

        self.done = np.zeros(devices)
        self.bar = tqdm.tqdm(total=seeds, unit="seed", bar_format="{n:.0f}/{total} seeds|{bar}| [{elapsed}<{remaining}]")

    def report_seeds(self, device, count):
        with self.lock:
            if self.bar is None:
                return
            self.done[int(device)] = float(count)
            self.bar.n = float(self.done.sum())
            self.bar.refresh()

    def report(self, device, phase, fraction):
        fraction, phase = float(fraction), int(phase)
        with self.lock:
            if self.bar is None or not np.isfinite(fraction):
                return
            device = int(device)
            # Within a block and a phase of the solve the slowest running seed
            # only moves forward, so a step back, or a return to the first
            # phase, means the device has started its next block.
            back = phase < self.phase[device] or (phase == self.phase[device] and fraction < self.last[device])
            if back and self.done[device] < self.blocks - 1:
                self.done[device] = np.floor(self.done[device]) + 1
            self.last[device], self.phase[device] = fraction, phase
            self.done[device] = max(self.done[device], np.floor(self.done[device]) + fraction)
            self.bar.n = round(100 * float(self.done.min()) / self.blocks, 2)
            self.bar.refresh()

    def close(self, finished: bool):
        with self.lock:
            if self.bar is not None:
                if finished:  # seeds that stopped early count as done
                    self.bar.n = self.bar.total
                self.bar.close()
                self.bar = None


flow_bar = FlowProgress()  # one per process: every device's solve reports here


class SlowestSeedMeter(diffrax.AbstractProgressMeter):
    """Feeds `flow_bar` from inside the compiled solve: this device's slowest running seed.

    Reports every `refresh_steps` steps, through a host callback that does
    not return anything (so it costs the solve nothing but the call).

    Under vmap a seed that has stopped (early stop or failure) keeps its
    frozen state while the loop body still runs for it; counting it would
    freeze the bar at the first seed to stop. Its step counter is frozen too,
    so the seeds still running are those whose counter equals the largest.

    `start` is where this solve begins, as a fraction of t_max (the second
    phase of ``solver="auto"`` starts where the first stopped), so that the
    bar shows the fraction of the whole run.
    """

    start: jax.Array | float = 0.0
    phase: int = 0
    refresh_steps: int = 50

    def init(self):
        return jnp.asarray(0), shard_index()

    def step(self, state, progress):
        count, block = state
        progress = self.start + (1.0 - self.start) * progress
        newest = eqxi.unvmap_max(count)
        due = eqxi.nonbatchable(newest % self.refresh_steps == 0)
        slowest = -eqxi.unvmap_max(jnp.where(count == newest, -progress, -jnp.inf))
        jax.lax.cond(
            due,
            lambda: jax.debug.callback(flow_bar.report, eqxi.unvmap_max(block), self.phase, slowest),
            lambda: None,
        )
        return count + 1, block

    def close(self, state):
        del state  # `integrate` closes the host bar once every device is done


class StepProgress:
    """A tqdm bar over optimisation steps, fed from inside the compiled scan.

    With the seeds split over devices, each device reports its own steps,
    from its own thread and in no set order; with its seeds in blocks, each
    block counts its steps from 0 again. The bar shows the device furthest
    behind, in steps of all its blocks.
    """

    def __init__(self):
        self.bar = None
        self.steps = 0
        self.blocks_done = np.zeros(0, int)
        self.last = np.zeros(0, int)
        self.lock = threading.Lock()

    def open(self, total: int, devices: int = 1, blocks: int = 1):
        import tqdm

        self.steps = total
        self.blocks_done, self.last = np.zeros(devices, int), np.zeros(devices, int)
        self.bar = tqdm.tqdm(total=total * blocks, unit="step", unit_scale=True, dynamic_ncols=True)

    def update(self, device, step):
        with self.lock:
            if self.bar is None:
                return
            device, step = int(device), int(step)
            if step < self.last[device]:  # the device started its next block
                self.blocks_done[device] += 1
            self.last[device] = step
            done = int(np.min(self.blocks_done * self.steps + self.last))
            if done > self.bar.n:
                self.bar.n = done
                self.bar.refresh()

    def close(self):
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None


step_bar = StepProgress()  # one per process: every device's scan reports here
