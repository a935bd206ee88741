"""Statistics of times that may be censored: Kaplan–Meier, and a censored (Tobit) regression, in NumPy.

A seed that has not recovered a teacher expert by the horizon has a recovery
time we do not know, only that it is later than the time its run stopped:
the time is *right-censored*. Leaving such seeds out biases every average
towards the fast seeds, and the bias grows with d when more seeds are
censored at larger d. Two estimators use them correctly:

- the Kaplan–Meier product-limit estimator of the survival function
  ``S(t) = P(T > t)`` (E. L. Kaplan and P. Meier, "Nonparametric estimation
  from incomplete observations", JASA 53, 1958), and its median;
- the censored normal regression of J. Tobin ("Estimation of relationships
  for limited dependent variables", Econometrica 26, 1958) of
  ``y = log t`` on ``x = log d``: ``y = α + β x + σ ε``, ε ~ N(0, 1), whose
  likelihood takes each observed seed's density and each censored seed's
  probability of being later than its censoring time. In the
  parameters ``δ = (α, β)/σ``, ``γ = 1/σ`` the log-likelihood is concave
  (R. J. Olsen, "Note on the uniqueness of the maximum likelihood estimator
  for the Tobit model", Econometrica 46, 1978), so Newton's method with
  step halving finds its maximum.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kaplan_meier", "km_median", "km_quantile", "log_normal_cdf", "tobit_fit", "tobit_loglik"]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_ERFC = np.frompyfunc(math.erfc, 1, 1)
# Below this argument Φ(u) is near the smallest float64; the asymptotic series takes over.
_TAIL = -30.0


def _tail_series(u: np.ndarray) -> np.ndarray:
    """1 − 1/u² + 3/u⁴ − 15/u⁶: Φ(u) ≈ φ(u)/(−u) times this, for u → −∞ (error below 1e-9 at u ≤ −30)."""
    v = 1.0 / (u * u)
    return 1.0 - v + 3.0 * v * v - 15.0 * v**3


def log_normal_cdf(u) -> np.ndarray:
    """``log Φ(u)``, the standard normal CDF, accurate in the far lower tail (u ≪ 0).

    ``Φ(u) = erfc(−u/√2)/2`` (`math.erfc`, accurate in relative terms) down to
    u = −30, then the asymptotic series ``φ(u)/(−u)·(1 − u⁻² + 3u⁻⁴ − 15u⁻⁶)``.

    Example::

        jaxmoe.survival.log_normal_cdf([0.0, -40.0])   # [log 0.5, -804.608...]
    """
    u = np.asarray(u, dtype=float)
    safe = np.maximum(u, _TAIL)
    head = np.log(0.5 * _ERFC(-safe / _SQRT2).astype(float))
    lo = np.minimum(u, _TAIL)
    tail = -0.5 * lo * lo - _LOG_SQRT_2PI - np.log(-lo) + np.log(_tail_series(lo))
    return np.where(u >= _TAIL, head, tail)


def _mills(u: np.ndarray) -> np.ndarray:
    """λ(u) = φ(u)/Φ(u), the inverse Mills ratio (the series form below u = −30)."""
    safe = np.maximum(u, _TAIL)
    head = math.sqrt(2.0 / math.pi) * np.exp(-0.5 * safe * safe) / _ERFC(-safe / _SQRT2).astype(float)
    lo = np.minimum(u, _TAIL)
    return np.where(u >= _TAIL, head, -lo / _tail_series(lo))


def kaplan_meier(times, observed) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan–Meier estimate of ``S(t) = P(T > t)`` from right-censored times.

    ``Ŝ(t) = Π_{t_k ≤ t} (1 − e_k / n_k)`` over the distinct event times t_k,
    with e_k events at t_k and n_k times ≥ t_k (at risk; a time censored at
    t_k is still at risk there, the usual convention).

    **Arguments:** `times` (n,): the event time where `observed`, else the
    censoring time (the time the seed's run stopped); `observed` (n,) bools.

    **Returns:** ``(event_times, survival)``: the distinct observed times in
    increasing order and Ŝ just after each.

    Example::

        jaxmoe.survival.kaplan_meier([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])   # ([1, 2, 3], [0.8, 0.6, 0.3])
    """
    times = np.asarray(times, dtype=float).ravel()
    observed = np.asarray(observed, dtype=bool).ravel()
    if times.shape != observed.shape:
        raise ValueError(f"times and observed must have one shape; got {times.shape} and {observed.shape}")
    if np.isnan(times).any() or np.isinf(times[observed]).any():
        raise ValueError("kaplan_meier: an observed time must be finite and no time NaN")
    events = np.unique(times[observed])
    at_risk = np.array([np.sum(times >= t) for t in events])
    happened = np.array([np.sum((times == t) & observed) for t in events])
    return events, np.cumprod(1.0 - happened / np.maximum(at_risk, 1))


