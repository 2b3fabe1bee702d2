#!/usr/bin/env python3
"""Score an RFS / SCL ResNet-12 checkpoint with the SCL authors' evaluation protocol.

What it shows: a checkpoint written by RFS's or SCL's code (``{'model': state_dict, 'opt':
Namespace, ...}``, keys ``layer{1..4}.0.conv1`` ...; the released mini-ImageNet files are such)
loaded into our timm ``resnet12`` with ``scl_plugin.backbones.rfs.load_rfs_weights`` (read with
``torch.load(weights_only=True)``: the file cannot run code), then scored on the seeded test
episodes of ``scl_plugin.data.get_tasksets`` with the authors' ``eval/meta_eval.py`` protocol:
every support image replaced by ``--copies`` augmented copies, one logistic regression on the
pooled and one on the max-pooled spatial features, probabilities summed, Student-t 95% CI.

Without ``--checkpoint``, ``--tiny`` first writes a small one of its own in the RFS layout: a
narrow ResNet-12 trained for a few cross-entropy steps on Omniglot's base classes, saved with
``scl_plugin.backbones.rfs.export_rfs``; the channels and widths are read from the file either way.

What it prints: the checkpoint (widths, input channels), the accuracy with its 95% CI on the
test episodes, and a ``check passed`` line. Exits with status 1 if the accuracy is not above
chance (1 / ways) or, for its own checkpoint, the loaded network does not compute what was
saved; 2 if the checkpoint does not fit the dataset.

    python examples/evaluate_released_checkpoint.py --tiny                    # about 15 s on 2 CPU cores
    python examples/evaluate_released_checkpoint.py --checkpoint resnet12_last.pth \\
        --dataset mini-imagenet --root ~/data/miniImageNet --shots 5           # a released file
"""
import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.backbones.rfs import export_rfs, load_rfs_weights, read_rfs_checkpoint
from scl_plugin.config import DataConfig
from scl_plugin.data import build_fewshot, get_tasksets
from scl_plugin.evaluation import SupportAugment, evaluate, mean_ci

DEFAULT_ROOT = os.environ.get("SCL_DATA_ROOT", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def write_tiny_checkpoint(path, root, cache_dir, steps=8):
    """A narrow ResNet-12 after a few CE steps on Omniglot's base classes, in RFS's layout."""
    torch.manual_seed(0)
    data = build_fewshot(DataConfig(dataset="omniglot-small", root=root, cache_dir=cache_dir, image_size=28,
                                    test_episodes=1, val_episodes=1))
    backbone = create_backbone("resnet12", in_chans=1, image_size=28, widths=(16, 32, 48, 64))
    ce = SCL(backbone, num_classes=data.num_classes)            # lambda_global = lambda_spatial = 0: CE (RFS)
    opt = torch.optim.SGD(ce.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batches = iter(DataLoader(data.pretrain_set(), batch_size=32, shuffle=True, drop_last=True))
    for _ in range(steps):
        loss, _ = ce.loss(next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
    export_rfs(backbone.model, path, opt=argparse.Namespace(model="resnet12", dataset="omniglot-small"), epoch=1)
    print(f"wrote {path} (RFS layout, CE loss after {steps} steps {loss.item():.3f})")
    return backbone


def shape_of(state):
    """Input channels and stage widths of an RFS ResNet-12 state dict (optional ``module.`` prefix)."""
    convs = {int(m.group(1)): v for k, v in state.items()
             if (m := re.search(r"(?:^|\.)layer([1-4])\.0\.conv1\.weight$", k))}
    if sorted(convs) != [1, 2, 3, 4]:
        raise ValueError("not an RFS / SCL ResNet-12 (no layer1..4.0.conv1.weight)")
    return convs[1].shape[1], tuple(convs[i].shape[0] for i in (1, 2, 3, 4))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="RFS / SCL ResNet-12 checkpoint (.pth)")
    p.add_argument("--dataset", default="omniglot-small", help="a name of scl_plugin.data.list_tasksets()")
    p.add_argument("--root", default=DEFAULT_ROOT, help="data root; default $SCL_DATA_ROOT or <repo>/../shared/data")
    p.add_argument("--test-root", default=None, help="cross-domain test data (e.g. --dataset mini-imagenet->cub)")
    p.add_argument("--image-size", type=int, default=None, help="default: the dataset's (84 mini-ImageNet, 28 Omniglot)")
    p.add_argument("--cache-dir", default="~/.cache/scl_plugin", help="where decoded images are cached")
    p.add_argument("--tiny", action="store_true", help="a few seconds' budget (what the tests run)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--copies", type=int, default=5, help="augmented copies per support image (10 cross-domain)")
    args = p.parse_args(argv)
    if args.tiny:
        args.episodes, args.queries = min(args.episodes, 10), min(args.queries, 5)
    if args.checkpoint is None and not args.tiny:
        p.error("--checkpoint is required (or --tiny, which writes its own)")

    saved = None
    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint
        if path is None:
            path = os.path.join(tmp, "resnet12_tiny_rfs.pth")
            saved = write_tiny_checkpoint(path, args.root, args.cache_dir)
        in_chans, widths = shape_of(read_rfs_checkpoint(path))
        kw = {} if args.image_size is None else {"image_size": args.image_size}
        tasksets = get_tasksets(args.dataset, test_ways=args.ways, test_samples=args.shots + args.queries,
                                root=args.root, cache_dir=args.cache_dir, test_episodes=args.episodes,
                                **({"test_root": args.test_root} if args.test_root else {}), **kw)
        images = tasksets.test.dataset.dataset          # the episodes' images: kind, size, normalisation
        if images.channels != in_chans:
            print(f"error: {path} takes {in_chans}-channel images but {args.dataset} has {images.channels}")
            return 2
        backbone = create_backbone("resnet12", in_chans=in_chans, image_size=images.image_size, widths=widths)
        load_rfs_weights(backbone.model, path)
    print(f"loaded ResNet-12 widths {widths}, {in_chans} input channel(s), from "
          f"{'its own tiny checkpoint' if saved is not None else path}")

    failed = []
    backbone.eval()
    if saved is not None:                               # the file holds exactly the network saved
        saved.eval()
        x = tasksets.test[0][0]
        with torch.no_grad():
            if not torch.equal(backbone.forward_spatial(x), saved.forward_spatial(x)):
                failed.append("the loaded network differs from the one saved")

    augment = SupportAugment.standard(images.kind, images.image_size, images.mean.flatten(), images.std.flatten(),
                                      copies=args.copies)
    accs = evaluate(backbone, tasksets.test, args.ways, args.shots, args.queries, classifier="logreg",
                    protocol="scl", support_augment=augment, progress=False)
    m, ci = mean_ci(accs, ci="t")
    print(f"authors' protocol ({args.copies} support copies, pooled + spatial probes): {100 * m:.2f} +- "
          f"{100 * ci:.2f}% on {len(accs)} seeded {args.ways}-way {args.shots}-shot episodes of {args.dataset}")
    chance = 1.0 / args.ways
    if not m > chance:
        failed.append(f"accuracy {m:.3f} not above chance {chance:.3f}")
    if failed:
        print("check FAILED: " + "; ".join(failed))
        return 1
    print(f"check passed: accuracy {100 * m:.1f}% > chance {100 * chance:.0f}%"
          + (", loaded network identical to the saved one" if saved is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
