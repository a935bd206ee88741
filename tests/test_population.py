"""The exact population loss (jaxmoe.population) against its references.

Three independent computations of L = ½ E[(f_student − f_teacher)²] are held
together: the Hermite/Mehler kernel `population_loss`, Gauss–Hermite quadrature
`population_loss_reference`, and Monte Carlo. All tests run in float64
(tests/conftest.py). Functions are jitted once per shape and specification, and
sizes are small, so that the whole file runs in well under a minute.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe
from jaxmoe import MoE

# Sizes used throughout (one jit compilation per shape).
M, M_STAR, D = 4, 2, 12
# Quadrature nodes per router coordinate for the reference: converged to
# about 1e-15 relative here (64 and 100 nodes agree to that level).
NODES = 64

# Fast kernel vs quadrature reference, relative to the loss.
RTOL_REFERENCE = 1e-10
# Exact identities (zero loss, invariances), relative to the loss scale.
TOL_EXACT = 1e-12

fast_loss = jax.jit(jaxmoe.population_loss)
reference_loss = jax.jit(jaxmoe.population_loss_reference, static_argnames="nodes")
fast_kernel = jax.jit(jaxmoe.expert_kernel)
reference_kernel = jax.jit(jaxmoe.expert_kernel_reference, static_argnames="nodes")
fast_value_and_grad = jax.jit(jax.value_and_grad(jaxmoe.population_loss))
# Initialisations jitted as a whole: one compilation per shape instead of one
# per primitive. Test data that need no particular law are drawn with NumPy,
# which needs no compilation at all.
init_teacher = jax.jit(jaxmoe.init_teacher, static_argnums=(0, 1), static_argnames=("gate", "expert_fn"))
init_student = jax.jit(jaxmoe.init_student, static_argnums=(0, 1), static_argnames=("gate", "expert_fn"))


def _keys(seed, n=2):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def _random_pair(seed):
    """The paper's initialisation at the test size: (student, teacher)."""
    k_teacher, k_student = _keys(seed)
    return init_student(M, D, key=k_student), init_teacher(M_STAR, D, key=k_teacher)


def _gaussian_model(seed, m, d, **spec):
    """Router and expert vectors iid Gaussian (no orthogonality): generic correlations."""
    rng = np.random.default_rng(seed)
    return MoE(jnp.asarray(rng.standard_normal((m, d))), jnp.asarray(rng.standard_normal((m, d))), **spec)


