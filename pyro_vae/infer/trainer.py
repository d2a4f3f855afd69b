"""Stochastic variational inference: the training loop.

One epoch is a pass over shuffled mini-batches; each step is ``SVI.step`` with the ELBO
:func:`~pyro_vae.infer.elbo.make_elbo` builds from the config —
``Trace_ELBO(num_particles=L, vectorize_particles=True)``, the L-sample, M-sized mini-batch
SGVB estimator of Kingma & Welling (arXiv:1312.6114), or the IWAE bound with K = L — on the
model's full-data objective (the ``"data"`` plate scales by N / M). KL warm-up multiplies the latent site by
β_e = min(1, (e + 1) / (W + 1)) during the first W epochs, through ``poutine.scale`` in the
model and guide (``kl_scale``), so the first W epochs optimise a β-weighted bound and every
later epoch the true ELBO.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Dict

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from torch import nn

from ..contract import Model
from ..data import ImageDataset
from .config import TrainConfig
from .elbo import make_elbo
from .evaluate import evaluate
from .optim import FusedClippedAdam


def set_seed(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (through Pyro)."""
    pyro.set_rng_seed(seed)


def rng_state() -> Dict[str, Any]:
    """The global RNG states of torch, numpy and Python, as tensors and lists only (so that
    checkpoints load with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Trainer:
    """SVI on a model and its guide over an :class:`~pyro_vae.data.ImageDataset`.

    Args:
        vae: the model (a VAE or a density flow: any :class:`~pyro_vae.contract.Model`).
        guide: its guide (``vae.guide``, :func:`~pyro_vae.guides.build_guide`, …).
        data: the dataset (its ``train`` split is fitted, ``test`` monitored).
        config: optimisation settings.

    Example:
        >>> from pyro_vae import build_vae, build_guide, load_dataset
        >>> data = load_dataset("mnist5k", train_size=256, test_size=64)
        >>> vae = build_vae("dense", data.x_shape, z_dim=4, hidden_dims=(32,))
        >>> trainer = Trainer(vae, build_guide("gaussian", vae), data, TrainConfig(epochs=1))
        >>> metrics = trainer.train_epoch()
        >>> sorted(metrics)[:3]
        ['epoch', 'kl_scale', 'lr']
    """

    def __init__(self, vae: Model, guide: nn.Module, data: ImageDataset, config: TrainConfig):
        self.vae = vae
        self.guide = guide
        self.data = data
        self.config = config
        vae.check_data(data.binary)
        self.dequantize = vae.dequantize
        self.num_data = len(data.train)
        params = list(vae.parameters())
        params += [p for p in guide.parameters() if all(p is not q for q in params)]
        # The plate scales the loss to the full-data ELBO (N × per-example), so the
        # per-example clip threshold is scaled by N as well.
        self.optim = FusedClippedAdam(
            {"lr": config.lr, "clip_norm": config.clip_norm * self.num_data}, params=params
        )
        self.svi = SVI(vae.model, guide, self.optim, make_elbo(config))
        self.epoch = 0  # number of completed epochs
        self.device = next(vae.parameters()).device
        self._eval_x = data.eval_data("test", dequantize=self.dequantize).to(self.device)

    def _set_lr(self, epoch: int) -> None:
        if self.optim.optimizer is not None:
            lr = self.config.lr * self.config.lr_decay**epoch
            for group in self.optim.optimizer.param_groups:
                group["lr"] = lr

    def train_epoch(self) -> Dict[str, float]:
        """Run one epoch; return its metrics (ELBOs in nats per example)."""
        cfg = self.config
        epoch = self.epoch
        beta = cfg.kl_scale(epoch)
        self._set_lr(epoch)
        self.vae.train()
        start = time.perf_counter()
        total, count, steps = 0.0, 0, 0
        with pyro.validation_enabled(cfg.validate):
            for x in self.data.batches(
                "train", cfg.batch_size, shuffle=True, dequantize=self.dequantize, drop_last=cfg.jit
            ):
                x = x.to(self.device, non_blocking=True)
                loss = self.svi.step(x, num_data=self.num_data, kl_scale=beta)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} at epoch {epoch + 1}, step {steps + 1}; "
                        "try a smaller --lr or a KL warm-up"
                    )
                # loss estimates N × (−β-ELBO per example) from this batch
                total += loss / self.num_data * len(x)
                count += len(x)
                steps += 1
        seconds = time.perf_counter() - start
        test = evaluate(self.vae, self.guide, self._eval_x, num_samples=cfg.eval_samples, seed=epoch)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": total / count,
            "test_elbo": test["elbo"],
            "test_rec": test["rec"],
            "test_kl": test["kl"],
            "kl_scale": beta,
            "objective": f"{cfg.objective}-{cfg.particles}",
            "lr": self.optim.lr,
            "seconds": seconds,
            "steps": steps,
        }
        if not self.data.binary:
            metrics["test_elbo_bpd"] = self.vae.bits_per_dim(-test["elbo"])
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly where it stopped."""
        return {"epoch": self.epoch, "optim": self.optim.state_dict(), "rng": rng_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.optim.load_state_dict(state["optim"])
        set_rng_state(state["rng"])
