"""Run directories: train, resume, evaluate and sample from a directory alone.

A run directory holds ``config.json`` (what was asked for), ``checkpoint.pt`` (written
atomically after every epoch), ``metrics.jsonl`` (one line per epoch), ``samples.png``,
``reconstructions.png``, ``loss.png`` and ``eval.json`` (and, for a density flow,
``samples_temperature.png``). The functions here are the library behind the CLI; they raise
:class:`~pyro_vae.errors.PyroVAEError` on bad input and never overwrite an existing run
unless asked to resume it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from pyro_vae.data import ImageDataset, load_dataset
from pyro_vae.errors import CheckpointError, ConfigError
from pyro_vae.flows import FlowModel
from pyro_vae.guides import Guide
from pyro_vae.models import VAE

from .checkpoint import (
    atomic_write_json,
    atomic_write_text,
    build_from_checkpoint,
    build_model_and_guide,
    load_checkpoint,
    save_checkpoint,
)
from .evaluate import evaluate
from .plots import loss_plot, reconstruction_grid, save_grid
from .svi import TrainConfig, Trainer, set_seed

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
EVAL = "eval.json"


@dataclass
class DataConfig:
    """Which data a run uses (recorded in ``config.json``)."""

    name: str = "mnist5k"
    binarize: str = "dynamic"
    data_dir: str = "data"
    seed: int = 0
    train_size: Optional[int] = None
    test_size: Optional[int] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataConfig":
        valid = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in valid})

    def load(self, download: bool = False) -> ImageDataset:
        return load_dataset(
            self.name,
            binarize=self.binarize,
            data_dir=self.data_dir,
            download=download,
            seed=self.seed,
            train_size=self.train_size,
            test_size=self.test_size,
        )


def _paths(run_dir: str) -> Dict[str, str]:
    return {k: os.path.join(run_dir, v) for k, v in
            dict(config=CONFIG, checkpoint=CHECKPOINT, metrics=METRICS, eval=EVAL).items()}


def is_run(run_dir: str) -> bool:
    p = _paths(run_dir)
    return os.path.exists(p["config"]) or os.path.exists(p["checkpoint"])


def read_config(run_dir: str) -> Dict[str, Any]:
    """The ``config.json`` of a run directory, validated."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run directory {run_dir} does not exist")
    path = _paths(run_dir)["config"]
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir} is not a pyro-vae run directory (no {CONFIG})")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None
    if not isinstance(config, dict) or config.get("format") != "pyro-vae-run":
        raise CheckpointError(f"{path} is not a pyro-vae run config")
    for key in ("model", "guide", "data", "train"):
        if key not in config:
            raise CheckpointError(f"{path} lacks {key!r}")
    return config


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    path = _paths(run_dir)["metrics"]
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break  # a torn last line (crash mid-write): keep what is whole
    return rows


def load_run(run_dir: str, device: str = "cpu") -> Tuple[VAE, Guide, Dict[str, Any], Dict[str, Any]]:
    """Rebuild a run's VAE and guide from its directory, on ``device``.

    Returns:
        ``(vae, guide, config, checkpoint)``.
    """
    config = read_config(run_dir)
    payload = load_checkpoint(_paths(run_dir)["checkpoint"])
    if payload["model_spec"] != config["model"] or payload["guide_spec"] != config["guide"]:
        raise CheckpointError(
            f"{run_dir}: the checkpoint's model/guide do not match {CONFIG} (foreign checkpoint?)"
        )
    vae, guide = build_from_checkpoint(payload)
    vae.to(device)
    guide.to(device)
    return vae, guide, config, payload


def _figures(run_dir: str, vae: VAE, data: ImageDataset, metrics: List[Dict], seed: int,
             guide: Optional[Guide] = None) -> None:
    p = _paths(run_dir)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        save_grid(vae.generate(64), os.path.join(run_dir, "samples.png"))
        x = data.eval_data("test", dequantize=vae.likelihood.dequantize)[:32]
        x = x.to(next(vae.parameters()).device)
        # a flow guide reconstructs through its flows, not from the base mean; a density flow
        # reconstructs by its exact round trip x → z → x
        has_guide = guide is not None and not isinstance(vae, FlowModel)
        recon = (guide if has_guide else vae).reconstruct(x)
        save_grid(reconstruction_grid(x, recon), os.path.join(run_dir, "reconstructions.png"))
        if isinstance(vae, FlowModel):  # one row of 8 samples per temperature
            grid = torch.cat([vae.generate(8, t) for t in FLOW_TEMPERATURES])
            save_grid(grid, os.path.join(run_dir, "samples_temperature.png"))
    if metrics:
        loss_plot(metrics, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))


