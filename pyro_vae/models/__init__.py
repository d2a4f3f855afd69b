"""VAE models: every module of this package registers its VAEs in :data:`MODELS` when
imported, and the package imports all of them (a new model is one new file)."""

from ..registry import import_submodules
from .base import MODELS, VAE, Decoder, Encoder, build_vae

import_submodules(__name__)

__all__ = ["MODELS", "VAE", "Decoder", "Encoder", "build_vae"]
