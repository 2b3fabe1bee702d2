"""Few-shot methods with one interface: ``loss(batch)`` to train, ``adapt(xs, ys)`` to evaluate."""
from .anil import ANIL
from .distill import Distiller
from .episodic_head import EpisodicHead
from .maml import MAMLMethod
from .meta_baseline import MetaBaseline
from .meta_sgd import MetaSGDMethod
from .metaoptnet import MetaOptNet
from .protonet import ProtoNet, prototype_logits
from .r2d2 import R2D2, ridge_logits
from .scl import SCL
from .simclr import SimCLR
from .moco import MoCo
from .byol import BYOL
from .metric_learning import MetricLearning
from .matching import MatchingNetwork

__all__ = ["SCL", "Distiller", "MAMLMethod", "ProtoNet", "prototype_logits",
           "SimCLR", "MoCo", "BYOL", "MetricLearning", "MatchingNetwork",
           "ANIL", "MetaSGDMethod", "EpisodicHead", "MetaOptNet", "R2D2", "ridge_logits", "MetaBaseline"]
