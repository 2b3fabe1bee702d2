"""Few-shot methods with one interface: ``loss(batch)`` to train, ``adapt(xs, ys)`` to evaluate."""
from .distill import Distiller
from .maml import MAMLMethod
from .protonet import ProtoNet, prototype_logits
from .scl import SCL
from .simclr import SimCLR
from .moco import MoCo
from .byol import BYOL
from .metric_learning import MetricLearning
from .matching import MatchingNetwork

__all__ = ["SCL", "Distiller", "MAMLMethod", "ProtoNet", "prototype_logits",
           "SimCLR", "MoCo", "BYOL", "MetricLearning", "MatchingNetwork"]
