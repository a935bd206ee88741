"""Parameter-estimation rates of softmax-gated mixtures of experts (the `jaxmoe rates` experiment).

The seed papers on softmax gating prove how fast the parameters of a mixture
of experts are estimated from n samples, measured by a Voronoi loss
(`jaxmoe.voronoi`). This experiment draws n samples from a teacher, fits a
student (several restarts; the best training objective is kept), computes
the Voronoi loss to the truth, and fits the exponent b of ``loss ≈ a n^b``
over a log grid of n with a bootstrap 95% interval — one row per setting:

=====================  ==========  =========  ==========  ==================================================
setting                gate        experts    fit (k/k*)  theory (exponent of the Voronoi loss)    H100 [95%]
=====================  ==========  =========  ==========  ==================================================
``softmax-exact``      softmax     linear     MLE, 2/2    −1/2 (arXiv 2305.03288, exact-fitted)   −0.53 [−0.56, −0.50]
``softmax-over``       softmax     linear     MLE, 3/2    −1/2 with exponent r̄(M) on over-        −0.62 [−0.70, −0.56]
                                                          specified cells (2305.03288): β1, b at
                                                          n^(-1/8), a, σ² at n^(-1/4) in a cell of two
``temperature-linear`` temperature linear     MLE, 2/2    slower than any polynomial, as slow as  −0.25 [−0.30, −0.20]
                                                          1/log n (arXiv 2401.13875): exponent → 0
``activation-linear``  activation  linear     MLE, 2/2    −1/2 (2401.13875: the activation        −0.58 [−0.71, −0.48]
                                                          repairs it)
``two-layer``          softmax     two-layer  LS, 2/2     −1/2 (arXiv 2402.02952, 2503.03213:     −0.52 [−0.55, −0.49]
                                                          strongly identifiable experts)
``two-layer-over``     softmax     two-layer  LS, 3/2     −1/2 with exponent 2 on over-specified  (not in the default
                                                          cells: those atoms at n^(-1/4)           table: see `SETTINGS`)
=====================  ==========  =========  ==========  ==================================================

The last column: `RatesConfig.paper` (n = 10²…10⁵, 20 replicates) on an
H100, benchmarks/results/rates-gpu-nvidia-h100-80gb-hbm3.md. The temperature
row flattens: over the last decade alone its exponent is −0.15 [−0.36, 0.06]
(the exact-fitted softmax keeps −0.44 [−0.55, −0.32]). The over-specified
row is steeper than −1/2 because at small n its extra atom sits far from the
truth (a pre-asymptotic excess), and a third of its fits at large n stop at
the iteration cap. The activation gate's slopes and τ are told apart only by
the curvature of tanh, so their constant is large (Fisher information:
standard deviation ≈ 40/√n against ≈ 7/√n for the softmax slopes). The
small CPU default reads the same trends from n ≤ 3000, less precisely.

**The model** (the papers' parameterisation, x ∈ R^D, k experts):

    gate   g_i(x) = softmax_i(u_i(x)),  u_i = β1_i·x + β0_i            (softmax)
                                        u_i = β1_i·x / τ + β0_i        (temperature, τ learned)
                                        u_i = tanh(β1_i·x) / τ + β0_i  (activation, τ learned)
    expert h_i(x) = a_i·x + b_i  (linear)   or   u_i σ(w_i·x + c_i)  (two-layer, σ the sigmoid)

- ``"mle"``: y | x ~ Σ_i g_i(x) N(h_i(x), σ_i²) (Gaussian MoE); the student
  maximises the log-likelihood over all parameters including σ_i (bounded
  below by `sigma_floor` × `noise`).
- ``"ls"``: y = Σ_i g_i(x) h_i(x) + σ ε; the student minimises the squared error.

The teacher has k* = 2 well-separated experts, the gate along e1 and the
experts along e2 (D ≥ 2; both along e1 when D = 1): β1* = (2e1, −e1),
β0* = 0, linear a* = (e2, −e2), b* = (½, −½); two-layer u* = (2, −2),
w* = (3e2, −2e2), c* = (0, ½); σ* = `noise`; τ* = `tau`.
With a linear router (softmax, temperature) the gate is unchanged by a common
shift of the β1_i, and with any gate by a common shift of the β0_i; fitted
and true parameters are compared in the gauge of `jaxmoe.voronoi.softmax_gauge`.
The temperature row: there β1 and τ enter only through β1/τ, so
``β1·∂u/∂β1 = −τ ∂u/∂τ`` (the PDE of arXiv 2401.13875) holds identically and
the data cannot separate β1 from τ; the activation gate breaks the relation.

**Fitting.** Optax L-BFGS with a zoom line search on the full-batch
objective, from `restarts` starts around the truth (each fitted atom i starts
at true atom i mod k* perturbed by `init_scale`, its gate mass split among the
atoms that share it). Why L-BFGS and not Adam: the objective is smooth,
deterministic and has a few dozen parameters; the rate is read from Voronoi
losses down to about 1/√n ≈ 3·10⁻³ at n = 10⁵ (10⁻⁵ on over-specified
parameters raised to r̄), so the optimiser must reach the optimum far more
precisely than that — quasi-Newton does it in a few hundred steps, Adam's
fixed step leaves an error floor that would bend the curve at large n.
``optimizer="adam"`` is there for comparison.

**Batching.** Every (n, replicate, restart) is one fit; fits run vmapped in
blocks of `batch` (restarts of a replicate share its data). Samples are drawn in
fixed chunks of 1024 keyed by ``fold_in(fold_in(PRNGKey(seed), n), replicate)``
and padded to the largest n with a mask, so one compiled program serves the
whole grid and replicate r at n is the same draw whatever the grid.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .families import check_positive
from .voronoi import OVERSPECIFIED_RBAR, OVERSPECIFIED_SQUARED, softmax_gauge, voronoi_loss

__all__ = [
    "SETTINGS",
    "Setting",
    "RatesConfig",
    "RateFit",
    "RatesResult",
    "teacher_parameters",
    "sample",
    "objective",
    "fit_student",
    "parameter_loss",
    "num_parameters",
    "rates",
    "format_table",
    "plot_rates",
    "write_rates",
    "load_rates",
]

LIKELIHOODS = ("ls", "mle")
OPTIMIZERS = ("lbfgs", "adam")
DTYPES = ("float64", "float32")
_CHUNK = 1024  # samples per PRNG key (module docstring: draws independent of the grid)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the rates table: the model and what the papers predict for it.

    - `gate` ∈ {softmax, temperature, activation}; `expert` ∈ {linear, two-layer}.
    - `fitted`: k, the student's experts (the teacher has k* = 2).
    - `likelihood`: the papers' estimator, ``"mle"`` or ``"ls"``.
    - `theory`: the predicted exponent of the Voronoi loss (0 for "slower
      than any polynomial"); `theory_text`: the same in words, with the source.
    """

    gate: str
    expert: str
    fitted: int
    likelihood: str
    theory: float
    theory_text: str


