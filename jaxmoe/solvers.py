"""Solvers for stiff gradient flows, written as diffrax solvers.

After a teacher expert is recovered the gradient flow ``dθ/dt = −∇L(θ)`` is
stiff: its Jacobian −∇²L has eigenvalues down to about −36 while the modes
that carry the dynamics move at rates of 1e-4 to 0.3 (docs/solvers.md). An
explicit Runge–Kutta method then takes steps set by its stability interval
(``h ≲ 3.5/λ_max`` for Tsit5), not by the tolerance. The Jacobian of a
gradient flow is symmetric, so its spectrum is real: the methods here
stretch the stability interval along the negative real axis instead of
solving linear systems.

- `RKC2`: the second-order Runge–Kutta–Chebyshev method of Sommeijer,
  Shampine and Verwer ("RKC: an explicit solver for parabolic PDEs", J.
  Comput. Appl. Math. 88, 1998), with the damped shifted Chebyshev
  polynomials of Verwer, Hundsdorfer and Sommeijer (1990). With s stages
  its real stability interval is ``[−β(s), 0]``,
  ``β(s) = (2/3)(s² − 1)(1 − 2ε/15) ≈ 0.65 s²`` (damping ε = 2/13), so a
  step of size h needs ``s ≈ √(1 + 1.55 h ρ)`` evaluations of the vector
  field, where ρ is the spectral radius of the Jacobian: the cost grows
  like √ρ instead of ρ. Each step picks its own s from h and a running
  estimate of ρ.
- `StiffnessMonitor`: wraps any diffrax Runge–Kutta solver and keeps the
  same spectral-radius estimate beside it, so that a solve can stop once
  its steps are stability-limited and continue with `RKC2`
  (`jaxmoe.flow` does that for ``solver="auto"``).

The spectral radius comes from a power iteration warm-started along the
trajectory: one product of the Jacobian with the current iterate per step,
by a forward difference of the vector field (one evaluation, exact to about
√ε relative). The iterate converges to the eigenvector of largest |λ|,
which may belong to a negative-curvature direction on a saddle; that only
makes the estimate larger than the stability bound needs, so the step stays
stable. The iterate's norm approaches ρ from below, hence the margin
`safety` in the stage-count rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx  # diffrax's own dependency: its default norm lives there
from jaxtyping import Array, PyTree

__all__ = ["RKC2", "AuxTerm", "Tracked", "state_norm", "rkc2_stability_bound", "rkc2_stages", "spectral_radius"]

# Damping of the Chebyshev polynomials (the value of the RKC code): keeps the
# stability polynomial strictly inside (−1, 1) on the stiff part of the
# interval, at the price of 2ε/15 ≈ 2% of its length.
RKC_DAMPING = 2.0 / 13.0


def _axpy(*pairs) -> PyTree:
    """``Σ_k c_k · x_k`` over PyTrees (coefficients scalar, possibly traced)."""
    coefficients = [c for c, _ in pairs]
    trees = [x for _, x in pairs]
    return jtu.tree_map(lambda *leaves: sum(c * leaf for c, leaf in zip(coefficients, leaves)), *trees)


def _norm(tree: PyTree) -> Array:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jtu.tree_leaves(tree)))


def rkc2_stability_bound(stages, damping: float = RKC_DAMPING):
    """``β(s) = (2/3)(s² − 1)(1 − 2ε/15)``: RKC2 with s stages is stable for real ``hλ ∈ [−β(s), 0]``.

    (Sommeijer, Shampine and Verwer 1998, eq. 2.12.) Example::

        assert np.allclose(jaxmoe.solvers.rkc2_stability_bound(10), 64.6, atol=0.05)
    """
    return (2.0 / 3.0) * (stages**2 - 1.0) * (1.0 - 2.0 * damping / 15.0)


def rkc2_stages(h_rho, *, safety: float = 1.25, max_stages: int = 256, damping: float = RKC_DAMPING):
    """The fewest stages s ≥ 2 with ``β(s) ≥ safety · h · ρ`` (at most `max_stages`).

    Example::

        assert jaxmoe.solvers.rkc2_stages(36.0) == 9          # a step h = 1 at ρ = 36
    """
    scale = (2.0 / 3.0) * (1.0 - 2.0 * damping / 15.0)
    stages = jnp.ceil(jnp.sqrt(1.0 + safety * jnp.maximum(h_rho, 0.0) / scale))
    return jnp.clip(jnp.where(jnp.isfinite(stages), stages, max_stages), 2, max_stages).astype(jnp.int32)


def _where(condition, a: PyTree, b: PyTree) -> PyTree:
    return jtu.tree_map(lambda x, y: jnp.where(condition, x, y), a, b)


def _difference_step(delta: Array, f: PyTree, v: PyTree, shifted: PyTree) -> tuple[PyTree, Array]:
    """One power step from ``F(y + δv)`` (`shifted`) and ``F(y)`` (`f`): the new unit iterate and
    ``‖J v‖`` (≤ ρ, → ρ), with ``J v ≈ (F(y + δv) − F(y)) / δ`` for unit v (δ: `_shift`)."""
    jv = _axpy((1.0 / delta, shifted), (-1.0 / delta, f))
    size = _norm(jv)
    ok = jnp.isfinite(size) & (size > 0)
    v_new = jtu.tree_map(lambda a, b: jnp.where(ok, a / jnp.where(ok, size, 1.0), b), jv, v)
    return v_new, jnp.where(ok, size, 0.0)


def _shift(eps: float | None, y: PyTree) -> Array:
    """The finite difference's δ = √ε (1 + ‖y‖), ε the rounding unit of the field's arithmetic
    (`eps`, or that of y's dtype)."""
    if eps is None:
        eps = float(jnp.finfo(jtu.tree_leaves(y)[0].dtype).eps)
    return jnp.sqrt(eps) * (1.0 + _norm(y))


def _power_step(func: Callable, y: PyTree, f: PyTree, v: PyTree, eps: float | None = None) -> tuple[PyTree, Array]:
    """One warm-started power iteration at y (F = `func`, ``F(y)`` = `f`): the new unit iterate and ``‖J v‖``."""
    delta = _shift(eps, y)
    return _difference_step(delta, f, v, func(_axpy((1.0, y), (delta, v))))


def _start_vector(y: PyTree) -> PyTree:
    """A fixed pseudo-random unit vector shaped like y: the same for every seed, so a
    seed's numbers do not depend on its batch."""
    leaves, treedef = jtu.tree_flatten(y)
    keys = jax.random.split(jax.random.PRNGKey(20260101), len(leaves))
    noise = [jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf)) for k, leaf in zip(keys, leaves)]
    v = jtu.tree_unflatten(treedef, noise)
    return jtu.tree_map(lambda a: a / _norm(v), v)


