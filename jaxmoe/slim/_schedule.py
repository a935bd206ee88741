"""What a slimming run is asked to do: the schedules of sizes, the distillation weight, the start point."""

from __future__ import annotations

import math

from ..families import is_int

# What a schedule counts: experts (m → … → final, each ≥ m*), or the hidden
# units of every mlp expert (h → … → final, each ≥ the teacher's width).
AXES = ("experts", "hidden")


def check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; allowed: {', '.join(AXES)}")


def check_alpha(alpha) -> float:
    """α in [0, 1]: the weight of the true teacher's loss in the distillation loss."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (0: distillation only, 1: teacher only); got {alpha!r}")
    return float(alpha)


def check_schedule(schedule, size: int, smallest: int, what: str = "experts") -> tuple[int, ...]:
    """The stages of a schedule: the sizes to prune to, one after another.

    A schedule lists sizes in strictly decreasing order. A leading entry equal
    to the current `size` names the starting point and is dropped, so
    ``(25, 15, 10, 5)`` and ``(15, 10, 5)`` are the same three stages from
    m = 25; ``(5,)`` is one-shot pruning.

    **Arguments:** `schedule` (a sequence of integers), the current `size`
    (m, or the hidden width h), the `smallest` size allowed (m*, or the
    teacher's width), `what` names the sizes in messages.

    **Returns:** the stages as a tuple, each in ``smallest … size − 1``.

    **Raises:** `ValueError` (one line) for an empty schedule, a non-integer, a
    size outside 1..`size` or below `smallest`, or sizes that do not decrease.

    Example::

        jaxmoe.slim.check_schedule((25, 15, 10, 5), 25, 5)   # (15, 10, 5)
    """
    stages = tuple(schedule)
    if not stages:
        raise ValueError(f"a schedule needs at least one size of {what}")
    for value in stages:
        if not is_int(value) or not 1 <= value <= size:
            raise ValueError(f"schedule sizes must be integers in 1..{size} ({what}); got {value!r}")
        if value < smallest:
            raise ValueError(f"schedule size {value} is below {smallest}, the teacher's {what}: nothing could recover it")
    if any(b >= a for a, b in zip(stages, stages[1:])):
        raise ValueError(f"a schedule must strictly decrease; got {','.join(str(v) for v in stages)}")
    if stages[0] == size:
        stages = stages[1:]
    if not stages:
        raise ValueError(f"the schedule {size} removes nothing: give at least one size below {size}")
    return tuple(int(v) for v in stages)


def parse_schedule(text: str) -> tuple[int, ...]:
    """``"25,15,10,5"`` → ``(25, 15, 10, 5)`` (checked later by `check_schedule`)."""
    try:
        return tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"a schedule is a comma-separated list of integers, e.g. 25,15,10,5; got {text!r}") from None


def parse_at(text: str | None):
    """The start point: ``None``/``"end"`` (the run's final student), a time ``"40"``, or ``"recovered:K"``
    (per seed, the time its K-th teacher expert is recovered).

    **Returns:** ``None``, a float, or ``("recovered", K)``.
    """
    if text is None or text == "end":
        return None
    if isinstance(text, str) and text.startswith("recovered:"):
        k = text.split(":", 1)[1]
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"--at recovered:K needs an integer K ≥ 1; got {text!r}")
        return ("recovered", int(k))
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--at must be 'end', a time t > 0 or 'recovered:K'; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--at must be a finite time > 0; got {text!r}")
    return value
