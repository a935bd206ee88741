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

Gates and experts are named in the vocabulary of `jaxmoe.families`
(`Setting.gate`, `Setting.expert`): "activation" is ``activation:act=tanh``
and "two-layer" is ``mlp:hidden=1,act=sigmoid``; the estimation models add a
bias to every gate logit, a learned τ, and an inner bias to the two-layer
expert (below).

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

from ._config import DEFAULT_SETTINGS, DTYPES, FIT_OPTIMIZERS, LIKELIHOODS, SETTINGS, RatesConfig, Setting, num_parameters
from ._experiment import RateFit, RatesResult, rates
from ._model import fit_student, objective, parameter_loss, sample, teacher_parameters
from ._report import format_table, load_rates, plot_rates, write_rates

__all__ = [
    "DEFAULT_SETTINGS",
    "DTYPES",
    "LIKELIHOODS",
    "FIT_OPTIMIZERS",
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
