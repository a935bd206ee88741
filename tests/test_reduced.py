"""Reduced coordinates (docs/model.md §3): the exact d-dimensional flow in 2(m + m*) coordinates.

Three kinds of evidence that the reduced simulation *is* the d-dimensional one:

- the initial law: `init_reduced` against the exact laws of norms and cosines
  of the d-dimensional initialisation, and against full-mode draws;
- pathwise: a full d-dimensional initialisation written in an orthonormal
  basis of its span follows the full flow to solver accuracy;
- in law: over hundreds of seeds, initial alignments and the time to recover
  the first teacher expert have the same distribution in both modes
  (two-sample Kolmogorov–Smirnov at α = 0.01, fixed seeds), and the test can
  tell d = 50 from d = 200.

Runs share two solver specifications (`PATH` and `LAW`) and few shapes, so
that the compiled solves are reused across tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxmoe import MoE, SimulationConfig, simulate
from jaxmoe.init import init_problem, init_reduced, reduced_dimension, uses_reduced

from _problems import SMALL, compiled_programs

ALPHA = 0.01
M, M_STAR = 4, 2
K = reduced_dimension(M, M_STAR)  # 12

# Tight tolerances: the solver error must sit well below the 1e-8 agreement.
PATH = SMALL.replace(d=40, seeds=2)  # m = 4, m* = 2, t = 20, 41 times, rtol 1e-10
assert (PATH.m, PATH.m_star) == (M, M_STAR)
# The law test: d = 50 > K, so reduced mode is really used. A log grid resolves
# recovery times from 0.006 to 6 (median about 1.5 at d = 50; some seeds
# plateau below the threshold and count as not recovered, +inf, in both modes).
LAW = SimulationConfig(
    d=50, m=M, m_star=M_STAR, seeds=200, t_max=6.0, num_times=101, time_grid="log",
    rtol=1e-6, atol=1e-9, loss_threshold=None,
)
# Different seed indices in the two modes: the draws are then independent, as
# the two-sample test assumes (the same index reuses sub-keys across modes).
LAW_SEEDS = {"reduced": np.arange(0, 200), "full": np.arange(1000, 1200)}
RECOVERY = 0.95


def _cosines(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.einsum("...id,...jd->...ij", a, b)


def _ks_p(a, b) -> float:
    return float(stats.ks_2samp(a, b).pvalue)


# ---------------------------------------------------------------------------
# The initial law


def _draws(config: SimulationConfig, seeds) -> dict[str, np.ndarray]:
    teacher, student = init_problem(config, seeds)
    return {"v*": np.asarray(teacher.router), "w*": np.asarray(teacher.expert),
            "v": np.asarray(student.router), "w": np.asarray(student.expert)}


def _initial(result) -> dict[str, np.ndarray]:
    return {"v*": result.teacher_router, "w*": result.teacher_expert,
            "v": result.student_router0, "w": result.student_expert0}


@pytest.fixture(scope="module")
def reduced_draws():
    # init_problem compiles afresh on every call: draw once, share.
    return _draws(LAW, np.arange(4000))


@pytest.fixture(scope="module")
def law_runs():
    return {mode: simulate(LAW.replace(mode=mode), seed_index=seeds) for mode, seeds in LAW_SEEDS.items()}


def test_one_compiled_draw_serves_every_small_seed_count():
    """`init_problem` draws a padded batch and trims it: 1, 3 and 7 seeds compile no new draw
    after 8, and are the 8-seed draw's first seeds, bit for bit."""
    eight = init_problem(PATH, np.arange(8))
    with compiled_programs() as compiled:
        draws = {s: init_problem(PATH, np.arange(s)) for s in (1, 3, 7)}
    assert "jit(one)" not in compiled, compiled
    for s, draw in draws.items():
        for leaf, whole in zip(jax.tree_util.tree_leaves(draw), jax.tree_util.tree_leaves(eight)):
            assert leaf.shape[0] == s
            np.testing.assert_array_equal(leaf, np.asarray(whole)[:s])


def test_init_reduced_shapes_orthogonality_and_teacher(reduced_draws):
    x = reduced_draws
    assert x["v*"].shape == x["w*"].shape == (4000, M_STAR, K)
    assert x["v"].shape == x["w"].shape == (4000, M, K)
    # The teacher is the first 2m* axes: routers, then experts.
    frame = np.concatenate([x["v*"], x["w*"]], axis=1)
    np.testing.assert_array_equal(frame, np.broadcast_to(np.eye(2 * M_STAR, K), frame.shape))
    # Each router is orthogonal to its own expert.
    assert np.abs(np.sum(x["v"] * x["w"], axis=-1)).max() <= 1e-14


