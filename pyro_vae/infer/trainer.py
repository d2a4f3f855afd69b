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
the validation accuracy of its classifier q(y | x).

**Selection and regularisation.** After every epoch the ELBO of the *validation* split
(when the data have one) is measured on the weights being selected — the exponential
moving average of :class:`~pyro_vae.infer.selection.WeightAverage` with ``ema``, else the
trained weights — and followed by :class:`~pyro_vae.infer.selection.EarlyStopping`, which
says which epoch is best and when ``patience`` has run out; the test split is never read
here. The optimizer is :class:`~pyro_vae.infer.optim.ClippedAdamW` (decoupled
``weight_decay``), and with ``skip_threshold`` an update whose gradient norm is larger, or
not finite, is not taken (VDVAE, Child 2021, arXiv:2011.10650): all ranks see the same
all-reduced gradient, so all skip alike.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import time
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pyro
import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ..contract import Model
from ..data import ImageDataset
from ..errors import ConfigError
from ..labels import require_labels, split_labelled
from . import distributed
from .compiled import CompiledLoss
from .config import TrainConfig
from .context import seed_from
from .elbo import make_elbo
from .evaluate import evaluate
from .labels import LabelledLoss, classification, labelled_steps
from .optim import ClippedAdamW
from .selection import EarlyStopping, WeightAverage


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


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class Trainer:
    """Train a model and its guide on an :class:`~pyro_vae.data.ImageDataset`.

    Args:
        model: the model (a VAE or a density flow: any :class:`~pyro_vae.contract.Model`),
            on the device to train on; the data are moved there once.
        guide: its guide (``model.guide``, :func:`~pyro_vae.guides.build_guide`, …).
        data: the dataset (its ``train`` split is fitted, its ``valid`` split — if it has
            one — monitored; its ``test`` split is never read).
        config: optimisation settings.
        log: where a one-line notice goes (a captured or compiled step that fell back to eager).

    Inside a ``torch.distributed`` process group the trainer is data parallel (see the
    module docstring); every rank must construct it and call :meth:`train_epoch` and
    :meth:`state_dict` alike.

    Example:
        >>> from pyro_vae import build_vae, build_guide, load_dataset
        >>> data = load_dataset("mnist5k", train_size=256, test_size=64, valid_fraction=0.25)
        >>> vae = build_vae("dense", data.x_shape, z_dim=4, hidden_dims=(32,))
        >>> trainer = Trainer(vae, build_guide("gaussian", vae), data, TrainConfig(epochs=1))
        >>> metrics = trainer.train_epoch()
        >>> sorted(k for k in metrics if k.startswith("valid"))
        ['valid_elbo', 'valid_kl', 'valid_rec']
    """

    def __init__(self, model: Model, guide: nn.Module, data: ImageDataset, config: TrainConfig,
                 log: Callable[[str], None] = _warn):
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
        self.params = params
        # The plate scales the loss to the full-data ELBO (N × per-example), so the
        # per-example clip threshold is scaled by N as well.
        self.optim = ClippedAdamW(params, lr=config.lr, clip_norm=config.clip_norm * self.num_data,
                                  weight_decay=config.weight_decay)
        has_valid = data.has_split("valid")
        config.check_selection(has_valid)
        #: the moving average of the weights (``ema``), or ``None``
        self.average = WeightAverage(model, guide, config.ema) if config.ema else None
        #: the best validation epoch so far, and whether patience has run out
        self.stopping = EarlyStopping(config.patience)
        self.skipped = 0  # updates skipped (skip_threshold) since the run started
        #: whether the model learns from labels (mini-batches of :mod:`pyro_vae.infer.labels`)
        self.labelled = model.num_classes is not None
        name = model.spec.get("name", type(model).__name__)
        if model.label_is_latent:
            config.check_enumeration(name)
        self.elbo = make_elbo(config, enumerate=model.label_is_latent)
        if self.labelled:
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
        if config.compile and self.labelled:  # two ELBOModules and a classifier term per step
            log("compile: a model that learns from labels trains eagerly (its labelled step is not compiled)")
        elif config.capture and not self.labelled:
            self._loss = CompiledLoss(self.loss, log=log, mode=_compile_mode(self.device), compile=config.compile)
        #: the captured step, checked at the start of every epoch (``None``: Pyro runs each step)
        self._captured = self._loss if isinstance(self._loss, CompiledLoss) else None
        if self.world > 1:
            self._loss = _data_parallel(self._loss, self.device, config.grad_compression)
            if self.rank > 0:  # each rank its own model noise
                set_seed(seed_from(config.seed, self.rank))
        self.epoch = 0  # number of completed epochs
        self.data_rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self._valid_x = data.eval_data("valid", dequantize=self.dequantize) if has_valid else None
        # a conditional VAE is validated on log p(x | y); the semi-supervised VAE on log p(x),
        # its classifier on the validation labels
        self._valid_y = data.labels("valid") if self.labelled and has_valid else None
        self._epoch_skipped = 0

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
        self._update()
        return loss.detach()

    def _update(self) -> None:
        """The optimizer's step (unless :meth:`_skip` says no) and the moving average's."""
        if not self._skip():
            self.optim.step()
            if self.average is not None:
                self.average.update()
        self.optim.zero_grad(set_to_none=True)

    def labelled_step(self, parts, kl_scale: float = 1.0) -> torch.Tensor:
        """One optimisation step on this rank's labelled and unlabelled shards ``parts``
        (:func:`~pyro_vae.infer.labels.labelled_steps`); returns the (unscaled) loss."""
        with self.autocast:
            weighted, loss = self._loss(parts, kl_scale=kl_scale)
        weighted.backward()
        self._update()
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

    def _skip(self) -> bool:
        """Whether to skip this update: its gradient norm, of the per-example −ELBO (the loss
        is the full-data one, N × per example), exceeds ``skip_threshold`` or is not finite.
        Costs one host–device round trip, and only with a threshold."""
        threshold = self.config.skip_threshold
        if threshold is None:
            return False
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) / self.num_data
        if math.isfinite(norm) and norm <= threshold:
            return False
        self._epoch_skipped += 1
        return True

    def evaluated(self) -> Tuple[nn.Module, nn.Module]:
        """The model and guide whose weights are validated, selected and evaluated: the
        moving average with ``ema``, else the trained ones."""
        return self.average.modules() if self.average is not None else (self.model, self.guide)

    @property
    def stopped(self) -> bool:
        """Whether ``patience`` epochs have passed without a better validation ELBO."""
        return self.stopping.stopped

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
        if self._captured is not None:
            self._captured.verify_next()
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
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": float(total[0] / total[1]),
            "kl_scale": beta,
            "objective": f"{cfg.objective}-{cfg.particles}",
            "lr": self.lr,
            "seconds": seconds,
            "steps": steps,
        }
        if cfg.skip_threshold is not None:
            metrics["skipped"], self._epoch_skipped = self._epoch_skipped, 0
            self.skipped += metrics["skipped"]
        if self._valid_x is not None:
            model, guide = self.evaluated()
            # the same noise at every epoch (common random numbers): the differences between
            # epochs, which select the best one, are the model's, not the draws'
            valid = evaluate(model, guide, self._valid_x, num_samples=cfg.eval_samples, seed=cfg.seed,
                             sharded=self.world > 1, y=None if self.model.label_is_latent else self._valid_y)
            metrics.update(valid_elbo=valid["elbo"], valid_rec=valid["rec"], valid_kl=valid["kl"])
            if not self.data.binary:
                metrics["valid_elbo_bpd"] = self.model.bits_per_dim(-valid["elbo"])
            if self.model.label_is_latent and self._valid_y is not None:
                metrics["valid_accuracy"] = classification(model, self._valid_x, self._valid_y)["accuracy"]
            self.stopping.update(self.epoch, valid["elbo"])
            metrics.update(best_epoch=self.stopping.best_epoch, best_valid_elbo=self.stopping.best)
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly where it stopped (every rank's RNG
        state in a process group: call it on every rank)."""
        return {**self.selection_state(), "optim": self.optim.state_dict(), "rng": rng_state(),
                "data_rng": self.data_rng.get_state(), "world_size": self.world,
                "rank_rng": distributed.gather(rng_state()) if self.world > 1 else None, "skipped": self.skipped}

    def selection_state(self) -> Dict[str, Any]:
        """The part of :meth:`state_dict` that says which weights are selected — the epoch,
        the early-stopping state and the moving average — without the collective parts."""
        state = {"epoch": self.epoch, "stopping": self.stopping.state_dict()}
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. With the number of processes it was saved with,
        every RNG continues exactly; with another, the data order still does (it is shared)
        and each rank's model noise is seeded from (seed, epoch, rank)."""
        self.epoch = int(state["epoch"])
        self.optim.load_state_dict(state["optim"])
        for group in self.optim.param_groups:  # a checkpoint of pyro-vae ≤ 0.2 (Pyro's ClippedAdam)
            group.setdefault("decoupled_weight_decay", self.config.weight_decay)
        if "stopping" in state:
            self.stopping.load_state_dict(state["stopping"])
        self.skipped = int(state.get("skipped", 0))
        if self.average is not None and "average" in state:
            self.average.load_state_dict(state["average"])
        if "data_rng" in state:
            self.data_rng.set_state(state["data_rng"])
        else:  # written before the data had their own generator
            self.data_rng.manual_seed(seed_from(self.config.seed, self.epoch))
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.world:
            set_rng_state(state["rank_rng"][self.rank] if self.world > 1 else state["rng"])
        else:
            set_seed(seed_from(self.config.seed, self.epoch, self.rank))