def _due(count: Array, every: int) -> Array:
    return jnp.asarray(True) if every == 1 else count % every == 0


def _warm_power_step(func: Callable, y: PyTree, f: PyTree, state: tuple, every: int, eps: float | None = None) -> tuple:
    """The running estimate ``(v, ρ, accepted steps)``: one power step every `every` accepted steps.

    ρ moves slowly along a gradient flow (2.4 to 36 over a Figure 1
    trajectory), so a few steps' lag costs nothing, while a product a step
    is a fifth of the work of a typical stabilized step. Under vmap the
    product runs when any seed is due and is kept only by those due, so a
    seed's numbers do not depend on its batch.
    """
    v, rho, count = state
    if every == 1:
        v1, rho1 = _power_step(func, y, f, v, eps)
        return v1, rho1, count + 1
    due = _due(count, every)
    v1, rho1 = jax.lax.cond(
        eqx.internal.unvmap_any(due), lambda: _power_step(func, y, f, v, eps), lambda: (v, rho)
    )
    return _where(due, v1, v), jnp.where(due, rho1, rho), count + 1


def _cold_start(evaluate: Callable, y: PyTree, iterations: int, eps: float | None = None, rate_of: Callable = lambda out: out):
    """``(F(y), v, ρ)``: the field's output at y, and `iterations` power steps from `_start_vector`.

    `evaluate` maps a point to the field's output there, `rate_of` that
    output to a y-shaped rate. All ``iterations + 1`` evaluations happen
    at one place in the program, a loop whose first pass evaluates at y
    itself: XLA compiles every place a program evaluates the field as a
    copy of its own, and the field is nearly all of a solve's program
    (benchmarks/compile.py).
    """
    out_shape = jax.eval_shape(evaluate, y)
    f0 = jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
    delta = _shift(eps, y)

    def body(i, carry):
        f, v, rho = carry
        first = i == 0
        out = evaluate(_where(first, y, _axpy((1.0, y), (delta, v))))
        f = _where(first, out, f)
        v_new, size = _difference_step(delta, rate_of(f), v, rate_of(out))
        return f, _where(first, v, v_new), jnp.where(first, jnp.zeros_like(size), size)

    zero = jnp.zeros((), jtu.tree_leaves(y)[0].dtype)
    return jax.lax.fori_loop(0, iterations + 1, body, (f0, _start_vector(y), zero))