#: Rows of ``samples_temperature.png`` for a flow model (T = 1 is the model itself).
FLOW_TEMPERATURES = (0.5, 0.7, 0.85, 1.0)


def summarize(result: Dict[str, Any], binary: bool) -> str:
    """One human line: test ELBO and IWAE NLL (nats; bits/dim for grey levels)."""
    k = result["iwae_samples"]
    if result.get("estimator") == "exact":  # a density flow: no latent, no bound
        return (
            f"{result['split']} log-likelihood {-result['nll']:.2f} nats (exact: no latent "
            f"variable; NLL {result['nll']:.2f} ± {result['nll_sem']:.2f}) on "
            f"{result['num_examples']} images; {result['bits_per_dim']:.3f} bits/dim"
        )
    line = (
        f"{result['split']} ELBO {result['elbo']:.2f} nats, "
        f"IWAE (k={k}) log-likelihood {-result['nll']:.2f} nats "
        f"(NLL {result['nll']:.2f} ± {result['nll_sem']:.2f}) on {result['num_examples']} images"
    )
    if not binary:
        line += f"; {result['bits_per_dim']:.3f} bits/dim"
    if "active_units" in result:
        line += f"; KL {result['kl']:.2f} nats, {result['active_units']} active units"
    return line


def evaluate_model(
    vae: VAE,
    guide: Guide,
    data: ImageDataset,
    split: str = "test",
    iwae_samples: int = 5000,
    seed: int = 0,
    progress: bool = False,
) -> Dict[str, Any]:
    """ELBO / IWAE of ``split`` with the keys of ``eval.json``."""
    if tuple(data.x_shape) != vae.x_shape:
        raise ConfigError(
            f"the model was trained on images of shape {vae.x_shape}; "
            f"{data.name} has {tuple(data.x_shape)}"
        )
    vae.likelihood.check_data(data.binary)
    device = next(vae.parameters()).device
    x = data.eval_data(split, dequantize=vae.likelihood.dequantize).to(device)
    exact = isinstance(vae, FlowModel)
    if exact:  # no latent site: the k = 1 "IWAE" is log p(x) itself, more samples repeat it
        iwae_samples = 1
    result = evaluate(vae, guide, x, num_samples=iwae_samples, seed=seed, progress=progress)
    result.update(dataset=data.name, split=split, binarize=data.binarize)
    result["estimator"] = "exact" if exact else f"iwae-{iwae_samples}"
    if not data.binary:
        result["bits_per_dim"] = vae.likelihood.bits_per_dim(result["nll"])
        result["elbo_bits_per_dim"] = vae.likelihood.bits_per_dim(-result["elbo"])
    if not exact:  # how many latent dimensions carry information (posterior collapse shows here)
        from .posterior import latent_usage

        usage = latent_usage(vae, guide, x, seed=seed)
        result["active_units"] = usage["active_units"]
        result["kl_per_dim"] = usage["kl_per_dim"]
    return result


