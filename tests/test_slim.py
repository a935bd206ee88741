"""Staged slimming with distillation: equal to prune where it must be, exact losses, bad input.

The run is built by hand (a teacher, close copies of its experts, a cancelling
pair of redundant experts), so only the stages are integrated; every test
shares one distillation (schedules 3→2 and the one-shot 2 at α = 0), one
one-shot run at α = 1 and one pruning, so that the compiled solves are shared.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
import jaxmoe.slim
from jaxmoe import MoE, Result, SimulationConfig
from jaxmoe.cli import main
from jaxmoe.families import Mixture
from jaxmoe.observables import mixture_loss
from jaxmoe.prune import prune
from jaxmoe.slim import (
    check_schedule,
    closest_fill,
    distill,
    keep_experts,
    keep_hidden,
    rank_experts,
    select_experts_k,
    slim,
)

M_STAR, M, DIM = 2, 5, 14  # DIM = 2(m + m*): the reduced coordinates of a run with d > 14
CONFIG = SimulationConfig(d=100, m=M, m_star=M_STAR, seeds=2)
BUDGET = dict(t_max=40.0, num_times=41)


def _run(router, expert, config=CONFIG, teacher=None) -> Result:
    """A finished run whose final student is the given one (t_final = 1)."""
    seeds = router.shape[0]
    frame = np.eye(2 * M_STAR, DIM)
    t_router = np.tile(frame[:M_STAR], (seeds, 1, 1)) if teacher is None else teacher[0]
    t_expert = np.tile(frame[M_STAR:], (seeds, 1, 1)) if teacher is None else teacher[1]
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    cos = lambda a, b: np.einsum("sid,sjd->sij", unit(a), unit(b))
    loss = jax.vmap(jaxmoe.population_loss)(MoE(router, expert), MoE(t_router, t_expert))
    times = np.array([0.0, 0.5, 1.0])
    repeat = lambda x: np.repeat(np.asarray(x)[:, None], times.size, axis=1)
    return Result(
        config=config.replace(seeds=seeds),
        times=times,
        seed_index=np.arange(seeds),
        loss=repeat(loss),
        expert_alignment=repeat(cos(expert, t_expert)),
        router_alignment=repeat(cos(router, t_router)),
        status=np.zeros(seeds, np.int8),
        t_final=np.ones(seeds),
        num_steps=np.zeros(seeds, np.int64),
        student_router0=router,
        student_expert0=expert,
        teacher_router=t_router,
        teacher_expert=t_expert,
        student_router=router,
        student_expert=expert,
        run={"method": "flow"},
    )


def _student(seeds=2):
    """Experts 3 ≈ teacher 0 and 1 ≈ teacher 1 (noise 0.05); experts 0 and 4 a cancelling pair on
    ±(teacher 0's expert) behind one router (their outputs sum to zero); expert 2 random."""
    rng = np.random.default_rng(0)
    frame = np.eye(2 * M_STAR, DIM)
    noise = lambda scale: scale * rng.standard_normal((seeds, DIM))
    router, expert = np.empty((seeds, M, DIM)), np.empty((seeds, M, DIM))
    router[:, 3], expert[:, 3] = frame[0] + noise(0.05), frame[2] + noise(0.05)
    router[:, 1], expert[:, 1] = 1.2 * (frame[1] + noise(0.05)), 0.8 * (frame[3] + noise(0.05))
    shared = np.tile(frame[1], (seeds, 1)) + noise(0.3)
    router[:, 0], expert[:, 0] = shared, frame[2] + noise(0.1)
    router[:, 4], expert[:, 4] = shared, -expert[:, 0]
    router[:, 2], expert[:, 2] = noise(0.3), noise(0.3)
    return router, expert


@pytest.fixture(scope="module")
def run():
    return _run(*_student())


@pytest.fixture(scope="module")
def slimmed(run):
    return slim(run, schedules=[(5, 3, 2)], alphas=[0.0], **BUDGET)


@pytest.fixture(scope="module")
def teacher_only(run):
    return slim(run, schedules=[(2,)], alphas=[1.0], **BUDGET)


def _find(out, schedule, alpha):
    return next(r for r in out.runs if r.schedule == schedule and r.alpha == alpha)


def test_the_one_shot_baseline_is_added_and_budgets_match(slimmed):
    assert [r.label for r in slimmed.runs] == ["2 α=0", "3→2 α=0"]
    for r in slimmed.runs:
        assert r.training_time == BUDGET["t_max"]  # the same total budget
        assert [s.budget for s in r.stages] == [BUDGET["t_max"] / len(r.schedule)] * len(r.schedule)
        assert np.all(r.status == 0)
        assert r.student.router.shape == (2, M_STAR, DIM)


def test_one_stage_teacher_only_equals_prune(run, teacher_only):
    """`slim` with a one-stage schedule and α = 1 is `jaxmoe prune` with the same rule and budget."""
    pruned = prune(run, rule="best", **BUDGET)
    (one,) = teacher_only.runs
    np.testing.assert_array_equal(one.stages[0].kept, pruned.kept)
    np.testing.assert_array_equal(one.stages[0].kept, [[3, 1], [3, 1]])
    np.testing.assert_allclose(one.loss_pruned[:, 0], pruned.loss_pruned, rtol=1e-13)
    np.testing.assert_allclose(one.stages[0].loss, pruned.finetune.loss, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(np.asarray(one.student.expert), pruned.finetune.student_expert, atol=1e-9)
    assert np.all(one.loss_final < 1e-8)  # and it converged: there is something to compare
    # The other rules keep, at m*, what prune's selection keeps.
    teacher, student = run.models("final")
    for rule in ("threshold", "contribution"):
        kept, _ = select_experts_k(teacher, student, M_STAR, rule)
        np.testing.assert_array_equal(kept, jaxmoe.prune.select_experts(run, rule=rule).kept)


def test_distilling_from_the_teacher_is_training_on_the_teacher(run, teacher_only):
    """With the previous model equal to the teacher, pure distillation trains on the teacher."""
    teacher, student = run.models("final")
    pruned = keep_experts(student, np.array([[3, 1], [3, 1]]))
    out = distill(teacher, teacher, pruned, alpha=0.0, t_max=BUDGET["t_max"], num_times=BUDGET["num_times"])
    np.testing.assert_allclose(out["loss"], teacher_only.runs[0].stages[0].loss, rtol=1e-7, atol=1e-14)
    # The mixed loss is the sum of its two exact terms.
    previous = jax.tree_util.tree_map(lambda x: x[0], student)
    one = jax.tree_util.tree_map(lambda x: x[0], (pruned, teacher))
    mixed = jaxmoe.slim.distillation_loss(*one, previous, 0.25)
    np.testing.assert_allclose(mixed, 0.25 * mixture_loss(*one) + 0.75 * mixture_loss(one[0], previous), rtol=1e-14)


def test_losses_after_pruning_are_the_exact_kernel(run, slimmed):
    teacher, start = run.models("final")
    direct = jax.jit(jax.vmap(jaxmoe.population_loss))
    for r in slimmed.runs:
        previous = start
        for stage in r.stages:
            kept = keep_experts(previous, stage.kept)
            np.testing.assert_allclose(stage.loss_pruned, direct(kept, teacher), rtol=1e-13, atol=1e-16)
            # The saved loss at t_max and the final state's loss differ by rounding (O(1) terms cancel).
            np.testing.assert_allclose(stage.loss_trained, direct(stage.student, teacher), rtol=1e-13, atol=1e-15)
            previous = stage.student
    # 5 → 3 drops the cancelling pair together (closest fill): the function, and so the loss, is unchanged.
    staged = _find(slimmed, (3, 2), 0.0)
    np.testing.assert_array_equal(staged.stages[0].kept, [[3, 1, 2], [3, 1, 2]])
    np.testing.assert_allclose(staged.loss_pruned[:, 0], slimmed.loss_start, rtol=1e-12)


def test_ranking_fills_by_score_or_by_closeness(run):
    score = np.array([[0.2, 0.1], [0.9, 0.0], [0.0, 0.3], [0.5, 0.1]])
    np.testing.assert_array_equal(rank_experts(score), [1, 2, 3, 0])  # matched 1 (j=0), 2 (j=1), then by max score
    gram = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # experts 0 and 1 cancel
    np.testing.assert_array_equal(closest_fill(gram, np.array([2]), 2), [2, 0])
    np.testing.assert_array_equal(closest_fill(gram, np.array([2]), 3), [2, 0, 1])
    teacher, student = run.models("final")
    # By score the pair's +1 member (expert 0, on +w*_0) is kept without its partner: far from the student.
    by_score, _ = select_experts_k(teacher, student, 3, fill="score")
    np.testing.assert_array_equal(by_score, [[3, 1, 0], [3, 1, 0]])
    loss = jax.vmap(mixture_loss)
    far = loss(keep_experts(student, by_score), student)
    near = loss(keep_experts(student, np.array([[3, 1, 2], [3, 1, 2]])), student)
    assert np.all(far > 10 * near)


def test_hidden_units_of_smallest_norm_go_first():
    """Units with zero output weight carry nothing: slimming them away leaves the loss unchanged."""
    rng = np.random.default_rng(3)
    seeds, m, h, dim = 1, 2, 4, 6
    router = rng.standard_normal((seeds, m, dim)) / np.sqrt(dim)
    first = rng.standard_normal((seeds, m, h, dim)) / np.sqrt(dim)
    output = rng.standard_normal((seeds, m, h))
    output[:, :, [0, 2]] = 0.0
    student = Mixture(jnp.asarray(router), jnp.asarray(first), output=jnp.asarray(output), expert_fn="mlp:hidden=4")
    slimmed, kept = keep_hidden(student, 2)
    np.testing.assert_array_equal(kept, [[[1, 3], [1, 3]]])
    assert str(slimmed.expert_fn) == "mlp:hidden=2,act=tanh"
    teacher = Mixture(jnp.asarray(router), jnp.asarray(first[:, :, :1]), output=jnp.asarray(output[:, :, 1:2] + 1.0), expert_fn="mlp:hidden=1")
    loss = jax.vmap(mixture_loss)
    np.testing.assert_allclose(loss(slimmed, teacher), loss(student, teacher), rtol=1e-12)


def test_distillation_of_slimmed_mlp_experts_is_smooth():
    """Both terms of the distillation loss of mlp experts are quasi-Monte Carlo in the input coordinates.

    A student slimmed by hidden units repeats rows of the model it was cut
    from. There the span frame of the quasi-Monte Carlo rule (Gram–Schmidt,
    differentiated through) is discontinuous, and the framed rule's vector
    field has a spectral radius of order 1e10 (2e10 measured at the start of
    a 4 → 2 stage of the mlp study, which then did not finish in 1500
    steps); in the input coordinates it is of order one. Away from repeated
    rows the two rules agree within the stated error, and both hold against
    10⁶-sample Monte Carlo.
    """
    from jaxmoe.quadrature import mixture_loss_monte_carlo, quasi_monte_carlo_loss, stated_error
    from jaxmoe.slim._distill import distillation_loss
    from jaxmoe.solvers import spectral_radius

    rng = np.random.default_rng(5)
    m, h, dim = 2, 4, 20  # the span, 2 + 2·2 + 2 + 2·4 = 16 vectors, fits in D = 20: the frame is used
    draw = lambda *shape: jnp.asarray(rng.standard_normal(shape) / np.sqrt(dim))  # noqa: E731
    previous = Mixture(draw(1, m, dim), draw(1, m, h, dim), output=jnp.asarray(rng.standard_normal((1, m, h))), expert_fn="mlp:hidden=4")
    student, _ = keep_hidden(previous, 2)
    one = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)  # noqa: E731
    student, previous = one(student), one(previous)

    def radius(loss):
        field = lambda y: jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(y))  # noqa: E731
        return float(spectral_radius(field, student))

    framed = radius(lambda s: quasi_monte_carlo_loss(s, previous))
    # The rows repeat the previous model's at the start of a stage, and come close to the
    # teacher's as it trains: both terms are held to the input coordinates.
    used = [radius(lambda s, a=alpha: distillation_loss(s, previous, previous, a)) for alpha in (0.0, 0.5, 1.0)]
    assert framed > 1e6 and max(used) < 10.0, (framed, used)
    # A generic pair: the two rules and Monte Carlo agree.
    other = Mixture(draw(m, dim), draw(m, 2, dim), output=jnp.asarray(rng.standard_normal((m, 2))), expert_fn="mlp:hidden=2")
    a, b = quasi_monte_carlo_loss(other, previous), quasi_monte_carlo_loss(other, previous, frame=False)
    mean, se = mixture_loss_monte_carlo(other, previous, key=jax.random.PRNGKey(0))
    error = stated_error(other, previous)
    for value in (a, b):
        assert abs(value - mean) <= 4 * se + error * mean, (value, mean, se)
    assert abs(a - b) <= 2 * error * mean


