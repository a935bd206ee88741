"""The two-sample Kolmogorov–Smirnov test against SciPy's (`scipy.stats.ks_2samp`, method 'auto')."""

import math

import numpy as np
import pytest
import scipy.stats

from jaxmoe.stats import ks_2samp


@pytest.mark.parametrize("n1, n2", [(32, 32), (20, 37), (32, 33), (5, 200), (1, 3)])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.5])
def test_matches_scipy_on_fixed_samples(n1, n2, shift):
    rng = np.random.default_rng(n1 * 1000 + n2)
    a, b = rng.normal(size=n1), rng.normal(size=n2) + shift
    a[: n1 // 8] = np.inf  # recoveries that never happened
    expected = scipy.stats.ks_2samp(a, b, method="auto")
    d, p = ks_2samp(a, b)
    assert d == pytest.approx(expected.statistic, abs=1e-15)
    # Equal sizes: the same Horner sum as SciPy; unequal: our path probabilities against its path counts.
    assert p == pytest.approx(expected.pvalue, rel=1e-11, abs=1e-15)


def test_ties_and_identical_samples():
    d, p = ks_2samp([1.0, 2.0, np.inf, np.inf], [1.0, 2.0, np.inf, np.inf])
    assert (d, p) == (0.0, 1.0)
    # Fully separated samples of 32: p = 2 / C(64, 32).
    d, p = ks_2samp(np.arange(32.0), np.arange(32.0) + 100)
    assert d == 1.0 and p == pytest.approx(2 / math.comb(64, 32), rel=1e-12)


@pytest.mark.parametrize("a, b, message", [([], [1.0], "non-empty"), ([np.nan], [1.0], "NaN")])
def test_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        ks_2samp(a, b)
