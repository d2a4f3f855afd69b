"""A split of a dataset as it is held: checked, decoded, read in mini-batches, and cut in two.

A split is held as uint8 levels, float32 grey levels in [0, 1], a boolean tensor (a static
binarization), or a map-style ``torch.utils.data.Dataset`` of uint8 images (C, H, W) read
from disk one mini-batch at a time by ``DataLoader`` workers. :class:`~pyro_vae.data.ImageDataset`
holds its splits through these functions, and :func:`carve` cuts the validation split out
of the training split by a fixed shuffle (:data:`~pyro_vae.data_settings.VALID_SPLIT_SEED`)
that depends on nothing but the number of images — never on a run's seed.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .data_settings import VALID_SPLIT_SEED, valid_checks, valid_count
from .errors import DataError
from .options import check_ranges
from .plates import check_finite, check_range

#: Fewest images read through DataLoader worker processes (starting them costs more than
#: they save on fewer).
MIN_WORKER_IMAGES = 2048

#: A split as held: uint8 levels, float32 grey levels, bool (a static binarization), or a
#: map-style dataset of uint8 images (streamed).
Levels = Union[Tensor, Dataset]


def as_images(x: Any, what: str) -> Levels:
    """Validate ``x`` as images (N, C, H, W): uint8 levels stay uint8, floats must lie in
    [0, 1] and become float32; a map-style ``Dataset`` of uint8 images is kept as it is."""
    if isinstance(x, Dataset):
        if len(x) == 0:  # type: ignore[arg-type]
            raise DataError(f"{what} is empty")
        return x
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dtype != torch.uint8 and not torch.is_floating_point(x):
        raise DataError(f"{what} must hold floats in [0, 1] or uint8 levels, got dtype {x.dtype}")
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(
            f"{what} must have shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty")
    if x.dtype == torch.uint8:
        return x.contiguous()
    x = check_finite(x.float().contiguous(), what)
    check_range(x, f"grey levels of {what}")
    return x


def grey(x: Tensor) -> Tensor:
    """Float grey levels in [0, 1] of held levels (uint8 / 255; a binarization as 0., 1.)."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float()


def workers(n: int) -> int:
    """DataLoader workers for ``n`` images: none below :data:`MIN_WORKER_IMAGES`, else up to
    four."""
    return 0 if n < MIN_WORKER_IMAGES else min(4, os.cpu_count() or 1)


def load(dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int) -> Iterator[Tensor]:
    """uint8 batches ``(B, C, H, W)`` of ``dataset``, read by ``num_workers`` processes."""
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers)
    try:
        yield from loader
    except DataError as err:  # re-raised from a worker: keep it one line
        raise DataError(str(err)) from None  # the worker's message (PyroVAEError keeps it)


def decode(dataset: Dataset) -> Tensor:
    """All images of a map-style dataset of uint8 images, as one uint8 tensor (N, C, H, W)."""
    n = len(dataset)  # type: ignore[arg-type]
    chunks = [list(range(i, min(i + 256, n))) for i in range(0, n, 256)]
    return torch.cat(list(load(dataset, chunks, workers(n))))


def head(x: Any, n: Optional[int]) -> Any:
    """The first ``n`` items of an array or a dataset (all when ``n`` is ``None``)."""
    if n is None or x is None:
        return x
    if isinstance(x, Dataset):
        return Subset(x, range(min(n, len(x))))  # type: ignore[arg-type]
    return x[:n]


def nbytes(x: Dataset) -> int:
    """Bytes of a dataset of uint8 images once decoded."""
    return len(x) * math.prod(x[0].shape)  # type: ignore[arg-type]


def take(x: Any, indices: np.ndarray) -> Any:
    """The items ``indices`` of an array, a tensor or a dataset (``None`` stays ``None``)."""
    if x is None:
        return None
    if isinstance(x, Dataset):
        return Subset(x, indices.tolist())
    if isinstance(x, Tensor):
        return x[torch.as_tensor(indices, dtype=torch.long)]
    return np.asarray(x)[indices]


def carve(images: Any, labels: Any, fraction: float, name: str) -> Tuple[Any, Any, Any, Any]:
    """Cut ``fraction`` of a training split out as a validation split.

    The images a fixed shuffle (seeded with :data:`~pyro_vae.data_settings.VALID_SPLIT_SEED`)
    puts first become the validation split; both parts keep the source's order. The split
    depends only on the number of images, so it is the same for every run on the same data.

    Returns:
        ``(train, train_labels, valid, valid_labels)``.

    Raises:
        ConfigError: the fraction leaves fewer than two images on either side
            (:func:`~pyro_vae.data_settings.valid_checks`).
    """
    n = len(images)
    # the rule the command line checks before any data are loaded, now with the count known
    check_ranges({"valid_fraction": fraction}, valid_checks(fraction, n), f"data settings of {name}")
    count = valid_count(n, fraction)
    order = np.random.default_rng(VALID_SPLIT_SEED).permutation(n)
    valid, train = np.sort(order[:count]), np.sort(order[count:])
    return take(images, train), take(labels, train), take(images, valid), take(labels, valid)