def _orthonormal_teacher(seed, m_star, d, **spec):
    """A teacher with orthonormal router and expert vectors, drawn with NumPy."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, 2 * m_star)))
    return MoE(jnp.asarray(q.T[:m_star]), jnp.asarray(q.T[m_star:]), **spec)


def _relative_error(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


# ---------------------------------------------------------------------------
# Fast kernel vs Gauss–Hermite reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_fast_loss_matches_reference_random(seed):
    student, teacher = _random_pair(seed)
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert float(ref) > 1.0  # a generic configuration, far from zero loss
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


@pytest.mark.parametrize("seed", [10, 11])
def test_fast_loss_matches_reference_generic_gaussian_vectors(seed):
    # Routers not orthogonal to their experts, teacher not orthonormal.
    student, teacher = _gaussian_model(seed, M, D), _gaussian_model(seed + 1000, M_STAR, D)
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


def _special_configuration(name):
    """Degenerate correlations: ρ ∈ {0, ±1}, duplicates, norms ≠ 1."""
    k_teacher, k_student = _keys(100)
    teacher = init_teacher(M_STAR, D, key=k_teacher)
    base = init_student(M, D, key=k_student)
    v, w = base.router, base.expert
    tv, tw = teacher.router, teacher.expert
    if name == "student_equals_teacher_experts":
        v = v.at[:M_STAR].set(tv)
        w = w.at[:M_STAR].set(tw)
    elif name == "aligned_positive_multiples":
        v = v.at[:M_STAR].set(jnp.array([[2.5], [0.3]]) * tv)
        w = w.at[:M_STAR].set(jnp.array([[0.7], [4.0]]) * tw)
    elif name == "anti_aligned":
        v = v.at[:M_STAR].set(-tv)
        w = w.at[:M_STAR].set(-1.5 * tw)
        v = v.at[M_STAR].set(tv[0])  # router aligned, expert anti-aligned
        w = w.at[M_STAR].set(-tw[0])
    elif name == "orthogonal":
        # Axis-aligned teacher on e_1..e_4, student on e_5..e_12: every
        # correlation between distinct vectors is exactly zero.
        teacher = jaxmoe.init_teacher(M_STAR, D)
        frame = jnp.eye(D)[2 * M_STAR : 2 * M_STAR + 2 * M]
        v, w = frame[:M], frame[M:]
    elif name == "router_equals_own_expert":
        v = w  # ρ_{b₁a₁} = 1 for every student expert
    elif name == "router_equals_teacher_expert":
        v = v.at[:M_STAR].set(tw)  # roles crossed between student and teacher
        w = w.at[:M_STAR].set(tv)
    elif name == "repeated_student_experts":
        v = v.at[1].set(v[0]).at[3].set(3.0 * v[2])
        w = w.at[1].set(w[0]).at[3].set(-w[2])
    elif name == "all_student_experts_identical":
        v = jnp.broadcast_to(v[0], v.shape)
        w = jnp.broadcast_to(w[0], w.shape)
    else:
        raise AssertionError(name)
    return MoE(v, w), teacher


SPECIAL = [
    "student_equals_teacher_experts",
    "aligned_positive_multiples",
    "anti_aligned",
    "orthogonal",
    "router_equals_own_expert",
    "router_equals_teacher_expert",
    "repeated_student_experts",
    "all_student_experts_identical",
]


@pytest.mark.parametrize("name", SPECIAL)
def test_fast_loss_matches_reference_special(name):
    student, teacher = _special_configuration(name)
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert np.isfinite(float(fast))
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


@pytest.mark.parametrize("d, m", [(2, 3), (3, 5)])
def test_fast_loss_matches_reference_low_dimension(d, m):
    # d < 4: the four vectors of a pair are linearly dependent.
    student, teacher = _gaussian_model(7 + d, m, d), _orthonormal_teacher(17 + d, 1, d)
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


def test_fast_loss_matches_reference_in_one_dimension():
    # d = 1: every vector is ±a multiple of the same axis.
    student = MoE(jnp.array([[1.0], [-2.0], [0.5]]), jnp.array([[-1.0], [1.0], [3.0]]))
    teacher = MoE(jnp.array([[1.0]]), jnp.array([[-0.4]]))
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


def test_reference_is_converged_in_nodes():
    # The reference itself: 64 and 100 nodes agree, so it is a valid yardstick.
    student, teacher = _random_pair(0)
    a = reference_loss(student, teacher, nodes=NODES)
    b = reference_loss(student, teacher, nodes=100)
    assert _relative_error(a, b) <= 1e-13


MIXED_SPECS = [
    # (left gate, left expert), (right gate, right expert)
    (("sigmoid", "he3"), ("sigmoid", "he3")),
    (("erf", "he3"), ("erf", "he3")),
    (("sigmoid", "he1"), ("erf", "he4")),
    (("erf", "he2"), ("sigmoid", "he3")),
    (("sigmoid", "he4"), ("sigmoid", "he2")),
    (("erf", "he4"), ("erf", "he1")),
    (("sigmoid", jaxmoe.HermiteExpert((0.3, -1.0, 0.5, 2.0), name="mix")), ("erf", "he2")),
]


def _spec_id(spec):
    (g1, e1), (g2, e2) = spec
    name = lambda e: e if isinstance(e, str) else e.name  # noqa: E731
    return f"{g1}-{name(e1)}_x_{g2}-{name(e2)}"


@pytest.mark.parametrize("spec", MIXED_SPECS, ids=[_spec_id(s) for s in MIXED_SPECS])
def test_kernel_matrix_matches_reference_mixed_specs(spec):
    (g1, e1), (g2, e2) = spec
    left = _gaussian_model(20, M, D, gate=g1, expert_fn=e1)
    right = _gaussian_model(21, M_STAR + 1, D, gate=g2, expert_fn=e2)
    # Make one pair share its vectors exactly and one be anti-aligned.
    left = MoE(
        left.router.at[0].set(right.router[0]).at[1].set(-right.router[1]),
        left.expert.at[0].set(right.expert[0]).at[1].set(right.expert[1]),
        g1, e1,
    )
    fast, ref = np.asarray(fast_kernel(left, right)), np.asarray(reference_kernel(left, right, nodes=NODES))
    assert fast.shape == (M, M_STAR + 1)
    scale = np.max(np.abs(ref))
    assert scale > 1e-3
    np.testing.assert_array_less(np.abs(fast - ref), 1e-10 * scale)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_loss_matches_reference_student_and_teacher_with_different_specs(seed):
    student = _gaussian_model(30 + seed, M, D, gate="erf", expert_fn="he2")
    teacher = _gaussian_model(40 + seed, M_STAR, D, gate="sigmoid", expert_fn="he3")
    fast, ref = fast_loss(student, teacher), reference_loss(student, teacher, nodes=NODES)
    assert _relative_error(fast, ref) <= RTOL_REFERENCE


def test_kernel_diagonal_is_design_constant():
    # One expert with v ⟂ w: E[(σ(a) He3(b))²] = 1.76027422 (docs/model.md §1),
    # whatever the directions: the teacher's experts and the student's (whose
    # routers are orthogonalised against their experts) alike.
    student, _ = _random_pair(3)
    for model in (student, _orthonormal_teacher(3, M, D)):
        diagonal = np.diagonal(np.asarray(fast_kernel(model, model)))
        np.testing.assert_array_less(np.abs(diagonal - 1.76027422), 5e-9)


def test_fast_gradient_matches_reference_gradient():
    # Kept at the small test size on purpose: at the Figure 1 size, jaxlib
    # 0.10.2 deadlocks differentiating the reference's batched QRs on a
    # two-thread CPU pool (see benchmarks/kernel.py). 300 repetitions at this
    # size never hung.
    student, teacher = _random_pair(5)
    _, grad_fast = fast_value_and_grad(student, teacher)
    grad_ref = jax.jit(jax.grad(jaxmoe.population_loss_reference), static_argnames="nodes")(
        student, teacher, nodes=NODES
    )
    for a, b in [(grad_fast.router, grad_ref.router), (grad_fast.expert, grad_ref.expert)]:
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 1e-3
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-10 * scale


# ---------------------------------------------------------------------------
# Monte Carlo


def test_fast_loss_within_four_standard_errors_of_monte_carlo():
    student, teacher = _random_pair(40)
    mean, stderr = jaxmoe.population_loss_monte_carlo(
        student, teacher, key=jax.random.PRNGKey(41), num_samples=2**20
    )
    exact = float(fast_loss(student, teacher))
    # The test has power: the standard error is well below 1% of the loss.
    assert 0.0 < float(stderr) < 0.01 * exact
    assert abs(exact - float(mean)) <= 4.0 * float(stderr)


# ---------------------------------------------------------------------------
# Zero loss and invariances


def test_loss_vanishes_when_student_is_teacher():
    teacher = _orthonormal_teacher(50, M_STAR + 1, D)
    assert abs(float(fast_loss(teacher, teacher))) <= TOL_EXACT


def test_loss_vanishes_for_permuted_and_rescaled_teacher():
    teacher = _orthonormal_teacher(51, M_STAR + 1, D)
    permutation = jnp.array([2, 0, 1])
    router_scale = jnp.array([[0.1], [3.0], [17.0]])
    expert_scale = jnp.array([[5.0], [0.02], [1.3]])
    permuted = MoE(teacher.router[permutation], teacher.expert[permutation])
    rescaled = MoE(router_scale * teacher.router, expert_scale * teacher.expert)
    both = MoE(router_scale * permuted.router, expert_scale * permuted.expert)
    for student in (permuted, rescaled, both):
        assert abs(float(fast_loss(student, teacher))) <= TOL_EXACT
    # A genuinely different student is far from zero (the check has power).
    flipped = MoE(teacher.router, -teacher.expert)
    assert float(fast_loss(flipped, teacher)) > 1.0


def test_loss_vanishes_for_teacher_plus_cancelling_pair():
    # He3 is odd, so experts (v, w) and (v, −w) cancel exactly: a student made
    # of the teacher's experts plus such a pair computes the teacher's function.
    student, teacher = _random_pair(54)
    v, w = student.router[0], student.expert[0]
    padded = MoE(
        jnp.stack([teacher.router[1], v, teacher.router[0], 2.0 * v]),
        jnp.stack([teacher.expert[1], w, teacher.expert[0], -0.5 * w]),
    )
    assert abs(float(fast_loss(padded, teacher))) <= TOL_EXACT


def test_loss_depends_on_directions_only():
    student, teacher = _random_pair(52)
    scale = jnp.asarray(np.exp(np.random.default_rng(53).standard_normal((2, M, 1))))
    rescaled = MoE(scale[0] * student.router, scale[1] * student.expert)
    base = fast_loss(student, teacher)
    assert _relative_error(fast_loss(rescaled, teacher), base) <= TOL_EXACT


@pytest.mark.parametrize("seed, permutation", [(0, [2, 0, 1, 3]), (1, [3, 2, 1, 0]), (2, [1, 0, 3, 2])])
def test_loss_invariant_under_permutation_of_student_experts(seed, permutation):
    student, teacher = _random_pair(60 + seed)
    permutation = np.array(permutation)
    permuted = MoE(student.router[permutation], student.expert[permutation])
    assert _relative_error(fast_loss(permuted, teacher), fast_loss(student, teacher)) <= TOL_EXACT


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_invariant_under_common_rotation(seed):
    student, teacher = _random_pair(70 + seed)
    q, _ = np.linalg.qr(np.random.default_rng(71 + seed).standard_normal((D, D)))
    q = jnp.asarray(q)
    rotate = lambda model: MoE(model.router @ q, model.expert @ q)  # noqa: E731
    rotated = fast_loss(rotate(student), rotate(teacher))
    assert _relative_error(rotated, fast_loss(student, teacher)) <= TOL_EXACT
    # Rotating the student alone does change the loss (the check has power).
    assert _relative_error(fast_loss(rotate(student), teacher), fast_loss(student, teacher)) > 1e-3


# ---------------------------------------------------------------------------
# Gradients


def _finite_difference_check(student, teacher, seed):
    """Central differences (step 1e-6) on random coordinates of v and w."""
    step = 1e-6
    _, grad = fast_value_and_grad(student, teacher)
    scale = max(float(jnp.max(jnp.abs(grad.router))), float(jnp.max(jnp.abs(grad.expert))))
    assert scale > 1e-3
    rng = np.random.default_rng(seed)
    for field in ("router", "expert"):
        array = getattr(student, field)
        for _ in range(4):
            i, j = int(rng.integers(M)), int(rng.integers(D))
            bumped = [
                MoE(
                    student.router.at[i, j].add(sign * step) if field == "router" else student.router,
                    student.expert.at[i, j].add(sign * step) if field == "expert" else student.expert,
                )
                for sign in (1.0, -1.0)
            ]
            difference = (fast_loss(bumped[0], teacher) - fast_loss(bumped[1], teacher)) / (2 * step)
            analytic = getattr(grad, field)[i, j]
            assert abs(float(difference - analytic)) <= 1e-6 * scale, (field, i, j)
        assert array.shape == (M, D)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_central_differences_random(seed):
    student, teacher = _random_pair(80 + seed)
    _finite_difference_check(student, teacher, seed)


@pytest.mark.parametrize(
    "name", ["anti_aligned", "router_equals_own_expert", "repeated_student_experts"]
)
def test_gradient_matches_central_differences_special(name):
    # Correlations of exactly ±1 and duplicated experts.
    student, teacher = _special_configuration(name)
    _finite_difference_check(student, teacher, 3)


def test_gradient_vanishes_at_orthogonal_configuration():
    # Every correlation exactly zero is a critical point: each term of K has
    # degree ≥ 3 in the correlations of an expert vector (information exponent
    # 3), and K(i,i) is even in ρ_{v_i w_i}. The power series must give an
    # exact zero there, not NaN (x**0 would differentiate to 0·x⁻¹).
    student, teacher = _special_configuration("orthogonal")
    value, grad = fast_value_and_grad(student, teacher)
    assert float(value) > 1.0
    assert float(jnp.max(jnp.abs(grad.router))) <= 1e-14
    assert float(jnp.max(jnp.abs(grad.expert))) <= 1e-14
    # Central differences agree: the loss is flat to O(step²) there.
    step = 1e-6
    for field, i, j in [("router", 0, 0), ("expert", 1, 2), ("expert", 3, 11)]:
        bump = jnp.zeros((M, D)).at[i, j].set(step)
        plus = MoE(student.router + bump, student.expert) if field == "router" else MoE(student.router, student.expert + bump)
        minus = MoE(student.router - bump, student.expert) if field == "router" else MoE(student.router, student.expert - bump)
        difference = (fast_loss(plus, teacher) - fast_loss(minus, teacher)) / (2 * step)
        assert abs(float(difference)) <= 1e-8


@pytest.mark.parametrize("name", SPECIAL)
def test_gradient_finite_at_special_configurations(name):
    student, teacher = _special_configuration(name)
    _, grad = fast_value_and_grad(student, teacher)
    assert np.all(np.isfinite(np.asarray(grad.router)))
    assert np.all(np.isfinite(np.asarray(grad.expert)))


def test_gradient_orthogonal_to_each_vector():
    # L depends on directions only, so ∇_v L ⟂ v: norms are conserved by the flow.
    student, teacher = _random_pair(90)
    _, grad = fast_value_and_grad(student, teacher)
    for g, x in [(grad.router, student.router), (grad.expert, student.expert)]:
        radial = jnp.sum(g * x, axis=-1) / jnp.linalg.norm(x, axis=-1)
        assert float(jnp.max(jnp.abs(radial))) <= 1e-12 * float(jnp.max(jnp.abs(g)))


# ---------------------------------------------------------------------------
# Transformations


def test_jit_matches_eager():
    student, teacher = _random_pair(95)
    eager = jaxmoe.population_loss(student, teacher)
    assert _relative_error(fast_loss(student, teacher), eager) <= 1e-13
    value, _ = fast_value_and_grad(student, teacher)
    assert _relative_error(value, eager) <= 1e-13


def test_vmap_over_seeds_matches_loop():
    seeds = 5
    base = jax.random.PRNGKey(96)
    teacher = init_teacher(M_STAR, D, key=jax.random.PRNGKey(97))
    singles = [init_student(M, D, key=jax.random.fold_in(base, s)) for s in range(seeds)]
    students = jax.tree.map(lambda *xs: jnp.stack(xs), *singles)
    assert students.router.shape == (seeds, M, D)
    batched = jax.jit(jax.vmap(jax.value_and_grad(jaxmoe.population_loss), in_axes=(0, None)))
    losses, grads = batched(students, teacher)
    assert losses.shape == (seeds,)
    for s, student in enumerate(singles):
        value, grad = fast_value_and_grad(student, teacher)
        assert _relative_error(losses[s], value) <= 1e-13
        np.testing.assert_allclose(grads.router[s], grad.router, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads.expert[s], grad.expert, rtol=1e-12, atol=1e-14)
    # Seeds differ (a vmap that broadcast one seed would fail here).
    assert float(jnp.std(losses)) > 1e-3


def test_population_loss_rejects_batched_or_mismatched_inputs():
    student, teacher = _random_pair(99)
    with pytest.raises(ValueError, match="share the dimension"):
        jaxmoe.population_loss(student, jaxmoe.init_teacher(M_STAR, D + 2))
    batched = MoE(student.router[None], student.expert[None])
    with pytest.raises(ValueError, match="vmap"):
        jaxmoe.population_loss(batched, teacher)


# ---------------------------------------------------------------------------
# The paper's setting


def test_initial_loss_at_figure_one_setting():
    # m* = 5, m = 25, d = 1000: L ≈ ½ · 1.76027422 · (m + m*) ≈ 0.88 (m + m*) = 26.4
    # (docs/model.md §1); the cross terms between random directions are O(d^{-1/2}).
    m_star, m, d = 5, 25, 1000
    # The student's law is rotation invariant, so an axis-aligned teacher is
    # as good as a random one (and needs no d × d QR).
    student = init_student(m, d, key=jax.random.PRNGKey(2510))
    teacher = jaxmoe.init_teacher(m_star, d)
    loss = float(fast_loss(student, teacher))
    assert abs(loss - 0.88 * (m + m_star)) <= 0.05 * 0.88 * (m + m_star)


# ---------------------------------------------------------------------------
# Initialisation


@pytest.mark.parametrize("key", [None, jax.random.PRNGKey(110)], ids=["axis", "random"])
def test_teacher_vectors_orthonormal(key):
    m_star, d = M_STAR, D
    teacher = init_teacher(m_star, d, key=key)
    assert teacher.router.shape == teacher.expert.shape == (m_star, d)
    frame = jnp.concatenate([teacher.router, teacher.expert])
    np.testing.assert_allclose(frame @ frame.T, np.eye(2 * m_star), rtol=0, atol=1e-14)
    if key is None:
        np.testing.assert_array_equal(frame, np.eye(2 * m_star, d))
    else:
        # Not axis-aligned: a random frame has no exactly zero entries.
        assert np.all(np.asarray(frame) != 0.0)


def test_teacher_random_frames_differ_by_key():
    a = init_teacher(M_STAR, D, key=jax.random.PRNGKey(0))
    b = init_teacher(M_STAR, D, key=jax.random.PRNGKey(1))
    assert float(jnp.max(jnp.abs(a.router - b.router))) > 1e-3


def test_teacher_allows_exactly_full_dimension():
    # Eager (not jitted), as a user would call it.
    teacher = jaxmoe.init_teacher(3, 6, key=jax.random.PRNGKey(111))
    frame = jnp.concatenate([teacher.router, teacher.expert])
    np.testing.assert_allclose(frame @ frame.T, np.eye(6), rtol=0, atol=1e-14)


def test_student_router_orthogonal_to_own_expert():
    m, d = 25, 1000
    student = init_student(m, d, key=jax.random.PRNGKey(120))
    cosine = jnp.sum(jaxmoe.unit(student.router) * jaxmoe.unit(student.expert), axis=-1)
    assert float(jnp.max(jnp.abs(cosine))) <= 1e-14
    # Scale N(0, I_d/d): squared norms concentrate at 1 (χ²_d/d, sd √(2/d) ≈ 0.045).
    norms2 = jnp.sum(student.expert**2, axis=-1)
    assert abs(float(jnp.mean(norms2)) - 1.0) <= 0.05
    # Routers and experts are not trivially related across experts.
    cross = jaxmoe.unit(student.router) @ jaxmoe.unit(student.expert).T
    assert float(jnp.max(jnp.abs(cross))) > 1e-3


@pytest.mark.parametrize(
    "call",
    [
        lambda: jaxmoe.init_teacher(3, 5),
        lambda: jaxmoe.init_teacher(3, 5, key=jax.random.PRNGKey(0)),
        lambda: jaxmoe.init_teacher(0, 5),
        lambda: jaxmoe.init_teacher(-1, 5),
        lambda: jaxmoe.init_teacher(1, 0),
        lambda: jaxmoe.init_teacher(1.5, 5),
        lambda: jaxmoe.init_student(0, 5, key=jax.random.PRNGKey(0)),
        lambda: jaxmoe.init_student(3, 0, key=jax.random.PRNGKey(0)),
        lambda: jaxmoe.init_student(-2, 5, key=jax.random.PRNGKey(0)),
    ],
    ids=[
        "teacher-2m*>d",
        "teacher-2m*>d-random",
        "teacher-m*=0",
        "teacher-m*<0",
        "teacher-d=0",
        "teacher-m*-float",
        "student-m=0",
        "student-d=0",
        "student-m<0",
    ],
)
def test_init_rejects_bad_sizes(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------------------
# Forward pass


@pytest.mark.parametrize("gate, expert_fn", [("sigmoid", "he3"), ("erf", "he2")])
def test_forward_matches_hand_loop(gate, expert_fn):
    m, d, n = 3, 5, 7
    model = _gaussian_model(130, m, d, gate=gate, expert_fn=expert_fn)
    x = np.random.default_rng(131).standard_normal((n, d))
    v, w = np.asarray(model.router), np.asarray(model.expert)
    expected = np.zeros(n)
    for s in range(n):
        for i in range(m):
            a = v[i] @ x[s] / np.linalg.norm(v[i])
            b = w[i] @ x[s] / np.linalg.norm(w[i])
            if gate == "sigmoid":
                g = 1.0 / (1.0 + math.exp(-a))
            else:
                g = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))
            p = b**3 - 3 * b if expert_fn == "he3" else b**2 - 1
            expected[s] += g * p
    np.testing.assert_allclose(jaxmoe.forward(model, jnp.asarray(x)), expected, rtol=1e-13, atol=1e-13)


def test_forward_rejects_wrong_input_shape():
    model = _gaussian_model(0, 2, 4)
    with pytest.raises(ValueError, match="shape"):
        jaxmoe.forward(model, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        jaxmoe.forward(model, jnp.ones(4))
