"""Teachers, samples, the fitting objective, the fits and the Voronoi loss to the truth (jit-compiled, vmapped)."""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ..families import MLP_FUNCTIONS, Expert, Gate
from ..voronoi import OVERSPECIFIED_RBAR, OVERSPECIFIED_SQUARED, softmax_gauge, voronoi_loss
from ._config import CHUNK, K_STAR, SETTINGS, RatesConfig

# ---------------------------------------------------------------------------
# The model


def teacher_parameters(setting: str, dim: int, noise: float, tau: float, dtype=None, *, floor: float = 0.0) -> dict:
    """The true parameters of a setting (module docstring), k* = 2 experts.

    The gate varies along e1 and the experts along e2 (both along e1 when
    D = 1): with gate and experts on the same direction a two-layer expert's
    sigmoid and the gate's are nearly the same function of x, and their
    parameters are told apart only at enormous n (asymptotic standard
    deviations ~10² /√n in D = 1, ~5/√n in D = 2, by the Fisher information).

    **Returns:** a dict of arrays: ``beta0`` (2,), ``beta1`` (2, D); ``a``
    (2, D), ``b`` (2,) for linear experts or ``u`` (2,), ``w`` (2, D), ``c``
    (2,) for two-layer ones; ``sigma_raw`` (2,) with σ_i = `floor` + exp(sigma_raw_i)
    = `noise`; ``log_tau`` () for the temperature and activation gates.

    Example::

        import jaxmoe.rates
        assert np.allclose(jaxmoe.rates.teacher_parameters("softmax-exact", 2, 0.3, 0.5)["beta1"], [[2.0, 0.0], [-1.0, 0.0]])
    """
    s = SETTINGS[setting]
    dtype = dtype or jnp.zeros(()).dtype
    e1 = jnp.zeros((dim,), dtype).at[0].set(1.0)
    e2 = jnp.zeros((dim,), dtype).at[min(1, dim - 1)].set(1.0)
    p = {"beta0": jnp.zeros((2,), dtype), "beta1": jnp.stack([2.0 * e1, -e1])}
    if s.expert.name == "linear":
        p.update(a=jnp.stack([e2, -e2]), b=jnp.array([0.5, -0.5], dtype))
    else:
        p.update(u=jnp.array([2.0, -2.0], dtype), w=jnp.stack([3.0 * e2, -2.0 * e2]), c=jnp.array([0.0, 0.5], dtype))
    p["sigma_raw"] = jnp.full((2,), math.log(noise - floor), dtype)
    if s.learned_temperature:
        p["log_tau"] = jnp.asarray(math.log(tau), dtype)
    return p


def _sigma(p: dict, floor: float):
    """σ_i = floor + exp(sigma_raw_i): the noise scales, bounded below (`RatesConfig.sigma_floor`)."""
    return floor + jnp.exp(p["sigma_raw"])


def _logits(p: dict, x, gate: Gate):
    z = x @ p["beta1"].T  # (n, k)
    if gate.name == "softmax":
        return z + p["beta0"]
    tau = jnp.exp(p["log_tau"])
    if gate.name == "temperature":
        return z / tau + p["beta0"]
    return MLP_FUNCTIONS[gate.activation](z) / tau + p["beta0"]


def _experts(p: dict, x, expert: Expert):
    if expert.name == "linear":
        return x @ p["a"].T + p["b"]
    return p["u"] * MLP_FUNCTIONS[expert.activation](x @ p["w"].T + p["c"])


