"""The jaxtyping annotations hold at runtime: shapes, dtypes and types are checked on real calls.

One subprocess imports jaxmoe under jaxtyping's import hook with beartype as
the checker (every annotated function and `eqx.Module` of the package checks
its arguments and its return value, with the axis names shared within a
call), then runs a representative set of library calls at small sizes: the
exact loss and its references, the mixture families and every loss rule,
routing, the flow and two discrete methods, the pruned problem and its
tangent spectrum, the comparison with SGD. A subprocess
because the hook must be in place before jaxmoe is first imported.

Run this file as a script to see the calls one by one.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_calls_meet_their_annotations():
    run = subprocess.run([sys.executable, __file__], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    assert "all calls checked" in run.stdout


def main():
    import time

    import jaxtyping

    start = time.perf_counter()
    jaxtyping.install_import_hook("jaxmoe", "beartype.beartype")
    import equinox as eqx
    import jax

    jax.config.update("jax_enable_x64", True)  # as the suite (conftest.py)
    import jax.numpy as jnp

    import jaxmoe
    import jaxmoe.compare
    import jaxmoe.families as F
    import jaxmoe.prune
    import jaxmoe.quadrature as Q
    import jaxmoe.routing
    import jaxmoe.voronoi

    print(f"{time.perf_counter() - start:6.1f} s  imported jaxmoe under the hook", flush=True)

    def step(name, fn, *args):
        """``fn(*args)``; with arguments, compiled: the checks then run on the
        tracers of that call (same shapes and dtypes), and one program replaces
        the hundreds of single-op ones an eager call compiles (measured: the
        loss and its gradient 3.8 s eager, 0.4 s compiled)."""
        start = time.perf_counter()
        out = jax.block_until_ready(eqx.filter_jit(fn)(*args) if args else fn())
        print(f"{time.perf_counter() - start:6.1f} s  checked {name}", flush=True)
        return out

    # The hook is on: a float annotation refuses an integer array.
    try:
        jaxmoe.unit(jnp.ones(3, dtype=jnp.int32))
    except jaxtyping.TypeCheckError:
        print("the hook refuses an integer array where a float one is annotated")
    else:
        raise AssertionError("jaxtyping's import hook is not checking jaxmoe")

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    teacher, student = jaxmoe.init_teacher(2, 12, key=k1), jaxmoe.init_student(3, 12, key=k2)
    step("population_loss and its gradient", jax.value_and_grad(jaxmoe.population_loss), student, teacher)
    step("population_loss_reference", jaxmoe.population_loss_reference, student, teacher)
    step("population_loss_monte_carlo", lambda s, t, k: jaxmoe.population_loss_monte_carlo(s, t, key=k, num_samples=1000), student, teacher, k1)
    step("observe", jaxmoe.observe, student, teacher)
    step("forward", jaxmoe.forward, teacher, jnp.ones((4, 12)))
    step("project_to_span", lambda: jaxmoe.init.project_to_span(teacher, student))
    step("loss_hessian, hessian_spectrum", lambda: jaxmoe.prune.hessian_spectrum(teacher, teacher))

    def pair(gate, expert, m=3):
        return (F.init_mixture_student(m, 12, gate, expert, key=k2), F.init_mixture_teacher(2, 12, gate, expert, key=k1))

    softmax = pair("softmax", "linear")
    step("mixture_loss (conditional) and its gradient", jax.value_and_grad(Q.mixture_loss), *softmax)
    step("mixture_loss (pair kernel)", Q.mixture_loss, *pair("sigmoid", "linear"))
    step("mixture_loss (quasi-Monte Carlo)", Q.mixture_loss, *pair("topk:k=1", "mlp:hidden=2"))
    step("mixture_loss (hierarchical)", Q.mixture_loss, *pair("hierarchical:groups=2", "he3", m=4))
    step("routing_observables", jaxmoe.routing.routing_observables, *softmax)
    step("mixture_forward", F.mixture_forward, softmax[1], jnp.ones((3, 12)))
    step("init_mixture_reduced", lambda k: jaxmoe.init.init_mixture_reduced(4, 2, 100, "softmax", "linear", key=k), k1)
    atoms = [jnp.ones((2, 1))]
    step("voronoi_loss", jaxmoe.voronoi.voronoi_loss, jnp.zeros(2), atoms, jnp.zeros(2), atoms)

    # One compiled flow and two compiled SGD scans, on the suite's shared problem
    # (d = 12 > 2(m + m*) = 10, so it reduces): the session's compilation cache
    # serves whichever of this process and the test workers compiles it second.
    from _problems import TINY as config  # after the hook: it imports jaxmoe

    result = step("simulate (the flow)", lambda: jaxmoe.simulate(config))
    step("Result.models", lambda: result.models())
    kept_teacher, kept_student = jaxmoe.prune.pruned_problem(result, jaxmoe.prune.select_experts(result).kept)
    step("pruned_problem, tangent spectra (NumPy models, a seed axis)", lambda: jaxmoe.prune.hessian_spectrum(kept_student, kept_teacher))
    step("simulate (online SGD)", lambda: jaxmoe.simulate(config.replace(method="online", learning_rate=0.1, batch_size=8)))
    step("simulate (optax, reduced)", lambda: jaxmoe.simulate(config.replace(method="optax", optimizer="adam", learning_rate=0.01)))
    step("compare (flow against online SGD)", lambda: jaxmoe.compare.compare(config, settings=((0.1, 8),), log=lambda text: None))
    print("all calls checked")


if __name__ == "__main__":
    main()
