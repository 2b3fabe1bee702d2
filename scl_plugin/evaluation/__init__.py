"""Few-shot evaluation: frozen features, batched logistic regression / prototypes, CIs, reports.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD, create_backbone
    >>> from scl_plugin.evaluation import SupportAugment, evaluate, mean_ci
    >>> backbone = create_backbone("conv4", in_chans=3, image_size=32, hidden=8)
    >>> test_tasks = [(torch.randn(10, 3, 32, 32), torch.arange(5).repeat(2)) for _ in range(3)]  # 5-way 1+1
    >>> accs = evaluate(backbone, test_tasks, ways=5, shots=1, queries=1, classifier="logreg", progress=False)
    >>> mean, ci95 = mean_ci(accs)
    >>> # the SCL authors' protocol: augmented support copies, pooled + spatial probes, t interval
    >>> augment = SupportAugment.standard("rgb", 32, MINI_IMAGENET_MEAN, MINI_IMAGENET_STD, copies=2)
    >>> accs = evaluate(backbone, test_tasks, ways=5, shots=1, queries=1, classifier="logreg", protocol="scl",
    ...                 support_augment=augment, progress=False)
    >>> mean, ci95 = mean_ci(accs, ci="t")
    >>> accs.shape
    (3,)
"""
from .classifiers import CLASSIFIERS, simpleshot, classify, proto_cosine, proto_euclidean, prototypes
from .episodes import evaluate
from .features import extract_features
from .logreg import (BatchedLogisticRegression, fit_logreg, fit_logreg_gram, fit_predict_logreg,
                     fit_predict_proba_logreg, logreg_objective, predict,
                     sklearn_logreg_fit, sklearn_logreg_predict, sklearn_logreg_predict_proba)
from .protocol import (COMBINES, PROTOCOLS, SupportAugment, combine_probabilities, scl_features,
                       scl_predict, scl_probabilities)
from .sanity import sanity_block, sanity_warnings
from .simpleshot import base_mean, cl2n
from .report import format_table, paired_table, plot_results, write_results
from .stats import mean_ci, paired_difference

__all__ = [
    "CLASSIFIERS", "classify", "proto_cosine", "proto_euclidean", "prototypes",
    "evaluate", "extract_features",
    "BatchedLogisticRegression", "fit_logreg", "fit_logreg_gram", "fit_predict_logreg",
    "fit_predict_proba_logreg", "logreg_objective", "predict",
    "sklearn_logreg_fit", "sklearn_logreg_predict", "sklearn_logreg_predict_proba",
    "COMBINES", "PROTOCOLS", "SupportAugment", "combine_probabilities", "scl_features",
    "scl_predict", "scl_probabilities",
    "format_table", "paired_table", "plot_results", "write_results",
    "mean_ci", "paired_difference", "base_mean", "cl2n", "simpleshot",
]
__all__ += ["sanity_warnings", "sanity_block"]