#: No broadcast of the buffers at every forward: ``forward_sync_buffers`` since torch 2.14
#: (which deprecates ``broadcast_buffers``), ``broadcast_buffers`` before it.
_NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})
#: torch's gradient-compression hooks, by :attr:`TrainConfig.grad_compression`.
COMPRESSION_HOOKS = {"fp16": default_hooks.fp16_compress_hook, "bf16": default_hooks.bf16_compress_hook}


def _data_parallel(loss: nn.Module, device: torch.device, compression: str) -> DistributedDataParallel:
    """``loss`` wrapped in DDP as the engine needs it: buffers are not broadcast at every
    forward (they are constants or, ActNorm's, initialised identically on every rank from an
    all-reduce), gradients are the buckets' views (no copy into them), and the buckets are
    small enough (4 MB) for the all-reduce of the last layers' gradients to start while the
    backward pass still computes the first layers'; ``compression`` picks a hook."""
    ddp = DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None,
                                  gradient_as_bucket_view=True, bucket_cap_mb=4, **_NO_FORWARD_BUFFER_SYNC)
    if compression != "none":
        ddp.register_comm_hook(None, COMPRESSION_HOOKS[compression])
    return ddp


def _compile_mode(device: torch.device) -> Optional[str]:
    """``torch.compile``'s mode: CUDA graphs on a GPU (the shapes of a key are static),
    inductor's default on a CPU."""
    return "reduce-overhead" if device.type == "cuda" else None


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