def sample(setting: str, teacher: dict, key, n_pad: int, likelihood: str, *, floor: float = 0.0):
    """Draw `n_pad` samples (x, y) from the teacher, in chunks of 1024 keyed by
    ``fold_in(key, chunk)`` (the first n are the same draws whatever `n_pad`).

    ``"mle"``: the expert z ~ Categorical(g*(x)), then y = h_z(x) + σ*_z ε.
    ``"ls"``: y = f*(x) + σ* ε (the first expert's σ*; all are equal).

    **Returns:** ``x`` (n_pad, D), ``y`` (n_pad,); `n_pad` must be a multiple of 1024.
    """
    s = SETTINGS[setting]
    dim = teacher["beta1"].shape[-1]
    dtype = teacher["beta1"].dtype
    chunks = n_pad // CHUNK

    def draw(c):
        # One normal draw per chunk (x, ε and the expert's uniform in its columns):
        # one random call compiles several times faster than three.
        normal = jax.random.normal(jax.random.fold_in(key, c), (CHUNK, dim + 2), dtype)
        x, eps = normal[:, :dim], normal[:, dim]
        probs = jax.nn.softmax(_logits(teacher, x, s.gate), axis=-1)
        means = _experts(teacher, x, s.expert)
        sigma = _sigma(teacher, floor)
        if likelihood == "mle":
            u = jax.scipy.special.ndtr(normal[:, dim + 1])  # uniform on (0, 1)
            z = jnp.sum(u[:, None] > jnp.cumsum(probs, axis=-1)[:, :-1], axis=-1)  # inverse CDF of the gate
            y = jnp.take_along_axis(means, z[:, None], axis=-1)[:, 0] + sigma[z] * eps
        else:
            y = jnp.sum(probs * means, axis=-1) + sigma[0] * eps
        return x, y

    x, y = jax.lax.map(draw, jnp.arange(chunks))  # a loop, not a vmap: far cheaper to compile
    return x.reshape(n_pad, dim), y.reshape(n_pad)


def objective(setting: str, likelihood: str, p: dict, x, y, mask, n, *, floor: float = 0.0):
    """The training objective on the first n samples (`mask`): the mean squared
    error (``"ls"``) or the mean negative log-likelihood (``"mle"``)."""
    s = SETTINGS[setting]
    logits = _logits(p, x, s.gate)
    means = _experts(p, x, s.expert)
    if likelihood == "ls":
        per = (y - jnp.sum(jax.nn.softmax(logits, axis=-1) * means, axis=-1)) ** 2
    else:
        log_sigma = jnp.log(_sigma(p, floor))
        log_normal = -0.5 * ((y[:, None] - means) * jnp.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        per = -jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + log_normal, axis=-1)
    return jnp.sum(jnp.where(mask, per, 0.0)) / n


