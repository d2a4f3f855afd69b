"""Random translations of images, one per image: the augmentation a small classifier needs.

A classifier trained on a few thousand digits learns where strokes are more than what they
are; shifting every training image by a few pixels (Simard et al. 2003; the ±2 pixels of
many MNIST classifiers) shows it the same digit in other places. torchvision's
``RandomCrop(padding=…)`` and ``RandomAffine`` draw one transformation per call, which for a
batched tensor is one per mini-batch; this draws one per image, on the images' device, with
torch's random generator (so a run that saves and restores it resumes exactly).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..options import check_int


def random_shift(x: Tensor, pixels: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``x`` (..., C, H, W) with each image moved by (dy, dx), each uniform on
    {−pixels, …, pixels}; what moves in from outside is 0 (the background of binarized and
    grey-level digits). ``pixels = 0`` returns ``x`` itself."""
    if check_int(pixels, "shift", 0) == 0:
        return x
    *batch, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)
    n = flat.shape[0]
    padded = F.pad(flat, (pixels,) * 4)
    device = x.device if generator is None else generator.device
    offsets = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator, device=device).to(x.device)
    rows = torch.arange(h, device=x.device) + offsets[0, :, None]  # (n, H) rows of the padded image
    cols = torch.arange(w, device=x.device) + offsets[1, :, None]  # (n, W)
    picked = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pixels))
    picked = picked.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return picked.reshape(*batch, c, h, w)
