"""Inference for pyro-vae: SVI training, evaluation (ELBO, IWAE, bits/dim), run directories."""

from .evaluate import LogWeights, evaluate, log_weights
from .optim import FusedClippedAdam
from .svi import TrainConfig, Trainer

__all__ = ["FusedClippedAdam", "LogWeights", "TrainConfig", "Trainer", "evaluate", "log_weights"]
