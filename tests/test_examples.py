"""Every script in ``examples/`` runs with ``--tiny`` on the real Omniglot data and passes its own
check (a loss that falls, accuracy above chance), so an example that rots fails the suite."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
SHARED = REPO / ".." / "shared" / "data"
# extra command-line arguments of an example (swap_backbone: a timm name other than its default)
ARGS = {"swap_backbone.py": ["resnet10t"]}


def test_examples_are_the_documented_ones_and_self_describing():
    names = {p.name for p in EXAMPLES}
    assert {"scl_pretrain_then_protonet.py", "compare_with_maml.py", "evaluate_released_checkpoint.py",
            "swap_backbone.py"} <= names
    for path in EXAMPLES:
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        assert "What it shows" in doc and "What it prints" in doc and "--tiny" in doc, path.name
        flags = {a.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "attr", "") == "add_argument"
                 for a in node.args if isinstance(a, ast.Constant)}
        assert {"--tiny", "--root"} <= flags, path.name


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    if not (SHARED / "omniglot" / "images_background_small1.zip").is_file():
        pytest.skip("../shared/data/omniglot is not present")
    return tmp_path_factory.mktemp("examples-cache")      # decoded once, shared by the examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_tiny_and_passes_its_check(path, cache):
    env = dict(os.environ, OMP_NUM_THREADS="1", SCL_DATA_ROOT=str(SHARED))
    cmd = [sys.executable, str(path), *ARGS.get(path.name, []), "--tiny", "--cache-dir", str(cache)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{path.name} exited {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    lines = r.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("check passed"), r.stdout
