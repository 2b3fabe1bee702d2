#!/usr/bin/env python3
"""Any timm model as the SCL backbone: the model name is a command-line argument.

What it shows: ``scl_plugin.backbones.create_backbone(name, in_chans, image_size)`` turns any
timm registry name (``resnet18``, ``resnet10t``, ``efficientnet_b0``, ``vit_tiny_patch16_224``,
..., plus our ``resnet12`` / ``conv4``) into a backbone with a pooled ``forward`` and a spatial
``forward_spatial``; SCL trains it unchanged (CE + spatial contrastive when the feature map
has more than one position at this image size, CE alone otherwise) on Omniglot's base
classes, and the paper's linear probe scores it on the seeded test tasks of
``scl_plugin.data.get_tasksets``. The same swap in a config is ``model.name=<name>``.

What it prints: the backbone (feature size, feature map, parameters), the training loss
(first / last steps), the test accuracy with its 95% CI, and a ``check passed`` line. Exits
with status 1 if the loss did not fall or the accuracy is not above chance (1 / ways).

    python examples/swap_backbone.py resnet18 --tiny            # about 15 s on 2 CPU cores
    python examples/swap_backbone.py vit_tiny_patch16_224 --image-size 32 --tiny
"""
import argparse
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import DataConfig
from scl_plugin.data import build_fewshot, get_tasksets
from scl_plugin.evaluation import evaluate, mean_ci

DEFAULT_ROOT = os.environ.get("SCL_DATA_ROOT", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", default="resnet18", help="any timm model name (default resnet18)")
    p.add_argument("--root", default=DEFAULT_ROOT, help="folder with images_background_small{1,2}.zip; "
                   "default $SCL_DATA_ROOT or <repo>/../shared/data")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--cache-dir", default="~/.cache/scl_plugin", help="where decoded images are cached")
    p.add_argument("--tiny", action="store_true", help="a few seconds' budget (what the tests run)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    args = p.parse_args(argv)
    steps, episodes, batch = (40, 20, 32) if args.tiny else (2000, 600, 64)
    torch.manual_seed(0)
    size = args.image_size

    backbone = create_backbone(args.model, in_chans=1, image_size=size)    # any timm name
    h, w = backbone.spatial_shape
    spatial = h * w > 1
    params = sum(p.numel() for p in backbone.parameters())
    print(f"{args.model}: {backbone.feature_dim}-d features, {h}x{w} map at {size}px, {params / 1e6:.2f}M parameters; "
          f"training {'CE + spatial contrastive' if spatial else 'CE only (a 1x1 map has nothing to align)'}")

    data = build_fewshot(DataConfig(dataset="omniglot-small", root=args.root, cache_dir=args.cache_dir,
                                    image_size=size, test_episodes=1, val_episodes=1))
    scl = SCL(backbone, num_classes=data.num_classes, lambda_spatial=1.0 if spatial else 0.0)
    loader = DataLoader(data.pretrain_set(two_view=spatial), batch_size=batch, shuffle=True, drop_last=True)
    opt = torch.optim.SGD(scl.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    while len(losses) < steps:
        for b in loader:
            loss, _ = scl.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    k = max(1, steps // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    print(f"training ({steps} steps of {batch}): loss {first:.3f} -> {last:.3f}")

    tasksets = get_tasksets("omniglot-small", test_ways=args.ways, test_samples=args.shots + args.queries,
                            root=args.root, cache_dir=args.cache_dir, image_size=size, test_episodes=episodes)
    accs = evaluate(scl.backbone, tasksets.test, args.ways, args.shots, args.queries, classifier="logreg",
                    progress=False)
    m, ci = mean_ci(accs)
    print(f"linear probe: {100 * m:.2f} +- {100 * ci:.2f}% on {len(accs)} seeded {args.ways}-way "
          f"{args.shots}-shot test episodes")
    chance = 1.0 / args.ways
    failed = []
    if not last < first:
        failed.append(f"loss did not fall ({first:.3f} -> {last:.3f})")
    if not m > chance:
        failed.append(f"accuracy {m:.3f} not above chance {chance:.3f}")
    if failed:
        print("check FAILED: " + "; ".join(failed))
        return 1
    print(f"check passed: {args.model} loss fell and accuracy {100 * m:.1f}% > chance {100 * chance:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
