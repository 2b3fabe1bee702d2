"""Seeded synthetic images (tests, smoke runs): no files."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from ..base import Split, TensorSource
from ..registry import LoadOptions, register


@register("synthetic", "generated", files="(none: generated in memory)", needs_root=False)
def _load(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    return load_synthetic(opts.image_size)


SYNTHETIC_CLASSES = {"train": 40, "val": 20, "test": 20}
SYNTHETIC_PER_CLASS = 30
SYNTHETIC_SEED = 20210


def load_synthetic(image_size: int, channels: int = 3) -> Dict[str, Split]:
    """Seeded in-memory images: class = fixed random low-frequency pattern, image = pattern + noise.

    Independent of any run seed (the data is the same for every run), linearly separable
    (noise std 0.08 vs. pattern contrast ~0.3), 3 channels so any timm model accepts it.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    out, offset = {}, 0
    low = max(2, image_size // 7)
    for split, n_cls in SYNTHETIC_CLASSES.items():
        pat = torch.rand(n_cls, channels, low, low, generator=g)
        pat = torch.nn.functional.interpolate(pat, size=(image_size, image_size), mode="bilinear",
                                              align_corners=False)
        noise = torch.randn(n_cls, SYNTHETIC_PER_CLASS, channels, image_size, image_size,
                            generator=g) * 0.08
        imgs = (pat.unsqueeze(1) + noise).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        imgs = imgs.reshape(-1, channels, image_size, image_size)
        labels = [offset + c for c in range(n_cls) for _ in range(SYNTHETIC_PER_CLASS)]
        out[split] = Split(TensorSource(imgs), labels, "rgb", f"synthetic {split}")
        offset += n_cls
    return out


