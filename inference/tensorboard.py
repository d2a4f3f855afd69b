"""TensorBoard event files of a run, in ``RUN_DIR/tb/`` (``tensorboard --logdir runs/``).

Per epoch: the scalars of ``metrics.jsonl`` — train objective (the β-ELBO per example),
validation ELBO and its reconstruction and KL terms, the best validation ELBO so far and
its epoch (the best epoch marked: ``valid/best_elbo`` steps up where it improves), β, the
learning rate, seconds, skipped updates (and validation bits/dim for grey levels); every few epochs a grid of samples and one of reconstructions
(originals and reconstructions in alternate rows, as ``reconstructions.png``); at the end
the final evaluation (ELBO, NLL with k, bits/dim, KL, active units) and its summary line, and
— for a model with a latent variable — the latent space in TensorBoard's projector: the
posterior means E_q[z | x] of the test images, with their thumbnails (a sprite) and labels
where the data have them (``add_embedding``; also ``pyro-vae evaluate --projector``).

Written through ``torch.utils.tensorboard`` when the ``tensorboard`` package is installed
(``pip install -e ".[tensorboard]"``), silently skipped otherwise; ``pyro-vae train
--no-tensorboard`` turns it off. A resumed run purges the events past its checkpoint, so a
crash between a metrics line and a checkpoint leaves no duplicate epoch behind. A write that
fails (a full disk) is one :class:`~pyro_vae.errors.OutputError` line, like every other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from typing import Any, Dict, Iterator

from torch import nn
from torch.nn import functional as F
from torchvision.utils import make_grid

from pyro_vae.contract import Model
from pyro_vae.data import ImageDataset
from pyro_vae.infer.context import frozen, isolated
from pyro_vae.infer.usage import posterior_means

from .io import output_error
from .plots import reconstruction_grid
from .sample import figure_samples, image_labels

try:  # optional (the extra [tensorboard]): without it no events are written
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover - the test extra installs it
    SummaryWriter = None

#: Sub-folder of the run directory that holds the event files.
TB_DIR = "tb"
#: metrics.jsonl key → (TensorBoard tag, sign): the train loss is −(β-ELBO).
EPOCH_SCALARS = {
    "train_loss": ("train/objective", -1.0),
    "valid_elbo": ("valid/elbo", 1.0),
    "valid_rec": ("valid/reconstruction", 1.0),
    "valid_kl": ("valid/kl", 1.0),
    "valid_elbo_bpd": ("valid/elbo_bits_per_dim", 1.0),
    "valid_accuracy": ("valid/accuracy", 1.0),
    "best_valid_elbo": ("valid/best_elbo", 1.0),
    "best_epoch": ("valid/best_epoch", 1.0),
    "kl_scale": ("train/beta", 1.0),
    "lr": ("train/lr", 1.0),
    "seconds": ("train/seconds", 1.0),
    "skipped": ("train/skipped_updates", 1.0),
}
#: eval.json key → TensorBoard tag of the final evaluation.
FINAL_SCALARS = {"elbo": "eval/elbo", "nll": "eval/nll", "nll_sem": "eval/nll_sem",
                 "bits_per_dim": "eval/bits_per_dim", "kl": "eval/kl", "active_units": "eval/active_units",
                 "accuracy": "eval/accuracy"}
#: Images per grid (samples; originals + reconstructions).
GRID_IMAGES = 32
#: The projector's embedding: its tag, how many test images at most, and the largest side
#: of a thumbnail (TensorBoard draws sprites of at most 8192×8192 pixels: 71² thumbnails of 64).
PROJECTOR_TAG = "posterior_mean"
PROJECTOR_IMAGES = 5000
THUMBNAIL = 64


def _quiet_writer_thread(args: Any, default: Any = threading.excepthook) -> None:
    """A ``threading.excepthook`` that leaves an ``OSError`` of TensorBoard's writer thread
    (a full disk) unprinted: the writer re-raises it in the training thread at its next
    call, where :class:`Board` turns it into one :class:`~pyro_vae.errors.OutputError` line."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
        return
    default(args)


def available() -> bool:
    """Whether ``torch.utils.tensorboard`` can write (the ``tensorboard`` package is installed)."""
    return SummaryWriter is not None