def spectral_radius(func: Callable, y: PyTree, *, iterations: int = 30) -> Array:
    """Power-iteration estimate of the spectral radius of the Jacobian of `func` at `y`.

    The cold start of the solvers' running estimate: `iterations`
    forward-difference products from a fixed start vector. Example::

        rho = jaxmoe.solvers.spectral_radius(lambda y: -jnp.array([1.0, 36.0]) * y, jnp.ones(2))
        assert np.allclose(rho, 36.0, rtol=1e-6)
    """
    return _cold_start(func, y, iterations)[2]


class RKC2(diffrax.AbstractAdaptiveSolver):
    """Second-order Runge–Kutta–Chebyshev (RKC), for ODEs with a real (or nearly real) stiff spectrum.

    One step from ``y_n`` over ``h`` with s stages (Sommeijer, Shampine and
    Verwer 1998, eqs. 2.5–2.10), ``w0 = 1 + ε/s²``, ``w1 = T_s'(w0)/T_s''(w0)``,
    ``b_j = T_j''(w0)/T_j'(w0)²`` (j ≥ 2; b_0 = b_1 = b_2), ``a_j = 1 − b_j T_j(w0)``:

        Y_0 = y_n,   Y_1 = Y_0 + μ̃_1 h F(Y_0),   μ̃_1 = b_1 w1
        Y_j = (1 − μ_j − ν_j) Y_0 + μ_j Y_{j−1} + ν_j Y_{j−2} + μ̃_j h F(Y_{j−1}) + γ̃_j h F(Y_0)
        μ_j = 2 w0 b_j/b_{j−1},  ν_j = −b_j/b_{j−2},  μ̃_j = 2 w1 b_j/b_{j−1},  γ̃_j = −a_{j−1} μ̃_j
        y_{n+1} = Y_s

    with T_j the Chebyshev polynomials of the first kind. The local error
    estimate is the RKC code's ``0.8 (y_n − y_{n+1}) + 0.4 h (F(y_n) + F(y_{n+1}))``
    (of order h³; F(y_{n+1}) is reused as the next step's F(y_n)), the dense
    output the cubic Hermite interpolant. Every step picks its s from h and
    the running spectral-radius estimate ρ (module docstring) so that
    ``β(s) ≥ safety·h·ρ``.

    A step costs s evaluations of the vector field plus one for the power
    iteration. Use it with `diffrax.PIDController`.

    **Arguments:**

    - `safety`: margin on the estimated spectral radius (≥ 1).
    - `max_stages`: the most stages a step may take; a larger ``h·ρ`` is
      unstable, the error estimate rejects the step and the controller
      shrinks it.
    - `power_iterations`: power iterations at the start of a solve (a cold
      estimate); along the trajectory one iteration every `power_every`
      accepted steps keeps it warm.
    - `difference_eps`: the rounding unit of the vector field's arithmetic,
      which sizes the power iteration's finite difference (None: that of
      the state's dtype; set it when the field runs in a narrower dtype
      than the state, e.g. float32 under a float64 state).

    Example::

        import diffrax
        rates = jnp.array([1e-2, 1.0, 1e3])
        term = diffrax.ODETerm(lambda t, y, args: -rates * y)
        solution = diffrax.diffeqsolve(term, jaxmoe.solvers.RKC2(), 0.0, 10.0, None, jnp.ones(3),
                                       stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9))
        assert np.allclose(solution.ys[-1], jnp.exp(-10.0 * rates), rtol=1e-6, atol=1e-7)
    """

    safety: float = 1.25
    max_stages: int = 256
    power_iterations: int = 20
    power_every: int = 4
    difference_eps: float | None = None

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation

    def __check_init__(self):
        if not self.safety >= 1:
            raise ValueError(f"RKC2 safety must be ≥ 1; got {self.safety}")
        if not (isinstance(self.max_stages, int) and self.max_stages >= 2):
            raise ValueError(f"RKC2 max_stages must be an integer ≥ 2; got {self.max_stages}")

    def order(self, terms):
        return 2

    def error_order(self, terms):
        return 3  # the estimate is of the method's own local error, O(h³)

    def init(self, terms, t0, t1, y0, args):
        unit = jnp.ones((), jtu.tree_leaves(y0)[0].dtype)
        f0, v, rho = _cold_start(
            lambda y: terms.vf(t0, y, args), y0, self.power_iterations, self.difference_eps,
            rate_of=lambda f: terms.prod(f, unit),
        )
        return f0, (v, rho, jnp.asarray(1, jnp.int32))

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0, power = solver_state
        rho = power[1]
        if made_jump is not False:
            f0 = jax.lax.cond(eqx.internal.unvmap_any(made_jump), lambda: terms.vf(t0, y0, args), lambda: f0)
        h = t1 - t0
        stages = rkc2_stages(h * rho, safety=self.safety, max_stages=self.max_stages)
        # The stages, F(y1) and (when due) the power step that keeps the
        # spectral radius warm at y1 (if the controller rejects the step it
        # keeps y0 and the old state), in one loop.
        y1, f1, power = _rkc2(terms, t0, t1, y0, f0, args, stages, power, self.power_every, self.difference_eps)
        k0, k1 = terms.prod(f0, h), terms.prod(f1, h)
        y_error = _axpy((0.8, y0), (-0.8, y1), (0.4, k0), (0.4, k1))
        dense_info = dict(y0=y0, y1=y1, k0=k0, k1=k1)
        return y1, y_error, dense_info, (f1, power), diffrax.RESULTS.successful


