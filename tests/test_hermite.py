"""Hermite coefficients, Mehler tables and polynomial experts (jaxmoe.hermite).

Constants from docs/model.md §1; the probit gate Φ(z) = ½(1 + erf(z/√2)) has closed
forms for both its coefficients and its Mehler function, which pin the tables
down independently of the quadrature that computes them.
"""

import math

import numpy as np
import pytest
from scipy import integrate

import jaxmoe
from jaxmoe import hermite

# Eight significant digits as printed in docs/model.md §1: agreement to half a unit
# in the last digit.
TOL_8_DIGITS = 5e-9


def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _sigmoid(z):
    return 0.5 * (1.0 + math.tanh(0.5 * z))


def _hermite_e(k, z):
    """He_k(z) by NumPy's own Hermite_e evaluation (independent of jaxmoe)."""
    return np.polynomial.hermite_e.hermeval(z, [0.0] * k + [1.0])


# ---------------------------------------------------------------------------
# Sigmoid coefficients


@pytest.mark.parametrize(
    "k, expected",
    [(0, 0.5), (1, 0.20662096), (3, -0.06239648), (5, 0.06437997), (7, -0.12258044)],
)
def test_sigmoid_coefficients_match_design_constants(k, expected):
    c = jaxmoe.hermite_coefficients("sigmoid")
    assert c.dtype == np.float64
    assert abs(c[k] - expected) <= TOL_8_DIGITS


def test_sigmoid_even_coefficients_vanish_exactly():
    c = jaxmoe.hermite_coefficients("sigmoid")
    even = c[2::2]
    assert even.size > 50
    assert np.all(even == 0.0)
    # ...while the odd ones do not (the series is not accidentally empty).
    assert np.all(c[1:40:2] != 0.0)


def test_sigmoid_coefficients_match_direct_quadrature():
    # c_k = E[σ(z) He_k(z)] by NumPy's 150-point Gauss–Hermite rule, independent
    # of the trapezoidal rule on normalised Hermite functions used by jaxmoe.
    c = jaxmoe.hermite_coefficients("sigmoid")
    z, w = np.polynomial.hermite_e.hermegauss(150)
    w = w / w.sum()
    sigma = 0.5 * (1.0 + np.tanh(0.5 * z))
    for k in range(30):
        direct = w @ (sigma * _hermite_e(k, z))
        assert abs(c[k] - direct) / math.sqrt(math.factorial(k)) <= 1e-14, k


def test_sigmoid_second_moment_from_mehler_table_at_rho_one():
    # H_{0,0}(1) = Σ_n c_n²/n! = E[σ(z)²] = 0.29337904 (docs/model.md §1).
    sig = jaxmoe.get_activation("sigmoid")
    table = jaxmoe.mehler_table(sig, sig, 0)
    assert table.shape[1:] == (1, 1)
    assert abs(table[:, 0, 0].sum() - 0.29337904) <= TOL_8_DIGITS
    # And by direct quadrature to full precision.
    direct, _ = integrate.quad(lambda z: _sigmoid(z) ** 2 * _phi(z), -40, 40, epsabs=1e-15)
    assert abs(table[:, 0, 0].sum() - direct) <= 1e-14
    # H_{0,0}(0) = c0².
    assert abs(table[0, 0, 0] - 0.25) <= 1e-15


