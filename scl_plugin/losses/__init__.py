"""Losses of SCL: supervised-contrastive core, global / spatial contrastive, distillation.

Cross-entropy is ``torch.nn.functional.cross_entropy``; everything SCL-specific is here.
"""
from .contrastive import make_keys, supcon_from_similarity
from .distillation import cd_loss, kd_loss
from .global_contrastive import ProjectionHead, global_contrastive_loss
from .spatial_contrastive import SpatialAttention, auto_chunk_size, spatial_contrastive_loss
from .self_supervised import byol_loss, infonce_queue_loss, nt_xent_loss
from .metric_learning import npair_loss, triplet_semihard_loss

__all__ = ["supcon_from_similarity", "make_keys", "ProjectionHead", "global_contrastive_loss",
           "SpatialAttention", "spatial_contrastive_loss", "auto_chunk_size", "kd_loss", "cd_loss",
           "nt_xent_loss", "infonce_queue_loss", "byol_loss", "triplet_semihard_loss", "npair_loss"]
