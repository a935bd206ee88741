"""Hermite expansions: router activations, polynomial experts and Mehler tables.

Everything the exact population loss needs about the two nonlinearities is a
table of numbers computed once, in float64, on the host:

* a router activation σ enters only through its probabilists' Hermite
  coefficients ``c_n = E[σ(z) He_n(z)]``, z ~ N(0, 1);
* a polynomial expert enters only through its coefficients ``a_k`` in the
  Hermite basis, ``P(z) = Σ_k a_k He_k(z)``;
* the two meet in the Mehler table
  ``H_{j,l}(ρ) = E[σ₁^{(j)}(a₁) σ₂^{(l)}(a₂)] = Σ_n ρⁿ c¹_{n+j} c²_{n+l} / n!``
  (Mehler's formula with ``E[σ^{(j)} He_n] = c_{n+j}``).

The coefficients are computed with the normalised Hermite functions
``ψ_n = He_n φ^{1/2} / √(n!)``, whose three-term recurrence stays bounded, and
the trapezoidal rule on a fine grid (spectrally accurate for smooth integrands
that decay like a Gaussian). NumPy's Gauss–Hermite rule would overflow beyond
about 150 nodes, which is why it is not used here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "Activation",
    "HermiteExpert",
    "ACTIVATIONS",
    "EXPERTS",
    "get_activation",
    "get_expert",
    "hermite_coefficients",
    "mehler_table",
    "mehler_chebyshev",
    "gauss_hermite_rule",
]

# Highest Hermite index computed. Mehler tables need c_{n+j} for n below the
# truncation and j up to the sum of the two expert degrees.
_N_COEFFS = 200
# Normalised coefficients below this fraction of the largest are quadrature
# noise (about 3e-17 absolute): they are set to zero, which also ends the series.
_NOISE = 1e-15
# The quadrature grid: ψ_n lives on |z| ≲ √(4n + 2) ≈ 28 for n = 200.
_Z_MAX = 40.0
_Z_STEP = 0.01


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _gaussian_cdf(z):
    # ½(1 + erf(z/√2)), written with math.erf so no SciPy is needed.
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


@dataclasses.dataclass(frozen=True)
class Activation:
    """A router activation σ, known to the exact kernel by its Hermite coefficients.

    The kernel sees σ only through ``c_n = E[σ(z) He_n(z)]``, z ~ N(0, 1)
    (`hermite_coefficients`; docs/model.md §2), so any smooth gate can be plugged in.

    **Arguments:**

    - `name`: the registry name (``"sigmoid"``, ``"erf"``) or a label for a
      user-defined activation. The name is the identity: activations with the
      same name compare equal and share cached coefficient tables, so a
      user-defined activation needs a name of its own (a built-in name is
      refused).
    - `numpy_fn`: σ on NumPy float64 arrays, used once to compute the
      coefficients.
    - `jax_fn`: σ on JAX arrays, used by the forward pass and Monte Carlo.

    The activation must be smooth (analytic in a strip around the real axis)
    for the Mehler series to converge to double precision; all built-in
    activations are.

    Example::

        import math
        gate = jaxmoe.Activation(
            "probit-half",  # Φ(z/√2)
            lambda z: 0.5 * (1.0 + np.vectorize(math.erf)(z / 2.0)),
            lambda z: 0.5 * (1.0 + jax.scipy.special.erf(z / 2.0)),
        )
        c = gate.coefficients(4)    # c_0 … c_3, float64
        assert np.allclose(c, [0.5, 1 / math.sqrt(6 * math.pi), 0.0, c[3]]) and c[3] < 0
        assert np.allclose(gate(jnp.zeros(3)), 0.5)
    """

    name: str
    numpy_fn: Callable = dataclasses.field(compare=False, repr=False)
    jax_fn: Callable = dataclasses.field(compare=False, repr=False)

    def __post_init__(self):
        # The name is the cache key of the coefficient tables: a user-defined
        # activation may not borrow a built-in's name (it would silently get
        # the built-in's tables).
        builtin = globals().get("ACTIVATIONS", {}).get(self.name)
        if builtin is not None and (self.numpy_fn is not builtin.numpy_fn or self.jax_fn is not builtin.jax_fn):
            raise ValueError(
                f"the name {self.name!r} belongs to a built-in activation; give yours a name of its own "
                f"(built-in: {', '.join(sorted(ACTIVATIONS))})"
            )

    def __call__(self, z):
        return self.jax_fn(z)

    def coefficients(self, n: int = _N_COEFFS) -> np.ndarray:
        """``c_k = E[σ(z) He_k(z)]``, z ~ N(0, 1), for ``k < n``: shape ``(n,)``, float64, host."""
        return hermite_coefficients(self, n)


def _jax_sigmoid(z):
    import jax

    return jax.nn.sigmoid(z)


def _jax_gaussian_cdf(z):
    import jax.numpy as jnp
    from jax.scipy.special import erf

    return 0.5 * (1.0 + erf(z / jnp.sqrt(2.0).astype(z.dtype)))


ACTIVATIONS: dict[str, Activation] = {
    # The paper's router: the logistic sigmoid.
    "sigmoid": Activation("sigmoid", _sigmoid, _jax_sigmoid),
    # The probit gate Φ(z) = ½(1 + erf(z/√2)): like the sigmoid a gate in
    # (0, 1), with closed-form Hermite coefficients (used to test the tables).
    "erf": Activation("erf", _gaussian_cdf, _jax_gaussian_cdf),
}
# tanh is deliberately absent: its poles at ±iπ/2 make its Hermite series
# decay so slowly that a double-precision Mehler table needs thousands of terms.


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name; an `Activation` is returned unchanged.

    **Arguments:** `name`, a key of `ACTIVATIONS` (``"sigmoid"``, ``"erf"``)
    or an `Activation`.

    **Returns:** the `Activation`. **Raises:** `ValueError` for an unknown name.

    Example::

        assert np.allclose(jaxmoe.get_activation("erf")(jnp.array([0.0, 1.0])), [0.5, 0.8413], atol=1e-4)   # Φ(0), Φ(1)
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"unknown router activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class HermiteExpert:
    """A polynomial expert ``P(z) = Σ_k a_k He_k(z)`` written in the Hermite basis.

    He_k are the probabilists' Hermite polynomials (He_0 = 1, He_1 = z,
    He_{k+1} = z He_k − k He_{k−1}); the exact kernel uses the coefficients
    a_k directly (docs/model.md §2).

    **Arguments:**

    - `coefficients`: ``(a_0, a_1, ..., a_K)``; the paper's expert is He3,
      ``(0, 0, 0, 1)``.
    - `name`: a label used in configuration files and error messages.

    Example::

        p = jaxmoe.HermiteExpert((0.0, 1.0, 0.0, 0.5), name="he1+he3/2")   # z + ½(z³ − 3z)
        assert np.allclose(p(2.0), 3.0) and p.degree == 3
    """

    coefficients: tuple[float, ...]
    name: str = "custom"

    def __post_init__(self):
        coeffs = tuple(float(a) for a in self.coefficients)
        if len(coeffs) == 0 or not all(math.isfinite(a) for a in coeffs):
            raise ValueError(
                "expert coefficients must be a non-empty sequence of finite numbers"
            )
        object.__setattr__(self, "coefficients", coeffs)

    @property
    def degree(self) -> int:
        """The largest k with a_k ≠ 0 (0 for a constant)."""
        nonzero = [k for k, a in enumerate(self.coefficients) if a != 0.0]
        return max(nonzero, default=0)

    def __call__(self, z):
        """Evaluate P(z) by the three-term recurrence He_{k+1} = z He_k − k He_{k−1}."""
        h_prev, h = 1.0 + 0.0 * z, z
        out = self.coefficients[0] * h_prev
        for k in range(1, len(self.coefficients)):
            if self.coefficients[k] != 0.0:
                out = out + self.coefficients[k] * h
            h_prev, h = h, z * h - k * h_prev
        return out


EXPERTS: dict[str, HermiteExpert] = {
    f"he{k}": HermiteExpert(tuple([0.0] * k + [1.0]), name=f"he{k}") for k in range(1, 5)
}


def get_expert(name: str | HermiteExpert) -> HermiteExpert:
    """Look a polynomial expert up by name (``"he1"`` … ``"he4"``); a `HermiteExpert` is returned unchanged.

    **Returns:** the `HermiteExpert`. **Raises:** `ValueError` for an unknown name.

    Example::

        assert np.allclose(jaxmoe.get_expert("he3")(2.0), 2.0)    # He3(2) = 2³ − 3·2
    """
    if isinstance(name, HermiteExpert):
        return name
    if not isinstance(name, str) or name not in EXPERTS:
        raise ValueError(
            f"unknown expert {name!r}; allowed: {', '.join(sorted(EXPERTS))}"
        )
    return EXPERTS[name]


@functools.cache
def _normalised_coefficients(activation: Activation, n: int) -> np.ndarray:
    """``γ_k = E[σ He_k] / √(k!)`` for k < n by the trapezoidal rule."""
    # Integer multiples of the step: a grid built by adding steps drifts, and
    # the trapezoidal rule then loses its spectral accuracy (seen: 1e-13).
    half = int(round(_Z_MAX / _Z_STEP))
    z = np.arange(-half, half + 1) * _Z_STEP
    sqrt_phi = np.exp(-0.25 * z * z) / (2.0 * np.pi) ** 0.25
    weight = np.asarray(activation.numpy_fn(z), dtype=np.float64) * sqrt_phi * _Z_STEP
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"activation {activation.name!r} is not finite on the real line")
    gamma = np.empty(n)
    psi_prev, psi = np.zeros_like(z), sqrt_phi  # ψ_{-1}, ψ_0
    for k in range(n):
        gamma[k] = weight @ psi
        psi_prev, psi = psi, (z * psi - math.sqrt(k) * psi_prev) / math.sqrt(k + 1)
    # Exact zeros from symmetry (σ − σ(0) odd, as for the sigmoid, or σ even)
    # are restored exactly rather than left as quadrature noise.
    values = np.asarray(activation.numpy_fn(z), dtype=np.float64)
    centre = float(np.asarray(activation.numpy_fn(np.zeros(1)))[0])
    k = np.arange(n)
    if np.max(np.abs(values + values[::-1] - 2.0 * centre)) < 1e-13:
        gamma[(k % 2 == 0) & (k > 0)] = 0.0
    elif np.max(np.abs(values - values[::-1])) < 1e-13:
        gamma[k % 2 == 1] = 0.0
    gamma[np.abs(gamma) < _NOISE * np.max(np.abs(gamma))] = 0.0
    return gamma


def hermite_coefficients(activation: str | Activation, n: int = _N_COEFFS) -> np.ndarray:
    """Hermite coefficients ``c_k = E[σ(z) He_k(z)]``, z ~ N(0, 1), for ``k < n``.

    Computed as ``c_k = √(k!) ∫ σ(z) ψ_k(z) φ(z)^{1/2} dz`` with the normalised
    Hermite functions ``ψ_k`` (module docstring) by the trapezoidal rule;
    coefficients below about 1e-15 of the largest are set to zero.

    For the sigmoid: c0 = 0.5, c1 = 0.20662096, c3 = −0.06239648, even k ≥ 2
    vanish (docs/model.md §1). For the probit gate Φ, Gaussian integration by parts
    gives ``c_k = E[Φ^{(k)}(z)]``, e.g. ``c_1 = E[φ(z)] = 1/(2√π)``.

    **Arguments:** `activation`, a name or an `Activation`; `n`, the number of
    coefficients (at most 200 are computed, the highest index used).

    **Returns:** a float64 NumPy array of length `n`.

    Example::

        assert np.allclose(jaxmoe.hermite_coefficients("sigmoid", 4), [0.5, 0.20662096, 0.0, -0.06239648])
        assert np.allclose(jaxmoe.hermite_coefficients("erf", 2)[1], 0.28209479)    # 1/(2√π)
    """
    activation = get_activation(activation)
    gamma = _normalised_coefficients(activation, n)
    log_fact = np.array([math.lgamma(k + 1) for k in range(n)])
    return gamma * np.exp(0.5 * log_fact)


@functools.cache
def mehler_table(left: Activation, right: Activation, max_order: int) -> np.ndarray:
    """Power-series coefficients of ``H_{j,l}(ρ)`` for ``0 ≤ j, l ≤ max_order``.

    ``H_{j,l}(ρ) = E[σ_left^{(j)}(a₁) σ_right^{(l)}(a₂)]`` for standard
    Gaussians a₁, a₂ with correlation ρ; Mehler's formula with
    ``E[σ^{(j)} He_n] = c_{n+j}`` gives (docs/model.md §2)
    ``H_{j,l}(ρ) = Σ_{n<N} T[n, j, l] ρⁿ`` with
    ``T[n, j, l] = c^left_{n+j} c^right_{n+l} / n!``, computed as
    ``γ_{n+j} γ_{n+l} √((n+j)!/n!) √((n+l)!/n!)`` from the normalised
    coefficients ``γ_k = c_k/√(k!)`` so that no factorial overflows. The
    series ends where the coefficients fall below double precision, which for
    the sigmoid is about 140 terms and leaves an error near 1e-16 even at
    ``|ρ| = 1`` (the diagonal terms of the loss).

    **Arguments:** `left`, `right`: `Activation` objects (not names: the
    table is cached on them); `max_order`: the largest derivative order.

    **Returns:** float64 array of shape ``(N, max_order + 1, max_order + 1)``.

    Example::

        sigmoid = jaxmoe.get_activation("sigmoid")
        table = jaxmoe.mehler_table(sigmoid, sigmoid, 3)
        assert table.shape == (140, 4, 4)
        mehler = np.polynomial.polynomial.polyval(0.3, table[:, 0, 0])   # E[σ(a₁)σ(a₂)] at ρ = 0.3
        c = jaxmoe.hermite_coefficients("sigmoid", 20)
        assert np.allclose(mehler, sum(0.3**n * c[n] ** 2 / np.prod(np.arange(1, n + 1)) for n in range(20)))
        assert np.allclose(table[:, 0, 0].sum(), 0.29337904)          # ρ = 1: E[σ²]
    """
    ga = _normalised_coefficients(left, _N_COEFFS)
    gb = _normalised_coefficients(right, _N_COEFFS)
    last = max(int(np.max(np.nonzero(ga)[0], initial=0)), int(np.max(np.nonzero(gb)[0], initial=0)))
    if last >= _N_COEFFS - 10:
        raise ValueError(
            f"the Hermite series of ({left.name}, {right.name}) does not reach double "
            f"precision within {_N_COEFFS} terms; use a smoother router activation"
        )
    n_terms = last + 1
    n = np.arange(n_terms)[:, None]
    j = np.arange(max_order + 1)[None, :]
    log_fact = np.array([math.lgamma(k + 1) for k in range(_N_COEFFS + max_order + 1)])
    # √((n + j)! / n!) computed in logs: the factorials themselves overflow.
    ratio = np.exp(0.5 * (log_fact[n + j] - log_fact[n]))  # (n, j)
    pad_a = np.concatenate([ga, np.zeros(max_order + 1)])
    pad_b = np.concatenate([gb, np.zeros(max_order + 1)])
    a = pad_a[n + j] * ratio  # (n, j)
    b = pad_b[n + j] * ratio  # (n, l)
    return a[:, :, None] * b[:, None, :]


@functools.cache
def mehler_chebyshev(left: Activation, right: Activation, max_order: int) -> np.ndarray:
    """Chebyshev coefficients of ``H_{j,l}(ρ)`` on ``[−1, 1]``.

    The Taylor series of `mehler_table` converges only sub-geometrically at
    ``|ρ| = 1`` (about 140 terms for the sigmoid), but each ``H_{j,l}`` is smooth
    on the closed interval, so its Chebyshev series converges geometrically:
    about 45 terms reach double precision. The kernel evaluates this shorter
    series; the Taylor table stays the definition it is tested against.

    The coefficients come from interpolation at 256 Chebyshev points of the
    first kind (a discrete cosine transform of the Taylor table's values),
    cut where every tail coefficient is below 1e-14 of its function's scale.

    **Arguments:** as for `mehler_table`.

    **Returns:** float64 array ``C`` of shape ``(K, max_order + 1, max_order + 1)``
    with ``H_{j,l}(ρ) = Σ_k C[k, j, l] T_k(ρ)``.

    Example::

        sigmoid = jaxmoe.get_activation("sigmoid")
        cheb = jaxmoe.hermite.mehler_chebyshev(sigmoid, sigmoid, 3)   # (K, 4, 4)
        taylor = jaxmoe.mehler_table(sigmoid, sigmoid, 3)
        assert np.allclose(np.polynomial.chebyshev.chebval(0.3, cheb[:, 0, 0]),
                           np.polynomial.polynomial.polyval(0.3, taylor[:, 0, 0]), rtol=0, atol=1e-13)
    """
    taylor = mehler_table(left, right, max_order)  # (N, J, L)
    nodes = 256
    theta = np.pi * (np.arange(nodes) + 0.5) / nodes
    x = np.cos(theta)
    values = np.polynomial.polynomial.polyval(x, taylor.reshape(taylor.shape[0], -1)).T  # (nodes, J·L)
    # Interpolation at Chebyshev points: a discrete cosine transform.
    k = np.arange(nodes)
    coeffs = (2.0 / nodes) * np.cos(np.outer(k, theta)) @ values  # (nodes, J·L)
    coeffs[0] *= 0.5
    # Functions that vanish up to rounding (such as H_{j,l} with j + l odd for
    # the sigmoid) are judged against the largest, not against their own noise.
    scale = np.maximum(np.abs(values).max(axis=0), 1e-6 * np.abs(values).max())
    small = np.abs(coeffs) <= 1e-14 * scale  # the rounding floor of the transform
    tail_small = np.flip(np.cumprod(np.flip(small, axis=0), axis=0), axis=0).all(axis=1)
    if not tail_small.any():
        raise ValueError(f"the Mehler functions of ({left.name}, {right.name}) are not smooth enough")
    degree = int(np.argmax(tail_small))
    return coeffs[: max(degree, 2)].reshape(-1, max_order + 1, max_order + 1)


def gauss_hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss–Hermite rule for E[g(z)], z ~ N(0, 1) (weights sum to 1).

    NumPy's rule overflows beyond 150 nodes, so larger n is refused.
    """
    if not 1 <= n <= 150:
        raise ValueError(f"nodes must be between 1 and 150 (NumPy's rule overflows beyond); got {n}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()
