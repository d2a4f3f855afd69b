"""A few labels: the labelled subset of a training split that a semi-supervised run learns from.

A semi-supervised run sees the labels of ``labels_per_class`` training images of each class
and none of the others' (Kingma et al. 2014, arXiv:1406.5298: 100 labels of MNIST, 10 per
class). :func:`pick_labelled` chooses them from whatever the training split is — balanced
(the same number per class), seeded and deterministic (one permutation of the split, the
first K of each class in it), so that a run records the seed and rebuilds the same subset,
and runs of different ``--seed`` learn from the same labels. The dataset keeps the choice
(:attr:`~pyro_vae.data.ImageDataset.labelled`); the training engine draws labelled and
unlabelled mini-batches from it (:mod:`pyro_vae.infer.labels`).

Example:
    >>> import torch
    >>> labels = torch.tensor([0, 1, 0, 1, 0, 1])
    >>> picked = pick_labelled(labels, 2, seed=0)
    >>> picked.tolist(), labels[picked].tolist()
    ([0, 2, 3, 5], [0, 0, 1, 1])
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .data_settings import ALL_LABELS, check_labels_per_class
from .errors import ConfigError, DataError


def pick_labelled(labels: Tensor, per_class: int, seed: int = 0, num_classes: Optional[int] = None) -> Tensor:
    """The indices (sorted) of ``per_class`` images of each class among ``labels`` (N,).

    Args:
        labels: the training split's labels.
        per_class: K, labelled images per class.
        seed: seed of the permutation the first K of each class are taken from.
        num_classes: C (default: the largest label + 1); every class must have K images.

    Raises:
        ConfigError: a class with fewer than K images (``labels_per_class``).
    """
    labels = torch.as_tensor(labels).cpu()
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed)))
    shuffled = labels[order]
    picked = []
    for c in range(classes):
        members = order[shuffled == c]
        if len(members) < per_class:
            raise ConfigError(f"labels_per_class={per_class} is more than the {len(members)} training images of "
                              f"class {c}", params=("labels_per_class",))
        picked.append(members[:per_class])
    return torch.cat(picked).sort().values


def keep_labels(data, labels_per_class, seed: int = 0) -> Optional[Tensor]:
    """Let a model see the labels of ``labels_per_class`` training images per class of
    ``data`` (an :class:`~pyro_vae.data.ImageDataset`) — all of them for ``"all"`` — and
    return the indices kept (``None``: all).

    Raises:
        DataError: the data have no labels.
        ConfigError: a bad ``labels_per_class``, or a class with fewer images.
    """
    labels_per_class = check_labels_per_class(labels_per_class)
    require_labels(data, "labels_per_class")
    data.labelled = (None if labels_per_class == ALL_LABELS
                     else pick_labelled(data.labels("train"), labels_per_class, seed, data.num_classes))
    return data.labelled


def require_labels(data, what: str) -> int:
    """The number of classes of ``data``; a DataError naming ``what`` needs them if its
    training split has no labels."""
    if data.num_classes is None:
        raise DataError(f"{what} needs labelled data, but {data.name} has no labels (an image folder has them "
                        "when its images are in one sub-folder per class; a .npz file in arrays "
                        "'train_labels' and 'test_labels')")
    return data.num_classes


def split_labelled(data) -> Tuple[Tensor, Tensor]:
    """``(labelled, unlabelled)`` indices of the training split of ``data``."""
    n = len(data)
    if data.labelled is None:
        return torch.arange(n), torch.zeros(0, dtype=torch.long)
    known = torch.zeros(n, dtype=torch.bool)
    known[data.labelled.cpu()] = True
    return known.nonzero().squeeze(-1), (~known).nonzero().squeeze(-1)
