"""Misuses of the Python API: each raises pyro-vae's own error (a ``PyroVAEError``, which
also is the matching builtin) with one clear line — never a raw torch or Pyro error — or,
where the intent is obvious (float64, float16 or boolean images), just works."""

import pickle

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vae import (CheckpointError, ConfigError, DataError, DatasetNotFoundError, ImageDataset, PyroVAEError,
                      build_flow_model, build_guide, build_vae, load_dataset)
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.trainer import Trainer
from pyro_vae.plates import data_plate


@pytest.fixture(scope="module")
def vae():
    pyro.set_rng_seed(0)
    return build_vae("dense", (1, 6, 6), z_dim=2, hidden_dims=(8,))


@pytest.fixture(scope="module")
def grey_vae():
    return build_vae("dense", (1, 6, 6), z_dim=2, hidden_dims=(8,), likelihood="gaussian")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return ImageDataset("toy", rng.random((32, 1, 6, 6), np.float32), rng.random((8, 1, 6, 6), np.float32))


def binary(n=4, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, 1, 6, 6), 0.5)).to(dtype)


def svi_step(vae, x, guide=None):
    svi = SVI(vae.model, guide or vae.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    with pyro.validation_enabled(True):
        return svi.step(x)


def one_line_error(excinfo, kind):
    assert isinstance(excinfo.value, kind) and isinstance(excinfo.value, PyroVAEError), excinfo.value
    assert "\n" not in str(excinfo.value), str(excinfo.value)
    return str(excinfo.value)


# ---------------------------------------------------------------------- what the models are given
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bool])
def test_float64_float16_and_boolean_images_are_converted(vae, dtype):
    assert np.isfinite(svi_step(vae, binary(dtype=dtype)))
    assert vae.reconstruct(binary(dtype=dtype)).dtype == torch.float32


MISUSES = {
    "uint8 levels": (lambda: (binary() * 255).to(torch.uint8), "must be floating point", "x.float() / 255"),
    "int64 pixels": (lambda: binary().long(), "must be floating point", None),
    "an empty batch": (lambda: binary()[:0], "got an empty one", None),
    "NaN pixels": (lambda: binary() * float("nan"), "NaN or infinite", None),
    "infinite pixels": (lambda: binary() / 0.0 + binary(), "NaN or infinite", None),
    "grey levels on a Bernoulli model": (lambda: torch.full((4, 1, 6, 6), 0.5), "needs binary images (0 or 1)", None),
    "a wrong image shape": (lambda: torch.zeros(4, 1, 5, 5), "expected images of shape (B, 1, 6, 6)", None),
    "one image without a batch": (lambda: torch.zeros(1, 6, 6), "expected images of shape (B, 1, 6, 6)", None),
    "a numpy array": (lambda: np.zeros((4, 1, 6, 6), np.float32), "got ndarray", None),
}


@pytest.mark.parametrize("what", sorted(MISUSES))
def test_bad_images_given_to_svi_are_one_data_error(vae, what):
    make, fragment, hint = MISUSES[what]
    with pytest.raises(DataError) as excinfo:
        svi_step(vae, make())
    message = one_line_error(excinfo, DataError)
    assert fragment in message and (hint is None or hint in message)


@pytest.mark.parametrize("what", ["NaN pixels", "grey levels on a Bernoulli model", "an empty batch"])
def test_bad_images_given_to_evaluate_are_one_data_error(vae, what):
    make, fragment, _ = MISUSES[what]
    with pytest.raises(DataError) as excinfo:
        evaluate(vae, vae.guide, make(), num_samples=2)  # whatever Pyro's validation says
    assert fragment in one_line_error(excinfo, DataError)


def test_grey_levels_beyond_one_for_a_gaussian_likelihood(grey_vae):
    x = torch.rand(4, 1, 6, 6) * 255  # levels, not scaled to [0, 1]
    with pytest.raises(DataError) as excinfo:
        evaluate(grey_vae, grey_vae.guide, x, num_samples=2)
    assert "in [0, 1], got values in [" in one_line_error(excinfo, DataError)


# ---------------------------------------------------------------------- a guide of another VAE
def test_a_guide_of_a_vae_with_another_z_dim(vae):
    other = build_vae("dense", (1, 6, 6), z_dim=3, hidden_dims=(8,))
    with pytest.raises(ConfigError) as excinfo:
        svi_step(vae, binary(), build_guide("iaf", other, hidden_dims=[32]))
    assert "the guide was built for another model" in one_line_error(excinfo, ConfigError)


def test_a_guide_of_another_vae_of_the_same_z_dim(vae, data):
    other = build_vae("dense", (1, 6, 6), z_dim=2, hidden_dims=(8,))
    guide = build_guide("gaussian", other)
    with pytest.raises(ConfigError) as excinfo:
        Trainer(vae, guide, data, TrainConfig(epochs=1))
    assert "built for another model" in one_line_error(excinfo, ConfigError)
    with pytest.raises(ConfigError):
        evaluate(vae, guide, binary(), num_samples=2)


