"""Every docstring example of the package runs as written (issue 25).

Each module's doctests (``>>>``) run with the module's own names, as ``pytest --doctest-modules``
would; and every literal block a docstring introduces as an example (``Example::``,
``Usage::``, ``Typical use::``) must be such a doctest, so that no example escapes the run.
Formulas and illustrations (``... is::``) are not examples.
"""
import doctest
import importlib
import pkgutil
import re

import pytest
import torch

import scl_plugin

MODULES = sorted(m.name for m in pkgutil.walk_packages(scl_plugin.__path__, "scl_plugin."))
EXAMPLE_INTRO = re.compile(r"\b(Example|Examples|Usage|Typical use)\b[^\n]*::\s*$")


def literal_blocks(doc: str):
    """``(intro line, block text)`` of each reST literal block (a paragraph ending in ``::``)."""
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt)
        yield line.strip(), "\n".join(block)


def docstrings(name):
    module = importlib.import_module(name)
    return module, doctest.DocTestFinder(exclude_empty=False).find(module, name)


def test_every_module_is_seen():
    assert "scl_plugin.algorithms.base" in MODULES and "scl_plugin.registry" in MODULES and len(MODULES) > 50


@pytest.mark.parametrize("name", MODULES)
def test_examples_are_doctests(name):
    _, tests = docstrings(name)
    bare = [f"{t.name}: {intro}" for t in tests for intro, block in literal_blocks(t.docstring or "")
            if EXAMPLE_INTRO.search(intro) and ">>>" not in block]
    assert not bare, f"example blocks that would not run (write them as >>> doctests): {bare}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    _, tests = docstrings(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        for test in tests:
            if test.examples:
                runner.run(test, out=report.append)
    finally:
        torch.random.set_rng_state(state)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
