"""Few-shot methods with one interface: ``loss(batch)`` to train, ``adapt(xs, ys)`` to evaluate.

Each module defines one method and registers it (:func:`~scl_plugin.registry.register_method`);
the import order below is the order of the method table (``scl_plugin.config.METHODS``).
"""
from ..registry import get_method, method_names, register_method
from .base import EmbeddingMethod, EpisodeLearner, EpisodicMethod, FewShotMethod
from .learners import FeatureLearner, check_labels
from .scl import SCL                                  # ce, scl
from .protonet import ProtoNet, prototype_logits      # protonet
from .maml import MAMLMethod                          # maml, fomaml
from . import scl_protonet                            # noqa: F401  scl_protonet
from .anil import ANIL
from .meta_sgd import MetaSGDMethod
from .metaoptnet import MetaOptNet
from .r2d2 import R2D2, ridge_logits
from .meta_baseline import MetaBaseline
from .matching import MatchingNetwork                 # matchingnet
from .simclr import SimCLR
from .moco import MoCo
from .byol import BYOL
from .metric_learning import MetricLearning           # triplet, npair
from .distill import Distiller                        # the distillation stage of ce / scl

__all__ = ["register_method", "get_method", "method_names",
           "FewShotMethod", "EpisodicMethod", "EmbeddingMethod", "EpisodeLearner", "FeatureLearner", "check_labels",
           "SCL", "Distiller", "MAMLMethod", "ProtoNet", "prototype_logits", "ANIL", "MetaSGDMethod",
           "MetaOptNet", "R2D2", "ridge_logits", "MetaBaseline",
           "SimCLR", "MoCo", "BYOL", "MetricLearning", "MatchingNetwork"]
