"""Image pipeline shared by every dataset: tensor conversion, resizing, augmentation, normalisation.

Every loader in :mod:`scl_plugin.data.datasets` yields *raw* images (a uint8 or [0, 1] float
tensor ``C x H x W``, or a PIL image). :class:`ImageSet` turns them into what the models see:
float tensors of ``channels x image_size x image_size``, augmented (optionally twice, for
contrastive pretraining) and normalised. Doing this in one place is what makes mini-ImageNet,
tiered-ImageNet and the cross-domain sets normalised *identically*: learn2learn hands out
mini-ImageNet as 0-255 floats and PIL images for the others, and its ``lee2019`` augmentation
assumes [0, 1] inputs, so we never rely on its per-dataset transforms.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..utils import torch_threads

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OMNIGLOT_MEAN", "OMNIGLOT_STD", "stats_for",
           "to_float_image", "build_augmentation", "ImageSet"]

# ImageNet statistics, used for every natural-image dataset (mini, tiered, CIFAR-FS, FC100,
# CUB, folders, synthetic) so that a backbone trained on one sees the same input scale on another.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Omniglot after inversion (strokes = 1, background = 0), measured on background_small1 at 28x28.
OMNIGLOT_MEAN = (0.0763,)
OMNIGLOT_STD = (0.2133,)


def stats_for(kind: str, channels: int, stats=None):
    """(mean, std) tuples for an image ``kind`` ("gray" strokes or "rgb" natural) and channel count;
    ``stats`` = the data's own (mean, std) (``Split.stats``) when it has them."""
    if stats is not None:
        mean, std = tuple(stats[0]), tuple(stats[1])
    elif kind == "gray":
        mean, std = OMNIGLOT_MEAN, OMNIGLOT_STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if channels == 1 and len(mean) == 3:   # natural image shown to a 1-channel model
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    if channels == 3 and len(mean) == 1:   # strokes shown to a 3-channel model
        mean, std = mean * 3, std * 3
    return mean, std


def to_float_image(img, channels: int, image_size: int) -> torch.Tensor:
    """Any raw image -> float tensor in [0, 1] of shape (channels, image_size, image_size)."""
    if not torch.is_tensor(img):          # PIL image
        from torchvision.transforms.functional import pil_to_tensor
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB" if channels == 3 else "L")
        img = pil_to_tensor(img)
    if img.dtype == torch.uint8:
        img = img.float().div_(255.0)
    elif not img.is_floating_point():
        img = img.float()
    if img.dim() == 2:
        img = img.unsqueeze(0)
    c = img.shape[0]
    if c != channels:
        if c == 1:
            img = img.expand(channels, -1, -1)
        elif channels == 1:               # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(3, 1, 1)
            img = (img[:3] * w).sum(0, keepdim=True)
        else:
            img = img[:channels]
    if img.shape[-1] != image_size or img.shape[-2] != image_size:
        img = torch.nn.functional.interpolate(img.unsqueeze(0), size=(image_size, image_size),
                                              mode="bilinear", antialias=True,
                                              align_corners=False)[0].clamp_(0, 1)
    return img


def build_augmentation(augment: str, kind: str, image_size: int) -> Optional[Callable]:
    """Augmentation on [0, 1] float tensors (applied before normalisation).

    ``none``: nothing. ``standard``: for natural images the RFS / SCL authors' training
    transform, random crop with zero padding (8 px at 84 px, 4 at 32) + colour jitter
    (brightness, contrast, saturation 0.4) + horizontal flip; a small random affine for
    characters (flipping a character can make another one).
    ``simclr``: random resized crop + flip + colour jitter + random grayscale (Chen et al. 2020)
    for natural images; for characters a random resized crop + affine (no colour to jitter).
    """
    if augment == "none":
        return None
    # "standard" is hand-written on tensors: torchvision's RandomCrop pads with F.pad, which we
    # measured at ~15 ms per 28x28 image with 2 OpenMP threads (25 us with 1), and importing
    # torchvision.transforms costs ~3 s; these run in ~20-100 us and import nothing.
    if augment == "standard":
        if kind == "gray":
            return RandomAffineTensor(degrees=10.0, translate=0.1, scale=(0.9, 1.1))
        import math
        crop = RandomCropFlip(image_size, padding=max(1, math.ceil(image_size / 10.5)))
        from torchvision import transforms as T   # imported only here (natural images)
        return T.Compose([crop, _ColorJitter3(hue=0.0)])   # flip and jitter commute
    if augment == "simclr":
        from torchvision import transforms as T
        if kind == "gray":
            return T.Compose([T.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True),
                              RandomAffineTensor(degrees=15.0, translate=0.1, scale=(1.0, 1.0))])
        return T.Compose([T.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True),
                          T.RandomHorizontalFlip(),
                          T.RandomApply([_ColorJitter3()], p=0.8),
                          T.RandomGrayscale(p=0.2)])
    raise ValueError(f"unknown augmentation {augment!r}; allowed: none, standard, simclr")


