"""Gaussian quadrature nodes: tensor Gauss–Hermite in few dimensions, spread antithetic scrambled Sobol beyond."""

from __future__ import annotations

import functools
import math

import numpy as np

LOSS_RULES = ("exact", "pair kernel", "conditional", "quasi-monte carlo")

# Node budget of the conditional rule (over the n_g gate coordinates) and of
# the quasi-Monte Carlo rule (over all coordinates).
CONDITIONAL_NODES = 2**15
QMC_NODES = 2**16
# Gauss–Hermite is used up to this many coordinates; beyond, a tensor rule
# needs too many nodes for its accuracy to pay off.
MAX_GAUSS_HERMITE_DIM = 3
# NumPy's Gauss–Hermite rule overflows beyond about 150 nodes.
_MAX_GH_PER_AXIS = 150
# Seed of the fixed Owen scrambling of the Sobol points.
SOBOL_SEED = 20251008


def _spread(dim: int, degree: int) -> float:
    """σ of the importance-sampling law N(0, σ²I) of the Sobol rule: ``σ² = 1 + SPREAD·degree/√dim``.

    The weight σ^n e^{−(σ² − 1)|u|²/2} has second moment ≈ e^{n (σ²−1)²}, so
    σ² − 1 ∝ n^{−1/2} keeps the weights' spread the same in every dimension;
    and the faster the integrand grows (polynomial experts of degree K give
    integrands of degree 2K), the more spread pays. Measured (conditional
    rule, sigmoid gates against the exact kernel, n = 6, N = 2^16, RMS over
    six scramblings): He3 1.7e-3 → 1.7e-4, He4 7.0e-3 → 3.8e-4, linear
    6.2e-5 → 5.8e-5, against σ = 1.
    """
    return math.sqrt(1.0 + SPREAD * degree / math.sqrt(dim))


# σ² − 1 per degree at n = 1 (He3 in n = 6 gate coordinates: σ = 1.20).
SPREAD = 0.36


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}; got {value!r}")


@functools.lru_cache(maxsize=32)
def gaussian_nodes(
    dim: int, nodes: int = CONDITIONAL_NODES, degree: int = 0, seed: int = SOBOL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed nodes and weights for E[g(z)], z ~ N(0, I_dim): ``Σ_n ω_n g(z_n)``.

    **Arguments:**

    - `dim`: the number of coordinates n.
    - `nodes`: the node budget N. For n ≤ 3 the tensor Gauss–Hermite rule
      with ``min(150, round(N^(1/n)))`` nodes per axis; otherwise
      ``2^⌈log₂(N/2)⌉`` scrambled Sobol points u_k (scipy.stats.qmc.Sobol,
      Owen scrambling, seed `SOBOL_SEED`) mapped to Gaussians by the inverse
      normal CDF, with their antithetic partners, spread by
      σ = `_spread(n, degree)`: z = σu, ω ∝ σ^n e^{−(σ²−1)|u|²/2}
      (importance sampling from N(0, σ²I); module docstring).
    - `degree`: how fast the integrand grows, as the polynomial degree of
      the experts (0: bounded; 1: linear; k: He_k). Sets σ (σ = 1 at 0).
    - `seed`: the seed of the Owen scrambling (default `SOBOL_SEED`); other
      seeds give independent randomised rules, whose spread measures the
      rule's error (benchmarks/kernel.py --families).

    **Returns:** ``(points, weights)``: float64 NumPy arrays of shapes
    ``(N', n)`` and ``(N',)``; the weights sum to 1 (Gauss–Hermite) or to
    1 ± O(N^{-1}) (Sobol, unnormalised so that the rule stays unbiased under
    random scrambling). Cached per arguments, and read-only.

    Example::

        import jaxmoe.quadrature
        z, w = jaxmoe.quadrature.gaussian_nodes(6, 4096)
        assert np.allclose(w @ z[:, 0] ** 2, 1.0, atol=0.01)      # E[z₁²]
    """
    _check_int("dim", dim, 1)
    _check_int("nodes", nodes, 2)
    _check_int("degree", degree, 0)
    _check_int("seed", seed, 0)
    if dim <= MAX_GAUSS_HERMITE_DIM:
        per_axis = min(_MAX_GH_PER_AXIS, max(2, round(nodes ** (1.0 / dim))))
        z1, w1 = np.polynomial.hermite_e.hermegauss(per_axis)
        w1 = w1 / w1.sum()
        grids = np.meshgrid(*([z1] * dim), indexing="ij")
        points = np.stack([g.ravel() for g in grids], axis=-1)
        weights = functools.reduce(np.multiply.outer, [w1] * dim).ravel()
        return _read_only(points, weights)
    from scipy.special import ndtri
    from scipy.stats import qmc

    half = 2 ** max(0, math.ceil(math.log2(nodes / 2)))
    u = ndtri(qmc.Sobol(dim, scramble=True, seed=seed).random(half))
    u = np.concatenate([u, -u])
    sigma = _spread(dim, degree)
    log_weight = dim * math.log(sigma) - 0.5 * (sigma**2 - 1.0) * np.sum(u * u, axis=1)
    return _read_only(sigma * u, np.exp(log_weight) / len(u))


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    # The cache hands the same arrays to every caller.
    for a in arrays:
        a.setflags(write=False)
    return arrays
