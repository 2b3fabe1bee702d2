"""Batched torch logistic regression vs scikit-learn per episode (same features, same run).

1. Linear probe: 1,000 episodes of 5-way 5-shot 15-query on 640-d L2-normalised features
   with a planted class structure (accuracy ~70%).
2. The SCL authors' full protocol (``eval.protocol=scl``): 1,000 episodes of 5-way 5-shot
   15-query, 5 augmented copies per support image (125 support rows), 640-d pooled and
   2,560-d spatial features, two probes whose probabilities are summed; batched torch
   (``scl_predict(classifier="logreg")``) vs scikit-learn one episode at a time
   (``classifier="logreg_sklearn"``, what the authors' eval/meta_eval.py runs).

Prints both times, the speedups and the accuracies; the last line is one JSON object (also
written to benchmarks/perf/results/eval_speed.json). No arguments; a few minutes on 2 CPU
cores (scikit-learn's protocol pass dominates).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scl_plugin.evaluation.classifiers import classify  # noqa: E402
from scl_plugin.evaluation.protocol import scl_predict  # noqa: E402
from scl_plugin.evaluation.stats import mean_ci, paired_difference  # noqa: E402
from scl_plugin.utils import atomic_write_json  # noqa: E402

EPISODES, WAYS, SHOTS, QUERIES, DIM, SEP, SEED = 1000, 5, 5, 15, 640, 0.17, 0
COPIES, SPATIAL_DIM, CHUNK = 5, 4 * DIM, 100     # protocol: augmented copies, 4d spatial features


def planted_features(seed: int = SEED):
    """Per-episode random class means (norm ~SEP) plus unit-norm noise, L2-normalised."""
    g = np.random.default_rng(seed)
    mu = g.normal(size=(EPISODES, WAYS, DIM)) * SEP / np.sqrt(DIM)
    ys = np.tile(np.repeat(np.arange(WAYS), SHOTS), (EPISODES, 1))
    yq = np.tile(np.repeat(np.arange(WAYS), QUERIES), (EPISODES, 1))
    rows = np.arange(EPISODES)[:, None]
    Xs = mu[rows, ys] + g.normal(size=(EPISODES, WAYS * SHOTS, DIM)) / np.sqrt(DIM)
    Xq = mu[rows, yq] + g.normal(size=(EPISODES, WAYS * QUERIES, DIM)) / np.sqrt(DIM)
    norm = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
    return (torch.from_numpy(norm(Xs)), torch.from_numpy(ys), torch.from_numpy(norm(Xq)),
            torch.from_numpy(yq))


def protocol_chunk(seed: int, n: int, seps=(0.17, 0.12), jitter: float = 0.7):
    """``n`` protocol episodes: for each feature set (640-d pooled, 2,560-d spatial) random
    class means plus noise; every support image's 5 augmented copies are that image plus
    smaller noise (``jitter``), so copies are correlated as real augmentations are."""
    g = np.random.default_rng(seed)
    ys = np.tile(np.repeat(np.arange(WAYS), SHOTS), (n, 1))
    yq = np.tile(np.repeat(np.arange(WAYS), QUERIES), (n, 1))
    rows = np.arange(n)[:, None]
    feats = []
    for dim, sep in zip((DIM, SPATIAL_DIM), seps):
        s = np.sqrt(dim)
        mu = (g.standard_normal((n, WAYS, dim), dtype=np.float32) * (sep / s))
        base = mu[rows, ys] + g.standard_normal((n, WAYS * SHOTS, dim), dtype=np.float32) / s
        xs = np.concatenate([base + g.standard_normal(base.shape, dtype=np.float32) * (jitter / s)
                             for _ in range(COPIES)], axis=1)
        xq = mu[rows, yq] + g.standard_normal((n, WAYS * QUERIES, dim), dtype=np.float32) / s
        norm = lambda a: torch.from_numpy(a / np.linalg.norm(a, axis=-1, keepdims=True))  # noqa: E731
        feats += [norm(xs), norm(xq)]
    Gs, Gq, Ss, Sq = feats
    return Gs, Ss, torch.from_numpy(np.tile(ys, (1, COPIES))), Gq, Sq, torch.from_numpy(yq)


def protocol_benchmark():
    """Time the full two-probe protocol, chunk by chunk (100 episodes, as evaluate() batches)."""
    from threadpoolctl import threadpool_limits
    warm = protocol_chunk(10_000, 10)
    scl_predict(*warm[:5], WAYS)
    scl_predict(*warm[:5], WAYS, classifier="logreg_sklearn")
    t_torch = t_sklearn = t_gram = 0.0
    acc_t, acc_s, agree = [], [], []
    for c in range(EPISODES // CHUNK):
        Gs, Ss, ys, Gq, Sq, yq = protocol_chunk(SEED + 1 + c, CHUNK)
        times, gram_times = [], []
        for _ in range(3):    # median of 3 (short passes are noisy on a shared machine)
            t0 = time.perf_counter()
            pred_t = scl_predict(Gs, Ss, ys, Gq, Sq, WAYS, combine="sum")
            times.append(time.perf_counter() - t0)
            # The floor of any exact kernel-form solver: the two support Gram matrices
            # (125 x 125 from 640-d and 2,560-d features) and nothing else.
            t0 = time.perf_counter()
            Gs @ Gs.transpose(1, 2), Ss @ Ss.transpose(1, 2)
            gram_times.append(time.perf_counter() - t0)
        t_torch += float(np.median(times))
        t_gram += float(np.median(gram_times))
        with threadpool_limits(1):
            t0 = time.perf_counter()
            pred_s = scl_predict(Gs, Ss, ys, Gq, Sq, WAYS, combine="sum", classifier="logreg_sklearn")
            t_sklearn += time.perf_counter() - t0
        acc_t += (pred_t == yq).double().mean(dim=1).tolist()
        acc_s += (pred_s == yq).double().mean(dim=1).tolist()
        agree.append(float((pred_t == pred_s).double().mean()))
    return t_torch, t_sklearn, t_gram, np.asarray(acc_t), np.asarray(acc_s), float(np.mean(agree))


def main() -> None:
    Xs, ys, Xq, yq = planted_features()
    # Warm-up (thread pools, MKL, allocator) on 100 episodes, not timed.
    classify("logreg", Xs[:100], ys[:100], Xq[:100], WAYS)
    classify("logreg_sklearn", Xs[:20], ys[:20], Xq[:20], WAYS)

    # Torch: batches of 100 episodes (evaluate()'s default), median of 3 passes (a pass is
    # short enough for scheduler noise on a shared machine to matter); sklearn: one pass.
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        pred_t = torch.cat([classify("logreg", Xs[i:i + 100], ys[i:i + 100], Xq[i:i + 100],
                                     WAYS) for i in range(0, EPISODES, 100)])
        times.append(time.perf_counter() - t0)
    t_torch = float(np.median(times))
    # scikit-learn with single-threaded BLAS too: its tiny per-episode problems gain nothing
    # from threads, and this is its fastest and most stable setting on a shared machine.
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        t0 = time.perf_counter()
        pred_s = classify("logreg_sklearn", Xs, ys, Xq, WAYS)
        t_sklearn = time.perf_counter() - t0

    acc_t = (pred_t == yq).double().mean(dim=1).numpy()
    acc_s = (pred_s == yq).double().mean(dim=1).numpy()
    (m_t, ci_t), (m_s, ci_s) = mean_ci(acc_t), mean_ci(acc_s)
    diff, diff_ci = paired_difference(acc_t, acc_s)
    agree = float((pred_t == pred_s).double().mean())
    speedup = t_sklearn / t_torch
    print(f"episodes: {EPISODES} x {WAYS}-way {SHOTS}-shot {QUERIES}-query, d={DIM}, "
          f"torch threads={torch.get_num_threads()} (solver: 1), cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f} (other processes slow sklearn more than torch)")
    print(f"torch batched LR : {t_torch:8.3f} s   acc {100 * m_t:.2f} ± {100 * ci_t:.2f} %")
    print(f"sklearn per ep.  : {t_sklearn:8.3f} s   acc {100 * m_s:.2f} ± {100 * ci_s:.2f} %")
    print(f"speedup {speedup:.1f}x, prediction agreement {100 * agree:.2f} %, "
          f"paired acc diff {100 * diff:+.3f} ± {100 * diff_ci:.3f} points")
    pt, ps, pg, pacc_t, pacc_s, pagree = protocol_benchmark()
    (pm_t, pci_t), (pm_s, pci_s) = mean_ci(pacc_t), mean_ci(pacc_s)
    pdiff, pdiff_ci = paired_difference(pacc_t, pacc_s)
    print(f"SCL protocol ({COPIES} augmented copies per support image, {DIM}-d pooled + "
          f"{SPATIAL_DIM}-d spatial, summed probabilities):")
    print(f"torch batched    : {pt:8.3f} s   acc {100 * pm_t:.2f} ± {100 * pci_t:.2f} %")
    print(f"sklearn per ep.  : {ps:8.3f} s   acc {100 * pm_s:.2f} ± {100 * pci_s:.2f} %")
    print(f"protocol speedup {ps / pt:.1f}x, prediction agreement {100 * pagree:.2f} %, "
          f"paired acc diff {100 * pdiff:+.3f} ± {100 * pdiff_ci:.3f} points")
    print(f"Gram matrices only: {pg:8.3f} s  (ceiling for any exact solver that forms them: "
          f"{ps / pg:.1f}x; solver + scoring take {pt - pg:.3f} s)")
    result = {"episodes": EPISODES, "ways": WAYS, "shots": SHOTS, "queries": QUERIES,
              "dim": DIM, "time_torch_s": t_torch, "time_sklearn_s": t_sklearn,
              "speedup": speedup, "acc_torch": m_t, "acc_sklearn": m_s,
              "ci95_torch": ci_t, "ci95_sklearn": ci_s, "prediction_agreement": agree,
              "torch_threads": torch.get_num_threads(), "solver_threads": 1,
              "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
              "protocol_copies": COPIES, "protocol_spatial_dim": SPATIAL_DIM,
              "protocol_time_torch_s": pt, "protocol_time_sklearn_s": ps,
              "protocol_speedup": ps / pt, "protocol_acc_torch": pm_t, "protocol_acc_sklearn": pm_s,
              "protocol_prediction_agreement": pagree, "protocol_time_gram_s": pg,
              "protocol_gram_ceiling_speedup": ps / pg}
    atomic_write_json(Path(__file__).resolve().parent / "results" / "eval_speed.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