SETTINGS = {
    "softmax-exact": Setting("softmax", "linear", 2, "mle", -0.5, "n^-1/2 (arXiv 2305.03288, exact-fitted)"),
    "softmax-over": Setting("softmax", "linear", 3, "mle", -0.5,
                            "n^-1/2 with exponent r(M) on over-specified cells (arXiv 2305.03288)"),
    "temperature-linear": Setting("temperature", "linear", 2, "mle", 0.0,
                                  "slower than any polynomial, as slow as 1/log n (arXiv 2401.13875)"),
    "activation-linear": Setting("activation", "linear", 2, "mle", -0.5, "n^-1/2 (arXiv 2401.13875, activation gate)"),
    "two-layer": Setting("softmax", "two-layer", 2, "ls", -0.5,
                         "n^-1/2 (arXiv 2402.02952, 2503.03213: strongly identifiable experts)"),
    "two-layer-over": Setting("softmax", "two-layer", 3, "ls", -0.5,
                              "n^-1/2 with exponent 2 on over-specified cells (arXiv 2402.02952, 2503.03213)"),
}
# The table's rows. "two-layer-over" is asked for by name: in trials up to
# n = 10^5 its over-specified cells were still far from the truth, with many
# fits at the iteration cap (an expensive row that says little yet).
DEFAULT_SETTINGS = ("softmax-exact", "softmax-over", "temperature-linear", "activation-linear", "two-layer")
_K_STAR = 2


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def num_parameters(setting: str | Setting, dim: int, likelihood: str | None = None) -> int:
    """How many real parameters the student of a setting has in dimension `dim`.

    Gate k(D + 1), linear experts k(D + 1) or two-layer experts k(D + 2),
    one σ_i per expert for ``"mle"``, one τ for the temperature and activation gates.

    Example::

        num_parameters("softmax-exact", 1)   # 2·2 + 2·2 + 2 = 10
    """
    s = SETTINGS[setting] if isinstance(setting, str) else setting
    lik = likelihood or s.likelihood
    k = s.fitted
    count = k * (dim + 1) + (k * (dim + 1) if s.expert == "linear" else k * (dim + 2))
    count += k if lik == "mle" else 0
    count += 1 if s.gate in ("temperature", "activation") else 0
    return count