@pytest.mark.parametrize("mode", ["reduced", "full"])
def test_initial_law_is_exact(reduced_draws, law_runs, mode):
    """Norms and cosines against their exact laws in d = 50 dimensions.

    ``d‖w_i‖² ~ χ²_d``; ``d‖v_i‖² ~ χ²_{d−1}`` (v̂_i loses its component along
    w̄_i, which is independent of v̂_i); every unit vector involved is
    uniform on the sphere, so each squared cosine with a fixed or independent
    direction is ``Beta(1/2, (d − 1)/2)``. Reduced mode: 4000 seeds. Full
    mode (200 seeds) is held to the same laws, so that a failure points at the
    reduced sampler rather than at these formulas.
    """
    d = LAW.d
    x = reduced_draws if mode == "reduced" else _initial(law_runs["full"])
    beta = stats.beta(0.5, (d - 1) / 2).cdf
    checks = {
        "d‖w_1‖²": (d * np.sum(x["w"][:, 0] ** 2, -1), stats.chi2(d).cdf),
        "d‖w_4‖²": (d * np.sum(x["w"][:, 3] ** 2, -1), stats.chi2(d).cdf),
        "d‖v_1‖²": (d * np.sum(x["v"][:, 0] ** 2, -1), stats.chi2(d - 1).cdf),
        "d‖v_4‖²": (d * np.sum(x["v"][:, 3] ** 2, -1), stats.chi2(d - 1).cdf),
        "(w̄_1·w̄*_1)²": (_cosines(x["w"], x["w*"])[:, 0, 0] ** 2, beta),
        "(v̄_2·v̄*_2)²": (_cosines(x["v"], x["v*"])[:, 1, 1] ** 2, beta),
        "(v̄_3·w̄*_1)²": (_cosines(x["v"], x["w*"])[:, 2, 0] ** 2, beta),
        "(w̄_2·w̄_4)²": (_cosines(x["w"], x["w"])[:, 1, 3] ** 2, beta),
        "(v̄_1·w̄_2)²": (_cosines(x["v"], x["w"])[:, 0, 1] ** 2, beta),
    }
    for name, (sample, cdf) in checks.items():
        p = stats.kstest(sample, cdf).pvalue
        assert p >= ALPHA, f"{mode}: {name} does not follow its exact law (KS p = {p:.2g})"


def test_init_reduced_allocates_nothing_that_grows_with_d():
    # Every array in every sub-program (the χ² sampler runs a loop) is at most
    # K × K, at d = 10⁹ as at d = 50.
    for d in (50, 10**9):
        jaxpr = jax.make_jaxpr(lambda k: init_reduced(M, M_STAR, d, key=k))(jax.random.PRNGKey(0))
        assert _largest_array(jaxpr.jaxpr) <= K * K
    with pytest.raises(ValueError, match="full mode"):
        init_reduced(M, M_STAR, K, key=jax.random.PRNGKey(0))


def _largest_array(jaxpr) -> int:
    sizes = [int(np.prod(v.aval.shape)) for v in (*jaxpr.invars, *jaxpr.constvars) if hasattr(v.aval, "shape")]
    for eqn in jaxpr.eqns:
        sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    sizes.append(_largest_array(inner))
    return max(sizes, default=0)


