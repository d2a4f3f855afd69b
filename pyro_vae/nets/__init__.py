"""Network building blocks (no probabilistic code lives here)."""

from .conv import Batched, ConvDecoderNet, ConvEncoderTrunk
from .mlp import MLP
from .resnet import ResBlock, ResNetDecoderNet, ResNetEncoderTrunk

__all__ = ["MLP", "Batched", "ConvEncoderTrunk", "ConvDecoderNet", "ResBlock", "ResNetEncoderTrunk",
           "ResNetDecoderNet"]
