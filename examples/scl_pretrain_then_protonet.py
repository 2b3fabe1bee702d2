#!/usr/bin/env python3
"""SCL as a pretraining step, then a learn2learn-style ProtoNet on ``get_tasksets``.

What it shows:

1. SCL pretraining (CE + supervised spatial contrastive loss, the paper's SCL) of a Conv-4 on
   the base classes of Omniglot "background small 1", with ``scl_plugin.algorithms.SCL``;
2. the SCL backbone handed to a ProtoNet meta-training loop written the way learn2learn's
   ``examples/vision/protonet_*.py`` are, on tasks from ``scl_plugin.data.get_tasksets``
   (learn2learn's ``get_tasksets`` signature; the one changed line is marked below);
3. nearest-prototype accuracy on the harness's seeded test episodes (unseen alphabets of
   "background small 2"), before and after ProtoNet meta-training.

What it prints: the pretraining loss (mean of the first and last steps), the ProtoNet loss
(same), the test accuracy before / after with its 95% CI, and a final ``check passed`` line.
It exits with status 1 if the pretraining loss did not fall or the test accuracy after
ProtoNet is not above chance (1 / ways).

    python examples/scl_pretrain_then_protonet.py --tiny        # about 15 s on 2 CPU cores
    python examples/scl_pretrain_then_protonet.py --root /path/to/omniglot/zips
"""
import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import DataConfig
from scl_plugin.data import build_fewshot, get_tasksets
from scl_plugin.evaluation import mean_ci

DEFAULT_ROOT = os.environ.get("SCL_DATA_ROOT", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def protonet_loss(model, task, ways, shots, queries):
    """learn2learn-style ProtoNet episode: prototypes of the support embeddings, logits
    = -squared Euclidean distance of each query to each prototype."""
    X, y = task
    order = torch.sort(y, stable=True).indices          # class 0's images, then class 1's, ...
    X, y = X[order], y[order]
    emb = model(X).view(ways, shots + queries, -1)       # first `shots` of each class: support
    prototypes = emb[:, :shots].mean(dim=1)
    query = emb[:, shots:].reshape(ways * queries, -1)
    labels = y.view(ways, shots + queries)[:, shots:].reshape(-1)
    logits = -torch.cdist(query, prototypes).pow(2)
    return F.cross_entropy(logits, labels), (logits.argmax(dim=1) == labels).float().mean().item()


@torch.no_grad()
def test_accuracy(model, tasks, ways, shots, queries):
    model.eval()
    accs = [protonet_loss(model, tasks[i], ways, shots, queries)[1] for i in range(len(tasks))]
    model.train()
    return mean_ci(accs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=DEFAULT_ROOT, help="folder with images_background_small{1,2}.zip "
                   "(or an omniglot/ folder holding them); default $SCL_DATA_ROOT or <repo>/../shared/data")
    p.add_argument("--cache-dir", default="~/.cache/scl_plugin", help="where decoded images are cached")
    p.add_argument("--tiny", action="store_true", help="a few seconds' budget (what the tests run)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    args = p.parse_args(argv)
    # --tiny: a narrower Conv-4, small batches, a few dozen steps
    pre_steps, meta_steps, episodes, batch, hidden = (20, 30, 30, 32, 32) if args.tiny else (1500, 2000, 600, 64, 64)
    torch.manual_seed(0)
    ways, shots, queries = args.ways, args.shots, args.queries

    # 1. SCL pretraining on the base classes (two augmented views per image)
    data = build_fewshot(DataConfig(dataset="omniglot-small", root=args.root, cache_dir=args.cache_dir,
                                    image_size=28, test_episodes=1, val_episodes=1))
    loader = DataLoader(data.pretrain_set(two_view=True), batch_size=batch, shuffle=True, drop_last=True)
    backbone = create_backbone("conv4", in_chans=1, image_size=28, depth=3, hidden=hidden)  # 3x3 map at 28 px
    scl = SCL(backbone, num_classes=data.num_classes, lambda_spatial=1.0)       # CE + SC
    opt = torch.optim.SGD(scl.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pre_losses = []
    while len(pre_losses) < pre_steps:
        for batch in loader:
            loss, _ = scl.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            pre_losses.append(loss.item())
            if len(pre_losses) == pre_steps:
                break
    k = max(1, pre_steps // 5)
    pre_first, pre_last = sum(pre_losses[:k]) / k, sum(pre_losses[-k:]) / k
    print(f"SCL pretraining ({data.num_classes} classes, {pre_steps} steps): loss {pre_first:.3f} -> {pre_last:.3f}")

    # 2. ProtoNet from the SCL backbone, on learn2learn tasks
    # (a learn2learn script: tasksets = l2l.vision.benchmarks.get_tasksets("omniglot", ...))
    tasksets = get_tasksets("omniglot-small", train_ways=ways, train_samples=shots + queries,
                            test_ways=ways, test_samples=shots + queries, root=args.root,
                            cache_dir=args.cache_dir, test_episodes=episodes)
    model = scl.backbone
    before = test_accuracy(model, tasksets.test, ways, shots, queries)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    meta_losses = []
    for step in range(meta_steps):
        loss, _ = protonet_loss(model, tasksets.train.sample(), ways, shots, queries)
        opt.zero_grad()
        loss.backward()
        opt.step()
        meta_losses.append(loss.item())
    k = max(1, meta_steps // 5)
    print(f"ProtoNet meta-training ({ways}-way {shots}-shot, {meta_steps} tasks): "
          f"loss {sum(meta_losses[:k]) / k:.3f} -> {sum(meta_losses[-k:]) / k:.3f}")
    after = test_accuracy(model, tasksets.test, ways, shots, queries)
    print(f"test accuracy on {len(tasksets.test)} seeded episodes: SCL backbone {100 * before[0]:.2f} "
          f"+- {100 * before[1]:.2f}%, after ProtoNet {100 * after[0]:.2f} +- {100 * after[1]:.2f}%")

    chance = 1.0 / ways
    failed = []
    if not pre_last < pre_first:
        failed.append(f"pretraining loss did not fall ({pre_first:.3f} -> {pre_last:.3f})")
    if not after[0] > chance:
        failed.append(f"test accuracy {after[0]:.3f} not above chance {chance:.3f}")
    if failed:
        print("check FAILED: " + "; ".join(failed))
        return 1
    print(f"check passed: pretraining loss fell and test accuracy {100 * after[0]:.1f}% > chance {100 * chance:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
