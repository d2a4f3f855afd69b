"""Datasets in a file: a ``.npz`` (NumPy) or ``.pt`` / ``.pth`` (torch) file holding arrays
``train`` and ``test`` (and optionally ``train_labels``, ``test_labels``)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DataError, DatasetNotFoundError
from .base import register_path_source

SUFFIXES = (".npz", ".pt", ".pth")


@register_path_source("a .npz / .pt file with arrays 'train' and 'test'",
                      lambda name: name.endswith(SUFFIXES))
def load_arrays(path: str, data_dir: str, download: bool):
    """The arrays of a file (never executes pickled code)."""
    del data_dir, download
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"dataset file {path} does not exist")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            arrays = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input, not our bug
        raise DataError(f"cannot read dataset file {path}: {err}") from None
    if not isinstance(arrays, dict) or "train" not in arrays or "test" not in arrays:
        raise DataError(f"dataset file {path} must hold arrays named 'train' and 'test'")
    return arrays["train"], arrays.get("train_labels"), arrays["test"], arrays.get("test_labels")
