"""Censored-time statistics (jaxmoe.survival) and the Wilson interval (jaxmoe.stats) against plain references."""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from jaxmoe.stats import wilson_interval
from jaxmoe.survival import kaplan_meier, km_median, km_quantile, log_normal_cdf, tobit_fit, tobit_loglik

# Remission times (weeks) of the 6-MP group of Freireich et al. (Blood 21, 1963), the textbook
# Kaplan–Meier example (Kleinbaum & Klein, "Survival Analysis", ch. 2); False: censored.
WEEKS = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
SEEN = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]


def test_kaplan_meier_on_the_textbook_data():
    events, survival = kaplan_meier(WEEKS, SEEN)
    np.testing.assert_array_equal(events, [6, 7, 10, 13, 16, 22, 23])
    # The book's table: 0.8571, 0.8067, 0.7529, 0.6902, 0.6275, 0.5378, 0.4482.
    np.testing.assert_allclose(survival, [0.8571, 0.8067, 0.7529, 0.6902, 0.6275, 0.5378, 0.4482], atol=5e-5)
    assert km_median(WEEKS, SEEN) == 23.0
    assert km_quantile(WEEKS, SEEN, 0.25) == 13.0  # the first Ŝ ≤ 0.75: 0.6902 at 13 weeks
    assert km_quantile(WEEKS, SEEN, 0.6) == math.inf  # Ŝ never falls to 0.4
    # Every seed censored beyond half: only a lower bound, so no median.
    assert km_median([1.0, 5.0, 5.0], [True, False, False]) == math.inf
    # Without censoring the KM median is the lower median of the sample.
    assert km_median([4.0, 1.0, 3.0, 2.0], [True] * 4) == 2.0
    with pytest.raises(ValueError, match="one shape"):
        kaplan_meier([1.0, 2.0], [True])


def test_log_normal_cdf_matches_scipy_across_the_tail():
    u = np.array([3.0, 0.0, -5.0, -29.9, -30.0, -30.1, -45.0, -200.0])
    np.testing.assert_allclose(log_normal_cdf(u), scipy.stats.norm.logcdf(u), rtol=1e-12)


def _scipy_tobit(x, y, observed, start):
    def negative(p):
        if p[2] <= 0:
            return np.inf
        z = (y - p[0] - p[1] * x) / p[2]
        return -(np.sum(scipy.stats.norm.logpdf(z[observed]) - np.log(p[2])) + np.sum(scipy.stats.norm.logsf(z[~observed])))

    fit = scipy.optimize.minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-13, "maxiter": 20000, "maxfev": 40000})
    return fit.x


def test_tobit_matches_scipy_on_the_same_likelihood():
    rng = np.random.default_rng(3)
    x = np.repeat(np.log([1e2, 1e3, 1e4, 1e5]), 24)
    latent = -0.5 + 0.5 * x + 0.6 * rng.standard_normal(x.size)
    horizon = 1.5 + 0.3 * x  # grows slower than the times: a third censored, most at large d
    observed = latent < horizon
    y = np.where(observed, latent, horizon)
    assert 15 < np.sum(~observed) < 50
    ours = np.array(tobit_fit(x, y, observed))
    reference = _scipy_tobit(x, y, observed, ours * (1 + 1e-2))
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    # The maximum: no nearby point is more likely.
    best = tobit_loglik(ours, x, y, observed)
    for k in range(3):
        for h in (1e-4, -1e-4):
            assert tobit_loglik(ours + h * np.eye(3)[k], x, y, observed) < best
    # Dropping the censored seeds biases the slope down (they sit at large d); the censored fit does not.
    dropped = np.polyfit(x[observed], y[observed], 1)[0]
    assert abs(ours[1] - 0.5) < 0.05 and ours[1] - dropped > 0.04


def test_tobit_without_censoring_is_least_squares():
    rng = np.random.default_rng(4)
    x = np.repeat(np.log([1e2, 1e3, 1e4]), 10)
    y = 1.0 + 0.5 * x + 0.3 * rng.standard_normal(x.size)
    alpha, beta, sigma = tobit_fit(x, y, np.ones(x.size, bool))
    b, a = np.polyfit(x, y, 1)
    assert (alpha, beta) == pytest.approx((a, b), rel=1e-10)
    assert sigma == pytest.approx(np.sqrt(np.mean((y - a - b * x) ** 2)), rel=1e-10)  # the MLE of σ: RSS/n
    # A fit that does not exist: observed seeds at one d only.
    assert all(math.isnan(v) for v in tobit_fit(x, y, x == x[0]))


@pytest.mark.parametrize("k, n", [(0, 64), (1, 10), (17, 64), (50, 64), (64, 64), (1, 1)])
def test_wilson_is_the_root_pair_of_its_quadratic(k, n):
    # Wilson's interval: the p with (k/n − p)² = z² p (1 − p) / n, i.e. the roots of a quadratic in p.
    z = scipy.stats.norm.ppf(0.975)
    p_hat = k / n
    roots = np.sort(np.roots([1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat]).real)
    low, high = wilson_interval(k, n)
    np.testing.assert_allclose([low, high], np.clip(roots, 0, 1), atol=1e-12)
    assert low <= p_hat <= high


def test_wilson_rejects_bad_counts():
    for k, n in ((3, 2), (-1, 4), (1, 0), (0.5, 4)):
        with pytest.raises(ValueError, match="0 ≤ successes ≤ trials"):
            wilson_interval(k, n)
