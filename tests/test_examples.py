"""Every docstring example of the package runs, and every value it states holds.

An example is the literal block after a docstring line ending in ``Example::``
(module, class, function or method). It runs in a fresh namespace holding
``jax``, ``jnp`` (jax.numpy), ``np`` (numpy) and ``jaxmoe`` — what the package
docstring tells readers to import — and imports anything else itself; it runs
in its own empty folder, so the folders examples write land there. A value an
example states is an ``assert`` (``==`` for exact values, ``np.allclose`` for
floating point), so a stated value that drifts fails here.

The examples run in one process, in file order. Those that simulate share one
problem size (d = 100, m = 4, m* = 2, two seeds), so they share the compiled
solves (cached per static specification and shape), and the experiments they
repeat with the same arguments (`REPEATED`: deterministic functions of their
arguments) are computed once and handed to the later examples.
"""

import ast
import contextlib
import functools
import importlib
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmoe

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxmoe"
MARK = "Example::"


def _blocks(doc: str) -> list[str]:
    """The literal blocks after the lines of `doc` that end in ``Example::``, dedented."""
    lines = doc.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.rstrip().endswith(MARK):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for follow in lines[i + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            body.append(follow)
        out.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return out


def _examples(path: Path) -> list[tuple[str, str]]:
    """``(qualified name, code)`` of every example in the docstrings of one module."""
    out = []

    def visit(node, prefix):
        doc = ast.get_docstring(node, clean=True)
        name = prefix or "<module>"
        for k, code in enumerate(_blocks(doc or "")):
            out.append((name if k == 0 else f"{name}[{k}]", code))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{prefix}.{child.name}" if prefix else child.name)

    visit(ast.parse(path.read_text()), "")
    return out


FILES = sorted(PACKAGE.rglob("*.py"))
EXAMPLES = [(f"{path.relative_to(ROOT)}::{name}", code) for path in FILES for name, code in _examples(path)]


def test_every_example_is_collected():
    """Each ``Example::`` in the source is one collected, non-empty example (none hides in a comment or a
    string that is not a docstring, none is an empty block)."""
    for path in FILES:
        marks = len(re.findall(re.escape(MARK), path.read_text()))
        found = [code for _, code in _examples(path)]
        assert len(found) == marks, f"{path.relative_to(ROOT)}: {marks} {MARK!r}, {len(found)} examples collected"
        assert all(code.strip() for code in found), f"{path.relative_to(ROOT)}: an empty example"
    assert len(EXAMPLES) >= 140


# (module, function) pairs the examples call again and again with the same
# arguments; each is deterministic in its arguments (seeds are explicit keys).
REPEATED = (
    ("jaxmoe", "simulate"),
    ("jaxmoe.compare", "compare"),
    ("jaxmoe.prune", "prune"),
    ("jaxmoe.scaling", "scaling"),
    ("jaxmoe.rates", "rates"),
)
_RESULTS: dict = {}


def _once(fn):
    """`fn` computed once per distinct (hashable) arguments, over all examples."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            key = (fn.__module__, fn.__name__, args, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            return fn(*args, **kwargs)
        if key not in _RESULTS:
            _RESULTS[key] = fn(*args, **kwargs)
        return _RESULTS[key]

    return wrapper


def _named_modules(code: str) -> set[str]:
    """``jaxmoe.x`` (and ``jaxmoe.x.y``) chains in `code` that name a module of the package."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "jaxmoe":
            chain = ["jaxmoe", *reversed(parts)]
            names |= {".".join(chain[:k]) for k in range(2, len(chain) + 1)}
    return {name for name in names if (ROOT / name.replace(".", "/")).is_dir() or (ROOT / f"{name.replace('.', '/')}.py").is_file()}


def _imported_modules(code: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_examples_name_only_what_a_bare_import_reaches():
    """An example copied into a fresh interpreter after ``import jaxmoe`` works: every ``jaxmoe.x`` module it
    names is loaded by that import (or on first use, `jaxmoe._LAZY`) or imported by the example."""
    probe = "import json, sys, jaxmoe; print(json.dumps(sorted(m for m in sys.modules if m.startswith('jaxmoe'))))"
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()[-1])
    )
    reachable = loaded | {f"jaxmoe.{name}" for name in jaxmoe._LAZY}
    missing = {}
    for name, code in EXAMPLES:
        imported = _imported_modules(code)
        needed = {m for m in _named_modules(code) if m not in reachable and not any(i == m or i.startswith(m + ".") for i in imported)}
        if needed:
            missing[name] = sorted(needed)
    assert not missing, f"examples that need an import: {missing}"


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_example(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for module, name in REPEATED:
        module = importlib.import_module(module)
        monkeypatch.setattr(module, name, _once(getattr(module, name)))
    namespace = {"jax": jax, "jnp": jnp, "np": np, "jaxmoe": jaxmoe, "__name__": "example"}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, "<example>", "exec"), namespace)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # figures an example drew are not kept
        if pyplot is not None:
            pyplot.close("all")
