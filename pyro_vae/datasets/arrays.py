"""Datasets in a file: a ``.npz`` (NumPy) or ``.pt`` / ``.pth`` (torch) file holding arrays
``train`` and ``test`` (and optionally ``train_labels``, ``test_labels``, and a validation
split ``valid`` with ``valid_labels``)."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from ..errors import DataError, DatasetNotFoundError
from .base import Arrays, register_path_source

SUFFIXES = (".npz", ".pt", ".pth")
#: The first bytes of a zip archive (what np.savez and torch.save write).
ZIP_MAGIC = b"PK\x03\x04"


@register_path_source("a .npz / .pt file with arrays 'train' and 'test'",
                      lambda name: name.endswith(SUFFIXES))
def load_arrays(path: str, data_dir: str, download: bool):
    """The arrays of a file (never executes pickled code)."""
    del data_dir, download
    if os.path.isdir(path):
        raise DataError(f"dataset file {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"dataset file {path} does not exist")
    npz = path.endswith(".npz")
    what = "a .npz archive of plain arrays" if npz else "a torch file of tensors"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise DataError(f"cannot read dataset file {path}: {err.strerror or err}") from None
    if head == ZIP_MAGIC and not zipfile.is_zipfile(path):  # np.savez and torch.save both write zips
        raise DataError(f"dataset file {path} is truncated or damaged: its zip archive has no end (the file "
                        "was cut short?)")
    if npz and not zipfile.is_zipfile(path):  # np.load would call it "pickled (object) data"
        raise DataError(f"dataset file {path} is not a NumPy .npz archive (np.savez writes one)")
    try:
        if npz:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            arrays = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input, not our bug
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DataError(f"dataset file {path} is not {what} ({first})") from None
    if not isinstance(arrays, dict) or "train" not in arrays or "test" not in arrays:
        raise DataError(f"dataset file {path} must hold arrays named 'train' and 'test'")
    return Arrays(arrays["train"], arrays.get("train_labels"), arrays["test"], arrays.get("test_labels"),
                  valid=arrays.get("valid"), valid_labels=arrays.get("valid_labels"))
