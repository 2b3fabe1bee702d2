#!/usr/bin/env python3
"""learn2learn's MAML and an SCL linear probe, scored on the same seeded test tasks.

What it shows:

1. ``l2l.algorithms.MAML`` around learn2learn's ``OmniglotCNN``, meta-trained by a plain
   learn2learn loop (clone, adapt on the support set, query loss, meta-step) on tasks from
   ``scl_plugin.data.get_tasksets`` (learn2learn's signature, our Omniglot small sets);
2. SCL pretraining (CE + spatial contrastive) of a Conv-4 on the same base classes, scored with
   the paper's linear probe (``scl_plugin.evaluation.evaluate``, logistic regression on frozen
   L2-normalised features);
3. both on the *same* fixed test episodes (``tasksets.test``, a function of the episode seed
   only), support = the first ``shots`` images of each class in both, so the per-episode
   accuracies pair up: the paired difference has a much tighter 95% CI than two separate ones.

What it prints: the MAML meta-training loss (first / last steps), each method's test accuracy
with its 95% CI, the paired difference SCL - MAML with its 95% CI, and a ``check passed`` line.
It exits with status 1 if either accuracy is not above chance (1 / ways) or the paired
difference is not the mean of the per-episode differences.

    python examples/compare_with_maml.py --tiny      # about 20 s on 2 CPU cores
"""
import argparse
import os
import sys
from pathlib import Path

import learn2learn as l2l
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import DataConfig
from scl_plugin.data import build_fewshot, get_tasksets, split_support_query
from scl_plugin.evaluation import evaluate, mean_ci, paired_difference

DEFAULT_ROOT = os.environ.get("SCL_DATA_ROOT", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def maml_episode(maml, task, ways, shots, queries, steps):
    """Adapt a clone on the support set, return its query loss and accuracy (learn2learn's loop)."""
    xs, ys, xq, yq = split_support_query(*task, ways, shots, queries)
    learner = maml.clone()
    for _ in range(steps):
        learner.adapt(F.cross_entropy(learner(xs), ys))
    logits = learner(xq)
    return F.cross_entropy(logits, yq), (logits.argmax(dim=1) == yq).float().mean().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=DEFAULT_ROOT, help="folder with images_background_small{1,2}.zip; "
                   "default $SCL_DATA_ROOT or <repo>/../shared/data")
    p.add_argument("--cache-dir", default="~/.cache/scl_plugin", help="where decoded images are cached")
    p.add_argument("--tiny", action="store_true", help="a few seconds' budget (what the tests run)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    args = p.parse_args(argv)
    ways, shots, queries = args.ways, args.shots, args.queries
    if args.tiny:
        iters, meta_batch, hidden, pre_steps, episodes = 30, 2, 32, 20, 20
    else:
        iters, meta_batch, hidden, pre_steps, episodes = 2000, 16, 64, 1500, 600
    torch.manual_seed(0)
    tasksets = get_tasksets("omniglot-small", train_ways=ways, train_samples=shots + queries, test_ways=ways,
                            test_samples=shots + queries, root=args.root, cache_dir=args.cache_dir,
                            test_episodes=episodes)

    # 1. MAML, as in learn2learn's examples/vision/maml_omniglot.py
    maml = l2l.algorithms.MAML(l2l.vision.models.OmniglotCNN(ways, hidden_size=hidden), lr=0.4, first_order=False)
    opt = torch.optim.Adam(maml.parameters(), lr=3e-3)
    losses = []
    for _ in range(iters):
        opt.zero_grad()
        total = 0.0
        for _ in range(meta_batch):
            loss, _ = maml_episode(maml, tasksets.train.sample(), ways, shots, queries, steps=1)
            (loss / meta_batch).backward()
            total += loss.item() / meta_batch
        opt.step()
        losses.append(total)
    k = max(1, iters // 5)
    print(f"MAML meta-training ({iters} x {meta_batch} tasks): query loss {np.mean(losses[:k]):.3f} -> "
          f"{np.mean(losses[-k:]):.3f}")
    maml_accs = np.array([maml_episode(maml, tasksets.test[i], ways, shots, queries, steps=3)[1]
                          for i in range(len(tasksets.test))])

    # 2. SCL pretraining on the base classes, then the linear probe on the same test tasks
    data = build_fewshot(DataConfig(dataset="omniglot-small", root=args.root, cache_dir=args.cache_dir,
                                    image_size=28, test_episodes=1, val_episodes=1))
    scl = SCL(create_backbone("conv4", in_chans=1, image_size=28, depth=3, hidden=hidden),
              num_classes=data.num_classes, lambda_spatial=1.0)
    opt = torch.optim.SGD(scl.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(data.pretrain_set(two_view=True), batch_size=32 if args.tiny else 64, shuffle=True,
                        drop_last=True)
    step = 0
    while step < pre_steps:
        for batch in loader:
            loss, _ = scl.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == pre_steps:
                break
    scl_accs = evaluate(scl.backbone, tasksets.test, ways, shots, queries, classifier="logreg", progress=False)

    # 3. the same episodes: paired difference
    n = len(tasksets.test)
    for name, accs in (("MAML (learn2learn)", maml_accs), ("SCL linear probe", scl_accs)):
        m, ci = mean_ci(accs)
        print(f"{name:>20}: {100 * m:.2f} +- {100 * ci:.2f}% on {n} seeded {ways}-way {shots}-shot episodes")
    diff, ci = paired_difference(scl_accs, maml_accs)
    print(f"{'SCL - MAML':>20}: {100 * diff:+.2f} +- {100 * ci:.2f} points (paired, 95% CI)")

    chance = 1.0 / ways
    failed = [f"{name} accuracy {a.mean():.3f} not above chance {chance:.3f}"
              for name, a in (("MAML", maml_accs), ("SCL", scl_accs)) if not a.mean() > chance]
    if not (len(scl_accs) == len(maml_accs) == n and np.isclose(diff, np.mean(scl_accs - maml_accs))
            and np.isfinite(ci)):
        failed.append("paired difference is not over the same episodes")
    if failed:
        print("check FAILED: " + "; ".join(failed))
        return 1
    print(f"check passed: both above chance {100 * chance:.0f}% on the same {n} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
