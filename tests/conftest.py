import pyro
import pytest
from image_files import write_digit_pngs, write_labelled_digit_pngs, write_photo_jpegs

#: Files the tests read as a user's code (some do not even parse): not test modules.
collect_ignore_glob = ["fixtures/*"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped where there is none "
                                       "(benchmarks/gpu_check.sh runs them on a GPU machine)")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seed and a clean param store, and leaves torch's
    global default dtype and thread count as it found them (the in-process rank of the DDP
    tests sets float64 and one thread, which would change every later run's arithmetic)."""
    import torch

    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_data():
    from pyro_vae import load_dataset

    return load_dataset("mnist5k", binarize="dynamic", train_size=256, test_size=64)


@pytest.fixture
def tiny_vae():
    from pyro_vae import build_vae

    return build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden=(32,))


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory):
    """A flat folder of 120 real MNIST digits as PNG files."""
    folder = tmp_path_factory.mktemp("digits")
    write_digit_pngs(str(folder), 120)
    return str(folder)


@pytest.fixture(scope="session")
def labelled_digit_folder(tmp_path_factory):
    """A folder of 150 real MNIST digits as PNG files, one sub-folder per class (0 … 9)."""
    folder = tmp_path_factory.mktemp("labelled_digits")
    write_labelled_digit_pngs(str(folder), 150)
    return str(folder)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder of 80 colour JPEG photo patches of varying sizes, one sub-folder per class."""
    folder = tmp_path_factory.mktemp("photos")
    write_photo_jpegs(str(folder), 80)
    return str(folder)
