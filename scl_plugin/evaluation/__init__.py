"""Few-shot evaluation: frozen features, batched logistic regression / prototypes, CIs, reports.

Typical use::

    accs = evaluate(backbone, test_tasks, ways=5, shots=1, queries=15, classifier="logreg")
    mean, ci95 = mean_ci(accs)
"""
from .classifiers import CLASSIFIERS, classify, proto_cosine, proto_euclidean, prototypes
from .episodes import evaluate
from .features import extract_features
from .logreg import (BatchedLogisticRegression, fit_logreg, fit_logreg_gram, fit_predict_logreg,
                     logreg_objective, predict,
                     sklearn_logreg_fit, sklearn_logreg_predict)
from .simpleshot import base_mean, cl2n, simpleshot
from .report import format_table, paired_table, plot_results, write_results
from .stats import mean_ci, paired_difference

__all__ = [
    "CLASSIFIERS", "classify", "proto_cosine", "proto_euclidean", "prototypes",
    "evaluate", "extract_features",
    "BatchedLogisticRegression", "fit_logreg", "fit_logreg_gram", "fit_predict_logreg",
    "logreg_objective", "predict",
    "sklearn_logreg_fit", "sklearn_logreg_predict",
    "format_table", "paired_table", "plot_results", "write_results",
    "mean_ci", "paired_difference", "base_mean", "cl2n", "simpleshot",
]
