"""``mnist``, ``fashion-mnist``, ``cifar10``: torchvision's datasets, read from ``data_dir``
and downloaded only when asked to (``--download``)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DatasetNotFoundError
from .base import DATASETS

#: registered name → torchvision class
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def load_torchvision(name: str, data_dir: str, download: bool):
    """Both splits of a torchvision dataset as uint8 tensors (N, C, H, W) and labels."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[name])
    root = os.path.abspath(data_dir)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=root, train=train, download=download)
        except RuntimeError as err:
            if not download:
                raise DatasetNotFoundError(
                    f"{name} not found under {root}; pass --download (download=True) to "
                    "fetch it, or --data-dir to point at a copy"
                ) from None
            raise DatasetNotFoundError(f"could not download {name} into {root}: {err}") from None
        except OSError as err:  # URLError and friends when offline
            raise DatasetNotFoundError(f"could not download {name} into {root}: {err}") from None
        data = torch.as_tensor(np.asarray(ds.data))
        if data.dim() == 4:  # CIFAR-style (N, H, W, C)
            data = data.permute(0, 3, 1, 2)
        splits += [data.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()]
    return tuple(splits)


for _name in TORCHVISION:
    DATASETS.register(_name)(load_torchvision)
