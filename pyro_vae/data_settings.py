"""The data settings the library accepts — binarizations, splits, the image-folder options,
what a model does with the labels (``labels_per_class``, ``condition``) — and their checks,
without torch.

Each value and each bound is defined here once: :func:`~pyro_vae.data.load_dataset`,
:class:`~pyro_vae.data.ImageDataset`, the image-folder source
(:mod:`pyro_vae.datasets.folder`), :mod:`pyro_vae.labels` and :mod:`pyro_vae.build` check
their arguments with these functions, and so does the command line, before it imports torch. (The module sits outside
:mod:`pyro_vae.datasets`, whose package imports every source and so torch.)

Example:
    >>> check_binarize("static")
    'static'
    >>> check_split("valid")
    Traceback (most recent call last):
    ...
    pyro_vae.errors.ConfigError: unknown split 'valid'; valid splits: train, test
    >>> check_labels_per_class("10"), check_labels_per_class("all")
    (10, 'all')
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from .errors import ConfigError
from .options import check_choice

#: How images are presented to a model (see :mod:`pyro_vae.data`).
BINARIZATIONS = ("dynamic", "static", "none")
#: The splits of every dataset.
SPLITS = ("train", "test")
#: Largest side of an image folder's ``image_size`` (a 4096×4096 RGB image is 50 MB as uint8).
MAX_IMAGE_SIZE = 4096
#: Channels of the images read from a folder: grey or RGB.
CHANNELS = (1, 3)


def check_binarize(binarize: str) -> str:
    """``binarize`` if it is one of :data:`BINARIZATIONS`; else a ConfigError listing them."""
    return check_choice(binarize, BINARIZATIONS, "binarization", "binarize")


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`; else a ConfigError listing them."""
    return check_choice(split, SPLITS, "split", "split")


def folder_checks(image_size: Optional[Sequence[int]], channels: Optional[int],
                  test_fraction: Optional[float]) -> Dict[str, Tuple[bool, str]]:
    """The range checks of an image folder's options, for
    :func:`~pyro_vae.options.check_ranges` (``None``: the folder's default, always valid).

    Example:
        >>> folder_checks((32, 5000), None, 0.1)["image_size"]
        (False, 'H and W from 1 to 4096')
    """
    return {
        "image_size": (image_size is None or (len(image_size) == 2
                                              and 1 <= min(image_size) <= max(image_size) <= MAX_IMAGE_SIZE),
                       f"H and W from 1 to {MAX_IMAGE_SIZE}"),
        "channels": (channels is None or channels in CHANNELS, "1 (grey) or 3 (RGB)"),
        "test_fraction": (test_fraction is None or 0 < test_fraction < 1, "strictly between 0 and 1"),
    }


#: ``labels_per_class`` that keeps every label.
ALL_LABELS = "all"


def check_labels_per_class(value: object) -> object:
    """``value`` as ``labels_per_class``: a positive number of labelled training images per
    class, or ``"all"`` (every label; also given as the text of a number, from the command
    line); else a ConfigError."""
    if isinstance(value, str) and value != ALL_LABELS:
        value = int(value) if value.strip().isdigit() else value
    if value == ALL_LABELS or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"labels_per_class must be a positive integer or '{ALL_LABELS}', got {value!r}",
                      params=("labels_per_class",))


#: What a VAE may be conditioned on (``condition``): its images' labels.
CONDITIONS = ("label",)


def check_condition(condition: object) -> object:
    """``condition`` if it is ``None`` or one of :data:`CONDITIONS`; else a ConfigError."""
    return condition if condition is None else check_choice(condition, CONDITIONS, "condition", "condition")
