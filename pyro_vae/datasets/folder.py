"""A folder of images: ``load_dataset("my_images/")``.

The folder holds PNG or JPEG files laid out as torchvision's ``ImageFolder`` expects them —
flat, or one sub-folder per class (the class names become labels) — and optionally split
into ``train/`` and ``test/`` sub-folders (and a ``valid/`` one, the validation split), each
laid out the same way; without them the images are split by a fixed, seeded shuffle
(``test_fraction`` of them, 0.1 by default, go to the test split; the same folder always
gives the same split).

Files are found with torchvision's ``make_dataset``, probed with PIL (size and colour
mode, from the header only), decoded with PIL as torchvision's ``ImageFolder`` does
(``torchvision.io``'s decoders are deprecated since torchvision 0.29) as grey
(``channels=1``) or RGB (``channels=3``; by default 1 when every image is grey), turned
upright by their EXIF orientation and, with ``image_size=(H, W)``, resized so that they
cover H×W and centre-cropped to it (``torchvision.transforms.v2.functional``). Without ``image_size`` all images must have one
size. A file PIL cannot open (not an image, empty, a stray ``._x.png``) is **skipped and
counted**: ``source["skipped"]`` lists them and the training log says how many. A file whose
header opens but whose pixels cannot be decoded stops the load (or, streamed, the epoch)
with its name.

The loader hands both splits over as :class:`ImageFiles` datasets;
:func:`~pyro_vae.data.load_dataset` decodes them once into uint8 tensors when they fit in
memory and streams the training split through ``DataLoader`` workers when they do not.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from ..data_settings import folder_checks
from ..errors import ConfigError, DataError, DatasetNotFoundError
from ..options import check_ranges
from .base import Arrays, register_path_source

#: File endings read as images.
EXTENSIONS = (".png", ".jpg", ".jpeg")
#: Seed of the shuffle that splits a folder into train and test (never changes), and of
#: the order of the images within each split (so that ``--train-size N`` is a random N).
SPLIT_SEED = 0
#: Fewest test images (the evaluation's standard errors need two).
MIN_TEST = 2
#: Share of the images that go to the test split when the folder has no test/ sub-folder.
TEST_FRACTION = 0.1
#: PIL colour modes that hold grey levels only.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class ImageFiles(Dataset):
    """A map-style dataset of image files, each decoded as uint8 ``(channels, H, W)``.

    Args:
        paths: the files.
        channels: 1 (grey) or 3 (RGB).
        size: ``(H, W)`` of every image.
        resize: resize and centre-crop each image to ``size`` (else a file of another size
            is an error).
    """

    def __init__(self, paths: Sequence[str], channels: int, size: Tuple[int, int], resize: bool) -> None:
        self.paths = list(paths)
        self.channels = channels
        self.size = tuple(size)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        # torchvision costs 1.5 s to import, and every load_dataset imports this module
        from torchvision.transforms.v2 import functional as F

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("L" if self.channels == 1 else "RGB")
        except (OSError, ValueError, SyntaxError) as err:  # what PIL raises for corrupt data
            raise DataError(f"cannot decode {path}: {err}") from None
        image = F.pil_to_tensor(image)  # uint8 (C, H, W)
        h, w = image.shape[-2:]
        if (h, w) != self.size:
            if not self.resize:
                raise DataError(f"{path} is {h}×{w}, not {self.size[0]}×{self.size[1]} like the other "
                                "images; pass image_size=(H, W)", params=("image_size",))
            # scale so that the image covers H×W, then cut out the centre
            scale = max(self.size[0] / h, self.size[1] / w)
            covered = [max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale))]
            image = F.center_crop(F.resize(image, covered, antialias=True), list(self.size))
        return image.contiguous()


def _class_dirs(root: str) -> List[str]:
    """The visible sub-folders of ``root``, sorted (ImageFolder's classes)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _images_in(root: str, classes: Optional[List[str]] = None) -> Tuple[List[str], Optional[List[int]]]:
    """``(files, labels)`` of one folder: one sub-folder per class as torchvision's
    ``ImageFolder`` reads it (labels index ``classes``, by default its own sub-folders),
    or flat (no labels)."""
    # torchvision costs 1.5 s to import, and every load_dataset imports this module
    from torchvision.datasets.folder import has_file_allowed_extension, make_dataset

    classes = _class_dirs(root) if classes is None else classes
    top = sorted(e.path for e in os.scandir(root)
                 if e.is_file() and has_file_allowed_extension(e.name, EXTENSIONS))
    samples = make_dataset(root, {c: i for i, c in enumerate(classes)}, extensions=EXTENSIONS,
                           allow_empty=True) if classes else []
    if samples and top:
        raise DataError(f"{root} has images both at its top level and in sub-folders; put them all "
                        "in one sub-folder per class, or all at the top")
    if samples:
        return [p for p, _ in samples], [c for _, c in samples]
    return top, None


def _probe(paths: Sequence[str]) -> Tuple[List[Tuple[int, int]], List[str], List[int], List[str]]:
    """Sizes ``(H, W)`` and PIL modes of the readable files, their indices, and the
    unreadable files (PIL reads only the header)."""
    sizes, modes, kept, skipped = [], [], [], []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                w, h = image.size
                modes.append(image.mode)
        except Exception:  # noqa: BLE001 - whatever PIL cannot open is skipped and counted
            skipped.append(path)
            continue
        sizes.append((h, w))
        kept.append(i)
    return sizes, modes, kept, skipped


def _fingerprint(root: str, paths: Sequence[str]) -> str:
    """A hash of the image files' relative paths and contents (changes when the data do —
    also when two files of one size are swapped or edited in place). Reading every file
    costs one pass over the folder's bytes (SHA-256: about 1 GB/s), less than decoding them."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(f"{os.path.relpath(path, root)}\0".encode())
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:  # an unreadable file (skipped by the probe): its name alone counts
            h.update(b"\0unreadable")
        h.update(b"\n")
    return h.hexdigest()[:16]


def _split(items: List[Tuple[str, Optional[int], int]], parts: int, test_fraction: float,
           path: str) -> List[List[Tuple[str, Optional[int], int]]]:
    """``[train, test]`` (``[train, test, valid]`` for ``parts=3``) items, each in a fixed
    shuffled order: by sub-folder when ``parts`` > 1, else the last ``test_fraction`` of one
    shuffle of all."""
    rng = np.random.default_rng(SPLIT_SEED)
    fixed = parts > 1
    if fixed:
        splits = [[it for it in items if it[2] == part] for part in range(parts)]
        splits = [[s[k] for k in rng.permutation(len(s))] for s in splits]
    else:
        items = [items[k] for k in rng.permutation(len(items))]
        n_test = max(MIN_TEST, round(len(items) * test_fraction))
        splits = [items[n_test:], items[:n_test]]
    for split, name, least in zip(splits, ("train", "test", "valid"), (1, MIN_TEST, MIN_TEST)):
        if len(split) < least:
            where = f"the {name}/ sub-folder of {path}" if fixed else path
            raise DataError(f"{where} has too few readable images for a {name} split of at least {least} "
                            f"({len(items)} readable in all)")
    return splits


def _scan(root: str, path: str, test_fraction: Optional[float]) -> Tuple[List[str], Optional[List[str]], List[Any]]:
    """``(the split sub-folders, classes, [(file, label, 0 for train/ or the whole folder, 1
    for test/, 2 for valid/)])`` of the image files under ``root`` (``path`` as the user named
    it); no sub-folders when the folder is not split into them."""
    dirs = [os.path.join(root, split) for split in ("train", "test", "valid")]
    if any(os.path.isdir(d) for d in dirs):
        if not all(os.path.isdir(d) for d in dirs[:2]):
            which = ("a train/ or a test/ sub-folder but not both" if any(os.path.isdir(d) for d in dirs[:2])
                     else "a valid/ sub-folder but no train/ and test/")
            raise DataError(f"{path} has {which}; give it both, or none (then the images are split by "
                            "test_fraction)")
        dirs = [d for d in dirs if os.path.isdir(d)]
        if test_fraction is not None:
            raise ConfigError(f"{path} is split into train/ and test/ sub-folders, so test_fraction "
                              "does not apply", params=("test_fraction",))
        classes = sorted(set().union(*(_class_dirs(d) for d in dirs))) or None
        parts = [_images_in(d, classes) for d in dirs]
    else:
        dirs = []
        classes = _class_dirs(root) or None
        parts = [_images_in(root)]
        if parts[0][1] is None:
            classes = None
    items = [(f, None if ys is None else ys[j], p) for p, (fs, ys) in enumerate(parts) for j, f in enumerate(fs)]
    if not items:
        others = sum(len(fs) for _, _, fs in os.walk(root))
        raise DataError(f"{path} holds no PNG or JPEG images" + (f" ({others} other files)" if others else ""))
    return dirs, classes, items


@register_path_source("a folder of PNG/JPEG images", lambda name: os.path.isdir(name) or name.endswith(("/", os.sep)))
def load_folder(
    path: str,
    data_dir: str,
    download: bool,
    image_size: Optional[Tuple[int, int]] = None,
    channels: Optional[int] = None,
    test_fraction: Optional[float] = None,
) -> Arrays:
    """Both splits of an image folder as :class:`ImageFiles` (decoded by the caller).

    Args:
        path: the folder.
        data_dir: unused (the folder is the data).
        download: unused.
        image_size: ``(H, W)`` to resize and centre-crop every image to; ``None`` keeps
            the images' own size, which must then be one.
        channels: 1 or 3; ``None``: 1 when every image is grey, else 3.
        test_fraction: share of the images in the test split (default 0.1); refused when
            the folder has ``train/`` and ``test/`` sub-folders.
    """
    del data_dir, download
    options = {"image_size": image_size, "channels": channels, "test_fraction": test_fraction}
    check_ranges(options, folder_checks(**options), "image-folder options")
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise DatasetNotFoundError(f"image folder {path} does not exist")
    try:  # a folder that cannot be listed (no permission) is one line naming it
        dirs, classes, items = _scan(root, path, test_fraction)
    except OSError as err:
        raise DataError(f"cannot read {err.filename or path}: {err.strerror or err}") from None
    fixed = bool(dirs)
    files = [f for f, _, _ in items]
    sizes, modes, kept, skipped = _probe(files)
    if not kept:
        raise DataError(f"none of the {len(files)} image files in {path} can be read, e.g. {files[0]}")
    distinct = sorted(set(sizes))
    if image_size is None and len(distinct) > 1:
        counts = ", ".join(f"{h}×{w}: {sizes.count((h, w))}" for h, w in distinct[:4])
        raise DataError(f"the images in {path} differ in size ({counts}{', …' if len(distinct) > 4 else ''}); "
                        "pass image_size=(H, W) to resize and centre-crop them to one size",
                        params=("image_size",))
    if channels is None:
        channels = 1 if all(m in GREY_MODES for m in modes) else 3
    splits = _split([items[i] for i in kept], len(dirs) if fixed else 1, test_fraction or TEST_FRACTION, path)
    size = tuple(image_size) if image_size is not None else distinct[0]
    datasets = [ImageFiles([f for f, _, _ in s], channels, size, resize=image_size is not None) for s in splits]
    labels = [None if any(y is None for _, y, _ in s) else torch.tensor([y for _, y, _ in s]) for s in splits]
    source: Dict[str, Any] = {
        "path": root,
        "images": len(kept),
        "skipped": [os.path.relpath(p, root) for p in skipped],
        "classes": classes,
        "split": (f"{'/, '.join(os.path.basename(d) for d in dirs)}/ sub-folders" if fixed
                  else f"test fraction {test_fraction or TEST_FRACTION:g}"),
        "fingerprint": _fingerprint(root, files),
    }
    valid = (datasets[2], labels[2]) if len(datasets) > 2 else (None, None)
    return Arrays(datasets[0], labels[0], datasets[1], labels[1], source, *valid)