def _rkc2(terms, t0, t1, y0, f0, args, stages, power, every: int, eps: float | None):
    """One RKC2 step (`RKC2` docstring) with a traced stage count: y1, F(y1) and the power state.

    Every evaluation of the field in the step — F(Y_1) … F(Y_{s−1}), F(y1)
    = F(Y_s) and, every `every` accepted steps, the power step's
    F(y1 + δv) — happens at one place in the program: passes j = 2 … s of
    one loop are the stages, pass s + 1 evaluates F(Y_s), pass s + 2 (when
    due) the power step (`_cold_start` says why).
    """
    h = t1 - t0
    dtype = jnp.result_type(h)
    s = stages.astype(dtype)
    w0 = 1.0 + RKC_DAMPING / s**2

    def chebyshev(t, d, dd):
        """(T_j, T_j', T_j'') from the pairs at j − 2 and j − 1, by the three-term recurrence."""
        return 2 * w0 * t[1] - t[0], 2 * t[1] + 2 * w0 * d[1] - d[0], 4 * d[1] + 2 * w0 * dd[1] - dd[0]

    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    # (T_0, T_1), (T_0', T_1'), (T_0'', T_1'') at w0.
    cheb1 = ((one, w0), (zero, one), (zero, zero))

    def advance(_, cheb):
        t, d, dd = cheb
        tj, dj, ddj = chebyshev(t, d, dd)
        return (t[1], tj), (d[1], dj), (dd[1], ddj)

    _, (_, d_s), (_, dd_s) = jax.lax.fori_loop(1, stages, advance, cheb1)
    w1 = d_s / dd_s

    b2 = 4.0 / (4.0 * w0) ** 2  # T_2' = 4 w0, T_2'' = 4; b_0 = b_1 = b_2
    mu1 = b2 * w1
    k0 = terms.prod(f0, h)
    y1 = _axpy((1.0, y0), (mu1, k0))
    v, rho, count = power
    last = stages + 1 + _due(count, every).astype(stages.dtype)
    unit = jnp.ones((), jtu.tree_leaves(y0)[0].dtype)

    def rate_of(out):
        return terms.prod(out, unit)

    def body(carry):
        j, stage_state, f1, v, rho = carry
        y_prev2, y_prev, c_prev2, c_prev, b_prev2, b_prev, cheb = stage_state
        in_stage, at_end = j <= stages, j == stages + 1
        time = jnp.where(in_stage, t0 + c_prev * h, jnp.where(at_end, t0 + h, t1))
        delta = _shift(eps, y_prev)
        point = _where(j <= stages + 1, y_prev, _axpy((1.0, y_prev), (delta, v)))
        out = terms.vf(time, point, args)
        # Pass j ≤ s: stage j from F(Y_{j−1}).
        t, d, dd = cheb
        tj, dj, ddj = chebyshev(t, d, dd)
        b_j = jnp.where(j == 2, b2, ddj / dj**2)
        a_prev = 1.0 - b_prev * t[1]  # a_{j−1} = 1 − b_{j−1} T_{j−1}(w0)
        mu = 2 * w0 * b_j / b_prev
        nu = -b_j / b_prev2
        mu_tilde = 2 * w1 * b_j / b_prev
        gamma_tilde = -a_prev * mu_tilde
        k_prev = terms.prod(out, h)
        y_j = _axpy((1.0 - mu - nu, y0), (mu, y_prev), (nu, y_prev2), (mu_tilde, k_prev), (gamma_tilde, k0))
        c_j = mu * c_prev + nu * c_prev2 + mu_tilde + gamma_tilde
        staged = (y_prev, y_j, c_prev, c_j, b_prev, b_j, ((t[1], tj), (d[1], dj), (dd[1], ddj)))
        stage_state = _where(in_stage, staged, stage_state)
        # Pass s + 1: F(y1); pass s + 2: the power step at y1 = Y_s.
        f1 = _where(at_end, out, f1)
        v_new, size = _difference_step(delta, rate_of(f1), v, rate_of(out))
        powered = j == stages + 2
        return j + 1, stage_state, f1, _where(powered, v_new, v), jnp.where(powered, size, rho)

    carry = (jnp.asarray(2, stages.dtype), (y0, y1, zero, mu1, b2, b2, cheb1), f0, v, rho)
    _, stage_state, f1, v, rho = jax.lax.while_loop(lambda c: c[0] <= last, body, carry)
    return stage_state[1], f1, (v, rho, count + 1)


