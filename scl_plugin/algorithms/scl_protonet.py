"""SCL as pretraining for ProtoNet (the paper's Sec. 4.4): ProtoNet meta-trained from the backbone
of a finished SCL run (``episodic.init_from``), evaluated by nearest prototype.

The method is :class:`~scl_plugin.algorithms.ProtoNet` itself; this file only registers the name
with its parent requirement (listed after ``maml`` / ``fomaml`` in the method table, as before).
"""
from __future__ import annotations

from ..registry import register_method
from .protonet import ProtoNet

register_method("scl_protonet", batches="episodes", classifier="proto_euclidean", needs_init="SCL")(ProtoNet)
