"""Plain Monte Carlo: the obviously-correct reference for every rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray, Scalar

from ..base import check_pair
from ..families import Mixture, mixture_forward

# ---------------------------------------------------------------------------
# Monte Carlo reference


def mixture_loss_monte_carlo(
    student: Mixture,
    teacher: Mixture,
    *,
    key: PRNGKeyArray,
    num_samples: int = 1_000_000,
    batch_size: int = 2**16,
    t=None,
) -> tuple[Scalar, Scalar]:
    """Monte Carlo estimate of ``½ E[(f_student − f_teacher)²]`` and its standard error.

    Draws ``n = num_samples`` (rounded up to whole batches) inputs
    z ~ N(0, I_D) in batches of `batch_size` (memory ∝ batch_size·D, so 10⁷
    samples fit anywhere), batch b from ``fold_in(key, b)``, and returns the
    sample mean of ``½(f_s − f_t)²`` and ``√(s²/n)``, s² the unbiased sample
    variance.

    **Returns:** ``(mean, standard_error)``, two scalars.
    """
    check_pair(student, teacher, Mixture)
    if num_samples < 2 or batch_size < 1:
        raise ValueError("num_samples must be at least 2 and batch_size at least 1")
    num_batches = -(-num_samples // batch_size)
    dtype = student.router.dtype

    @jax.jit
    def run(student, teacher, key, t):
        def body(carry, index):
            total, total_sq = carry
            z = jax.random.normal(jax.random.fold_in(key, index), (batch_size, student.dim), dtype)
            sample = 0.5 * (mixture_forward(student, z, t) - mixture_forward(teacher, z, t)) ** 2
            return (total + sample.sum(), total_sq + (sample**2).sum()), None

        zero = jnp.zeros((), dtype)
        (total, total_sq), _ = jax.lax.scan(body, (zero, zero), jnp.arange(num_batches))
        return total, total_sq

    total, total_sq = run(student, teacher, key, t)
    n = num_batches * batch_size
    mean = total / n
    variance = (total_sq / n - mean**2) * n / (n - 1)
    return mean, jnp.sqrt(variance / n)