def test_sigmoid_mehler_derivative_entries_at_rho_one():
    # H_{j,l}(1) = E[σ^(j)(z) σ^(l)(z)]: check (1,1) and (0,2) against quadrature.
    sig = jaxmoe.get_activation("sigmoid")
    table = jaxmoe.mehler_table(sig, sig, 2)

    def d1(z):
        s = _sigmoid(z)
        return s * (1 - s)

    def d2(z):
        s = _sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    h11, _ = integrate.quad(lambda z: d1(z) ** 2 * _phi(z), -40, 40, epsabs=1e-15)
    h02, _ = integrate.quad(lambda z: _sigmoid(z) * d2(z) * _phi(z), -40, 40, epsabs=1e-15)
    assert abs(table[:, 1, 1].sum() - h11) <= 1e-14
    assert abs(table[:, 0, 2].sum() - h02) <= 1e-14
    assert np.array_equal(table[:, 0, 2], table[:, 2, 0])


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.45, 0.99])
def test_sigmoid_mehler_series_matches_2d_quadrature(rho):
    # E[σ(a₁)σ(a₂)] for corr(a₁, a₂) = ρ by a 2-D Gauss–Hermite rule in the
    # Cholesky coordinates a₁ = g₁, a₂ = ρ g₁ + √(1−ρ²) g₂.
    sig = jaxmoe.get_activation("sigmoid")
    table = jaxmoe.mehler_table(sig, sig, 0)[:, 0, 0]
    series = np.polynomial.polynomial.polyval(rho, table)
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    g1, g2 = np.meshgrid(z, z, indexing="ij")
    a2 = rho * g1 + math.sqrt(1 - rho * rho) * g2
    direct = np.sum(np.outer(w, w) * 0.5 * (1 + np.tanh(0.5 * g1)) * 0.5 * (1 + np.tanh(0.5 * a2)))
    assert abs(series - direct) <= 1e-13


# ---------------------------------------------------------------------------
# The probit gate "erf": closed forms


def _probit_coefficient(n):
    """c_n = E[Φ(z) He_n(z)]: ½ for n = 0, else E[φ He_{n−1}]: zero for even n,
    (−1)^{n−1}/(2√π) · (n−1)!/(((n−1)/2)! 2^{(n−1)/2}) · (−1/2)^{(n−1)/2} for odd n."""
    if n == 0:
        return 0.5
    if n % 2 == 0:
        return 0.0
    h = (n - 1) // 2
    return (
        (-1) ** (n - 1) / (2 * math.sqrt(math.pi))
        * math.factorial(n - 1) / (math.factorial(h) * 2**h)
        * (-0.5) ** h
    )


def test_erf_gate_coefficients_match_closed_form():
    c = jaxmoe.hermite_coefficients("erf", 60)
    assert c.shape == (60,)
    for n in range(60):
        scale = math.sqrt(math.factorial(n))
        assert abs(c[n] / scale - _probit_coefficient(n) / scale) <= 1e-15, n
    assert np.all(c[2::2] == 0.0)


@pytest.mark.parametrize("rho", [-1.0, -0.6, 0.0, 0.3, 0.8, 1.0])
def test_erf_gate_mehler_function_matches_orthant_probability(rho):
    # E[Φ(a₁)Φ(a₂)] = P(Z₁ ≤ a₁, Z₂ ≤ a₂): a bivariate orthant probability with
    # correlation ρ/2, that is ¼ + arcsin(ρ/2)/(2π).
    erf_gate = jaxmoe.get_activation("erf")
    table = jaxmoe.mehler_table(erf_gate, erf_gate, 0)[:, 0, 0]
    series = np.polynomial.polynomial.polyval(rho, table)
    assert abs(series - (0.25 + math.asin(rho / 2) / (2 * math.pi))) <= 1e-14


def test_mixed_mehler_table_is_outer_product_of_coefficients():
    # T[n, j, l] = c^left_{n+j} c^right_{n+l} / n!.
    sig, erf_gate = jaxmoe.get_activation("sigmoid"), jaxmoe.get_activation("erf")
    table = jaxmoe.mehler_table(sig, erf_gate, 3)
    c_s = jaxmoe.hermite_coefficients("sigmoid")
    c_e = jaxmoe.hermite_coefficients("erf")
    for n in range(20):
        for j in range(4):
            for k in range(4):
                expected = c_s[n + j] * c_e[n + k] / math.factorial(n)
                assert abs(table[n, j, k] - expected) <= 1e-15 * max(1.0, abs(expected)), (n, j, k)


