"""Pruning and fine-tuning: selection rules, linear rate, Hessian at the teacher, the command.

The runs are built by hand (a teacher plus perturbed copies and redundant
experts), so nothing but the fine-tuning is integrated; every test uses the
same shapes (2 teacher experts, 12 coordinates) so that the compiled solve
and Hessian are shared.
"""

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
from jaxmoe import MoE, Result, SimulationConfig
from jaxmoe.cli import UsageError
from jaxmoe.cli.prune import add_parser
from jaxmoe.cli.prune import run as run_command
from jaxmoe.prune import (
    SELECTION_RULES,
    fit_linear_rate,
    greedy_match,
    hessian_spectrum,
    loss_hessian,
    norm_directions,
    prune,
    select_experts,
)

M_STAR, M, DIM = 2, 4, 12  # DIM = 2(m + m*): the reduced coordinates of a run with d > 12
CONFIG = SimulationConfig(d=100, m=M, m_star=M_STAR, seeds=2)
FINETUNE = dict(t_max=80.0, num_times=161)  # same in every test: one compiled solve


def _teacher_arrays(seeds):
    """Axis teacher: routers e_0, e_1, experts e_2, e_3."""
    frame = np.eye(2 * M_STAR, DIM)
    return np.tile(frame[:M_STAR], (seeds, 1, 1)), np.tile(frame[M_STAR:], (seeds, 1, 1))


@jax.jit
@jax.vmap
def _loss(student_router, student_expert, teacher_router, teacher_expert):
    return jaxmoe.population_loss(MoE(student_router, student_expert), MoE(teacher_router, teacher_expert))


def _result(student_router, student_expert, config=CONFIG) -> Result:
    """A finished run whose final student is the given one (t_final = 1)."""
    seeds = student_router.shape[0]
    teacher_router, teacher_expert = _teacher_arrays(seeds)
    final = np.asarray(_loss(student_router, student_expert, teacher_router, teacher_expert))
    cos = lambda a, b: np.einsum("sid,sjd->sij", a / np.linalg.norm(a, axis=-1, keepdims=True),
                                 b / np.linalg.norm(b, axis=-1, keepdims=True))
    times = np.array([0.0, 0.5, 1.0])
    repeat = lambda x: np.repeat(x[:, None], times.size, axis=1)
    return Result(
        config=config.replace(seeds=seeds), times=times, seed_index=np.arange(seeds), loss=repeat(final),
        expert_alignment=repeat(cos(student_expert, teacher_expert)),
        router_alignment=repeat(cos(student_router, teacher_router)),
        status=np.zeros(seeds, np.int8), t_final=np.ones(seeds), num_steps=np.zeros(seeds, np.int64),
        student_router0=student_router, student_expert0=student_expert,
        teacher_router=teacher_router, teacher_expert=teacher_expert,
        student_router=student_router, student_expert=student_expert, run={"method": "flow"},
    )


def _redundant_student(seeds=2):
    """Per seed: expert 2 ≈ teacher 0, expert 1 ≈ teacher 1 (noise 0.02, norms ≠ 1),
    expert 3 a worse copy of teacher 0, expert 0 random."""
    rng = np.random.default_rng(0)
    teacher_router, teacher_expert = _teacher_arrays(seeds)
    noise = lambda scale: scale * rng.standard_normal((seeds, DIM))
    router = np.empty((seeds, M, DIM))
    expert = np.empty((seeds, M, DIM))
    router[:, 0], expert[:, 0] = noise(0.3), noise(0.3)
    router[:, 1], expert[:, 1] = 1.2 * (teacher_router[:, 1] + noise(0.02)), 0.8 * (teacher_expert[:, 1] + noise(0.02))
    router[:, 2], expert[:, 2] = 0.9 * (teacher_router[:, 0] + noise(0.02)), 1.1 * (teacher_expert[:, 0] + noise(0.02))
    router[:, 3], expert[:, 3] = teacher_router[:, 0] + noise(0.4), teacher_expert[:, 0] + noise(0.4)
    return router, expert


@pytest.fixture(scope="module")
def redundant_run():
    return _result(*_redundant_student())