class Board:
    """The event writer of one run (a no-op when disabled or TensorBoard is missing).

    Args:
        run_dir: the run directory (events go to ``run_dir/tb``).
        start_epoch: epochs already done (events at later steps are purged, for a resume).
        epochs: the run's total epochs (image grids are logged about ten times in all).
        enabled: ``False`` writes nothing (``--no-tensorboard``).
    """

    def __init__(self, run_dir: str, start_epoch: int, epochs: int, enabled: bool = True) -> None:
        self.writer = None
        self.images_every = max(1, round(epochs / 10))
        self.epochs = epochs
        if enabled and available():
            self.dir = os.path.join(run_dir, TB_DIR)
            threading.excepthook = _quiet_writer_thread
            with self._writing():
                self.writer = SummaryWriter(self.dir, purge_step=start_epoch + 1)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn an ``OSError`` of the writer (no space, no permission) into one line; the
        writer is dropped, so that nothing more is written to ``tb/``."""
        try:
            yield
        except OSError as err:
            writer, self.writer = self.writer, None
            if writer is not None:
                try:
                    writer.close()
                except OSError:
                    pass
            raise output_error(err, self.dir) from None

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log_epoch(self, metrics: Dict[str, Any], model: Model, guide: nn.Module,
                  data: ImageDataset, seed: int) -> None:
        """The scalars of one epoch, and the image grids every ``images_every`` epochs."""
        if self.writer is None:
            return
        step = int(metrics["epoch"])
        with self._writing():
            for key, (tag, sign) in EPOCH_SCALARS.items():
                if key in metrics:
                    self.writer.add_scalar(tag, sign * metrics[key], step)
            if step == 1 or step % self.images_every == 0 or step == self.epochs:
                self.log_images(model, guide, data, seed, step)
            self.writer.flush()

    def log_images(self, model: Model, guide: nn.Module, data: ImageDataset, seed: int, step: int) -> None:
        """Samples of the model and reconstructions of the first test images, drawn with
        their own seed so that training continues exactly as without them."""
        x = data.eval_data("test", dequantize=model.dequantize)[:GRID_IMAGES // 2]
        x = x.to(next(model.parameters()).device)
        with frozen(model, guide), isolated(x, seed):
            samples, per_row = figure_samples(model, GRID_IMAGES)
            labels = image_labels(model, data, list(range(len(x))), x)
            recon = reconstruction_grid(x, model.reconstruct(x, guide, labels))
        for tag, images, nrow in (("samples", samples, per_row), ("reconstructions", recon, min(8, len(x)))):
            grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2)
            self.writer.add_image(tag, grid, step)

    def log_final(self, result: Dict[str, Any], summary: str) -> None:
        """The final evaluation at the last epoch's step (its summary says which weights:
        the best epoch's)."""
        if self.writer is None:
            return
        step = int(result.get("epochs", self.epochs))
        with self._writing():
            for key, tag in FINAL_SCALARS.items():
                if isinstance(result.get(key), (int, float)):
                    self.writer.add_scalar(tag, result[key], step)
            self.writer.add_text("eval", f"{summary} (estimator: {result.get('estimator')})", step)
            self.writer.flush()

    def log_projector(self, model: Model, guide: nn.Module, data: ImageDataset, seed: int, step: int,
                      split: str = "test") -> None:
        """The posterior means of the (first :data:`PROJECTOR_IMAGES`) images of ``split`` in
        TensorBoard's projector, tagged ``posterior_mean_<split>``, with their thumbnails and
        labels, at ``step`` (written again at the same step replaces them); nothing for a
        model without a latent variable."""
        if self.writer is None or not model.has_latent:
            return
        n = min(PROJECTOR_IMAGES, data.num_examples(split))
        x = data.eval_data(split, dequantize=model.dequantize)[:n].to(next(model.parameters()).device)
        labels = data.labels(split)
        # a conditional VAE's posterior is q(z | x, y): its means given the images' labels
        given = (labels[:n].to(x.device) if labels is not None and model.num_classes is not None
                 and not model.label_is_latent else None)
        means = posterior_means(model, guide, x, seed=seed, y=given).detach().float().cpu()
        thumbs = data.split(split)[:n].float().cpu()
        if max(thumbs.shape[-2:]) > THUMBNAIL:
            scale = THUMBNAIL / max(thumbs.shape[-2:])
            size = [max(1, round(s * scale)) for s in thumbs.shape[-2:]]
            thumbs = F.interpolate(thumbs, size=size, mode="area")
        tag = f"{PROJECTOR_TAG}_{split}"
        with self._writing():
            folder = os.path.join(self.dir, f"{step:05d}", tag)
            if os.path.isdir(folder):  # the same step again (evaluate --projector): replace it
                shutil.rmtree(folder)
            self.writer.add_embedding(means, metadata=None if labels is None else labels[:n].tolist(),
                                      label_img=thumbs, global_step=step, tag=tag)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            with self._writing():
                self.writer.close()
            self.writer = None