def km_quantile(times, observed, q: float) -> float:
    """The Kaplan–Meier q-quantile: the first event time with ``Ŝ(t) ≤ 1 − q``.

    ``inf`` when Ŝ stays above 1 − q (too many seeds censored before their
    event could be seen, so only a lower bound is known). It is unbiased
    under censoring as long as the censoring is independent of the time.

    Example::

        jaxmoe.survival.km_quantile([1, 2, 2, 3, 4], [1, 1, 0, 1, 0], 0.25)   # 2.0
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1); got {q!r}")
    events, survival = kaplan_meier(times, observed)
    below = np.nonzero(survival <= 1.0 - q + 1e-12)[0]
    return float(events[below[0]]) if below.size else math.inf


def km_median(times, observed) -> float:
    """The Kaplan–Meier median, `km_quantile` at ½ (``inf``: more than half censored).

    Example::

        jaxmoe.survival.km_median([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])   # 3.0
    """
    return km_quantile(times, observed, 0.5)


def tobit_loglik(params, x, y, observed) -> float:
    """The censored normal log-likelihood of ``y = α + β x + σ ε`` at ``params = (α, β, σ)``.

    ``Σ_observed [log φ((y − α − βx)/σ) − log σ] + Σ_censored log(1 − Φ((y − α − βx)/σ))``,
    y the censoring value where not observed. The plain form, for checking
    `tobit_fit`.

    Example::

        jaxmoe.survival.tobit_loglik((0.0, 0.5, 0.1), np.log([1e2, 1e3]), np.log([10.0, 30.0]), [True, False])
    """
    alpha, beta, sigma = params
    z = (np.asarray(y, float) - alpha - beta * np.asarray(x, float)) / sigma
    observed = np.asarray(observed, dtype=bool)
    dens = -0.5 * z[observed] ** 2 - _LOG_SQRT_2PI - math.log(sigma)
    return float(np.sum(dens) + np.sum(log_normal_cdf(-z[~observed])))


def tobit_fit(x, y, observed, *, start=None, max_iter: int = 100) -> tuple[float, float, float]:
    """Maximum-likelihood censored normal regression of y on x (right-censored y).

    Maximises `tobit_loglik` by Newton's method in Olsen's parameters
    ``(δ₀, δ₁, γ) = (α/σ, β/σ, 1/σ)``, where it is concave (module docstring),
    halving a step until the likelihood rises, from ordinary least squares on
    all points (censored ones at their censoring values) or from `start`.

    **Arguments:** `x`, `y` (n,); `observed` (n,) bools: y is the value
    where True, else a lower bound of it (the censoring value); `start`, an
    optional ``(α, β, σ)`` to begin from (a bootstrap passes the full fit).

    **Returns:** ``(α, β, σ)``; all NaN when the maximum does not exist:
    fewer than two distinct x among the observed points, no spread in the
    observed y, or no convergence in `max_iter` steps.

    Example::

        x = np.log([1e2, 1e2, 1e3, 1e3])
        y = np.log([10.0, 12.0, 31.0, 3000.0])                                 # the last seed: censored at 3000
        jaxmoe.survival.tobit_fit(x, y, [True, True, True, False])              # β above the 0.5 of the first three
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    observed = np.asarray(observed, dtype=bool).ravel()
    nan = (math.nan,) * 3
    if not (x.shape == y.shape == observed.shape) or not np.all(np.isfinite(x) & np.isfinite(y)):
        raise ValueError("tobit_fit: x, y and observed must be finite arrays of one shape")
    if np.unique(x[observed]).size < 2 or np.ptp(y[observed]) == 0:
        return nan
    X = np.stack([np.ones_like(x), x], axis=1)
    if start is None:
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        sigma = max(float(np.std(y - X @ coef)), 1e-3)
    else:
        coef, sigma = np.array(start[:2], float), float(start[2])
    theta = np.append(coef / sigma, 1.0 / sigma)
    Xo, yo, Xc, yc = X[observed], y[observed], X[~observed], y[~observed]

    def loglik(t):
        delta, gamma = t[:2], t[2]
        r = gamma * yo - Xo @ delta
        return np.sum(math.log(gamma) - 0.5 * r * r) + np.sum(log_normal_cdf(Xc @ delta - gamma * yc))

    current = loglik(theta)
    for _ in range(max_iter):
        delta, gamma = theta[:2], theta[2]
        r = gamma * yo - Xo @ delta
        u = Xc @ delta - gamma * yc
        lam = _mills(u)
        dlam = -lam * (u + lam)  # λ'(u), in (−1, 0)
        grad = np.append(Xo.T @ r + Xc.T @ lam, yo.size / gamma - r @ yo - lam @ yc)
        hess = np.empty((3, 3))
        hess[:2, :2] = -Xo.T @ Xo + (Xc * dlam[:, None]).T @ Xc
        hess[:2, 2] = hess[2, :2] = Xo.T @ yo - (Xc * (dlam * yc)[:, None]).sum(axis=0)
        hess[2, 2] = -yo.size / gamma**2 - yo @ yo + dlam @ (yc * yc)
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return nan
        scale = 1.0
        while scale > 1e-10:
            trial = theta + scale * step
            if trial[2] > 0:
                value = loglik(trial)
                if value >= current - 1e-12 * abs(current):
                    break
            scale *= 0.5
        else:
            return nan
        theta, current = trial, value
        if np.max(np.abs(scale * step)) < 1e-10 * max(1.0, np.max(np.abs(theta))):
            sigma = 1.0 / theta[2]
            return float(theta[0] * sigma), float(theta[1] * sigma), float(sigma)
    return nan