@pytest.fixture(scope="module")
def pruned(redundant_run):
    # As a `jaxmoe scaling` run would, the run carries a recovery stop; the
    # fine-tuning must ignore it (it once stopped at t = 0 as "converged").
    run = dataclasses.replace(redundant_run, config=redundant_run.config.replace(recovery_epsilon=0.05))
    return prune(run, **FINETUNE)


def test_pruning_keeps_the_teachers_experts_and_fine_tuning_converges(redundant_run, pruned):
    np.testing.assert_array_equal(pruned.kept, [[2, 1], [2, 1]])
    finetune = pruned.finetune
    assert finetune.config.m == M_STAR and finetune.config.method == "flow"
    assert finetune.student_router.shape == (2, M_STAR, DIM)  # exactly m* experts, in the run's coordinates
    assert finetune.status_names() == ["success", "success"]
    # The pruned student starts where the kept experts were.
    np.testing.assert_array_equal(finetune.student_expert0, redundant_run.student_expert[:, [2, 1]])
    np.testing.assert_allclose(pruned.loss_pruned, finetune.loss[:, 0])
    assert np.all(pruned.loss_pruned > 1e-3)  # the noise leaves work to do
    assert np.all(pruned.loss_final <= 1e-10)
    # It converged to the teacher's directions; the flow kept every norm.
    np.testing.assert_allclose(np.diagonal(finetune.final_expert_alignment(), axis1=1, axis2=2), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(finetune.final_router_alignment(), axis1=1, axis2=2), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(finetune.student_router, axis=-1),
                               np.linalg.norm(finetune.student_router0, axis=-1), rtol=1e-8)
    # Linear convergence at the rate the tangent Hessian predicts, 2 λ_min.
    assert np.all(pruned.strongly_convex) and np.all(pruned.smallest_tangent > 0)
    assert np.all(pruned.rate >= (1 - 1e-3) * pruned.predicted_rate)
    np.testing.assert_allclose(pruned.rate, pruned.predicted_rate, rtol=0.05)
    assert np.all(pruned.fit.num_points >= 10)
    assert pruned.flags() == ["", ""]
    assert finetune.run["prune"]["kept"] == [[2, 1], [2, 1]]


def _teacher_with_norms(dim):
    """One teacher (random orthonormal frame in `dim` coordinates) and the same experts with other norms."""
    rng = np.random.default_rng(1)
    frame = np.linalg.qr(rng.standard_normal((dim, 2 * M_STAR)))[0].T
    teacher = MoE(jnp.asarray(frame[:M_STAR]), jnp.asarray(frame[M_STAR:]))
    norms = rng.uniform(0.5, 2.0, size=(2, M_STAR, 1))
    student = MoE(jnp.asarray(norms[0] * frame[:M_STAR]), jnp.asarray(norms[1] * frame[M_STAR:]))
    return teacher, student


def test_hessian_at_the_teacher_is_psd_with_the_norm_directions_as_null_space():
    teacher, student = _teacher_with_norms(9)
    h = np.asarray(loss_hessian(student, teacher))
    p = 2 * M_STAR * 9
    assert h.shape == (p, p)
    scale = np.abs(h).max()
    np.testing.assert_allclose(h, h.T, atol=1e-12 * scale)
    values, vectors = np.linalg.eigh(0.5 * (h + h.T))
    assert values[0] >= -1e-10 * values[-1]
    null = values <= 1e-8 * values[-1]
    assert null.sum() == 2 * M_STAR
    assert values[2 * M_STAR] > 1e-3 * values[-1]  # a clear gap above the null space
    normal = norm_directions(student)
    np.testing.assert_allclose(normal.T @ normal, np.eye(2 * M_STAR), atol=1e-14)
    kernel = vectors[:, null]
    np.testing.assert_allclose(normal @ (normal.T @ kernel), kernel, atol=1e-6)
    # On the tangent space: exactly the non-zero eigenvalues, all > 0.
    full, tangent = hessian_spectrum(student, teacher)
    assert tangent.shape == (p - 2 * M_STAR,)
    assert tangent[0] > 0
    np.testing.assert_allclose(tangent, values[2 * M_STAR:], atol=1e-10 * scale)
    np.testing.assert_allclose(full, values, atol=1e-10 * scale)


