"""pyro-vae: variational autoencoders written as Pyro probabilistic programs.

Every VAE is an ``nn.Module`` with ``model(x)`` and ``guide(x)``, trained by Pyro's ``SVI``
with ``Trace_ELBO``; guides (diagonal Gaussian or normalizing flows) are swappable by name.

Example:
    >>> import pyro
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro.optim import ClippedAdam
    >>> from pyro_vae import build_vae, build_guide, load_dataset
    >>> data = load_dataset("mnist5k", binarize="dynamic")
    >>> vae = build_vae("dense", x_shape=data.x_shape, z_dim=8, hidden=(64,))
    >>> guide = build_guide("gaussian", vae)
    >>> svi = SVI(vae.model, guide, ClippedAdam({"lr": 1e-3}), Trace_ELBO())
    >>> x = next(data.batches("train", batch_size=32))
    >>> loss = svi.step(x, num_data=len(data.train))   # -ELBO of the whole training set
"""

from .data import DATASETS, ImageDataset, load_dataset
from .errors import CheckpointError, ConfigError, DataError, DatasetNotFoundError, PyroVAEError
from .flows import FLOW_MODELS, FlowModel, build_flow_model
from .guides import GUIDES, Guide, build_guide
from .likelihoods import LIKELIHOODS, build_likelihood
from .models import MODELS, VAE, build_vae
from .priors import PRIORS, build_prior

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "FLOW_MODELS",
    "GUIDES",
    "LIKELIHOODS",
    "MODELS",
    "PRIORS",
    "VAE",
    "FlowModel",
    "Guide",
    "ImageDataset",
    "build_flow_model",
    "build_guide",
    "build_likelihood",
    "build_prior",
    "build_vae",
    "load_dataset",
    "PyroVAEError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "CheckpointError",
    "__version__",
]
