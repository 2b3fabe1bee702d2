"""Few-shot data: learn2learn datasets, flat pretraining sets and seeded episode samplers.

Public API::

    data = build_fewshot(cfg.data, seed=cfg.seed)   # -> FewShotData
    data.train_set                                  # (image, label), labels 0..num_classes-1
    data.pretrain_set(two_view=True)                # ((view1, view2), label)
    x, y = data.test_tasks[i]                       # fixed episode i (same for every method)
    xs, ys, xq, yq = split_support_query(x, y, ways, shots, queries)
    runs = load_omniglot_challenge(root)            # Lake et al.'s 20 one-shot runs
    splits = load_splits("mini-imagenet", root, image_size=84, cache_dir=...)   # raw uint8 splits, memoised
    tasksets = get_tasksets("omniglot-small", root=root)   # learn2learn's get_tasksets, any layout
    register_learn2learn_benchmarks()               # ... and behind l2l.vision.benchmarks.get_tasksets

Each on-disk layout is one module of :mod:`.formats` registered in :mod:`.registry` (picked from
the files present in ``data.root`` or by ``data.format``); decoded splits are cached as uint8
``.npy`` files under ``data.cache_dir`` and memory-mapped (:mod:`.cache`).

Every input problem (missing root or file, wrong format, not enough classes or images for the
episode shape) raises one :class:`DataError` whose message names what was expected and how to
get it. Nothing is ever downloaded unless ``data.download`` is set.
"""


class DataError(ValueError):
    """Data missing, malformed or too small for the requested episodes (message says how to fix)."""


from .episodes import split_support_query  # noqa: E402
from .fewshot import FewShotData, build_fewshot, build_test_tasks, channels_for  # noqa: E402
from .formats.omniglot import ChallengeRun, load_omniglot_challenge  # noqa: E402
from .registry import load_splits  # noqa: E402
from .tasksets import get_tasksets, list_tasksets, register_learn2learn_benchmarks  # noqa: E402

__all__ = ["DataError", "FewShotData", "build_fewshot", "build_test_tasks", "channels_for", "split_support_query",
           "load_splits",
           "load_omniglot_challenge", "ChallengeRun",
           "get_tasksets", "list_tasksets", "register_learn2learn_benchmarks"]