def test_hessian_spectrum_in_span_coordinates_keeps_every_eigenvalue():
    # The same teacher in 12 coordinates: hessian_spectrum works in the
    # 9-dimensional frame (span + one orthogonal direction); by isotropy the
    # distinct eigenvalues are those of the 12-coordinate Hessian.
    teacher9, student9 = _teacher_with_norms(9)
    pad = lambda a: jnp.pad(a, ((0, 0), (0, DIM - 9)))
    teacher = MoE(pad(teacher9.router), pad(teacher9.expert))
    student = MoE(pad(student9.router), pad(student9.expert))
    values = np.linalg.eigvalsh(np.asarray(loss_hessian(student, teacher)))
    full, tangent = hessian_spectrum(student, teacher)
    assert full.size == 2 * M_STAR * 9
    scale = values[-1]
    gap = lambda a, b: np.max(np.min(np.abs(a[:, None] - b[None, :]), axis=1))
    assert gap(full, values) < 1e-9 * scale and gap(values, full) < 1e-9 * scale


def _rule_student():
    """Teacher 0: student 0 has the better expert (0.99) behind a flipped router,
    student 1 a worse expert (0.95) behind the right router. Teacher 1: student 2 at 0.7."""
    _, teacher_expert = _teacher_arrays(1)
    e = np.eye(DIM)
    tilt = lambda a, axis, other: a * e[axis] + np.sqrt(1 - a * a) * e[other]
    router = np.stack([-e[0], e[0], e[1], e[5] + e[6]])
    expert = np.stack([tilt(0.99, 2, 7), tilt(0.95, 2, 8), tilt(0.7, 3, 9), e[10] + 0.2 * e[4]])
    # Two identical seeds: the same shapes as the redundant run, so compiled kernels are shared.
    return np.stack([router, router]), np.stack([expert, expert])


@pytest.fixture(scope="module")
def rule_run():
    return _result(*_rule_student())


def test_rules_choose_as_documented(rule_run):
    run = rule_run
    best = select_experts(run, rule="best")
    np.testing.assert_array_equal(best.kept, [[0, 2], [0, 2]])
    np.testing.assert_allclose(best.alignment, [[0.99, 0.7], [0.99, 0.7]], atol=1e-12)
    assert not best.below_threshold.any()
    contribution = select_experts(run, rule="contribution")
    np.testing.assert_array_equal(contribution.kept, [[1, 2], [1, 2]])  # the router matters
    assert contribution.contribution[0, 0] > best.contribution[0, 0]
    # Reference values of E[f_i f*_j]: 6ρ³ E[σ(±a)σ(a)] for b ⟂ routers, ρ the expert alignment.
    sigma_sigma, sigma_flip = 0.29337904, 0.5 - 0.29337904
    np.testing.assert_allclose(contribution.contribution[0], [6 * 0.95**3 * sigma_sigma, 6 * 0.7**3 * sigma_sigma], rtol=1e-7)
    np.testing.assert_allclose(best.contribution[0, 0], 6 * 0.99**3 * sigma_flip, rtol=1e-7)
    threshold = select_experts(run, rule="threshold", threshold=0.9)
    np.testing.assert_array_equal(threshold.kept, best.kept)  # kept anyway, but flagged
    np.testing.assert_array_equal(threshold.below_threshold, [[False, True], [False, True]])
    assert not select_experts(run, rule="threshold", threshold=0.6).below_threshold.any()


