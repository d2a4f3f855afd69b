"""``mnist``, ``fashion-mnist``, ``cifar10``: torchvision's datasets, read from ``data_dir``
and downloaded only when asked to (``download=True``).

A dataset that is not there is a :class:`~pyro_vae.errors.DatasetNotFoundError`; one whose
files are there but damaged — truncated, emptied, overwritten, failing torchvision's MD5
check — is one :class:`~pyro_vae.errors.DataError` naming the file, whatever torchvision's
reader raised (an ``AssertionError`` of the MNIST reader, a ``RuntimeError`` of CIFAR's
checksum, an unpickling error).
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError, DatasetNotFoundError, PyroVAEError
from ..plugins import file_hash
from .base import DATASETS

#: registered name → torchvision class
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def expected_files(cls: type, root: str) -> List[Tuple[str, Optional[str]]]:
    """The files torchvision reads for the dataset class ``cls`` under ``root``, each with
    the MD5 it checks (``None`` where it checks none): the MNIST family's raw files (the
    ``resources`` it downloads, unpacked), CIFAR's pickled batches and metadata."""
    if hasattr(cls, "resources"):
        folder = os.path.join(root, cls.__name__, "raw")
        return [(os.path.join(folder, os.path.splitext(os.path.basename(url))[0]), None) for url, _ in cls.resources]
    folder = os.path.join(root, cls.base_folder)
    listed = list(cls.train_list) + list(cls.test_list) + [[cls.meta["filename"], cls.meta["md5"]]]
    return [(os.path.join(folder, name), md5) for name, md5 in listed]


def _file_in_traceback(err: BaseException, files: List[str]) -> Optional[str]:
    """The file of ``files`` that the innermost frame of ``err``'s traceback was reading
    (a local variable that holds its path), if any."""
    found, tb = None, err.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, str) and value in files:
                found = value
        tb = tb.tb_next
    return found


def diagnose(name: str, cls: type, root: str, err: BaseException) -> PyroVAEError:
    """One error for a torchvision dataset that could not be read: not there, incomplete,
    or a damaged file — named, with how to fetch it again."""
    files = expected_files(cls, root)
    missing = [path for path, _ in files if not os.path.isfile(path)]
    if len(missing) == len(files):
        return DatasetNotFoundError(f"{name} not found under {root}; pass download=True to fetch it, or a data_dir "
                                    "that holds a copy", params=("download", "data_dir"))
    if missing:
        return DatasetNotFoundError(f"{name} under {root} is incomplete: {missing[0]} is missing; pass download=True "
                                    "to fetch it again", params=("download", "data_dir"))
    text = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    damaged = next((path for path, md5 in files if md5 is not None and file_hash(path, "md5") != md5), None)
    if damaged is not None:
        text = "its MD5 is not the published one"
    else:
        damaged = _file_in_traceback(err, [path for path, _ in files])
    if damaged is not None:
        return DataError(f"{damaged} is damaged or truncated ({text}); delete it and fetch {name} again "
                         "(download=True)", params=("data_dir",))
    return DataError(f"cannot read {name} under {root}: {text}", params=("data_dir",))


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
        # whatever a reader raises: a file that is missing (RuntimeError), that cannot be
        # downloaded offline (URLError and friends: OSError), damaged (AssertionError, …)
        except Exception as err:  # noqa: BLE001 - every failure is described by what is on disk
            problem = diagnose(name, cls, root, err)
            if download and not isinstance(problem, DataError):
                first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                raise DatasetNotFoundError(f"could not download {name} into {root}: {first}") from None
            raise problem from None
        data = torch.as_tensor(np.asarray(ds.data))
        if data.dim() == 4:  # CIFAR-style (N, H, W, C)
            data = data.permute(0, 3, 1, 2)
        splits += [data.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()]
    return tuple(splits)


for _name in TORCHVISION:
    DATASETS.register(_name)(load_torchvision)
