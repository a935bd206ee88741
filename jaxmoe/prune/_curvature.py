"""The Hessian of the loss at the end point and its spectrum on the tangent space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..init import project_to_span
from ..model import MoE
from ..population import population_loss

# ---------------------------------------------------------------------------
# 4. The Hessian and its tangent spectrum


def _flatten(student: MoE) -> jax.Array:
    """θ = (v_1, …, v_m, w_1, …, w_m) as one vector: router rows, then expert rows."""
    return jnp.concatenate([student.router.reshape(-1), student.expert.reshape(-1)])


@jax.jit
def _hessian(student: MoE, teacher: MoE) -> jax.Array:
    m, dim = student.router.shape

    def loss(theta):
        model = MoE(theta[: m * dim].reshape(m, dim), theta[m * dim:].reshape(m, dim), student.gate, student.expert_fn)
        return population_loss(model, teacher)

    theta = _flatten(student)
    # Forward over reverse: linearise the gradient once, apply it to the P
    # basis vectors. Compiles faster here than jax.hessian's jacfwd(jacrev).
    _, hvp = jax.linearize(jax.grad(loss), theta)
    return jax.vmap(hvp)(jnp.eye(theta.size, dtype=theta.dtype))


def loss_hessian(student: MoE, teacher: MoE) -> jax.Array:
    """The Hessian of the exact population loss in the student's parameters.

    The parameters are flattened as ``θ = (v_1, …, v_m, w_1, …, w_m)`` (P =
    2·m·D entries for arrays of shape (m, D)); the result is ``∂²L/∂θ∂θ`` of
    shape (P, P), by automatic differentiation of `population_loss` (no finite
    differences: forward-over-reverse, ``jax.linearize`` of ``jax.grad``).
    One student and one teacher (no seed axis); use float64.

    At the teacher itself it is positive semi-definite, with the 2m* norm
    directions (`norm_directions`) in its null space.

    **Arguments:** `student` ``(m, D)``, `teacher` ``(m*, D)``.

    **Returns:** shape ``(P, P)``, P = 2·m·D.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        H = jaxmoe.prune.loss_hessian(teacher, teacher)     # (32, 32)
        eigenvalues = np.linalg.eigvalsh(H)
        assert np.allclose(eigenvalues[:4], 0.0, atol=1e-8)   # the four norm directions
        assert np.allclose(eigenvalues[4], 0.269, atol=1e-3)
    """
    if student.router.ndim != 2 or teacher.router.ndim != 2:
        raise ValueError("loss_hessian takes one student and one teacher, arrays (m, D); loop over seeds")
    return _hessian(student, teacher)


def norm_directions(student: MoE) -> np.ndarray:
    """The 2m directions along which L is flat: ``v_i/‖v_i‖`` and ``w_i/‖w_i‖``.

    Column i is zero outside the block of v_i in θ (see `loss_hessian`) and
    holds v_i/‖v_i‖ there; column m + i likewise for w_i. The columns are
    orthonormal. L is invariant under ``v_i → c·v_i`` (c > 0), so the gradient
    is orthogonal to them (Euler's theorem for functions homogeneous of
    degree 0), and at a critical point so is every row of the Hessian.

    **Arguments:** `student` ``(m, D)``. **Returns:** shape (P, 2m), P = 2·m·D.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        normal = jaxmoe.prune.norm_directions(teacher)                        # (32, 4)
        assert normal.shape == (32, 4)
        assert np.allclose(jaxmoe.prune.loss_hessian(teacher, teacher) @ normal, 0.0, atol=1e-8)
    """
    router, expert = np.asarray(student.router, float), np.asarray(student.expert, float)
    m, dim = router.shape
    out = np.zeros((2 * m * dim, 2 * m))
    for b, vector in enumerate(np.concatenate([router, expert])):
        out[b * dim:(b + 1) * dim, b] = vector / np.linalg.norm(vector)
    return out


def hessian_spectrum(student: MoE, teacher: MoE) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the loss Hessian, in full and on the tangent space.

    With H the Hessian of L in the student's parameters (`loss_hessian`) and
    B an orthonormal basis of the orthogonal complement of the 2m norm
    directions (`norm_directions`), returns ``eigvalsh(H)`` and
    ``eigvalsh(Bᵀ H B)``, ascending. The norm directions are exactly the
    directions L ignores (and that gradient flow never moves along), so
    ``λ_min(Bᵀ H B) > 0`` is local strong convexity at the point.

    It is computed in the frame of `jaxmoe.init.project_to_span` with
    ``extra=True`` (the span of teacher and student plus one orthogonal
    direction): by rotation invariance every
    distinct eigenvalue of the Hessian in the run's coordinates, or in d
    dimensions, is there; those of directions orthogonal to the span occur
    once instead of D − k times.

    **Arguments:** `student` (m, D), `teacher` (m*, D), or both with a leading
    seed axis (S, ·, D).

    **Returns:** ``(eigenvalues, tangent)`` of shapes (…, P) and (…, P − 2m),
    P = 2·m·k with k ≤ D the frame's dimension.

    Example::

        import jaxmoe.prune
        teacher = jaxmoe.init_teacher(2, 8, key=jax.random.PRNGKey(0))
        full, tangent = jaxmoe.prune.hessian_spectrum(teacher, teacher)
        assert full.shape == (32,) and tangent.shape == (28,)
        assert tangent[0] > 0          # locally strongly convex at the teacher
    """
    batched = student.router.ndim == 3
    if not batched:
        student = MoE(student.router[None], student.expert[None], student.gate, student.expert_fn)
        teacher = MoE(teacher.router[None], teacher.expert[None], teacher.gate, teacher.expert_fn)
    full, tangent = [], []
    with jax.enable_x64(True):
        for s in range(student.router.shape[0]):
            # The loss is rotation invariant, so the Hessian in the span's frame
            # is the run's, rotated — except that the directions orthogonal to
            # the span, which all carry the same curvature by isotropy (the
            # Hessian there is A ⊗ I), appear once instead of D − k times.
            one_teacher, one_student = project_to_span(
                MoE(jnp.asarray(teacher.router[s], float), jnp.asarray(teacher.expert[s], float), teacher.gate, teacher.expert_fn),
                MoE(jnp.asarray(student.router[s], float), jnp.asarray(student.expert[s], float), student.gate, student.expert_fn),
                extra=True,
            )
            h = np.asarray(loss_hessian(one_student, one_teacher))
            h = 0.5 * (h + h.T)  # AD gives a symmetric matrix up to rounding
            normal = norm_directions(one_student)
            q, _ = np.linalg.qr(normal, mode="complete")
            basis = q[:, normal.shape[1]:]  # orthonormal complement of the norm directions
            full.append(np.linalg.eigvalsh(h))
            tangent.append(np.linalg.eigvalsh(basis.T @ h @ basis))
    full, tangent = np.stack(full), np.stack(tangent)
    return (full, tangent) if batched else (full[0], tangent[0])