def test_greedy_match_resolves_conflicts_by_the_larger_score():
    # Student 0 is the favourite of both teachers; teacher 0 wants it more.
    np.testing.assert_array_equal(greedy_match(np.array([[0.9, 0.8], [0.5, 0.7], [0.1, 0.2]])), [0, 1])
    np.testing.assert_array_equal(greedy_match(np.array([[0.8, 0.9], [0.7, 0.5]])), [1, 0])
    with pytest.raises(ValueError, match="m ≥ m\\*"):
        greedy_match(np.zeros((1, 2)))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(rule="magic"), "unknown rule 'magic'; allowed: best, threshold, contribution"),
        (dict(threshold=1.5), "threshold must be a number in \\(0, 1\\)"),
        (dict(threshold=0.0), "threshold must be a number in \\(0, 1\\)"),
        (dict(threshold=float("nan")), "threshold must be a number in \\(0, 1\\)"),
    ],
)
def test_bad_rule_or_threshold(rule_run, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        prune(rule_run, **kwargs)
    assert set(SELECTION_RULES) == {"best", "threshold", "contribution"}


def test_non_finite_seed_is_refused(rule_run):
    router = rule_run.student_router.copy()
    router[1, 3] = np.nan
    bad = dataclasses.replace(rule_run, student_router=router)
    with pytest.raises(ValueError, match="seeds 1 ended with a non-finite student"):
        select_experts(bad)


def test_fit_recovers_an_exponential_exactly():
    t = np.linspace(0.0, 60.0, 121)
    loss = np.stack([3.0 * np.exp(-0.7 * t), 0.01 * np.exp(-0.25 * t)])
    loss[0, t > 45.0] = 1e-15 * np.cos(t[t > 45.0])  # rounding noise below the floor, even negative
    fit = fit_linear_rate(t, loss)
    np.testing.assert_allclose(fit.rate, [0.7, 0.25], rtol=1e-10)
    np.testing.assert_allclose(fit.intercept, np.log([3.0, 0.01]), rtol=1e-9)
    # The window is the last half of the points above the floor 1e-12.
    last0 = t[3.0 * np.exp(-0.7 * t) > 1e-12][-1]
    assert fit.t_end[0] == last0 and fit.t_end[1] == 60.0
    assert fit.num_points[1] == 61
    # An early fast mode is left out: the fit sees the slow one alone.
    two_modes = np.exp(-2.0 * t) + np.exp(-0.5 * t)
    np.testing.assert_allclose(fit_linear_rate(t, two_modes).rate, 0.5, rtol=1e-10)
    # Fewer than three points above the floor: no rate.
    assert np.isnan(fit_linear_rate(t, np.where(t < 1.0, 1.0, 0.0)).rate)


def test_command_writes_a_complete_folder(redundant_run, tmp_path, capsys):
    run_folder = tmp_path / "run"
    jaxmoe.save(redundant_run, run_folder)
    parser = argparse.ArgumentParser(prog="jaxmoe")
    add_parser(parser.add_subparsers(dest="command"))
    argv = ["prune", str(run_folder), "--t-max", str(FINETUNE["t_max"]), "--num-times", str(FINETUNE["num_times"]), "--quiet"]
    args = parser.parse_args(argv)
    assert args.command == "prune"
    assert run_command(args) == 0
    out = run_folder / "prune"
    for name in ("config.json", "result.npz", "prune.csv", "prune.txt", "prune.npz", "loss.png", "spectrum.png"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "rate r" in printed and "2 λ_min" in printed
    finetune = jaxmoe.load(out)
    assert finetune.config.m == M_STAR and finetune.student_router.shape == (2, M_STAR, DIM)
    assert np.all(finetune.final_loss() <= 1e-10)
    header = json.loads((out / "config.json").read_text())
    assert header["run"]["prune"]["rule"] == "best" and header["run"]["prune"]["source"] == str(run_folder)
    rows = (out / "prune.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("seed,status,flags,loss_before")
    assert rows[1].split(",")[rows[0].split(",").index("kept_1")] == "2"
    # A second run into the same folder is refused; bad input is one line.
    with pytest.raises(UsageError, match="already holds a result"):
        run_command(parser.parse_args(argv))
    with pytest.raises(UsageError, match="not a jaxmoe result folder"):
        run_command(parser.parse_args(["prune", str(tmp_path / "nowhere")]))
    with pytest.raises(UsageError, match="unknown rule 'worst'; allowed: best, threshold, contribution"):
        run_command(parser.parse_args(["prune", str(run_folder), "--rule", "worst"]))
    with pytest.raises(UsageError, match="threshold must be a number in \\(0, 1\\)"):
        run_command(parser.parse_args(["prune", str(run_folder), "--threshold", "2"]))