@dataclasses.dataclass(frozen=True)
class RatesConfig:
    """The rates experiment: which settings, which n, how many replicates, how to fit.

    **Arguments:**

    - `settings`: names from `SETTINGS` (a tuple, or one name).
    - `ns`: sample sizes, at least two distinct integers, each at least the
      number of fitted parameters (`num_parameters`).
    - `replicates`: independent data sets per n (≥ 2; the papers' tables use ≥ 20).
    - `restarts`: optimiser starts per data set (≥ 1); the best objective is kept.
    - `noise`: σ > 0, the teacher's noise (each expert's σ* for ``"mle"``).
    - `steps`: optimiser iterations at most (L-BFGS stops earlier once the
      gradient norm is below `tolerance`).
    - `optimizer`: ``"lbfgs"`` (default, module docstring) or ``"adam"``
      with `learning_rate`.
    - `likelihood`: ``None`` (each setting's own, the papers'), ``"ls"`` or ``"mle"``.
    - `dim`: D, the input dimension (≥ 1).
    - `tau`: the teacher's temperature τ* for the temperature and activation gates.
    - `init_scale`: standard deviation of the perturbation of the starts around the truth.
    - `sigma_floor`: for ``"mle"``, every σ_i is at least ``sigma_floor × noise``
      (in [0, 1)): the papers' compact parameter space. Without a floor the
      likelihood is unbounded (a component collapses onto one sample, σ_i → 0)
      and the best restart would be that collapse.
    - `seed`: base seed (module docstring: which key each draw uses).
    - `batch`: fits (n, replicate, restart) per compiled call; larger is
      faster on an accelerator, costs memory ∝ batch × max(ns).
    - `bootstrap`: resamples for the exponent's interval (≥ 10).
    - `dtype`: ``"float64"`` (default) or ``"float32"``.

    **Raises:** `ValueError` with one line naming the bad field and what is allowed.

    Example::

        config = RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4)
        config.replace(replicates=1)   # ValueError: replicates must be an integer ≥ 2; got 1
    """

    settings: tuple = DEFAULT_SETTINGS
    ns: tuple = (100, 300, 1000, 3000)
    replicates: int = 6
    restarts: int = 2
    noise: float = 0.3
    steps: int = 500
    optimizer: str = "lbfgs"
    learning_rate: float = 0.01
    tolerance: float = 1e-9
    likelihood: str | None = None
    dim: int = 2
    tau: float = 0.5
    init_scale: float = 0.3
    sigma_floor: float = 0.05
    seed: int = 0
    batch: int = 32
    bootstrap: int = 1000
    dtype: str = "float64"

    def __post_init__(self):
        settings = (self.settings,) if isinstance(self.settings, str) else self.settings
        try:
            settings = tuple(settings)
        except TypeError:
            raise ValueError(f"settings must be names from {', '.join(SETTINGS)}; got {self.settings!r}") from None
        if not settings or any(s not in SETTINGS for s in settings) or len(set(settings)) != len(settings):
            raise ValueError(f"settings must be distinct names from {', '.join(SETTINGS)}; got {self.settings!r}")
        object.__setattr__(self, "settings", settings)
        try:
            ns = tuple(int(n) for n in self.ns) if all(_is_int(n) for n in self.ns) else None
        except TypeError:
            ns = None
        if ns is None or len(ns) < 2 or len(set(ns)) != len(ns):
            raise ValueError(f"ns must hold at least two distinct integer sample sizes; got {self.ns!r}")
        object.__setattr__(self, "ns", tuple(sorted(ns)))
        for name in ("replicates", "restarts", "steps", "dim", "batch", "bootstrap", "seed"):
            value = getattr(self, name)
            low = {"replicates": 2, "bootstrap": 10, "seed": 0}.get(name, 1)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}; got {value!r}")
        for name in ("noise", "learning_rate", "tolerance", "tau", "init_scale"):
            check_positive(name, getattr(self, name))
        if not isinstance(self.sigma_floor, (int, float)) or isinstance(self.sigma_floor, bool) or not 0 <= self.sigma_floor < 1:
            raise ValueError(f"sigma_floor must be a number in [0, 1) (a fraction of noise); got {self.sigma_floor!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.likelihood is not None and self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)} (or None: each setting's own); "
                             f"got {self.likelihood!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        for s in settings:
            need = num_parameters(s, self.dim, self.likelihood)
            if ns[0] < need:
                raise ValueError(f"every n must be at least the number of fitted parameters ({need} for {s!r} "
                                 f"in dimension {self.dim}); got n = {min(ns)}")

    @classmethod
    def paper(cls, **changes) -> RatesConfig:
        """The full table: n on a log grid 10²…10⁵ (7 points), 20 replicates, 4 restarts, 1000 steps."""
        base = dict(ns=tuple(int(round(v)) for v in np.logspace(2, 5, 7)), replicates=20, restarts=4, steps=1000)
        return cls(**{**base, **changes})

    def replace(self, **changes) -> RatesConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, JSON-ready (`from_dict` reverses it)."""
        out = dataclasses.asdict(self)
        out["settings"], out["ns"] = list(self.settings), list(self.ns)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RatesConfig:
        """Rebuild from `to_dict` output; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ValueError(f"a rates configuration is a JSON object with keys from {sorted(known)}")
        data = dict(data)
        for key in ("settings", "ns"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def likelihood_of(self, setting: str) -> str:
        """The likelihood a setting is fitted with: `likelihood`, else the setting's own."""
        return self.likelihood or SETTINGS[setting].likelihood


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

        teacher_parameters("softmax-exact", 2, 0.3, 0.5)["beta1"]   # [[2., 0.], [-1., 0.]]
    """
    s = SETTINGS[setting]
    dtype = dtype or jnp.zeros(()).dtype
    e1 = jnp.zeros((dim,), dtype).at[0].set(1.0)
    e2 = jnp.zeros((dim,), dtype).at[min(1, dim - 1)].set(1.0)
    p = {"beta0": jnp.zeros((2,), dtype), "beta1": jnp.stack([2.0 * e1, -e1])}
    if s.expert == "linear":
        p.update(a=jnp.stack([e2, -e2]), b=jnp.array([0.5, -0.5], dtype))
    else:
        p.update(u=jnp.array([2.0, -2.0], dtype), w=jnp.stack([3.0 * e2, -2.0 * e2]), c=jnp.array([0.0, 0.5], dtype))
    p["sigma_raw"] = jnp.full((2,), math.log(noise - floor), dtype)
    if s.gate in ("temperature", "activation"):
        p["log_tau"] = jnp.asarray(math.log(tau), dtype)
    return p


def _sigma(p: dict, floor: float):
    """σ_i = floor + exp(sigma_raw_i): the noise scales, bounded below (`RatesConfig.sigma_floor`)."""
    return floor + jnp.exp(p["sigma_raw"])


def _logits(p: dict, x, gate: str):
    z = x @ p["beta1"].T  # (n, k)
    if gate == "softmax":
        return z + p["beta0"]
    tau = jnp.exp(p["log_tau"])
    if gate == "temperature":
        return z / tau + p["beta0"]
    return jnp.tanh(z) / tau + p["beta0"]


def _experts(p: dict, x, expert: str):
    if expert == "linear":
        return x @ p["a"].T + p["b"]
    return p["u"] * jax.nn.sigmoid(x @ p["w"].T + p["c"])


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
    chunks = n_pad // _CHUNK

    def draw(c):
        # One normal draw per chunk (x, ε and the expert's uniform in its columns):
        # one random call compiles several times faster than three.
        normal = jax.random.normal(jax.random.fold_in(key, c), (_CHUNK, dim + 2), dtype)
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
    owner = np.arange(s.fitted) % _K_STAR
    share = np.bincount(owner, minlength=_K_STAR)[owner]
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
    translate = s.gate != "activation"
    b0, b1 = softmax_gauge(fitted["beta0"], fitted["beta1"], translate_slopes=translate)
    b0_star, b1_star = softmax_gauge(teacher["beta0"], teacher["beta1"], translate_slopes=translate)
    if s.expert == "linear":
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
    if likelihood == "mle" and s.expert == "linear":
        table = OVERSPECIFIED_RBAR
    else:
        table, group_scales = OVERSPECIFIED_SQUARED, [1.0] * len(fit_groups)
    loss = voronoi_loss(b0, fit_groups, b0_star, true_groups, table=table, scales=group_scales)
    if "log_tau" in teacher:
        loss = loss + jnp.abs(jnp.exp(fitted["log_tau"]) - jnp.exp(teacher["log_tau"]))
    return loss


def _task_runner(setting: str, likelihood: str, config: RatesConfig, n_pad: int):
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


# ---------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass(frozen=True)
class RateFit:
    """``loss ≈ a n^b`` for one setting, beside the papers' prediction.

    `exponent` b with its bootstrap 95% interval [`low`, `high`] and
    `prefactor` a (`jaxmoe.scaling.fit_exponent`: replicates resampled
    within each n); `theory`, `theory_text` from `SETTINGS`; `points`:
    finite losses used; `failed`: fits with a non-finite loss.
    `tail_exponent` [`tail_low`, `tail_high`]: the same fit over the last
    decade of the grid only (n ≥ max n / 10; NaN with fewer than two sizes
    there). A polynomial rate has the same exponent on every decade; a rate
    slower than any polynomial flattens, so its tail exponent is nearer 0.
    """

    setting: str
    exponent: float
    low: float
    high: float
    prefactor: float
    theory: float
    theory_text: str
    likelihood: str
    points: int
    failed: int
    tail_exponent: float = float("nan")
    tail_low: float = float("nan")
    tail_high: float = float("nan")


@dataclasses.dataclass(frozen=True)
class RatesResult:
    """What `rates` returns: the configuration, the grid, per-fit arrays and the fits.

    - `loss`, `objective`, `grad_norm`, `steps`: ``(S, G, R)`` for S settings,
      G sample sizes and R replicates (the chosen restart of each fit).
    - `fits`: one `RateFit` per setting; `wall`: seconds per setting
      (compilation included).
    """

    config: RatesConfig
    ns: np.ndarray
    loss: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    steps: np.ndarray
    fits: tuple
    wall: np.ndarray


def _fit(setting: str, config: RatesConfig, ns: np.ndarray, loss: np.ndarray) -> RateFit:
    from .scaling import fit_exponent

    s = SETTINGS[setting]
    b, low, high, a = fit_exponent(ns.astype(float), list(loss), bootstrap=config.bootstrap, seed=config.seed)
    tail = ns >= ns.max() / 10
    tb, tlow, thigh, _ = fit_exponent(ns[tail].astype(float), list(loss[tail]), bootstrap=config.bootstrap,
                                      seed=config.seed)
    finite = np.isfinite(loss) & (loss > 0)
    theory = s.theory if config.likelihood_of(setting) == s.likelihood else float("nan")
    text = s.theory_text if np.isfinite(theory) else f"not stated (the papers fit this setting by {s.likelihood})"
    return RateFit(setting, b, low, high, a, theory, text, config.likelihood_of(setting), int(finite.sum()),
                   int((~np.isfinite(loss)).sum()), tb, tlow, thigh)


def rates(config: RatesConfig | None = None, *, log=print) -> RatesResult:
    """Run the rates experiment: every setting, every n, every replicate; fit the exponents.

    **Arguments:** a `RatesConfig` (default: the small CPU-sized one);
    `log`, a function that takes progress lines (``None``: silent).

    **Returns:** a `RatesResult`.

    Example::

        import jaxmoe.rates
        config = jaxmoe.rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000), replicates=4)
        result = jaxmoe.rates.rates(config)
        print(jaxmoe.rates.format_table(result))
    """
    config = RatesConfig() if config is None else config
    if not isinstance(config, RatesConfig):
        raise TypeError(f"config must be a RatesConfig; got {type(config).__name__}")
    log = log or (lambda text: None)
    ns = np.asarray(config.ns, dtype=np.int64)
    n_pad = int(math.ceil(ns.max() / _CHUNK) * _CHUNK)
    grid_index, replicate, restart = np.meshgrid(np.arange(len(ns)), np.arange(config.replicates),
                                                 np.arange(config.restarts), indexing="ij")
    task_n, task_r, task_s = ns[grid_index.ravel()], replicate.ravel(), restart.ravel()
    tasks = task_n.size
    # Equal blocks of at most `batch` fits: one shape, so one compiled program, and little padding.
    size = -(-tasks // -(-tasks // config.batch))
    shape = (len(config.settings), len(ns), config.replicates)
    out = {name: np.full(shape, np.nan) for name in ("loss", "objective", "grad_norm", "steps")}
    wall = np.zeros(len(config.settings))
    with jax.enable_x64(config.dtype == "float64"):
        base = jax.random.PRNGKey(config.seed)
        for si, setting in enumerate(config.settings):
            likelihood = config.likelihood_of(setting)
            run = _task_runner(setting, likelihood, config, n_pad)
            start = time.perf_counter()
            blocks = []
            for lo in range(0, tasks, size):
                idx = np.arange(lo, lo + size) % tasks  # the last block repeats fits to keep one shape
                got = run(base, *(jnp.asarray(a[idx], jnp.int32) for a in (task_n, task_r, task_s)))
                keep = min(size, tasks - lo)
                blocks.append({k: np.asarray(v)[:keep] for k, v in jax.device_get(got).items()})
            merged = {k: np.concatenate([b[k] for b in blocks]).reshape(len(ns), config.replicates, config.restarts)
                      for k in blocks[0]}
            # The estimator is the best restart by training objective (a collapsed or diverged fit: +inf).
            best = np.argmin(np.where(np.isfinite(merged["objective"]), merged["objective"], np.inf), axis=-1)
            for name in out:
                out[name][si] = np.take_along_axis(merged[name], best[..., None], axis=-1)[..., 0]
            wall[si] = time.perf_counter() - start
            fit = _fit(setting, config, ns, out["loss"][si])
            log(f"{setting}: exponent {fit.exponent:.3f} [{fit.low:.3f}, {fit.high:.3f}] (theory {fit.theory_text}); "
                f"{wall[si]:.1f} s")
    fits = tuple(_fit(s, config, ns, out["loss"][i]) for i, s in enumerate(config.settings))
    return RatesResult(config, ns, out["loss"], out["objective"], out["grad_norm"], out["steps"], fits, wall)


def format_table(result: RatesResult) -> str:
    """The measured exponents beside the theory, as a markdown table.

    Example::

        print(jaxmoe.rates.format_table(result))   # one row per setting
    """
    lines = ["| setting | gate | experts | k / k* | fit | measured exponent | 95% bootstrap interval | theory | "
             "exponent over the last decade | median loss at largest n | fits used |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, f in enumerate(result.fits):
        s = SETTINGS[f.setting]
        theory = "—" if not np.isfinite(f.theory) else f"{f.theory:g}"
        last = result.loss[i, -1]
        median = np.median(last[np.isfinite(last)]) if np.any(np.isfinite(last)) else np.nan
        lines.append(f"| {f.setting} | {s.gate} | {s.expert} | {s.fitted} / {_K_STAR} | {f.likelihood} | "
                     f"{f.exponent:.3f} | [{f.low:.3f}, {f.high:.3f}] | {theory}: {f.theory_text} | "
                     f"{f.tail_exponent:.3f} [{f.tail_low:.3f}, {f.tail_high:.3f}] | {median:.3g} | "
                     f"{f.points}" + (f" ({f.failed} failed)" if f.failed else "") + " |")
    return "\n".join(lines)


def plot_rates(result: RatesResult, ax=None):
    """Voronoi loss against n on log axes: every fit (dots), the median per n
    (markers) and the fitted line a n^b per setting, with n^(-1/2) for reference.

    **Returns:** the matplotlib figure.

    Example::

        fig = jaxmoe.rates.plot_rates(result)
    """
    from .plot import colors, figure

    fig, ax = figure(ax, figsize=(7.5, 5))
    ns = result.ns.astype(float)
    grid = np.geomspace(ns.min(), ns.max(), 50)
    palette = colors(len(result.fits))
    for i, (f, color) in enumerate(zip(result.fits, palette)):
        loss = result.loss[i]
        jitter = np.exp(0.03 * (i - (len(result.fits) - 1) / 2))
        for g, n in enumerate(ns):
            ax.scatter(np.full(loss.shape[1], n * jitter), loss[g], s=5, color=color, alpha=0.3)
        medians = [np.median(row[np.isfinite(row)]) if np.any(np.isfinite(row)) else np.nan for row in loss]
        ax.plot(ns * jitter, medians, "o", color=color, ms=4)
        if np.isfinite(f.exponent):
            ax.plot(grid, f.prefactor * grid**f.exponent, color=color,
                    label=f"{f.setting}: b = {f.exponent:.2f} [{f.low:.2f}, {f.high:.2f}]")
    finite = result.loss[np.isfinite(result.loss) & (result.loss > 0)]
    if finite.size:
        anchor = np.median(finite) * (grid / np.sqrt(ns.min() * ns.max())) ** -0.5
        ax.plot(grid, anchor, color="k", ls=":", label="n^(-1/2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel("Voronoi loss to the truth")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def write_rates(result: RatesResult, folder: str | os.PathLike) -> list[Path]:
    """Write ``rates.md``, ``rates.csv`` (every fit), ``fit.csv`` (per setting),
    ``rates.npz`` (arrays; loads with ``allow_pickle=False``), ``config.json`` and
    ``rates.png`` into `folder` (created), each file atomically.

    **Returns:** the paths written.

    Example::

        jaxmoe.rates.write_rates(result, "runs/rates")
    """
    from .plot import write_png
    from .results import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = result.config
    write_atomic(folder / "config.json", (json.dumps({"format": "jaxmoe.rates", "version": 1,
                                                       "config": config.to_dict()}, indent=2) + "\n").encode())
    csv = io.StringIO()
    csv.write("setting,likelihood,n,replicate,voronoi_loss,objective,grad_norm,steps\n")
    for i, setting in enumerate(config.settings):
        for g, n in enumerate(result.ns):
            for r in range(config.replicates):
                csv.write(f"{setting},{config.likelihood_of(setting)},{n},{r},{result.loss[i, g, r]:.9g},"
                          f"{result.objective[i, g, r]:.9g},{result.grad_norm[i, g, r]:.3g},{int(result.steps[i, g, r])}\n")
    write_atomic(folder / "rates.csv", csv.getvalue().encode())
    fit_csv = ("setting,likelihood,exponent,low,high,prefactor,theory,tail_exponent,tail_low,tail_high,points,failed,"
               "wall_s\n") + "".join(
        f"{f.setting},{f.likelihood},{f.exponent:.6g},{f.low:.6g},{f.high:.6g},{f.prefactor:.6g},{f.theory:g},"
        f"{f.tail_exponent:.6g},{f.tail_low:.6g},{f.tail_high:.6g},{f.points},{f.failed},{w:.3f}\n"
        for f, w in zip(result.fits, result.wall))
    write_atomic(folder / "fit.csv", fit_csv.encode())
    report = ("## Parameter-estimation rates (Voronoi loss ≈ a n^b)\n\n" + format_table(result) + "\n\n"
              f"{config.replicates} replicates per n, n in {list(map(int, result.ns))}, {config.restarts} restarts, "
              f"optimizer {config.optimizer}, noise σ = {config.noise:g}, D = {config.dim}, dtype {config.dtype}.\n")
    write_atomic(folder / "rates.md", report.encode())
    buffer = io.BytesIO()
    np.savez(buffer, settings=np.array(config.settings), likelihoods=np.array([f.likelihood for f in result.fits]),
             ns=result.ns, loss=result.loss, objective=result.objective, grad_norm=result.grad_norm,
             steps=result.steps, wall=result.wall,
             exponent=np.array([[f.exponent, f.low, f.high, f.prefactor, f.theory] for f in result.fits]))
    write_atomic(folder / "rates.npz", buffer.getvalue())
    write_png(plot_rates(result), folder / "rates.png")
    return [folder / n for n in ("rates.md", "rates.csv", "fit.csv", "rates.npz", "config.json", "rates.png")]


def load_rates(folder: str | os.PathLike) -> RatesResult:
    """Read a folder written by `write_rates` back into a `RatesResult`
    (the fits are recomputed from the stored losses, with the stored seed).

    Example::

        result = jaxmoe.rates.load_rates("runs/rates")
    """
    folder = Path(folder)
    header = json.loads((folder / "config.json").read_text())
    if header.get("format") != "jaxmoe.rates":
        raise ValueError(f"{folder} does not hold a jaxmoe rates result")
    config = RatesConfig.from_dict(header["config"])
    with np.load(folder / "rates.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fits = tuple(_fit(s, config, arrays["ns"], arrays["loss"][i]) for i, s in enumerate(config.settings))
    return RatesResult(config, arrays["ns"], arrays["loss"], arrays["objective"], arrays["grad_norm"],
                       arrays["steps"], fits, arrays["wall"])
