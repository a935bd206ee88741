"""The rates experiment: every setting over n, its exponent with a bootstrap interval."""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._config import CHUNK, SETTINGS, RatesConfig
from ._model import task_runner

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


def fit_rate(setting: str, config: RatesConfig, ns: np.ndarray, loss: np.ndarray) -> RateFit:
    from ..scaling import fit_exponent

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
    n_pad = int(math.ceil(ns.max() / CHUNK) * CHUNK)
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
            run = task_runner(setting, likelihood, config, n_pad)
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
            fit = fit_rate(setting, config, ns, out["loss"][si])
            log(f"{setting}: exponent {fit.exponent:.3f} [{fit.low:.3f}, {fit.high:.3f}] (theory {fit.theory_text}); "
                f"{wall[si]:.1f} s")
    fits = tuple(fit_rate(s, config, ns, out["loss"][i]) for i, s in enumerate(config.settings))
    return RatesResult(config, ns, out["loss"], out["objective"], out["grad_norm"], out["steps"], fits, wall)