class AuxTerm(diffrax.AbstractTerm):
    """``dy/dt = f(t, y)`` on a state ``(y, aux)`` whose `aux` is not integrated but read off the field.

    `vector_field(t, y, args)` returns ``(f, aux)``: the rate of y and
    quantities computed with it (for a gradient flow, the loss that
    `jax.value_and_grad` gives with the gradient). The rate of aux is zero,
    so a Runge–Kutta step leaves it alone; `Tracked` then sets it to the aux
    of the newest vector-field evaluation at the accepted point. That lets a
    `diffrax.Event` read the loss at every step without evaluating it again.
    """

    vector_field: Callable

    def vf(self, t, y, args):
        return self.vector_field(t, y[0], args)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        rate, aux = vf
        return jtu.tree_map(lambda v: control * v, rate), jtu.tree_map(jnp.zeros_like, aux)


class _TrackedInterpolation(diffrax.AbstractLocalInterpolation):
    """The inner solver's interpolation of y; aux held at its value at the end of the step."""

    t0: Array
    t1: Array
    inner: diffrax.AbstractLocalInterpolation
    aux: PyTree

    def evaluate(self, t0, t1=None, left=True):
        y = self.inner.evaluate(t0, t1, left)
        if t1 is not None:
            return y[0], jtu.tree_map(jnp.zeros_like, self.aux)
        return y[0], self.aux


