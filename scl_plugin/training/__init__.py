"""The shared training loop, batch sources and checkpoints."""
from .batches import EpisodeBatches, FlatBatches, PKBatches, ResumableShardSampler
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainingError, TrainResult, build_optimizer, lr_factor, make_accelerator

__all__ = ["EpisodeBatches", "FlatBatches", "PKBatches", "ResumableShardSampler", "CheckpointError", "latest_checkpoint",
           "load_checkpoint", "save_checkpoint", "Trainer", "TrainingError", "TrainResult", "build_optimizer",
           "lr_factor", "make_accelerator"]
