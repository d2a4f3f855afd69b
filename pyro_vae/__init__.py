"""pyro-vae: variational autoencoders written as Pyro probabilistic programs.

Every VAE is an ``nn.Module`` with ``model(x)`` and ``guide(x)``, trained by Pyro's ``SVI``
with ``Trace_ELBO``; guides (diagonal Gaussian or normalizing flows) are swappable by name.

Example:
    >>> import pyro
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro.optim import ClippedAdam
    >>> from pyro_vae import build_vae, build_guide, load_dataset
    >>> data = load_dataset("mnist5k", binarize="dynamic")
    >>> vae = build_vae("dense", x_shape=data.x_shape, z_dim=8, hidden_dims=(64,))
    >>> guide = build_guide("gaussian", vae)
    >>> svi = SVI(vae.model, guide, ClippedAdam({"lr": 1e-3}), Trace_ELBO())
    >>> x = next(data.batches("train", batch_size=32))
    >>> loss = svi.step(x, num_data=len(data.train))   # -ELBO of the whole training set

The names below are imported on first use (PEP 562, :func:`~pyro_vae.lazy.lazy_exports`),
not when the package is: that is what keeps the library's torch-free modules —
:mod:`pyro_vae.errors`, :mod:`pyro_vae.options`, :mod:`pyro_vae.data_settings` and
:mod:`pyro_vae.infer.config` (whose package is lazy in the same way) — free of torch, so
that the command line checks its arguments with them in a fraction of a second. Every
other module imports what it needs at its top.
"""

from __future__ import annotations

from .lazy import lazy_exports

#: public name → the module that defines it
_EXPORTS = {
    "DATASETS": "datasets",
    "ImageDataset": "data",
    "load_dataset": "data",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "DatasetNotFoundError": "errors",
    "OutputError": "errors",
    "PyroVAEError": "errors",
    "Model": "contract",
    "FLOW_MODELS": "flows",
    "FlowModel": "flows",
    "build_flow_model": "flows",
    "GUIDES": "guides",
    "Guide": "guides",
    "build_guide": "guides",
    "LIKELIHOODS": "likelihoods",
    "build_likelihood": "likelihoods",
    "MODELS": "models",
    "VAE": "models",
    "build_vae": "models",
    "PRIORS": "priors",
    "build_prior": "priors",
    "build_model": "build",
    "build_model_and_guide": "build",
    "model_class": "build",
}

__version__ = "0.2.0"

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