def test_d_1e9_simulates_in_reduced_coordinates():
    result = simulate(PATH.replace(d=10**9))  # shapes and spec shared with the pathwise reduced run
    assert result.run["d"] == 10**9 and result.config.d == 10**9
    assert result.run["mode"] == "reduced" and result.run["coordinates"] == K
    assert result.student_router0.shape == result.student_expert0.shape == (PATH.seeds, M, K)
    x = _initial(result)
    for array in x.values():
        assert np.all(np.isfinite(array))
    # Norms concentrate at 1 (fluctuations ~ 1/√d), cosines at 0 (~ 1/√d).
    np.testing.assert_allclose(np.linalg.norm(x["w"], axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(x["v"], axis=-1), 1.0, atol=1e-3)
    assert np.abs(np.sum(x["v"] * x["w"], axis=-1)).max() <= 1e-14
    assert np.all(result.status == 0) and np.all(np.isfinite(result.loss))
    # A random student starts near L ≈ 0.88 (m + m*) (docs/model.md §1) and, with
    # alignments ~ 1/√d, has not escaped by t = 20.
    np.testing.assert_allclose(result.loss[:, 0], 0.88 * (M + M_STAR), rtol=0.05)
    assert np.abs(result.expert_alignment).max() < 1e-3


def test_small_d_falls_back_to_full_coordinates():
    assert uses_reduced(LAW) and not uses_reduced(LAW.replace(mode="full"))
    for d in (2 * M_STAR, 10, K):
        assert not uses_reduced(LAW.replace(d=d))
    assert uses_reduced(LAW.replace(d=K + 1))


def test_boundary_d_equals_reduced_size_runs_full_mode():
    # d = K = 2(m + m*): nothing to reduce; the default mode runs the full mode.
    result = simulate(PATH.replace(d=K))  # shapes and spec shared with the pathwise reduced run
    assert result.run["mode"] == "full" and result.run["d"] == K and result.run["coordinates"] == K
    assert result.student_router.shape == (PATH.seeds, M, K)
    assert np.all(result.status == 0) and np.all(np.isfinite(result.loss))
    # Drawn by the full sampler: a Haar-random teacher, not the reduced sampler's axes.
    frame = np.concatenate([result.teacher_router, result.teacher_expert], axis=1)
    assert np.abs(frame - np.eye(2 * M_STAR, K)).max() > 0.1


# ---------------------------------------------------------------------------
# Pathwise exactness


def test_reduced_coordinates_follow_the_full_flow_pathwise():
    """A d = 40 initialisation, in an orthonormal basis of its span, follows the same path."""
    seeds = np.arange(PATH.seeds)
    full = simulate(PATH.replace(mode="full"), seed_index=seeds)
    assert full.run["mode"] == "full" and full.student_router.shape[-1] == PATH.d
    # Basis of the span of teacher and initial student: QR of the stacked vectors.
    stacked = np.concatenate(
        [full.teacher_router, full.teacher_expert, full.student_router0, full.student_expert0], axis=1
    )  # (S, K, d)
    basis, _ = np.linalg.qr(np.swapaxes(stacked, 1, 2))  # (S, d, K), orthonormal columns
    assert basis.shape == (PATH.seeds, PATH.d, K)

    def coordinates(x):
        return jnp.asarray(np.einsum("sid,sdk->sik", x, basis))

    teacher = MoE(coordinates(full.teacher_router), coordinates(full.teacher_expert))
    student = MoE(coordinates(full.student_router0), coordinates(full.student_expert0))
    reduced = simulate(PATH, initial=(teacher, student), seed_index=seeds)
    assert reduced.student_router.shape[-1] == K
    assert np.all(full.status == 0) and np.all(reduced.status == 0)
    # Something happens on this window: the loss falls by half or more.
    assert np.all(full.loss[:, -1] < 0.5 * full.loss[:, 0])
    for name in ("loss", "expert_alignment", "router_alignment"):
        np.testing.assert_allclose(getattr(reduced, name), getattr(full, name), rtol=0, atol=1e-8, err_msg=name)
    # The full flow never leaves the span, and mapping the reduced final state
    # back through the basis gives the full final state.
    for part in ("student_router", "student_expert"):
        final = getattr(full, part)
        inside = np.einsum("sik,sdk->sid", np.einsum("sid,sdk->sik", final, basis), basis)
        np.testing.assert_allclose(inside, final, rtol=0, atol=1e-12)
        mapped = np.einsum("sik,sdk->sid", getattr(reduced, part), basis)
        np.testing.assert_allclose(mapped, final, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------
# Exactness in law


def _statistics(result) -> dict[str, np.ndarray]:
    expert0 = result.expert_alignment[:, 0]  # (S, m, m*) at t = 0
    router0 = result.router_alignment[:, 0]
    best = result.expert_alignment.max(axis=(2, 3))  # (S, T): best pair at each time
    hit = best >= RECOVERY
    recovery = np.where(hit.any(axis=1), result.times[np.argmax(hit, axis=1)], np.inf)
    student_pairs = np.abs(_cosines(result.student_expert0, result.student_expert0))
    upper = np.triu_indices(result.config.m, 1)
    return {
        "max_i w̄_i·w̄*_1 at t = 0": expert0[:, :, 0].max(axis=1),
        "max_i v̄_i·v̄*_1 at t = 0": router0[:, :, 0].max(axis=1),
        "max_i<k |w̄_i·w̄_k| at t = 0": student_pairs[:, upper[0], upper[1]].max(axis=1),
        "time to recover a first teacher expert": recovery,
    }


def test_law_runs_record_mode_and_true_d(law_runs):
    reduced, full = law_runs["reduced"], law_runs["full"]
    assert reduced.run["mode"] == "reduced" and reduced.run["d"] == LAW.d and reduced.run["coordinates"] == K
    assert full.run["mode"] == "full" and full.run["d"] == LAW.d and full.run["coordinates"] == LAW.d
    assert reduced.student_router0.shape == (LAW.seeds, M, K)
    assert full.student_router0.shape == (LAW.seeds, M, LAW.d)
    for result in (reduced, full):
        assert np.all(result.status == 0)


def test_reduced_and_full_agree_in_law(law_runs):
    reduced, full = (_statistics(law_runs[mode]) for mode in ("reduced", "full"))
    # Most seeds recover a teacher expert within the window (about 3/4 here),
    # so the recovery times carry information.
    for stats_ in (reduced, full):
        assert np.isfinite(stats_["time to recover a first teacher expert"]).mean() > 0.6
    for name in reduced:
        p = _ks_p(reduced[name], full[name])
        assert p >= ALPHA, f"{name}: reduced and full differ in law (KS p = {p:.2g})"


def test_ks_has_power_to_tell_dimensions_apart(law_runs):
    """The same statistic, on 200 seeds, separates d = 50 from d = 200 (alignments ~ 1/√d)."""
    at_50 = _statistics(law_runs["reduced"])["max_i w̄_i·w̄*_1 at t = 0"]
    x = _draws(LAW.replace(d=200), LAW_SEEDS["reduced"])
    at_200 = _cosines(x["w"], x["w*"])[:, :, 0].max(axis=1)
    assert _ks_p(at_50, at_200) < ALPHA
