"""A model's resize steps on torch tensors, on any device: the pieces each transform's
``device_geometry`` is made of (``--preprocess gpu``, `taglens.engine.device_preprocess`).

torch's antialiased bilinear and bicubic follow Pillow's kernels; the results are rounded back to
uint8 like Pillow's, so they end where the exact host path ends, within a few levels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch

_MODES = {int(Image.Resampling.NEAREST): "nearest", int(Image.Resampling.BILINEAR): "bilinear",
          int(Image.Resampling.BICUBIC): "bicubic", int(Image.Resampling.LANCZOS): "bicubic",
          int(Image.Resampling.HAMMING): "bilinear", int(Image.Resampling.BOX): "area"}


def pad_square(image: torch.Tensor, fill: int) -> torch.Tensor:
    """(3, H, W) uint8 centred on a square of ``fill`` (as Pillow's paste onto a new image)."""
    import torch

    _, height, width = image.shape
    if width == height:
        return image
    side = max(width, height)
    square = torch.full((3, side, side), fill, dtype=torch.uint8, device=image.device)
    top, left = (side - height) // 2, (side - width) // 2
    square[:, top:top + height, left:left + width] = image
    return square


def resize(image: torch.Tensor, height: int, width: int, resample: int) -> torch.Tensor:
    """Pillow's filter as torch has it, rounded back to uint8."""
    import torch
    import torch.nn.functional as F

    if tuple(image.shape[1:]) == (height, width):
        return image
    mode = _MODES.get(int(resample), "bicubic")
    extra = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(image[None].float(), size=(height, width), mode=mode, **extra)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def center_crop(image: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """transformers' centre crop (zero padding where the image is smaller), as the host's."""
    import torch

    crop_h, crop_w = crop
    _, h, w = image.shape
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return image[:, top:top + crop_h, left:left + crop_w]
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    canvas = torch.zeros((3, new_h, new_w), dtype=torch.uint8, device=image.device)
    canvas[:, pad_top:pad_top + h, pad_left:pad_left + w] = image
    top, left = top + pad_top, left + pad_left
    return canvas[:, max(0, top):min(new_h, top + crop_h), max(0, left):min(new_w, left + crop_w)]
