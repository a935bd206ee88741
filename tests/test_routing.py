"""Routing-load diagnostics: loads and qualities against Monte Carlo, balance measures, the effective temperature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe.families as F
from jaxmoe import plot, routing

KEYS = jax.random.split(jax.random.PRNGKey(0), 4)
observe = jax.jit(routing.routing_observables, static_argnames="nodes")


@jax.jit
def _monte_carlo(student, teacher, t=None):
    x = jax.random.normal(jax.random.PRNGKey(7), (400_000, student.dim))
    g = F.gate_weights(student, x, t)
    err = (F.expert_values(student, x) - F.mixture_forward(teacher, x, t)[:, None]) ** 2
    load = g.mean(0)
    return load, -(g * err).mean(0) / load


def test_a_uniform_gate_has_maximal_entropy_and_no_variation():
    teacher = F.init_mixture_teacher(2, 6, "softmax", "linear", key=KEYS[0])
    # Identical routers: g_i(x) = 1/m for every x.
    same = F.init_mixture_student(4, 6, "softmax", "linear", key=KEYS[1])
    same = F.Mixture(jnp.tile(same.router[:1], (4, 1)), same.expert, None, same.bias, None, "softmax", "linear")
    # Independent sigmoid gates: E[σ(v̄·x)] = 1/2 by symmetry, the same for every expert.
    sigmoid = F.init_mixture_student(4, 6, "sigmoid", "he3", key=KEYS[2])
    for student, tch in ((same, teacher), (sigmoid, F.init_mixture_teacher(2, 6, "sigmoid", "he3"))):
        load = np.asarray(observe(student, tch)["load"])
        np.testing.assert_allclose(load, np.full(4, load.mean()), rtol=1e-12)
        assert routing.load_entropy(load) == pytest.approx(np.log(4), rel=1e-12)
        assert routing.load_cv(load) == pytest.approx(0.0, abs=1e-12)
    assert float(np.sum(observe(same, teacher)["load"])) == pytest.approx(1.0, rel=1e-12)
    # The other extreme: one expert takes everything.
    assert routing.load_entropy(np.array([1.0, 0.0, 0.0])) == 0.0
    assert routing.load_cv(np.array([1.0, 0.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("dim", [6, 40])  # 40: integrated in the frame of the 12 vectors the models read
def test_load_and_quality_match_monte_carlo(dim):
    teacher = F.init_mixture_teacher(2, dim, "softmax", "linear", key=KEYS[0])
    student = F.init_mixture_student(4, dim, "temperature:tau=0.5", "linear", key=KEYS[1])
    student = F.Mixture(3 * student.router, student.expert, None, student.bias + 0.3, None, student.gate, "linear")
    obs = observe(student, teacher, nodes=2**14)
    load, quality = _monte_carlo(student, teacher)
    np.testing.assert_allclose(obs["load"], load, atol=4e-3)
    np.testing.assert_allclose(obs["quality"], quality, rtol=2e-2)
    assert float(obs["load"].sum()) == pytest.approx(1.0, rel=1e-12)


def _in_dimension_d(student, teacher, t, nodes):
    """The routing rule with its nodes written out as inputs of dimension D (x = q z), the plain reference."""
    from jaxmoe.pairkernel import orthonormal_frame
    from jaxmoe.quadrature import expert_vectors, gate_vectors, gaussian_nodes, rule_degree

    frame = jnp.concatenate([v for m in (student, teacher) for v in gate_vectors(m) + [expert_vectors(m)]])
    z, w = gaussian_nodes(frame.shape[0], nodes, max(rule_degree(student), rule_degree(teacher)))
    x = jnp.asarray(z) @ orthonormal_frame(frame.T).T
    w = jnp.asarray(w / w.sum())
    g = student.gate_weights(x, t)
    err = (student.expert_values(x) - teacher.forward(x, t)[:, None]) ** 2
    return w @ g, -(w @ (g * err)) / (w @ g)


@pytest.mark.parametrize("gate, expert", [("softmax", "linear"), ("hierarchical:groups=2", "he3"), ("topk:k=1", "mlp:hidden=2")])
def test_frame_coordinates_are_the_inputs_of_dimension_d(gate, expert):
    """Above 2(m + m*) dimensions the models are evaluated on the frame's K coordinates
    (their vectors projected on it): the same numbers as the N inputs of dimension D, to rounding
    (measured here: up to 1.5e-15 of the largest value); routers, group routers, linear biases and mlp rows."""
    teacher = F.init_mixture_teacher(2, 40, gate, expert, key=KEYS[0])
    student = F.init_mixture_student(4, 40, gate, expert, key=KEYS[1])
    obs = observe(student, teacher, 0.5, nodes=2**10)
    for name, reference in zip(("load", "quality"), _in_dimension_d(student, teacher, 0.5, 2**10)):
        np.testing.assert_allclose(obs[name], reference, rtol=0, atol=1e-13 * float(jnp.max(jnp.abs(reference))), err_msg=name)


def test_vmapped_over_seeds_and_a_temperature_schedule():
    teacher = F.init_mixture_teacher(2, 6, "softmax", "linear", key=KEYS[0])
    students = jax.vmap(lambda k: F.init_mixture_student(3, 6, "temperature:tau=2,tau_final=0.1,decay=5", "linear", key=k))(
        jax.random.split(KEYS[3], 3))
    batched = jax.jit(jax.vmap(routing.routing_observables, in_axes=(0, None, None)))(students, teacher, 20.0)
    for s in range(3):
        one = jax.tree_util.tree_map(lambda a: a[s], students)
        alone = observe(one, teacher, 20.0)
        np.testing.assert_allclose(batched["load"][s], alone["load"], rtol=1e-10)
        np.testing.assert_allclose(batched["quality"][s], alone["quality"], rtol=1e-10)
    # Annealing the temperature from 2 to 0.1 sharpens the routing: less balanced loads.
    early = observe(one, teacher, 0.0)["load"]
    assert routing.load_entropy(early) > routing.load_entropy(alone["load"])


def test_effective_temperature():
    q = np.array([-1.0, -2.0, -3.0, -0.5])
    for beta in (-3.0, 0.5, 4.0):
        load = np.exp(beta * q) / np.exp(beta * q).sum()
        assert routing.effective_temperature(0.7 * load, q) == pytest.approx(beta, rel=1e-9)
    loads = np.stack([np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]), np.full(4, 0.25)])
    np.testing.assert_array_equal(routing.effective_temperature(loads, q)[:2], [np.inf, -np.inf])
    assert abs(routing.effective_temperature(loads, q)[2]) < 1e-9  # a uniform load: β = 0
    assert routing.effective_temperature(np.array([0.2, 0.8]), np.ones(2)) == 0.0  # no quality difference
    assert np.isnan(routing.effective_temperature(np.array([np.nan, 1.0]), np.ones(2)))
    diag = routing.routing_diagnostics(np.ones((2, 5, 3)), np.zeros((2, 5, 3)))
    assert {k: v.shape for k, v in diag.items()} == {"entropy": (2, 5), "cv": (2, 5), "beta": (2, 5)}


def test_plot_routing(tmp_path):
    times = np.linspace(0.0, 10.0, 6)
    load = np.full((2, 6, 3), 1 / 3)
    load[:, :, 0] += np.linspace(0, 0.2, 6)
    quality = -np.ones((2, 6, 3)) - load
    fig = plot.plot_routing(times, load, quality, seed=1)
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="shape"):
        plot.plot_routing(times, load[:, :4], quality)
    with pytest.raises(ValueError, match="seed"):
        plot.plot_routing(times, load, quality, seed=2)
