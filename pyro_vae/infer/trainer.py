"""The training engine: Pyro's ``ELBOModule``, a torch optimizer, and data parallelism.

One step computes the loss as an ``nn.Module``: ``elbo(model, guide)`` is Pyro's
``ELBOModule``, whose ``forward(x, num_data, kl_scale)`` is the differentiable −ELBO of
``Trace_ELBO(num_particles=L, vectorize_particles=True)`` — the L-sample, M-sized mini-batch
SGVB estimator of Kingma & Welling (arXiv:1312.6114) on the model's full-data ELBO (the
``"data"`` plate scales by N / M) — of the free-bits ELBO, or of the IWAE bound with
K = L (``objective="iwae"``); :func:`~pyro_vae.infer.elbo.make_elbo` chooses. ``backward``
and a plain torch optimizer (Pyro's ClippedAdam algorithm, one optimizer over all parameters, gradients
released with ``set_to_none``) finish the step. Parameters live in their modules
(``pyro.settings`` ``module_local_params=True``), not in Pyro's global param store: this
is how Pyro's own ``examples/svi_lightning.py`` trains, and what makes the loss module
wrappable by ``torch.nn.parallel.DistributedDataParallel``.

**Data parallel.** Inside a ``torch.distributed`` process group of R processes, every rank
draws the same global mini-batch (the data order and binarization come from one generator
seeded by the run's seed, the same on every rank) and takes its contiguous shard; DDP
averages the gradients. Each rank's loss is scaled by R · b_r / B (b_r its shard, B the
global batch), so that the averaged gradient equals the single-process gradient of the same
global batch exactly, shards of unequal size included. Each rank draws its own model noise
(rank r > 0 seeded from (seed, r)). A final global batch smaller than R is dropped.

KL warm-up multiplies the latent site by β_e = min(1, (e + 1) / (W + 1)) during the first W
epochs, through ``poutine.scale`` in the model and guide (``kl_scale``); a β-VAE's β multiplies
it throughout.

**Labels.** A model that takes labels (``model.num_classes``) is trained on labelled
mini-batches — the conditional VAE on every image with its label, the semi-supervised VAE on
an unlabelled and a labelled mini-batch per step, its label summed out by ``TraceEnum_ELBO``
where unknown — through :class:`~pyro_vae.infer.labels.LabelledLoss`, which wraps the same
``ELBOModule`` (:mod:`pyro_vae.infer.labels`); the semi-supervised VAE's epochs also report
the test accuracy of its classifier q(y | x).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Any, Dict, Optional

import numpy as np
import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..contract import Model
from ..data import ImageDataset
from ..errors import ConfigError
from ..labels import require_labels, split_labelled
from . import distributed
from .config import TrainConfig
from .context import seed_from
from .elbo import make_elbo
from .evaluate import evaluate
from .labels import LabelledLoss, classification, labelled_steps


def set_seed(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (through Pyro)."""
    pyro.set_rng_seed(seed)


