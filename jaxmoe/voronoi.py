"""The Voronoi loss between a fitted and a true mixture of experts.

The parameter-estimation papers on softmax gating measure how far fitted
parameters are from the true ones by a *Voronoi loss*, not by a plain norm:
a fitted model with k experts may approximate a true one with k* ≤ k
experts by several fitted atoms collapsing onto one true atom, and those
atoms converge more slowly than atoms alone in their cell.

Write each expert i as an atom θ_i (gate slope β1_i, expert parameters,
noise σ_i; split into *groups* of parameters) with gate mass exp(β0_i). The
Voronoi cell of true atom j collects the fitted atoms nearest to it,

    A_j = { i : ‖θ_i − θ*_j‖ ≤ ‖θ_i − θ*_l‖ for all l }   (ties: lowest j)

and the loss is

    D(G, G*) = Σ_j | Σ_{i∈A_j} exp(β0_i) − exp(β0*_j) |                    (gate mass)
             + Σ_{j:|A_j|=1} Σ_{i∈A_j} exp(β0_i) Σ_g ‖Δθ_ij^g‖              (exact cells)
             + Σ_{j:|A_j|>1} Σ_{i∈A_j} exp(β0_i) Σ_g ‖Δθ_ij^g‖^{r_g(|A_j|)}  (over-specified cells)

with Δθ_ij^g = θ_i^g − θ*_j^g for parameter group g. The exponent on an
over-specified cell is ``r_g(M) = scale_g · table[M]``:

- Least squares with strongly identifiable experts (e.g. two-layer
  feed-forward experts), "On Least Squares Estimation in Softmax Gating
  Mixture of Experts" (arXiv 2402.02952) and "Convergence Rates for Softmax
  Gating Mixture of Experts" (arXiv 2503.03213): exponent 2 on every group
  (`OVERSPECIFIED_SQUARED`); the loss converges like n^(-1/2), so atoms of
  over-specified cells like n^(-1/4).
- Gaussian MoE with linear experts by maximum likelihood, "Demystifying
  Softmax Gating Function in Gaussian Mixture of Experts" (arXiv 2305.03288):
  exponent r̄(M) on the gate slope β1 and the expert bias b, r̄(M)/2 on the
  expert slope a and the variance, with r̄(2) = 4, r̄(3) = 6 (the solvability
  of a polynomial system; beyond M = 3 it is not known and `RBAR` continues
  with 2M) — `OVERSPECIFIED_RBAR`. The authors' simulation code
  (github.com/Trung-TinNGUYEN/CRPE-SGaME, ``discrepancies.py``) computes
  exactly this sum.

The softmax gate is unchanged by adding the same (t0, t1) to every
(β0_i, β1_i), so the loss is only meaningful in a fixed *gauge*;
`softmax_gauge` gives one that both measures can be put in (the papers write
the same freedom as an infimum over translations, e.g. arXiv 2510.12744).

Everything is a pure function of arrays: jittable, vmappable, differentiable
almost everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "RBAR",
    "OVERSPECIFIED_SQUARED",
    "OVERSPECIFIED_RBAR",
    "voronoi_cells",
    "voronoi_loss",
    "voronoi_loss_reference",
    "softmax_gauge",
]

# r̄(M), indexed by cell size M (entries 0 and 1 are unused: empty cells add
# nothing but their mass, singletons take exponent 1). r̄(2) = 4 and r̄(3) = 6
# are proven in arXiv 2305.03288; 2M beyond is an assumption (see module doc).
RBAR = (0.0, 1.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0)
# Exponent 2 on every over-specified cell, whatever its size.
_SQUARED = (0.0, 1.0) + (2.0,) * 7

OVERSPECIFIED_SQUARED = _SQUARED
OVERSPECIFIED_RBAR = RBAR


def _flat(groups) -> Array:
    return jnp.concatenate([jnp.reshape(g, (g.shape[0], -1)) for g in groups], axis=-1)


def voronoi_cells(fitted_groups, true_groups) -> Array:
    """The Voronoi cell of each fitted atom: the index of the nearest true atom.

    Distance: Euclidean, over all groups concatenated (θ_i = (β1_i, expert
    parameters, σ_i)). Ties go to the lowest true index.

    **Arguments:** `fitted_groups`, `true_groups`: sequences of arrays of
    shape ``(k, ...)`` and ``(k*, ...)``, the same groups in the same order.

    **Returns:** integer array ``(k,)`` with values in ``0 .. k*-1``.

    Example::

        import jaxmoe.voronoi
        cells = jaxmoe.voronoi.voronoi_cells([jnp.array([[0.1], [0.9], [1.2]])], [jnp.array([[0.0], [1.0]])])
        assert cells.tolist() == [0, 1, 1]
    """
    fitted, true = _flat(fitted_groups), _flat(true_groups)
    distance = jnp.sum((fitted[:, None, :] - true[None, :, :]) ** 2, axis=-1)  # (k, k*)
    return jnp.argmin(distance, axis=-1)


def voronoi_loss(
    fitted_beta0: Float[Array, " k"],
    fitted_groups,
    true_beta0: Float[Array, " kstar"],
    true_groups,
    *,
    table=OVERSPECIFIED_SQUARED,
    scales=None,
) -> Float[Array, ""]:
    """The Voronoi loss D(G, G*) (module docstring), as a jittable scalar.

    **Arguments:**

    - `fitted_beta0` ``(k,)``, `true_beta0` ``(k*,)``: gate biases; the gate
      masses are exp(β0).
    - `fitted_groups`, `true_groups`: the atom parameters, a sequence of
      arrays ``(k, ...)`` / ``(k*, ...)`` (one per parameter group, e.g.
      ``(beta1, a, b, sigma)``); each group's distance is the Euclidean norm
      of its difference.
    - `table`: over-specified exponents by cell size, ``table[M]`` for M ≥ 2
      (`OVERSPECIFIED_SQUARED`: 2; `OVERSPECIFIED_RBAR`: r̄(M) of arXiv
      2305.03288). Cells larger than the table use its last entry.
    - `scales`: one factor per group multiplying ``table[M]`` (default all 1;
      arXiv 2305.03288 uses 1 for β1 and b, ½ for a and σ²).

    **Returns:** the loss, a scalar ≥ 0; 0 exactly when the fitted atoms
    coincide with the true ones (any order) with the true masses.

    Example::

        from jaxmoe.voronoi import voronoi_loss
        b0, atoms = jnp.zeros(2), [jnp.array([[1.0], [-1.0]])]
        assert voronoi_loss(b0, atoms, b0, atoms) == 0.0
        assert np.allclose(voronoi_loss(b0, [jnp.array([[1.1], [-1.0]])], b0, atoms), 0.1)   # exp(0)·0.1
    """
    k_star = true_beta0.shape[0]
    cells = voronoi_cells(fitted_groups, true_groups)  # (k,)
    onehot = jax.nn.one_hot(cells, k_star, dtype=fitted_beta0.dtype)  # (k, k*)
    count = jnp.sum(onehot, axis=0)  # (k*,)
    size = count[cells]  # (k,) size of each fitted atom's cell
    mass = jnp.exp(fitted_beta0)
    mass_term = jnp.sum(jnp.abs(onehot.T @ mass - jnp.exp(true_beta0)))

    table = jnp.asarray(table, dtype=fitted_beta0.dtype)
    base = table[jnp.clip(size.astype(jnp.int32), 0, table.shape[0] - 1)]  # (k,)
    scales = (1.0,) * len(fitted_groups) if scales is None else tuple(scales)
    if len(scales) != len(fitted_groups):
        raise ValueError(f"scales needs one factor per parameter group ({len(fitted_groups)}); got {len(scales)}")
    atom_term = jnp.zeros_like(mass)
    for group_fit, group_true, scale in zip(fitted_groups, true_groups, scales):
        diff = jnp.reshape(group_fit, (group_fit.shape[0], -1)) - jnp.reshape(group_true, (group_true.shape[0], -1))[cells]
        # sqrt(x + 0) has an infinite derivative at 0; the where keeps gradients
        # finite at the truth (the loss itself is unchanged).
        sq = jnp.sum(diff**2, axis=-1)
        norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        exponent = jnp.where(size > 1, scale * base, 1.0)
        atom_term = atom_term + norm**exponent
    return mass_term + jnp.sum(mass * atom_term)


def voronoi_loss_reference(
    fitted_beta0, fitted_groups, true_beta0, true_groups, *, table=OVERSPECIFIED_SQUARED, scales=None
) -> float:
    """`voronoi_loss` written with Python loops over cells, in NumPy: the
    plain reference that the vectorised version is tested against."""
    import numpy as np

    fitted_groups = [np.asarray(g, float).reshape(len(g), -1) for g in fitted_groups]
    true_groups = [np.asarray(g, float).reshape(len(g), -1) for g in true_groups]
    fitted_beta0, true_beta0 = np.asarray(fitted_beta0, float), np.asarray(true_beta0, float)
    scales = [1.0] * len(fitted_groups) if scales is None else list(scales)
    k, k_star = len(fitted_beta0), len(true_beta0)
    theta = np.concatenate(fitted_groups, axis=1)
    theta_star = np.concatenate(true_groups, axis=1)
    cells = [[] for _ in range(k_star)]
    for i in range(k):
        distances = [np.sum((theta[i] - theta_star[j]) ** 2) for j in range(k_star)]
        cells[int(np.argmin(distances))].append(i)
    total = 0.0
    for j, cell in enumerate(cells):
        total += abs(sum(np.exp(fitted_beta0[i]) for i in cell) - np.exp(true_beta0[j]))
        for i in cell:
            for g, scale in zip(range(len(fitted_groups)), scales):
                norm = np.linalg.norm(fitted_groups[g][i] - true_groups[g][j])
                exponent = 1.0 if len(cell) == 1 else scale * table[min(len(cell), len(table) - 1)]
                total += np.exp(fitted_beta0[i]) * norm**exponent
    return float(total)


def softmax_gauge(beta0: Float[Array, " k"], beta1: Float[Array, "k D"] | None = None, *, translate_slopes: bool = True):
    """Put softmax gate parameters in a fixed gauge: Σ_i exp(β0_i) = 1 and Σ_i p_i β1_i = 0.

    softmax_i(β1_i·x + β0_i) does not change when every (β0_i, β1_i) is shifted
    by the same (t0, t1). This picks the representative with masses
    p = softmax(β0) summing to one and mass-weighted mean slope zero:

        β0 ← β0 − logsumexp(β0),    β1 ← β1 − Σ_i p_i β1_i.

    Both measures must be put in the gauge before `voronoi_loss`. It is a
    consistent one: a fitted model whose cells merge to the true gate has
    Σ_{i∈A_j} p_i → p*_j and Σ_{i∈A_j} p_i β1_i → p*_j β1*_j (the merged,
    fast-converging moments), so gauging costs no rate. Gates whose logits
    are nonlinear in β1 (activation gates) are invariant under t0 only: pass
    ``translate_slopes=False``.

    **Returns:** ``(beta0, beta1)`` in the gauge (`beta1` passed through as ``None``).

    Example::

        import jaxmoe.voronoi
        beta0, beta1 = jaxmoe.voronoi.softmax_gauge(jnp.array([1.0, 1.0]), jnp.array([[3.0], [1.0]]))
        assert np.allclose(beta0, -np.log(2)) and np.allclose(beta1, [[1.0], [-1.0]])
    """
    beta0 = beta0 - jax.nn.logsumexp(beta0)
    if beta1 is None or not translate_slopes:
        return beta0, beta1
    p = jnp.exp(beta0)
    return beta0, beta1 - jnp.tensordot(p, beta1, axes=(0, 0))
