"""The two-sample Kolmogorov–Smirnov test and the Wilson interval, in NumPy (no SciPy dependency).

`jaxmoe compare` asks whether the recovery times of online SGD and of the
exact flow, over seeds, could come from one distribution. The statistic is

    D = sup_t |F₁(t) − F₂(t)|

(F the empirical distribution functions of the two samples), and its p-value
``P(D ≥ d)`` under the null hypothesis of one continuous distribution is the
proportion of monotone lattice paths from (0, 0) to (n₁, n₂) that leave the
band ``|x/n₁ − y/n₂| < d`` (J. L. Hodges, "The significance probability of
the Smirnov two-sample test", Arkiv för Matematik 3, 1958). This follows
SciPy's ``scipy.stats.ks_2samp(..., method="auto")``: exact for samples of at
most 10 000, with d rounded to a multiple of 1/lcm(n₁, n₂); for equal sizes
the closed alternating sum in Horner form, otherwise the path count as a
probability (each step of a uniformly random path), so nothing overflows.
Beyond 10 000 it uses Kolmogorov's limit law at ``√(n₁n₂/(n₁+n₂))·d``
(SciPy there uses the finite-n one-sample law instead: they differ by
O(n^(−1/2))).

Infinite values are ordinary values here: a recovery that never happened
(``inf``) is later than every one that did, in both samples alike.

`wilson_interval` gives the score interval of a binomial proportion (the
share of seeds that recover every teacher expert, `jaxmoe.phase`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ks_2samp", "wilson_interval"]

_MAX_EXACT = 10_000  # SciPy's 'auto': exact up to this sample size


def _prob_outside_square(n: int, h: int) -> float:
    """P(D ≥ h/n) for two samples of size n: 2 Σ_k (−1)^(k−1) C(2n, n − kh) / C(2n, n), in Horner form."""
    p = 0.0
    for k in range(n // h, -1, -1):
        term = 1.0
        for j in range(h):
            term = (n - k * h - j) * term / (n + k * h + j + 1)
        p = term * (1.0 - p)
    return 2.0 * p


def _prob_outside_band(n1: int, n2: int, h: int, g: int) -> float:
    """P(D ≥ h/lcm): 1 − the probability that a uniformly random monotone path stays in ``|x n₂/g − y n₁/g| < h``.

    A uniformly random path from (x, y) steps right with probability
    ``(n₁ − x)/(n₁ − x + n₂ − y)``; the walk is carried one anti-diagonal
    x + y = s at a time, so every number stays in [0, 1].
    """
    a, b = n2 // g, n1 // g
    x = np.arange(n1 + 1)
    mass = np.zeros(n1 + 1)  # on the anti-diagonal x + y = s, indexed by x
    mass[0] = 1.0
    for s in range(n1 + n2):
        y, left = s - x, n1 + n2 - s
        right = np.where(x < n1, mass * (n1 - x) / left, 0.0)  # to (x + 1, y)
        nxt = np.where((y >= 0) & (y < n2), mass * (n2 - y) / left, 0.0)  # to (x, y + 1)
        nxt[1:] += right[:-1]
        y = s + 1 - x
        nxt[(y < 0) | (y > n2) | (np.abs(x * a - y * b) >= h)] = 0.0
        mass = nxt
    return float(1.0 - mass[n1])


def _kolmogorov_sf(z: float) -> float:
    """Kolmogorov's limit law: P(K ≥ z) = 2 Σ_{k≥1} (−1)^(k−1) exp(−2k²z²)."""
    if z < 0.2:
        return 1.0
    k = np.arange(1, 101)
    return float(np.clip(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * z**2)), 0.0, 1.0))


def ks_2samp(sample1, sample2) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test (two-sided): ``(D, p)``.

    ``D = sup_t |F₁(t) − F₂(t)|`` over the empirical distribution functions;
    ``p = P(D ≥ d)`` if both samples come from one continuous law (module
    docstring: exact up to 10 000 samples, as SciPy's ``method="auto"``).

    **Arguments:** two 1-D samples (``inf`` allowed: it counts as larger than
    every finite value).

    **Returns:** ``(statistic, pvalue)`` as floats.

    **Raises:** `ValueError` (one line) for an empty sample or NaN values.

    Example::

        import jaxmoe.stats
        statistic, pvalue = jaxmoe.stats.ks_2samp([1.0, 2.0, 3.0, 4.0], [3.5, 5.0, 6.0, np.inf])
        assert statistic == 0.75 and np.allclose(pvalue, 0.2286, atol=1e-4)
    """
    a = np.sort(np.asarray(sample1, dtype=float).ravel())
    b = np.sort(np.asarray(sample2, dtype=float).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError(f"ks_2samp needs two non-empty samples; got sizes {a.size} and {b.size}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("ks_2samp: the samples must not contain NaN (a recovery that never happened is inf)")
    n1, n2 = a.size, b.size
    both = np.concatenate([a, b])
    gap = np.searchsorted(a, both, side="right") / n1 - np.searchsorted(b, both, side="right") / n2
    d = float(max(np.max(gap), np.clip(-np.min(gap), 0.0, 1.0)))
    if max(n1, n2) <= _MAX_EXACT:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(round(d * lcm))
        d = h / lcm  # the statistic is a multiple of 1/lcm; rounding removes float noise
        if h == 0:
            return d, 1.0
        p = _prob_outside_square(n1, h) if n1 == n2 else _prob_outside_band(n1, n2, h, g)
        return d, float(np.clip(p, 0.0, 1.0))
    return d, _kolmogorov_sf(math.sqrt(n1 * n2 / (n1 + n2)) * d)


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (95% by default).

    With p̂ = k/n: ``(p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)``
    (E. B. Wilson, "Probable inference, the law of succession, and
    statistical inference", JASA 22, 1927). Unlike p̂ ± z·√(p̂(1 − p̂)/n) it
    stays inside [0, 1] and is not empty at k = 0 or k = n.

    **Arguments:** `successes` k and `trials` n (integers, 0 ≤ k ≤ n, n ≥ 1);
    `z` the normal quantile (1.96: 95%).

    **Returns:** ``(low, high)``.

    Example::

        jaxmoe.stats.wilson_interval(0, 64)    # (0.0, 0.0565)
    """
    if not (isinstance(trials, (int, np.integer)) and isinstance(successes, (int, np.integer))) or trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval needs integers 0 ≤ successes ≤ trials, trials ≥ 1; got {successes}, {trials}")
    p = successes / trials
    scale = 1.0 + z * z / trials
    center = (p + z * z / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / scale
    return max(0.0, center - half), min(1.0, center + half)