class RandomCropFlip:
    """Random ``size`` crop of the image zero-padded by ``padding`` on each side, then a
    horizontal flip with probability 1/2 (the usual CIFAR / mini-ImageNet augmentation)."""

    def __init__(self, size: int, padding: int):
        self.size, self.padding = size, padding

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c, h, w = img.shape
        p, s = self.padding, self.size
        top = int(torch.randint(0, h + 2 * p - s + 1, ()).item()) - p
        left = int(torch.randint(0, w + 2 * p - s + 1, ()).item()) - p
        out = img.new_zeros(c, s, s)
        # overlap of the crop window [top, top+s) x [left, left+s) with the image
        y0, y1 = max(top, 0), min(top + s, h)
        x0, x1 = max(left, 0), min(left + s, w)
        if y1 > y0 and x1 > x0:
            out[:, y0 - top:y1 - top, x0 - left:x1 - left] = img[:, y0:y1, x0:x1]
        if torch.rand(()) < 0.5:
            out = out.flip(-1)
        return out


class RandomAffineTensor:
    """Small random rotation / translation / scaling of a (C, H, W) tensor, zero fill."""

    def __init__(self, degrees: float, translate: float, scale=(1.0, 1.0)):
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        import math
        r = torch.rand(4).tolist()
        angle = math.radians((2 * r[0] - 1) * self.degrees)
        sc = self.scale[0] + r[1] * (self.scale[1] - self.scale[0])
        tx, ty = [(2 * v - 1) * self.translate * 2 for v in r[2:]]  # grid coords span 2
        cos, sin = math.cos(angle) / sc, math.sin(angle) / sc
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=img.dtype).unsqueeze(0)
        grid = torch.nn.functional.affine_grid(theta, [1, *img.shape], align_corners=False)
        return torch.nn.functional.grid_sample(img.unsqueeze(0), grid, align_corners=False,
                                               padding_mode="zeros")[0]


class _ColorJitter3(torch.nn.Module):
    """Colour jitter that silently skips non-RGB tensors (torchvision's raises on 1 channel)."""

    def __init__(self, hue: float = 0.1):
        super().__init__()
        from torchvision import transforms as T
        self.jitter = T.ColorJitter(0.4, 0.4, 0.4, hue)

    def forward(self, img):
        return self.jitter(img) if img.shape[0] == 3 else img


class ImageSet(Dataset):
    """A plain torch Dataset ``(image, label)`` over one split, with labels ``0..num_classes-1``.

    ``source[i]`` gives a raw image (its own label is ignored: ``labels[i]`` is authoritative,
    which lets loaders skip decoding images just to learn labels). Original labels are mapped to
    consecutive ids in sorted order. With ``two_view=True`` an item is ``((view1, view2), label)``,
    the augmentation drawn independently for each view; ``second_augment`` (default: the same
    as ``augment``) gives the second view its own augmentation (SCL: standard + simclr).
    """

    def __init__(self, source: Dataset, labels: Sequence, *, kind: str, channels: int,
                 image_size: int, augment: str = "none", two_view: bool = False,
                 name: str = "split", second_augment: Optional[str] = None, stats=None):
        self.source = source
        self.original_labels = list(labels)
        classes = sorted(set(self.original_labels))
        self.class_to_id: Dict = {c: i for i, c in enumerate(classes)}
        self.targets = [self.class_to_id[c] for c in self.original_labels]
        self.num_classes = len(classes)
        self.kind, self.channels, self.image_size = kind, channels, image_size
        self.augment_name, self.two_view, self.name = augment, two_view, name
        self.augment = build_augmentation(augment, kind, image_size)
        self.second_augment_name = second_augment
        self.augment2 = (self.augment if second_augment in (None, augment)
                         else build_augmentation(second_augment, kind, image_size))
        self.stats = stats
        mean, std = stats_for(kind, channels, stats)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def indices_to_labels(self) -> Dict[int, int]:
        """What learn2learn's MetaDataset needs, without loading a single image."""
        return dict(enumerate(self.targets))

    def variant(self, augment: str, two_view: bool = False,
                second_augment: Optional[str] = None) -> "ImageSet":
        """The same images and labels with another augmentation / view count."""
        return ImageSet(self.source, self.original_labels, kind=self.kind, channels=self.channels,
                        image_size=self.image_size, augment=augment, two_view=two_view,
                        name=self.name, second_augment=second_augment, stats=self.stats)

    def _view(self, img: torch.Tensor, second: bool = False) -> torch.Tensor:
        aug = self.augment2 if second else self.augment
        if aug is not None:
            with torch_threads(1):    # tiny per-image ops (see torch_threads); same values
                img = aug(img)
        return (img - self.mean) / self.std

    def __getitem__(self, i):
        raw = self.source[i]
        if isinstance(raw, (tuple, list)):   # learn2learn datasets return (image, label)
            raw = raw[0]
        img = to_float_image(raw, self.channels, self.image_size)
        if self.two_view:
            return (self._view(img), self._view(img, second=True)), self.targets[i]
        return self._view(img), self.targets[i]
