"""VAE models: each registers itself in :data:`MODELS` when its module is imported."""

from .base import MODELS, VAE, Decoder, Encoder, build_vae, data_plate, kl_scaled
from .dense import DenseVAE
from .linear import LinearGaussianVAE
from .conv import ConvVAE
from .resnet import ResNetVAE
from .pixel import PixelVAE

__all__ = ["MODELS", "VAE", "Encoder", "Decoder", "DenseVAE", "LinearGaussianVAE", "ConvVAE", "ResNetVAE", "PixelVAE", "build_vae", "data_plate", "kl_scaled"]
