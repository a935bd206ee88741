"""The small problems the test files share, so that they share compiled programs,
and `compiled_programs`, which tells the tests that check it what a call compiled.

Most of the suite's time is XLA compiling the flow's solve, one program per
static specification (`jaxmoe.flow._Spec`: solver, step limit, dtype, …) and
shape. Shapes are the student's (m, D) with D = 2(m + m*) in reduced
coordinates (or d, when d ≤ 2(m + m*)) and the number of saved times; the
number of seeds (on a CPU), rtol, atol, t_max, the time grid's values and the
loss threshold are traced and change nothing. Files that derive their
problems from these (`.replace` of traced fields only) compile the solve
once per process, and the session's persistent cache (conftest.py) spares
the other worker the compile.
"""

import contextlib

import jax

from jaxmoe import SimulationConfig

# m = 4, m* = 2 (12 coordinates), 41 saved times, the default solver "auto":
# the flow, pool, solver, reduced-coordinate and precision tests.
SMALL = SimulationConfig(
    d=12, m=4, m_star=2, seeds=4, t_max=20.0, num_times=41, time_grid="linear", rtol=1e-10, atol=1e-12,
    loss_threshold=None,
)

# m = 3, m* = 2 (10 coordinates), 6 saved times, "auto": the command line,
# chunked runs, result folders and seed blocks.
TINY = SimulationConfig(d=12, m=3, m_star=2, seeds=2, t_max=5.0, num_times=6)


@contextlib.contextmanager
def compiled_programs():
    """The names (``"jit(f)"``) of the programs XLA compiled inside the ``with`` block, in a list."""
    names = []

    def listen(event, duration, fun_name=None, **_):
        if event.endswith("backend_compile_duration"):
            names.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
