"""Rapid learning or feature reuse? (Raghu et al., ICLR 2020): how much each layer's
representation changes during the inner loop of MAML-like methods, by linear CKA.

    CKA(X, Y) = <K_c, L_c>_F / (||K_c||_F ||L_c||_F),   K = X X^T, L = Y Y^T, c: centred (H K H)

(Kornblith et al., ICML 2019), i.e. ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` computed
on n x n Gram matrices (conv maps are flattened, so features can be much wider than n).
CKA is 1 for identical representations and invariant to orthogonal transforms and isotropic
scaling of either one.

``feature_reuse(method, episodes, ...)`` works for any *adaptable* method, i.e. one with
``adapt(xs, ys) -> learner`` and an ``eval_inner_steps`` attribute (MAML, first-order MAML,
ANIL): the learner adapted with 0 steps is the meta-learned model ("before"), the one adapted
with the method's own steps is "after". Both are run on the episode's query images; the
representations compared are the outputs of the backbone's stages (found by
:func:`stage_names`, or given) and the logits ("head"). High CKA everywhere except the head
means feature reuse.

Example (``tasks``: e.g. ``data.test_tasks``)::

    >>> import tempfile, pathlib
    >>> from scl_plugin.algorithms import MAMLMethod
    >>> from scl_plugin.backbones import create_backbone
    >>> maml = MAMLMethod(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), 5, 1, 2, inner_lr=0.5)
    >>> tasks = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
    >>> sims = feature_reuse(maml, tasks, ways=5, shots=1, queries=2, episodes=2)
    >>> list(sims)
    ['model.blocks.0', 'model.blocks.1', 'model.blocks.2', 'model.blocks.3', 'head']
    >>> path = plot_feature_reuse({"maml": sims}, str(pathlib.Path(tempfile.mkdtemp()) / "feature_reuse.png"))
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from torch import nn

from ..data import split_support_query
from ..evaluation.features import eval_mode
from ..utils import save_figure

__all__ = ["linear_cka", "stage_names", "layer_outputs", "feature_reuse", "plot_feature_reuse"]


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x).detach().flatten(1).to("cpu", torch.float64)
    x = x - x.mean(0, keepdim=True)
    return x @ x.t()


def linear_cka(x, y) -> float:
    """Linear CKA between two representations of the same n inputs, ``(n, ...)`` each."""
    k, l = _centred_gram(x), _centred_gram(y)
    if k.shape != l.shape:
        raise ValueError(f"linear_cka: representations of {k.shape[0]} and {l.shape[0]} inputs")
    denom = k.norm() * l.norm()
    if denom <= 0:          # a constant representation carries no similarity structure
        return float("nan")
    return float((k * l).sum() / denom)


def _find_backbone(model: nn.Module) -> tuple:
    """(name, module) of the first sub-module called ``...backbone`` (the model itself if none)."""
    for name, m in model.named_modules():
        if name.split(".")[-1] == "backbone":
            return name, m
    return "", model


def stage_names(backbone: nn.Module) -> List[str]:
    """The backbone's stages: children of its first Sequential/ModuleList holding >= 2
    parameterised children (Conv-4's blocks, a ResNet's stages), else its parameterised children."""
    for name, m in backbone.named_modules():
        if isinstance(m, (nn.Sequential, nn.ModuleList)):
            kids = [(n, c) for n, c in m.named_children() if any(True for _ in c.parameters())]
            if len(kids) >= 2:
                return [f"{name}.{n}" if name else n for n, _ in kids]
    return [n for n, c in backbone.named_children() if any(True for _ in c.parameters())]


@torch.no_grad()
def layer_outputs(model: nn.Module, x: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
    """Outputs of the named sub-modules of ``model`` on ``x`` (forward hooks), plus ``"head"``:
    the model's own output."""
    modules = dict(model.named_modules())
    out: Dict[str, torch.Tensor] = {}
    hooks = []
    for name in layers:
        if name not in modules:
            raise KeyError(f"layer_outputs: no sub-module {name!r}")
        hooks.append(modules[name].register_forward_hook(
            lambda _m, _i, o, name=name: out.__setitem__(name, o.detach().flatten(1).cpu())))
    try:
        out["head"] = model(x).detach().flatten(1).cpu()
    finally:
        for h in hooks:
            h.remove()
    return out


@contextlib.contextmanager
def _inner_steps(method: nn.Module, steps: int):
    old = method.eval_inner_steps
    method.eval_inner_steps = steps
    try:
        yield
    finally:
        method.eval_inner_steps = old


def feature_reuse(method: nn.Module, tasks, ways: int, shots: int, queries: int, episodes: int = 20,
                  layers: Optional[List[str]] = None) -> Dict[str, float]:
    """Mean (over ``episodes`` tasks) linear CKA per layer between the query representations
    before and after inner-loop adaptation; keys are stage names (relative to the backbone) and
    ``"head"``, in forward order."""
    if not hasattr(method, "eval_inner_steps"):
        raise TypeError(f"feature_reuse needs an adaptable method (MAML, ANIL) with eval_inner_steps; "
                        f"got {type(method).__name__}")
    per_layer: Dict[str, list] = {}
    with eval_mode(method):
        for i in range(min(episodes, len(tasks))):
            x, y = tasks[i]
            xs, ys, xq, _ = split_support_query(x, y, ways, shots, queries)
            with _inner_steps(method, 0):
                before = method.adapt(xs, ys)
            after = method.adapt(xs, ys)
            reps = []
            for learner in (before, after):
                prefix, backbone = _find_backbone(learner)
                names = layers if layers is not None else stage_names(backbone)
                full = [f"{prefix}.{n}" if prefix else n for n in names]
                outs = layer_outputs(learner, xq, full)
                reps.append({**{n: outs[f] for n, f in zip(names, full)}, "head": outs["head"]})
            for name in reps[0]:
                per_layer.setdefault(name, []).append(linear_cka(reps[0][name], reps[1][name]))
    return {name: float(np.nanmean(v)) for name, v in per_layer.items()}


def plot_feature_reuse(similarities: Dict[str, Dict[str, float]], path: str) -> str:
    """One line per method: CKA(before, after adaptation) against layer. Returns ``path``."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, sims in similarities.items():
        ax.plot(range(len(sims)), list(sims.values()), marker="o", label=method)
        ax.set_xticks(range(len(sims)), [n.split(".")[-1] if n != "head" else "head" for n in sims])
    ax.set(xlabel="layer (backbone stage, then head)", ylabel="linear CKA before vs after", ylim=(0, 1.05),
           title="Rapid learning or feature reuse")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