class Tracked(diffrax.AbstractAdaptiveSolver):
    """`solver` on an `AuxTerm` state ``(y, aux)``, keeping aux equal to the field's aux at y.

    After each step aux is the second output of the vector field at the new
    point: taken from the solver's first-same-as-last evaluation where it
    has one (diffrax's Tsit5 and Dopri5, `RKC2`), evaluated once more
    otherwise. With `stiffness` set it also runs the warm-started power
    iteration of this module and adds ``aux["stiff"]``: 1 once ``h·ρ ≥
    stiffness`` on an accepted step (the step is stability-limited; about
    3.5 is where Tsit5's real stability interval ends), else 0.

    The integrated y and the error estimate are exactly those of `solver`:
    only a norm that ignores aux (`state_norm`) keeps the step-size control
    identical too.
    """

    solver: diffrax.AbstractAdaptiveSolver
    stiffness: float | None = None
    power_iterations: int = 20
    power_every: int = 4
    difference_eps: float | None = None  # as for `RKC2`
    # The field's rounding, as a rate: error estimates below ``h·noise`` per
    # component are rounding, not truncation, and are not held against the step.
    noise: float | None = None

    term_structure: ClassVar = diffrax.AbstractTerm

    @property
    def interpolation_cls(self):
        inner_cls = self.solver.interpolation_cls

        def build(*, t0, t1, inner, aux):
            return _TrackedInterpolation(t0=t0, t1=t1, inner=inner_cls(t0=t0, t1=t1, **inner), aux=aux)

        return build

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def _rate(self, terms, t, args):
        return lambda y: terms.vf(t, (y, None), args)[0]

    def init(self, terms, t0, t1, y0, args):
        inner = self.solver.init(terms, t0, t1, y0, args)
        if self.stiffness is None:
            return inner, None
        rate = self._rate(terms, t0, args)
        _, v, rho = _cold_start(rate, y0[0], self.power_iterations, self.difference_eps)
        return inner, (v, rho, jnp.asarray(1, jnp.int32))

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner, power = solver_state
        y1, y_error, dense_info, inner1, result = self.solver.step(terms, t0, t1, y0, args, inner, made_jump)
        f1 = _last_evaluation(self.solver, inner1)
        if f1 is None:
            f1 = terms.vf(t1, y1, args)
        rate1, aux1 = f1
        aux1 = dict(aux1)
        if self.stiffness is not None:
            power = _warm_power_step(
                self._rate(terms, t1, args), y1[0], rate1, power, self.power_every, self.difference_eps
            )
            stiff = ((t1 - t0) * power[1] >= self.stiffness) | (y0[1]["stiff"] > 0)
            aux1["stiff"] = stiff.astype(jnp.result_type(y0[1]["stiff"]))
        y1 = (y1[0], aux1)
        error = y_error[0]
        if self.noise is not None:
            floor = jnp.abs(t1 - t0) * self.noise
            error = jtu.tree_map(lambda e: jnp.sign(e) * jnp.maximum(jnp.abs(e) - floor, 0.0), error)
        y_error = (error, jtu.tree_map(jnp.zeros_like, aux1))
        dense_info = dict(inner=dense_info, aux=aux1)
        return y1, y_error, dense_info, (inner1, power), result


def _last_evaluation(solver, inner_state):
    """The vector field at the end of the step, where the inner solver keeps it (else None)."""
    if isinstance(solver, RKC2):  # (F(y1), power-iteration state)
        return inner_state[0]
    if isinstance(solver, diffrax.AbstractRungeKutta) and inner_state is not None:
        return inner_state[1]  # diffrax's FSAL Runge–Kutta methods keep (first_step, F(y1))
    return None


def state_norm(error) -> Array:
    """diffrax's default (RMS) norm of the y part of a ``(y, aux)`` error, for `diffrax.PIDController(norm=…)`."""
    return optx.rms_norm(error[0])