def _initial(setting: str, teacher: dict, key, scale: float, likelihood: str) -> dict:
    """A start around the truth: fitted atom i at true atom i mod k*, perturbed;
    the gate mass of a true atom shared by M fitted atoms split M ways."""
    s = SETTINGS[setting]
    owner = np.arange(s.fitted) % K_STAR
    share = np.bincount(owner, minlength=K_STAR)[owner]
    centre = {}
    for name, value in teacher.items():
        if name == "sigma_raw" and likelihood == "ls":
            continue
        centre[name] = value if name == "log_tau" else value[owner]
    centre["beta0"] = centre["beta0"] - jnp.log(jnp.asarray(share, centre["beta0"].dtype))
    flat, unflatten = ravel_pytree(centre)
    # One random call for every parameter: each call adds to the compile time.
    return unflatten(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def fit_student(setting: str, likelihood: str, config: RatesConfig, start: dict, x, y, mask, n):
    """Minimise `objective` from `start` with the configured optimiser.

    **Returns:** ``(params, value, grad_norm, steps)``; jittable and vmappable
    (L-BFGS runs a `lax.while_loop` until the gradient norm is below
    `config.tolerance` or `config.steps` iterations).
    """

    def f(p):
        return objective(setting, likelihood, p, x, y, mask, n, floor=config.sigma_floor * config.noise)

    if config.optimizer == "adam":
        opt = optax.adam(config.learning_rate)

        def body(carry, _):
            p, state = carry
            g = jax.grad(f)(p)
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        (params, _), _ = jax.lax.scan(body, (start, opt.init(start)), None, length=config.steps)
        steps = jnp.asarray(config.steps)
    else:
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(f)

        def cond(carry):
            _, _, k, gnorm = carry
            return (k < config.steps) & (gnorm > config.tolerance)

        def body(carry):
            p, state, k, _ = carry
            value, g = value_and_grad(p, state=state)
            updates, state = opt.update(g, state, p, value=value, grad=g, value_fn=f)
            return optax.apply_updates(p, updates), state, k + 1, _norm(g)

        one = jnp.asarray(jnp.inf, x.dtype)
        params, _, steps, _ = jax.lax.while_loop(cond, body, (start, opt.init(start), jnp.asarray(0), one))
    value, g = jax.value_and_grad(f)(params)
    return params, value, _norm(g), steps


def parameter_loss(setting: str, likelihood: str, fitted: dict, teacher: dict, *, floor: float = 0.0):
    """The Voronoi loss between fitted and true parameters of a setting (`jaxmoe.voronoi`).

    Both are first put in the softmax gauge (masses summing to one; for the
    linear routers, mass-weighted mean slope zero). Atoms: (β1, b, a[, σ²])
    for linear experts, (β1, u, w, c[, σ²]) for two-layer ones. ``"mle"`` with
    linear experts uses the D of arXiv 2305.03288 (exponent r̄(M) on β1 and b,
    r̄(M)/2 on a and σ² in over-specified cells); otherwise exponent 2 on
    over-specified cells (arXiv 2402.02952). A learned temperature adds |τ̂ − τ*|.

    **Returns:** a scalar; jittable.
    """
    s = SETTINGS[setting]
    translate = s.gate.name != "activation"
    b0, b1 = softmax_gauge(fitted["beta0"], fitted["beta1"], translate_slopes=translate)
    b0_star, b1_star = softmax_gauge(teacher["beta0"], teacher["beta1"], translate_slopes=translate)
    if s.expert.name == "linear":
        names, scales = ("b", "a"), (1.0, 0.5)
    else:
        names, scales = ("u", "w", "c"), (1.0, 1.0, 1.0)
    fit_groups = [b1] + [fitted[n] for n in names]
    true_groups = [b1_star] + [teacher[n] for n in names]
    group_scales = [1.0] + list(scales)
    if likelihood == "mle":
        fit_groups.append(_sigma(fitted, floor) ** 2)
        true_groups.append(_sigma(teacher, floor) ** 2)
        group_scales.append(0.5)
    if likelihood == "mle" and s.expert.name == "linear":
        table = OVERSPECIFIED_RBAR
    else:
        table, group_scales = OVERSPECIFIED_SQUARED, [1.0] * len(fit_groups)
    loss = voronoi_loss(b0, fit_groups, b0_star, true_groups, table=table, scales=group_scales)
    if "log_tau" in teacher:
        loss = loss + jnp.abs(jnp.exp(fitted["log_tau"]) - jnp.exp(teacher["log_tau"]))
    return loss


def task_runner(setting: str, likelihood: str, config: RatesConfig, n_pad: int):
    """The jitted program of one setting: ``run(base_key, n, replicate, restart)``,
    vmapped over fits. Cached on what shapes the program (not the seed, the
    grid or the bootstrap), so reruns with other seeds reuse the compiled code."""
    program = dataclasses.replace(config, settings=(setting,), seed=0, batch=1, bootstrap=10)
    return _compiled(setting, likelihood, program, n_pad)


@lru_cache(maxsize=32)
def _compiled(setting: str, likelihood: str, config: RatesConfig, n_pad: int):
    dtype = jnp.dtype(config.dtype)
    floor = config.sigma_floor * config.noise
    teacher = teacher_parameters(setting, config.dim, config.noise, config.tau, dtype, floor=floor)

    def fit(base, n, replicate, restart):
        # The data depend on (n, replicate) only: every restart of a replicate sees the same draw.
        k_data, k_init = jax.random.split(jax.random.fold_in(jax.random.fold_in(base, n), replicate))
        x, y = sample(setting, teacher, k_data, n_pad, likelihood, floor=floor)
        start = _initial(setting, teacher, jax.random.fold_in(k_init, restart), config.init_scale, likelihood)
        params, value, gnorm, steps = fit_student(setting, likelihood, config, start, x, y, jnp.arange(n_pad) < n,
                                                  n.astype(dtype))
        return {"loss": parameter_loss(setting, likelihood, params, teacher, floor=floor), "objective": value,
                "grad_norm": gnorm, "steps": steps}

    # One flat vmap over fits (n, replicate, restart): a nested vmap over restarts
    # compiles markedly slower and gains nothing.
    return jax.jit(jax.vmap(fit, in_axes=(None, 0, 0, 0)))