def test_schedules_are_checked():
    assert check_schedule((25, 15, 10, 5), 25, 5) == (15, 10, 5)
    assert check_schedule([5], 25, 5) == (5,)
    for bad, match in [
        ((15, 15, 5), "decrease"),
        ((10, 15), "decrease"),
        ((30, 5), r"1\.\.25"),
        ((15, 4), "below 5"),
        ((25,), "removes nothing"),
        ((), "at least one"),
        ((2.5,), "integers"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_schedule(bad, 25, 5)


@pytest.fixture(scope="module")
def run_folder(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    jaxmoe.save(run, folder)
    return folder


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--schedule", "3,4"], "strictly decrease"),
        (["--schedule", "6,2"], r"integers in 1\.\.5"),
        (["--schedule", "1"], "below 2"),
        (["--alpha", "1.5"], r"alpha must be a number in \[0, 1\]"),
        (["--alpha", "x"], "comma-separated"),
        (["--axis", "hidden"], "needs mlp experts"),
        (["--axis", "width"], "unknown axis"),
        (["--at", "recovered:3"], r"K in 1\.\.m\*"),
        (["--at", "-1"], "finite time > 0"),
        (["--rule", "largest"], "unknown rule"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(run_folder, tmp_path, capsys, flags, message):
    code = main(["slim", str(run_folder), "--out", str(tmp_path / "out"), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("jaxmoe: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "slim.npz").exists()


def test_command_writes_a_complete_folder(run_folder, tmp_path, capsys):
    out = tmp_path / "slim"
    code = main(["slim", str(run_folder), "--schedule", "5,3,2", "--alpha", "0", "--t-max", "4", "--num-times", "41", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "3→2" in printed and "÷ one-shot" in printed
    header, arrays = jaxmoe.slim.load_slim(out)
    assert [r["label"] for r in header["runs"]] == ["2 α=0", "3→2 α=0"]
    assert json.loads((out / "slim.json").read_text())["format"] == "jaxmoe.slim"
    assert arrays["r1_loss_pruned"].shape == arrays["r1_loss_trained"].shape == (2, 2)  # seeds × stages
    assert arrays["r1_student_router"].shape == (2, M_STAR, DIM)
    rows = (out / "slim.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # header + (2 runs × 2 seeds)
    assert (out / "loss.png").stat().st_size > 0
    # A finished folder is not overwritten without --overwrite.
    assert main(["slim", str(run_folder), "--out", str(out), "--quiet"]) == 2
