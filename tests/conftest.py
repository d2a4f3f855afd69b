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