def train_run(
    run_dir: str,
    model: Dict[str, Any],
    guide: Dict[str, Any],
    data: DataConfig,
    train: TrainConfig,
    iwae_samples: int = 1000,
    resume: bool = False,
    download: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Train (or resume) a run in ``run_dir`` and evaluate it.

    Args:
        run_dir: the run directory (created if new).
        model: ``build_vae`` arguments, ``{"name": ..., "z_dim": ..., ...}`` (no ``x_shape``).
        guide: ``build_guide`` arguments, ``{"name": ..., ...}``.
        data: which dataset.
        train: optimisation settings (with ``resume``, only ``epochs`` is taken from here).
        iwae_samples: k of the final IWAE evaluation.
        resume: continue the run in ``run_dir`` from its last checkpoint.
        download: allow torchvision to download the dataset.
        progress: show progress bars.
        log: where human-readable lines go.
        device: ``cpu`` or ``cuda``.

    Returns:
        the final evaluation (the content of ``eval.json``).
    """
    paths = _paths(run_dir)
    if resume:
        vae, guide_obj, config, payload = load_run(run_dir, device=device)
        data = DataConfig.from_dict(config["data"])
        stored = TrainConfig.from_dict(config["train"])
        train_cfg = TrainConfig.from_dict({**stored.to_dict(), "epochs": train.epochs})
        iwae_samples = config.get("iwae_samples", iwae_samples)
        dataset = data.load(download=download)
        trainer = Trainer(vae, guide_obj, dataset, train_cfg)
        if "trainer" not in payload:
            raise CheckpointError(f"{paths['checkpoint']} holds no trainer state to resume from")
        trainer.load_state_dict(payload["trainer"])
        config["train"] = train_cfg.to_dict()
        metrics = [m for m in read_metrics(run_dir) if m["epoch"] <= trainer.epoch]
        atomic_write_text(paths["metrics"], "".join(json.dumps(m) + "\n" for m in metrics))
        log(f"resuming {run_dir} at epoch {trainer.epoch} of {train_cfg.epochs}")
    else:
        if is_run(run_dir):
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise CheckpointError(f"{run_dir} exists and is not a directory")
        train_cfg = train
        # Everything that can fail on bad input happens before the directory is created.
        dataset = data.load(download=download)
        set_seed(train_cfg.seed)
        vae, guide_obj = build_model_and_guide(model, guide, x_shape=dataset.x_shape)
        vae.to(device)
        guide_obj.to(device)
        trainer = Trainer(vae, guide_obj, dataset, train_cfg)
        config = {
            "format": "pyro-vae-run",
            "kind": "flow" if isinstance(vae, FlowModel) else "vae",
            "model": vae.spec,
            "guide": guide_obj.spec,
            "data": asdict(data),
            "train": train_cfg.to_dict(),
            "iwae_samples": iwae_samples,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.makedirs(run_dir, exist_ok=True)
        metrics = []
        if isinstance(vae, FlowModel):
            log(f"training the {vae.spec['name']} density flow (exact likelihood) on {dataset.describe()}")
        else:
            log(f"training {vae.spec['name']} VAE with {guide_obj.spec['name']} guide on {dataset.describe()}")
        log(f"run directory: {run_dir}")
    atomic_write_json(paths["config"], config)

    epochs = range(trainer.epoch, train_cfg.epochs)
    bar = None
    if progress and len(epochs):
        from tqdm.auto import tqdm

        bar = tqdm(total=train_cfg.epochs, initial=trainer.epoch, desc="epochs", unit="ep")
    try:
        for _ in epochs:
            m = trainer.train_epoch()
            metrics.append(m)
            # metrics first, then the checkpoint: a crash in between leaves a metrics line
            # beyond the checkpoint, which resume drops.
            with open(paths["metrics"], "a") as f:
                f.write(json.dumps(m) + "\n")
            save_checkpoint(paths["checkpoint"], vae, guide_obj, {"trainer": trainer.state_dict()})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{-m['train_loss']:.1f}", test_elbo=f"{m['test_elbo']:.1f}",
                                kl=f"{m['test_kl']:.1f}")
    finally:
        if bar is not None:
            bar.close()
    if not os.path.exists(paths["checkpoint"]):  # zero epochs asked: still a loadable run
        save_checkpoint(paths["checkpoint"], vae, guide_obj, {"trainer": trainer.state_dict()})

    _figures(run_dir, vae, dataset, metrics, seed=train_cfg.seed, guide=guide_obj)
    result = evaluate_model(vae, guide_obj, dataset, "test", iwae_samples, progress=progress)
    result["epochs"] = trainer.epoch
    result["train_seconds"] = sum(m["seconds"] for m in metrics)
    atomic_write_json(paths["eval"], result)
    return result


def evaluate_run(
    run_dir: str,
    iwae_samples: int = 5000,
    split: str = "test",
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    download: bool = False,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Evaluate a run (optionally on another dataset of the same image shape); write eval.json."""
    vae, guide, config, payload = load_run(run_dir, device=device)
    data_cfg = DataConfig.from_dict(config["data"])
    if dataset is not None:
        data_cfg.name = dataset
        data_cfg.train_size = data_cfg.test_size = None
    if data_dir is not None:
        data_cfg.data_dir = data_dir
    data = data_cfg.load(download=download)
    result = evaluate_model(vae, guide, data, split, iwae_samples, seed=seed, progress=progress)
    result["epochs"] = int(payload.get("trainer", {}).get("epoch", 0))
    atomic_write_json(_paths(run_dir)["eval"], result)
    return result


def sample_run(
    run_dir: str,
    n: int = 64,
    out: Optional[str] = None,
    seed: int = 0,
    device: str = "cpu",
    temperature: Optional[float] = None,
) -> str:
    """Write a grid of ``n`` images decoded from z ~ p(z) (for a flow model: samples at
    ``temperature``, z ~ N(0, T² I)); return the file's path."""
    if n < 1:
        raise ConfigError(f"--n must be positive, got {n}")
    if temperature is not None and temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    vae, _, _, _ = load_run(run_dir, device=device)
    if temperature is not None and not isinstance(vae, FlowModel):
        raise ConfigError("--temperature applies to flow models (nice, realnvp, glow) only")
    out = out or os.path.join(run_dir, "samples.png")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {out}: directory {parent} does not exist")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = vae.generate(n) if temperature is None else vae.generate(n, temperature)
    save_grid(images, out, nrow=max(1, int(round(n**0.5))))
    return out