def rng_state() -> Dict[str, Any]:
    """The global RNG states of torch (and CUDA), numpy and Python, as tensors and lists only
    (so that checkpoints load with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Train a model and its guide on an :class:`~pyro_vae.data.ImageDataset`.

    Args:
        model: the model (a VAE or a density flow: any :class:`~pyro_vae.contract.Model`),
            on the device to train on; the data are moved there once.
        guide: its guide (``model.guide``, :func:`~pyro_vae.guides.build_guide`, …).
        data: the dataset (its ``train`` split is fitted, ``test`` monitored).
        config: optimisation settings.

    Inside a ``torch.distributed`` process group the trainer is data parallel (see the
    module docstring); every rank must construct it and call :meth:`train_epoch` and
    :meth:`state_dict` alike.

    Example:
        >>> from pyro_vae import build_vae, build_guide, load_dataset
        >>> data = load_dataset("mnist5k", train_size=256, test_size=64)
        >>> vae = build_vae("dense", data.x_shape, z_dim=4, hidden_dims=(32,))
        >>> trainer = Trainer(vae, build_guide("gaussian", vae), data, TrainConfig(epochs=1))
        >>> metrics = trainer.train_epoch()
        >>> sorted(metrics)[:3]
        ['epoch', 'kl_scale', 'lr']
    """

    def __init__(self, model: Model, guide: nn.Module, data: ImageDataset, config: TrainConfig):
        self.model = model
        self.guide = guide
        self.data = data
        self.config = config
        model.check_data(data.binary)
        model.check_guide(guide)
        self.device = next(model.parameters()).device
        self.autocast = _autocast(config.precision, self.device, model)
        data.to(self.device)
        self.dequantize = model.dequantize
        self.num_data = len(data)
        self.rank, self.world = distributed.world()
        params = list(model.parameters())
        params += [p for p in guide.parameters() if all(p is not q for q in params)]
        # The plate scales the loss to the full-data ELBO (N × per-example), so the
        # per-example clip threshold is scaled by N as well.
        self.optim = ClippedAdam(params, lr=config.lr, clip_norm=config.clip_norm * self.num_data)
        #: whether the model learns from labels (mini-batches of :mod:`pyro_vae.infer.labels`)
        self.labelled = model.num_classes is not None
        if model.label_is_latent:
            config.check_enumeration(model.spec.get("name", type(model).__name__))
        self.elbo = make_elbo(config, enumerate=model.label_is_latent)
        if self.labelled:
            name = model.spec.get("name", type(model).__name__)
            require_labels(data, f"the {name} model" if model.label_is_latent else "a conditional VAE")
            if not model.label_is_latent and (data.labelled is not None or data.labels("test") is None):
                raise ConfigError("a conditional VAE learns from the label of every image, and is judged on "
                                  "log p(x | y) of labelled test images (a few labels are for the ssvae model)",
                                  params=("labels_per_class",))
            alpha = model.label_alpha(self.num_data) if model.label_is_latent else None
            weight = model.labelled_weight if model.label_is_latent else 1.0
            #: the loss as a module: the labelled parts of a step through Pyro's ELBOModule
            self.loss = LabelledLoss(self.elbo, model, guide, alpha, len(split_labelled(data)[0]), weight)
        else:
            #: the loss as a module: Pyro's ELBOModule (forward = differentiable −ELBO)
            self.loss = self.elbo(model, guide)
        self._loss = self.loss
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._loss = DistributedDataParallel(self.loss, device_ids=device_ids)
            if self.rank > 0:  # each rank its own model noise
                set_seed(seed_from(config.seed, self.rank))
        self.epoch = 0  # number of completed epochs
        self.data_rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self._eval_x = data.eval_data("test", dequantize=self.dequantize)
        # a conditional VAE is judged on log p(x | y); the semi-supervised VAE on log p(x), its
        # classifier on the test labels
        self._eval_y = data.labels("test") if self.labelled else None

    @property
    def lr(self) -> float:
        return float(self.optim.param_groups[0]["lr"])

    def _set_lr(self, epoch: int) -> None:
        lr = self.config.lr * self.config.lr_decay**epoch
        for group in self.optim.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, kl_scale: float = 1.0, global_batch: Optional[int] = None) -> torch.Tensor:
        """One optimisation step on this rank's images ``x`` of a global batch of
        ``global_batch`` (default ``len(x)``); returns the (unscaled) loss, detached."""
        with self.autocast:
            loss = self._loss(x, num_data=self.num_data, kl_scale=kl_scale)
        scale = self.world * len(x) / (global_batch or len(x))
        (loss * scale if scale != 1 else loss).backward()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return loss.detach()

    def labelled_step(self, parts, kl_scale: float = 1.0) -> torch.Tensor:
        """One optimisation step on this rank's labelled and unlabelled shards ``parts``
        (:func:`~pyro_vae.infer.labels.labelled_steps`); returns the (unscaled) loss."""
        with self.autocast:
            weighted, loss = self._loss(parts, kl_scale=kl_scale)
        weighted.backward()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return loss

    def _steps(self, beta: float):
        """The steps of an epoch: ``(loss, images of this rank)`` each."""
        if self.labelled:
            for parts, n in labelled_steps(self.data, self.config.batch_size, self.data_rng, self.dequantize):
                yield self.labelled_step(parts, beta), n
            return
        for batch in self.data.batches("train", self.config.batch_size, shuffle=True,
                                       dequantize=self.dequantize, generator=self.data_rng):
            if len(batch) < self.world:  # a shard would be empty
                continue
            x = distributed.shard(batch)
            yield self.step(x, beta, len(batch)), len(x)

    def train_epoch(self) -> Dict[str, float]:
        """Run one epoch; return its metrics (ELBOs in nats per example).

        Raises:
            FloatingPointError: the loss of a step was NaN or infinite (a smaller learning
                rate or a KL warm-up usually helps); the parameters are those of that step.
        """
        cfg = self.config
        epoch = self.epoch
        beta = cfg.kl_scale(epoch)
        self._set_lr(epoch)
        self.model.train()
        self.guide.train()
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count, steps = 0, 0
        with pyro.validation_enabled(cfg.validate), pyro.settings.context(module_local_params=True):
            for loss, n in self._steps(beta):
                value = loss.item()  # the one host–device round trip of a step
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the loss became {value} at epoch {epoch + 1}, step {steps + 1} and training "
                        "stopped"
                    )
                # loss estimates N × (−β-ELBO per example) from this shard
                total += loss.double() / self.num_data * n
                count += n
                steps += 1
        seconds = time.perf_counter() - start
        total = distributed.all_sum(torch.stack([total, torch.tensor(float(count), dtype=torch.float64,
                                                                     device=self.device)]))
        test = evaluate(self.model, self.guide, self._eval_x, num_samples=cfg.eval_samples, seed=epoch,
                        sharded=self.world > 1, y=None if self.model.label_is_latent else self._eval_y)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": float(total[0] / total[1]),
            "test_elbo": test["elbo"],
            "test_rec": test["rec"],
            "test_kl": test["kl"],
            "kl_scale": beta,
            "objective": f"{cfg.objective}-{cfg.particles}",
            "lr": self.lr,
            "seconds": seconds,
            "steps": steps,
        }
        if not self.data.binary:
            metrics["test_elbo_bpd"] = self.model.bits_per_dim(-test["elbo"])
        if self.model.label_is_latent and self._eval_y is not None:
            metrics["test_accuracy"] = classification(self.model, self._eval_x, self._eval_y)["accuracy"]
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly where it stopped (every rank's RNG
        state in a process group: call it on every rank)."""
        return {"epoch": self.epoch, "optim": self.optim.state_dict(), "rng": rng_state(),
                "data_rng": self.data_rng.get_state(), "world_size": self.world,
                "rank_rng": distributed.gather(rng_state()) if self.world > 1 else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. With the number of processes it was saved with,
        every RNG continues exactly; with another, the data order still does (it is shared)
        and each rank's model noise is seeded from (seed, epoch, rank)."""
        self.epoch = int(state["epoch"])
        self.optim.load_state_dict(state["optim"])
        if "data_rng" in state:
            self.data_rng.set_state(state["data_rng"])
        else:  # written before the data had their own generator
            self.data_rng.manual_seed(seed_from(self.config.seed, self.epoch))
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.world:
            set_rng_state(state["rank_rng"][self.rank] if self.world > 1 else state["rng"])
        else:
            set_seed(seed_from(self.config.seed, self.epoch, self.rank))


def _autocast(precision: str, device: torch.device, model: Model):
    """The autocast context of ``precision`` on ``device`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if not model.supports_bf16:
        raise ConfigError(f"precision='bf16' is refused for the {model.spec.get('name', 'this')} model: "
                          "its log-densities are computed by the networks themselves (a density flow's "
                          "log-determinants, an autoregressive decoder) and need float32",
                          params=("precision",))
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision='bf16': the GPU {torch.cuda.get_device_name(device)} has no bfloat16",
                          params=("precision",))
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
