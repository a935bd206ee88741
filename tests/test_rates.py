"""Parameter-estimation rates: the Voronoi loss, the fits, the exponent, the files and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmoe import rates
from jaxmoe.cli import main
from jaxmoe.voronoi import OVERSPECIFIED_RBAR, softmax_gauge, voronoi_cells, voronoi_loss, voronoi_loss_reference

# ---------------------------------------------------------------------------
# The Voronoi loss


def _random_measures(rng, k=3, k_star=2):
    fitted = [rng.normal(size=(k, 2)), rng.normal(size=(k,)), rng.normal(size=(k, 3))]
    true = [rng.normal(size=(k_star, 2)), rng.normal(size=(k_star,)), rng.normal(size=(k_star, 3))]
    return rng.normal(size=k), fitted, rng.normal(size=k_star), true


def _j(groups):
    return [jnp.asarray(g) for g in groups]


def test_voronoi_loss_is_zero_at_the_truth_exact_and_over_specified():
    b0 = jnp.array([0.3, -0.2])
    atoms = [jnp.array([[1.0, 0.0], [-1.0, 2.0]]), jnp.array([0.5, -0.5])]
    assert float(voronoi_loss(b0, atoms, b0, atoms, table=OVERSPECIFIED_RBAR)) == 0.0
    # Three fitted atoms: the first true atom split in two, its mass shared.
    split_b0 = jnp.array([b0[0] + math.log(0.25), b0[0] + math.log(0.75), b0[1]])
    split = [g[jnp.array([0, 0, 1])] for g in atoms]
    assert float(voronoi_loss(split_b0, split, b0, atoms)) == pytest.approx(0.0, abs=1e-15)
    # The settings' losses (MLE with σ and τ, least squares), fitted = teacher.
    for name in ("temperature-linear", "two-layer"):  # softmax-exact: test_the_loss_ignores_the_softmax_translation
        teacher = rates.teacher_parameters(name, 2, 0.3, 0.5, floor=0.015)
        lik = rates.SETTINGS[name].likelihood
        fitted = {k: v for k, v in teacher.items() if lik == "mle" or k != "sigma_raw"}
        loss = jax.jit(rates.parameter_loss, static_argnums=(0, 1), static_argnames="floor")
        assert float(loss(name, lik, fitted, teacher, floor=0.015)) == pytest.approx(0.0, abs=1e-14)


def test_voronoi_loss_is_invariant_under_permutations():
    rng = np.random.default_rng(1)
    loss = jax.jit(lambda a, f, b, t: voronoi_loss(a, f, b, t, table=OVERSPECIFIED_RBAR))
    for _ in range(5):
        fb0, fitted, tb0, true = _random_measures(rng, k=4, k_star=3)
        base = float(loss(jnp.asarray(fb0), _j(fitted), jnp.asarray(tb0), _j(true)))
        p, q = rng.permutation(4), rng.permutation(3)
        permuted = float(loss(jnp.asarray(fb0[p]), _j([g[p] for g in fitted]), jnp.asarray(tb0[q]), _j([g[q] for g in true])))
        assert permuted == pytest.approx(base, rel=1e-13)


def test_voronoi_loss_by_hand():
    # True atoms at 0 and 10 with masses 1, 1; fitted atoms 0.1 and −0.2 (masses 0.5, 0.25) share cell 0,
    # 10.5 (mass 1) is alone in cell 1. Mass term |0.75 − 1| + |1 − 1| = 0.25; cell 0 (two atoms,
    # exponent 2): 0.5·0.1² + 0.25·0.2² = 0.015; cell 1 (exponent 1): 1·0.5.
    true_b0, true = jnp.zeros(2), [jnp.array([[0.0], [10.0]])]
    fit_b0, fit = jnp.log(jnp.array([0.5, 0.25, 1.0])), [jnp.array([[0.1], [-0.2], [10.5]])]
    np.testing.assert_array_equal(voronoi_cells(fit, true), [0, 0, 1])
    assert float(voronoi_loss(fit_b0, fit, true_b0, true)) == pytest.approx(0.25 + 0.015 + 0.5, rel=1e-14)
    # arXiv 2305.03288's D: r̄(2) = 4 on the first group, r̄(2)/2 = 2 on a second one (Δ = 0.3 on atom 0 only).
    fit2, true2 = fit + [jnp.array([1.3, 1.0, 1.0])], true + [jnp.array([1.0, 1.0])]
    expected = 0.25 + (0.5 * 0.1**4 + 0.25 * 0.2**4) + 0.5 * 0.3**2 + 0.5
    got = voronoi_loss(fit_b0, fit2, true_b0, true2, table=OVERSPECIFIED_RBAR, scales=(1.0, 0.5))
    assert float(got) == pytest.approx(expected, rel=1e-14)


def test_voronoi_loss_matches_its_loop_reference_under_jit_and_vmap():
    rng = np.random.default_rng(2)
    draws = [_random_measures(rng) for _ in range(4)]
    loss = jax.jit(lambda a, f, b, t: voronoi_loss(a, f, b, t, table=OVERSPECIFIED_RBAR, scales=(1.0, 1.0, 0.5)))
    stacked = [jnp.asarray(np.stack([d[0] for d in draws]))]
    batched = jax.vmap(loss)(stacked[0], [jnp.asarray(np.stack([d[1][g] for d in draws])) for g in range(3)],
                             jnp.asarray(np.stack([d[2] for d in draws])),
                             [jnp.asarray(np.stack([d[3][g] for d in draws])) for g in range(3)])
    for i, (fb0, fitted, tb0, true) in enumerate(draws):
        want = voronoi_loss_reference(fb0, fitted, tb0, true, table=OVERSPECIFIED_RBAR, scales=(1.0, 1.0, 0.5))
        assert float(batched[i]) == pytest.approx(want, rel=1e-12)


def test_the_loss_ignores_the_softmax_translation():
    # softmax(β1·x + β0) is unchanged by a common shift (t0, t1); so is the loss, through the gauge.
    teacher = rates.teacher_parameters("softmax-exact", 2, 0.3, 0.5)
    fitted = {k: v + 0.05 * (i + 1) for i, (k, v) in enumerate(teacher.items())}
    shifted = dict(fitted, beta0=fitted["beta0"] + 1.7, beta1=fitted["beta1"] + jnp.array([0.4, -2.0]))
    a = rates.parameter_loss("softmax-exact", "mle", fitted, teacher)
    assert float(a) > 0.01
    assert float(rates.parameter_loss("softmax-exact", "mle", shifted, teacher)) == pytest.approx(float(a), rel=1e-12)
    b0, b1 = softmax_gauge(shifted["beta0"], shifted["beta1"])
    assert float(jnp.sum(jnp.exp(b0))) == pytest.approx(1.0) and np.allclose(jnp.exp(b0) @ b1, 0.0)


# ---------------------------------------------------------------------------
# Sampling and the experiment


def test_draws_do_not_depend_on_the_padding():
    teacher = rates.teacher_parameters("softmax-exact", 2, 0.3, 0.5)
    key = jax.random.PRNGKey(3)
    draw = jax.jit(rates.sample, static_argnums=(0, 3, 4))
    x1, y1 = draw("softmax-exact", teacher, key, 1024, "mle")
    x2, y2 = draw("softmax-exact", teacher, key, 2048, "mle")
    np.testing.assert_array_equal(x1, x2[:1024])
    np.testing.assert_array_equal(y1, y2[:1024])


@pytest.fixture(scope="module")
def known_rate():
    # Exact-fitted softmax Gaussian MoE, two well-separated experts, D = 1: the parametric rate n^(-1/2).
    config = rates.RatesConfig(settings=("softmax-exact",), ns=(100, 1000, 10000), replicates=6, restarts=1,
                               init_scale=0.1, steps=100, dim=1, batch=18, bootstrap=300)
    return rates.rates(config, log=None)


def test_exact_fitted_softmax_has_the_parametric_rate(known_rate):
    fit = known_rate.fits[0]
    assert fit.exponent == pytest.approx(-0.5, abs=0.15)
    assert fit.low < fit.exponent < fit.high
    assert fit.theory == -0.5 and fit.points == 18 and fit.failed == 0
    assert np.all(known_rate.grad_norm < 1e-6)  # every fit converged


def test_write_and_load_the_rates_folder(known_rate, tmp_path):
    paths = rates.write_rates(known_rate, tmp_path / "rates")
    assert all(p.exists() for p in paths)
    with np.load(tmp_path / "rates" / "rates.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["loss"], known_rate.loss)
        assert list(data["settings"]) == ["softmax-exact"]
    back = rates.load_rates(tmp_path / "rates")
    assert back.config == known_rate.config
    assert back.fits[0].exponent == pytest.approx(known_rate.fits[0].exponent, rel=1e-12)
    table = (tmp_path / "rates" / "rates.md").read_text()
    assert "softmax-exact" in table and "arXiv 2305.03288" in table
    assert len((tmp_path / "rates" / "rates.csv").read_text().splitlines()) == 1 + 18


# ---------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(ns=(5, 100), dim=1), "at least the number of fitted parameters (10 for 'softmax-exact'"),
        (dict(noise=0.0), "noise must be a finite number > 0"),
        (dict(noise=-1.0), "noise must be a finite number > 0"),
        (dict(replicates=1), "replicates must be an integer ≥ 2"),
        (dict(settings=("softmax",)), "settings must be distinct names from"),
        (dict(ns=(100,)), "ns must hold at least two distinct"),
        (dict(likelihood="l2"), "likelihood must be one of ls, mle"),
    ],
)
def test_bad_configuration_is_one_line(changes, fragment):
    with pytest.raises(ValueError) as err:
        rates.RatesConfig(**{"settings": ("softmax-exact",), **changes})
    assert fragment in str(err.value) and "\n" not in str(err.value)




@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ns", "5,1000", "--settings", "softmax-exact"], "at least the number of fitted parameters"),
        (["--noise", "0"], "noise must be a finite number > 0"),
        (["--replicates", "1"], "replicates must be an integer ≥ 2"),
        (["--ns", "100,ten"], "--ns takes integers"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_code_2(flags, fragment, capsys, tmp_path):
    assert main(["rates", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmoe: error: ") and fragment in err and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_number_of_parameters():
    assert rates.num_parameters("softmax-exact", 1) == 2 * 2 + 2 * 2 + 2
    assert rates.num_parameters("temperature-linear", 3) == 2 * 4 + 2 * 4 + 2 + 1
    assert rates.num_parameters("two-layer", 2) == 2 * 3 + 2 * 4
    assert rates.num_parameters("two-layer", 2, "mle") == 2 * 3 + 2 * 4 + 2