# ---------------------------------------------------------------------- building things
BUILDS = {
    "z_dim=2.7": (lambda: build_vae("dense", (1, 6, 6), z_dim=2.7), ConfigError, "must be an integer, got 2.7"),
    "z_dim=0": (lambda: build_vae("dense", (1, 6, 6), z_dim=0), ConfigError, "z_dim must be positive"),
    "z_dim='4'": (lambda: build_vae("dense", (1, 6, 6), z_dim="4"), ConfigError, "must be an integer"),
    "an unknown model": (lambda: build_vae("densee", (1, 6, 6)), ConfigError, "unknown model 'densee'"),
    "an unknown option": (lambda: build_vae("dense", (1, 6, 6), widths=[3]), ConfigError, "unknown option widths"),
    "x_shape of two sizes": (lambda: build_vae("dense", (6, 6)), ConfigError, "x_shape must be (C, H, W)"),
    "conv on 1x1 images": (lambda: build_vae("conv", (1, 1, 1)), ConfigError, "at least 3×3 pixels"),
    "an unknown guide": (lambda: build_guide("iaff", build_vae("dense", (1, 6, 6))), ConfigError, "unknown guide"),
    "flows on the gaussian guide": (lambda: build_guide("gaussian", build_vae("dense", (1, 6, 6)), num_flows=2),
                                    ConfigError, "none (it takes no options)"),
    "a flow option of the wrong type": (lambda: build_flow_model("realnvp", (1, 6, 6), hidden_channels="many"),
                                        ConfigError, "must be an integer"),
    "train_size beyond the data": (lambda: load_dataset("mnist5k", train_size=100_000), ConfigError,
                                   "more than the 4000 train images"),
    "a guide for no VAE": (lambda: build_guide("iaf", object()), ConfigError, "a guide is built for a VAE"),
    "a guide for a density flow": (lambda: build_guide("iaf", build_flow_model("nice", (1, 4, 4))), ConfigError,
                                   "a density flow has no latent variable"),
    "an unknown dataset": (lambda: load_dataset("mnist7k"), ConfigError, "unknown dataset"),
    "a missing dataset file": (lambda: load_dataset("/nonexistent/x.npz"), DatasetNotFoundError, "does not exist"),
    "a bad binarization": (lambda: load_dataset("mnist5k", binarize="maybe"), ConfigError, "unknown binarization"),
    "NaN data": (lambda: ImageDataset("bad", np.full((4, 1, 2, 2), np.nan, np.float32),
                                      np.zeros((2, 1, 2, 2), np.float32)), DataError, "NaN"),
    "a seed of -1": (lambda: TrainConfig(seed=-1), ConfigError, "seed=-1"),
    "a NaN learning rate": (lambda: TrainConfig(lr=float("nan")), ConfigError, "finite"),
    "num_data below the batch": (lambda: data_plate(torch.zeros(8, 1), 4), ConfigError, "smaller than the mini-batch"),
    "a temperature for a VAE": (lambda: build_vae("dense", (1, 6, 6)).generate(2, 0.5), ConfigError, "density flows"),
    "a temperature of 0": (lambda: build_flow_model("nice", (1, 4, 4)).generate(2, 0.0), ConfigError,
                           "temperature must be a number from 0.001 to 1000"),
    "evaluate with k=0": (lambda: evaluate(build_vae("dense", (1, 6, 6)), None, binary(), num_samples=0),
                          ConfigError, "num_samples must be an integer ≥ 1, got 0"),
    "IWAE with free bits": (lambda: TrainConfig(objective="iwae", particles=4, free_bits=0.5), ConfigError,
                            "objective='iwae' cannot be combined with free_bits > 0"),
    "compile without capture": (lambda: TrainConfig(compile=True, capture=False), ConfigError,
                                "compile=true compiles the captured step"),
    "capture not a bool": (lambda: TrainConfig(capture="yes"), ConfigError, "capture"),
    "a grey-level likelihood on binary data": (lambda: build_vae("dense", (1, 6, 6), likelihood="gaussian")
                                               .check_data(binary=True), ConfigError,
                                               "use binarize='none' or likelihood='bernoulli'"),
    "an unknown settings key": (lambda: TrainConfig.from_dict({"colour": 1}), ConfigError, "unknown key colour"),
    "a settings value of the wrong type": (lambda: TrainConfig.from_dict({"epochs": "many"}), ConfigError,
                                           "training settings.epochs must be an integer"),
}

#: The parameters each error of BUILDS is about (``params``): how a caller that spells them
#: otherwise — the command line, its flags — tells the user which one it was.
PARAMS = {
    "z_dim=2.7": ("model.z_dim",),  # an option of a component: scoped by its registry
    "an unknown option": ("model.widths",),
    "x_shape of two sizes": ("x_shape",),
    "conv on 1x1 images": ("model.channels",),
    "train_size beyond the data": ("train_size",),
    "an unknown dataset": ("name",),
    "a bad binarization": ("binarize",),
    "a seed of -1": ("seed",),
    "a NaN learning rate": ("lr",),
    "num_data below the batch": ("num_data",),
    "a temperature of 0": ("temperature",),
    "evaluate with k=0": ("num_samples",),
    "IWAE with free bits": ("objective", "free_bits"),
    "a grey-level likelihood on binary data": ("likelihood", "binarize"),
    "an unknown settings key": ("colour",),
    "a settings value of the wrong type": ("epochs",),
}


@pytest.mark.parametrize("what", sorted(BUILDS))
def test_a_misuse_is_one_pyro_vae_error(what):
    call, kind, fragment = BUILDS[what]
    with pytest.raises(kind) as excinfo:
        call()
    assert fragment in one_line_error(excinfo, kind)
    assert "--" not in str(excinfo.value)  # the library names parameters, never command-line flags
    assert excinfo.value.params == PARAMS.get(what, excinfo.value.params)
    again = pickle.loads(pickle.dumps(excinfo.value))  # as it crosses processes (DDP's ranks)
    assert (type(again), str(again), again.params) == (kind, str(excinfo.value), excinfo.value.params)


def test_a_checkpoint_error_is_also_a_runtime_error():
    from inference.checkpoint import load_checkpoint

    with pytest.raises(RuntimeError) as excinfo:
        load_checkpoint("/nonexistent/checkpoint.pt")
    one_line_error(excinfo, CheckpointError)