# ---------------------------------------------------------------------------
# Polynomial experts


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_builtin_expert_evaluates_probabilists_hermite(k):
    z = np.linspace(-5.0, 5.0, 101)
    expert = jaxmoe.get_expert(f"he{k}")
    assert expert.degree == k
    np.testing.assert_allclose(expert(z), _hermite_e(k, z), rtol=1e-14, atol=1e-12)


def test_custom_expert_evaluates_hermite_series():
    coefficients = (0.3, -1.2, 0.0, 2.5, 0.7, 0.0, -0.4)
    expert = jaxmoe.HermiteExpert(coefficients)
    z = np.linspace(-4.0, 4.0, 81)
    expected = np.polynomial.hermite_e.hermeval(z, coefficients)
    np.testing.assert_allclose(expert(z), expected, rtol=1e-13, atol=1e-11)
    assert expert.degree == 6
    # Trailing zeros do not raise the degree.
    assert jaxmoe.HermiteExpert((0.0, 1.0, 0.0, 0.0)).degree == 1


def test_he3_is_z_cubed_minus_3z_and_has_second_moment_six():
    z, w = np.polynomial.hermite_e.hermegauss(10)
    w = w / w.sum()
    he3 = jaxmoe.get_expert("he3")
    np.testing.assert_allclose(he3(z), z**3 - 3 * z, rtol=0, atol=1e-13)
    assert abs(w @ he3(z) ** 2 - 6.0) <= 1e-12


@pytest.mark.parametrize("bad", [(), (1.0, float("nan")), (float("inf"),)])
def test_expert_rejects_bad_coefficients(bad):
    with pytest.raises(ValueError, match="finite"):
        jaxmoe.HermiteExpert(bad)


# ---------------------------------------------------------------------------
# Registries


@pytest.mark.parametrize("bad", ["tanh", "relu", "Sigmoid", "", 3])
def test_unknown_activation_raises_listing_allowed_names(bad):
    with pytest.raises(ValueError, match=r"allowed: erf, sigmoid"):
        jaxmoe.get_activation(bad)
    with pytest.raises(ValueError, match=r"allowed: erf, sigmoid"):
        jaxmoe.hermite_coefficients(bad)


def test_a_custom_activation_cannot_take_a_built_in_name():
    """The name keys the cached tables: a different σ named "sigmoid" would get the sigmoid's."""
    half = (lambda z: 0.5 + 0.0 * z, lambda z: 0.5 + 0.0 * z)
    with pytest.raises(ValueError, match="the name 'sigmoid' belongs to a built-in activation"):
        jaxmoe.Activation("sigmoid", *half)
    builtin = jaxmoe.ACTIVATIONS["sigmoid"]
    assert jaxmoe.Activation("sigmoid", builtin.numpy_fn, builtin.jax_fn) == builtin
    assert jaxmoe.Activation("half", *half).name == "half"


@pytest.mark.parametrize("bad", ["he0", "he5", "HE3", "relu", None])
def test_unknown_expert_raises_listing_allowed_names(bad):
    with pytest.raises(ValueError, match=r"allowed: he1, he2, he3, he4"):
        jaxmoe.get_expert(bad)


def test_model_rejects_unknown_names():
    import jax.numpy as jnp

    with pytest.raises(ValueError, match="allowed: erf, sigmoid"):
        jaxmoe.MoE(jnp.ones((2, 3)), jnp.ones((2, 3)), gate="relu")
    with pytest.raises(ValueError, match="allowed: he1, he2, he3, he4"):
        jaxmoe.MoE(jnp.ones((2, 3)), jnp.ones((2, 3)), expert_fn="he7")


def test_registry_objects_pass_through():
    sig = jaxmoe.get_activation("sigmoid")
    assert jaxmoe.get_activation(sig) is sig
    custom = jaxmoe.HermiteExpert((0.0, 1.0, 0.5), name="mine")
    assert jaxmoe.get_expert(custom) is custom
    assert hermite.ACTIVATIONS.keys() == {"sigmoid", "erf"}
