"""Frozen-backbone feature extraction for few-shot evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F_

__all__ = ["extract_features", "model_device"]


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for parameter-free modules)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(model: torch.nn.Module, x: torch.Tensor, *, flip: bool = False,
                     batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
    """Embed images ``x`` (N, C, H, W) with ``model`` -> features (N, d) on ``x``'s device.

    Runs without gradients in eval mode (the model's previous train/eval mode is restored
    afterwards), in chunks of ``batch_size`` images. With ``flip=True`` the features of
    each image and of its horizontal flip are averaged (before normalisation). With
    ``normalize=True`` each feature vector is scaled to unit L2 norm, as RFS/SCL do before
    fitting the logistic regression.
    """
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        outs = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device)
            fb = model(xb).flatten(1)
            if flip:
                fb = 0.5 * (fb + model(torch.flip(xb, dims=[-1])).flatten(1))
            outs.append(fb.float())
        feats = torch.cat(outs) if outs else x.new_zeros(0, 0, dtype=torch.float32)
        if normalize and feats.numel():
            feats = F_.normalize(feats, p=2, dim=1)
        return feats.to(x.device)
    finally:
        model.train(was_training)
