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
    >>> check_split("validation")
    Traceback (most recent call last):
    ...
    pyro_vae.errors.ConfigError: unknown split 'validation'; valid splits: train, valid, test
    >>> check_labels_per_class("10"), check_labels_per_class("all")
    (10, 'all')
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from .errors import ConfigError
from .options import check_choice

#: How images are presented to a model (see :mod:`pyro_vae.data`).
BINARIZATIONS = ("dynamic", "static", "none")
#: The splits of a dataset: training, validation (carved out of the training split unless the
#: source has its own; what everything chosen during training looks at) and test (read only by
#: the final evaluation).
SPLITS = ("train", "valid", "test")
#: Seed of the fixed shuffle that carves the validation split out of the training split: the
#: same images every time, whatever the run's seed (never changes).
VALID_SPLIT_SEED = 21
#: Fewest images of a training or validation split (the evaluation's standard errors need two).
MIN_SPLIT_IMAGES = 2
#: Training images of the named datasets, known without reading them, so that a validation
#: fraction is checked before any data are loaded (a file's or a folder's are counted when read).
TRAIN_SIZES = {"mnist5k": 4000, "mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000}
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


def valid_count(num_train: int, fraction: float) -> int:
    """Images of ``num_train`` that a validation ``fraction`` carves out (rounded).

    Example:
        >>> valid_count(4000, 0.1), valid_count(128, 0.1)
        (400, 13)
    """
    return int(round(num_train * fraction))


def valid_checks(fraction: float, num_train: Optional[int]) -> Dict[str, Tuple[bool, str]]:
    """The checks of a validation ``fraction`` of ``num_train`` training images (``None``:
    not known yet, only the range is checked), for :func:`~pyro_vae.options.check_ranges`:
    0 (no validation split) or a share that leaves at least :data:`MIN_SPLIT_IMAGES`
    images on both sides.

    Example:
        >>> valid_checks(0.001, 1000)["valid_fraction"]
        (False, '0, or a share that leaves at least 2 of the 1000 training images on both sides; it leaves 1 for validation')
    """
    ok = 0 <= fraction < 1
    what = "from 0 (no validation split) to below 1"
    if ok and fraction > 0 and num_train is not None:
        n = valid_count(num_train, fraction)
        ok = MIN_SPLIT_IMAGES <= n <= num_train - MIN_SPLIT_IMAGES
        what = (f"0, or a share that leaves at least {MIN_SPLIT_IMAGES} of the {num_train} training images on "
                f"both sides; it leaves {n} for validation")
    return {"valid_fraction": (ok, what)}


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
