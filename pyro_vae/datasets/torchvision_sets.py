"""``mnist``, ``fashion-mnist``, ``cifar10``: torchvision's datasets, read from ``data_dir``
and downloaded only when asked to (``download=True``)."""

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
    # torchvision costs 1.5 s to import, and every load_dataset imports this module
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[name])
    root = os.path.abspath(data_dir)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=root, train=train, download=download)
        # torchvision says RuntimeError for a dataset that is not there (or whose download
        # failed), and an OSError (URLError and friends) when offline
        except (RuntimeError, OSError) as err:
            if isinstance(err, RuntimeError) and not download:
                raise DatasetNotFoundError(
                    f"{name} not found under {root}; pass download=True to fetch it, or a data_dir "
                    "that holds a copy", params=("download", "data_dir")
                ) from None
            raise DatasetNotFoundError(f"could not download {name} into {root}: {err}") from None
        data = torch.as_tensor(np.asarray(ds.data))
        if data.dim() == 4:  # CIFAR-style (N, H, W, C)
            data = data.permute(0, 3, 1, 2)
        splits += [data.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()]
    return tuple(splits)


for _name in TORCHVISION:
    DATASETS.register(_name)(load_torchvision)
