"""``pyro-vae train``: train (or resume) a run in its directory, then evaluate it.

:func:`main` is the command: it turns the flags into a :class:`~inference.config.RunConfig`
(the model's own defaults filling in what was not given), names the run, and trains it —
in this process, under ``torchrun``, or in ``--nproc N`` processes it launches. The library does the work — :class:`~pyro_vae.infer.trainer.Trainer` fits, validates and
selects, the evaluation measures — and this module keeps the run directory: the config
first, then after every epoch a metrics line, TensorBoard's events
(:mod:`inference.tensorboard`), an atomic ``checkpoint.pt`` and, when the validation ELBO
improved, ``best.pt`` (after it: :mod:`inference.checkpoint`), and with ``--tracker mlflow``
the epoch's metrics in MLflow (:mod:`inference.tracking`); at the end (the last epoch, or an
early stop) the figures and ``eval.json`` of the best weights on the test split, and their
latent space of the test images in TensorBoard's projector.

In a ``torch.distributed`` process group every rank runs these functions (the trainer and
the evaluation are collective); rank 0 alone writes the run directory and prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae import plugins
from pyro_vae.build import build_model_and_guide, check_specs, model_class
from pyro_vae.contract import Model
from pyro_vae.data import ImageDataset, load_dataset
from pyro_vae.data_settings import ALL_LABELS
from pyro_vae.errors import CheckpointError, ConfigError, OutputError
from pyro_vae.infer import distributed
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.trainer import Trainer, set_seed

from .args import given_flag_names
from .checkpoint import (best_is_behind, build_from_checkpoint, save_best, save_checkpoint, select_weights,
                         stopping)
from .config import Choices, DataConfig, RunConfig, defaults_for
from .distributed import check_device, process_group
from .evaluate import evaluate_model, evaluation_figures, record_weights, summarize
from .io import append_text, atomic_write_json, atomic_write_text, check_writable
from .launch import launch
from .plots import loss_plot, reconstruction_grid, save_grid
from .restore import (apply_labels, check_sources, dataset_path, load_data, load_run, record_dataset,
                      record_sources)
from .rundir import (CONFIG, EVAL, FIGURES, check_new_run, clean_run, describe_checkpoint, paths, read_config,
                     read_metrics, run_dataset)
from .sample import figure_samples, image_labels
from .settings import TrainOptions
from .tensorboard import Board
from .tracking import MLflowTracker, logs_to_mlflow

#: Rows of ``samples_temperature.png`` for a flow model (T = 1 is the model itself).
FLOW_TEMPERATURES = (0.5, 0.7, 0.85, 1.0)


def main(opts: TrainOptions, restart: Optional[bool]) -> int:
    """``pyro-vae train``: ``restart`` is what :meth:`TrainOptions.check_paths` said of ``--out``."""
    run = opts.run
    config = None if run.resume else run_config(opts)
    if run.out is None and "WORLD_SIZE" not in os.environ:
        # named before any process starts, so that every message (and every rank) names it
        run.out = default_out(config)
        opts.argv += ["--out", run.out]
        restart = opts.check_paths()
    if run.nproc is not None:
        check_device(run.device)  # here, not in every worker
        return launch(run.nproc, opts.argv, out=run.out)
    with process_group(run.device) as (device, is_main):
        check_device(device)
        log = print if is_main else (lambda line: None)
        kwargs = dict(download=run.download, progress=not run.no_progress, device=device, log=log,
                      tensorboard=not run.no_tensorboard, tracker=run.tracker)
        if run.resume:
            given = opts.given["TrainConfig"]
            result = resume_run(run.out, epochs=given.get("epochs"), patience=given.get("patience"), **kwargs)
        else:
            if run.out is None:  # under torchrun: rank 0 names the run for all
                run.out = distributed.broadcast(default_out(config))
            result = train_run(run.out, config, restart=restart, **kwargs)
        log(summarize(result))
        if not run.resume:
            log(f"run directory: {run.out}")
    return 0


def run_config(opts: TrainOptions) -> RunConfig:
    """The configuration of a new run from the flags given, the model's defaults filling in
    the rest; every check of the flags happens here, before any process group or data."""
    given = opts.given
    choices = Choices(**given["Choices"])
    cls = model_class(choices.model)
    if not cls.has_latent:
        latent_only = given_flag_names(given, where=lambda meta: meta["latent"])
        if latent_only:
            raise ConfigError(
                f"{', '.join(latent_only)} cannot be used with the density flow {choices.model!r}: it has "
                "no latent variable (its guide is empty and its likelihood is exact)"
            )
    defaults = defaults_for(choices.model, cls.has_latent, choices.prior)
    data_given = dict(given["DataConfig"])
    if "name" in data_given:  # a path is stored absolute, so the run works from anywhere
        data_given["name"] = dataset_path(data_given["name"])
    data = DataConfig(**{"binarize": defaults.binarize, **data_given,
                         "data_dir": os.path.abspath(data_given.get("data_dir", "data"))})
    train_defaults = dict(defaults.train)
    if data.valid_fraction == 0:  # no validation split: a default patience has nothing to stop on
        train_defaults.pop("patience", None)
    train = TrainConfig(**{**train_defaults, **given["TrainConfig"]})
    model, guide, prior = choices.specs(cls.has_latent, data.binarize)
    if cls.has_latent:  # the model's own defaults, under what --set gave
        model = {**defaults.model, **(defaults.static_model if data.binarize == "static" else {}), **model}
    check_specs(model, guide, prior, binary=data.binarize != "none")  # before any data are loaded
    if cls.label_is_latent:  # a model that sums its label out: not every objective can
        train.check_enumeration(choices.model)
        data = dataclasses.replace(data, labels_per_class=data.labels_per_class or ALL_LABELS)
    elif data.labels_per_class is not None:
        raise ConfigError(f"labels_per_class applies to a model that learns from a few labels (ssvae), not to "
                          f"{choices.model!r}" + (": a conditional VAE learns from every label"
                                                  if choices.condition else ""), params=("labels_per_class",))
    iwae_samples = given["RunConfig"].get("iwae_samples", defaults.final_iwae_samples)
    return RunConfig(model, guide, prior, data, train, iwae_samples, kind="vae" if cls.has_latent else "flow")


def default_out(config: RunConfig) -> str:
    """``runs/<time>-<model>-<guide>`` (a component named by import path by its own name)."""
    model, guide = (plugins.display_name(config.model["name"]).rpartition(":")[2],
                    plugins.display_name(config.guide["name"]).rpartition(":")[2])
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{guide}")


def train_run(
    run_dir: str,
    config: RunConfig,
    download: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str = "cpu",
    restart: Optional[bool] = None,
    tensorboard: bool = True,
    tracker: Optional[str] = None,
) -> Dict[str, Any]:
    """Train a new run in ``run_dir`` (created) as ``config`` says, and evaluate it.

    ``config``'s specs may leave options out: the run records the full specs of what was
    built (every default filled in, and the image shape of the data) and where the data
    are and what identifies them (:func:`~inference.rundir.record_dataset`). A directory that
    holds only the ``config.json`` of a run stopped before its first checkpoint is started
    afresh; every other existing run is refused (:func:`~inference.rundir.check_new_run`,
    which ``restart`` says the caller has already run). ``tensorboard=False`` writes no
    TensorBoard events; ``tracker="mlflow"`` logs to MLflow too.

    Returns:
        the final evaluation (the content of ``eval.json``).
    """
    if restart is None:
        restart = check_new_run(run_dir)
    # Everything that can fail on bad input happens before the directory is created.
    dataset = load_dataset(**config.data.load_kwargs(), download=download)
    data_config = apply_labels(dataset, config.data, config.model)
    set_seed(config.train.seed)
    model, guide = build_model_and_guide(config.model, config.guide, config.prior, x_shape=dataset.x_shape,
                                         num_classes=dataset.num_classes)
    model.to(device)
    guide.to(device)
    trainer = Trainer(model, guide, dataset, config.train, log=log)
    config = built_config(config, model, guide)
    splits: Dict[str, Any] = {split: dataset.num_examples(split) for split in dataset.splits}
    if "valid_split" in dataset.source:
        splits["valid_from"] = dataset.source["valid_split"]
    data = record_dataset(data_config, run_dir, dataset.source.get("fingerprint"))
    config = record_sources(dataclasses.replace(config, data=dataclasses.replace(data, splits=splits)))
    if distributed.is_main():
        os.makedirs(run_dir, exist_ok=True)
        if restart:  # what a start that never reached a checkpoint left behind
            clean_run(run_dir)
            if os.path.exists(paths(run_dir)["metrics"]):
                os.unlink(paths(run_dir)["metrics"])
        atomic_write_json(paths(run_dir)["config"], config.to_dict())
        model_name, guide_name = (plugins.display_name(m.spec["name"]) for m in (model, guide))
        what = (f"{model_name} VAE with {guide_name} guide" if model.has_latent
                else f"the {model_name} density flow (exact likelihood)")
        ranks = distributed.world()[1]
        log(f"training {what} on {dataset.describe()}" + (f", {ranks} processes" if ranks > 1 else ""))
        if not dataset.has_split("valid"):
            log("no validation split (--valid-fraction 0): nothing is selected, the last epoch's weights "
                "are evaluated" + (" (averaged)" if config.train.ema else ""))
        log(f"run directory: {run_dir}")
    return _fit(run_dir, model, guide, dataset, trainer, config, [], progress, tensorboard, tracker, log)


def resume_run(
    run_dir: str,
    epochs: Optional[int] = None,
    patience: Optional[int] = None,
    download: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str = "cpu",
    tensorboard: bool = True,
    tracker: Optional[str] = None,
) -> Dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint, to ``epochs`` in all (its
    own number when ``None``) and with ``patience`` (its own when ``None``), exactly as if it
    had not stopped; then evaluate it.

    A run stopped before its first checkpoint is started again from its ``config.json``. A
    run is never shortened, and a finished, evaluated run is refused unless ``epochs`` asks
    for more — or, for a run that stopped early, ``patience`` asks for more: nothing is
    written before these checks. A ``best.pt`` that a kill left behind ``checkpoint.pt`` is
    written again from it.
    """
    original = read_config(run_dir)
    check_writable(run_dir)
    changes = {k: v for k, v in (("epochs", epochs), ("patience", patience)) if v is not None}
    if not os.path.exists(paths(run_dir)["checkpoint"]):
        log(f"{run_dir} holds no checkpoint (it stopped before its first epoch ended): starting it again")
        original = dataclasses.replace(original, train=dataclasses.replace(original.train, **changes))
        check_sources(original)
        restarted = dataclasses.replace(original, data=run_dataset(run_dir, original.data))
        return train_run(run_dir, restarted, download=download, progress=progress, log=log, device=device,
                         restart=True, tensorboard=tensorboard, tracker=tracker)
    model, guide, config, payload = load_run(run_dir, device=device, checkpoint="train")
    config = built_config(config, model, guide)  # a run of an older version: today's spellings
    if "trainer" not in payload:
        raise CheckpointError(f"{paths(run_dir)['checkpoint']} holds no trainer state to resume from")
    done = int(payload["trainer"]["epoch"])
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    target = config.train.epochs
    if target < done:
        raise ConfigError(f"--epochs {target} is fewer than the {done} epochs {run_dir} has completed "
                          "(a run is never shortened)")
    evaluated = os.path.exists(paths(run_dir)["eval"])
    state = stopping(payload, config.train.patience)
    if state.stopped and evaluated:
        raise ConfigError(f"{run_dir} stopped early at epoch {done}: its validation ELBO has not improved for "
                          f"{state.stale} epochs since epoch {state.best_epoch} (patience {config.train.patience}); "
                          f"pass --patience N with N > {state.stale} to train it further "
                          f"(or `pyro-vae evaluate {run_dir}`)")
    if target == done and evaluated:
        raise ConfigError(f"{run_dir} has completed its {done} epochs and been evaluated; pass --epochs N "
                          f"with N > {done} to train it further (or `pyro-vae evaluate {run_dir}`)")
    dataset = load_data(run_dir, config.data, download=download)
    apply_labels(dataset, config.data, config.model)
    trainer = Trainer(model, guide, dataset, config.train, log=log)
    trainer.load_state_dict(payload["trainer"])
    if distributed.is_main() and best_is_behind(payload, paths(run_dir)["best"]):
        save_best(paths(run_dir)["best"], *trainer.evaluated(), done, state.best, trainer.average is not None)
    on_disk = read_metrics(run_dir)
    metrics = [m for m in on_disk if m["epoch"] <= trainer.epoch]
    if distributed.is_main():
        if config != original:  # more epochs, or a run of an older version
            atomic_write_json(paths(run_dir)["config"], config.to_dict())
        if metrics != on_disk or _torn(paths(run_dir)["metrics"], len(on_disk)):
            # lines of epochs beyond the checkpoint (a crash between the two writes), or torn
            atomic_write_text(paths(run_dir)["metrics"], "".join(json.dumps(m) + "\n" for m in metrics))
        log(f"resuming {run_dir} at epoch {trainer.epoch} of {config.train.epochs}")
    return _fit(run_dir, model, guide, dataset, trainer, config, metrics, progress, tensorboard, tracker, log)


def _torn(path: str, whole: int) -> bool:
    """Whether ``path`` holds more (non-empty) lines than the ``whole`` ones read from it."""
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) != whole


def built_config(config: RunConfig, model: Model, guide: nn.Module) -> RunConfig:
    """``config`` with the full specs of what was built from it (every default filled in)."""
    return dataclasses.replace(config, model=model.spec, guide=guide.spec,
                               prior=model.prior.spec if model.has_latent else None,
                               kind="vae" if model.has_latent else "flow")


def _fit(run_dir: str, model: Model, guide: nn.Module, dataset: ImageDataset, trainer: Trainer,
         config: RunConfig, metrics: List[Dict[str, Any]], progress: bool, tensorboard: bool = True,
         tracker: Optional[str] = None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The epochs still to run, each ending in a metrics line, TensorBoard events, a
    checkpoint, ``best.pt`` when it is the best so far (and MLflow metrics); then the figures,
    the final evaluation of the best weights (:func:`~inference.checkpoint.select_weights`)
    and the projector."""
    main = distributed.is_main()
    board = Board(run_dir, trainer.epoch, config.train.epochs, enabled=tensorboard and main)
    mlflow = MLflowTracker(run_dir, config, enabled=main and logs_to_mlflow(run_dir, tracker))
    status = "FAILED"
    try:
        _epochs(run_dir, model, guide, dataset, trainer, config, metrics, progress and main, board, mlflow)
        if trainer.stopped and main:
            log(f"stopped early after epoch {trainer.epoch}: the validation ELBO has not improved for "
                f"{trainer.stopping.stale} epochs (best: epoch {trainer.stopping.best_epoch}, "
                f"{trainer.stopping.best:.2f})")
        payload = {"model_spec": model.spec, "guide_spec": guide.spec, "prior_spec": config.prior,
                   "model_state": model.state_dict(), "guide_state": guide.state_dict(),
                   "trainer": trainer.selection_state()}
        payload["selected"] = select_weights(payload, "best", paths(run_dir)["best"])
        best_model, best_guide = build_from_checkpoint({**payload, **payload["selected"]})
        best_model.to(trainer.device).eval()
        best_guide.to(trainer.device).eval()
        if main:
            run_figures(run_dir, best_model, best_guide, dataset, metrics, seed=config.train.seed)
        result = evaluate_model(best_model, best_guide, dataset, "test", config.iwae_samples,
                                progress=progress and main, sharded=True)
        record_weights(result, payload, config)
        result["train_seconds"] = sum(m["seconds"] for m in metrics)
        if main:
            evaluation_figures(run_dir, result)
            atomic_write_json(paths(run_dir)["eval"], result)
            board.log_final(result, summarize(result))
            board.log_projector(best_model, best_guide, dataset, seed=config.train.seed, step=trainer.epoch)
            mlflow.log_final(result, [os.path.join(run_dir, name) for name in (CONFIG, EVAL) + FIGURES])
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        board.close()
        try:
            mlflow.close(status)
        except OutputError:
            if status == "FINISHED":  # else the error that stopped the run is the one to report
                raise
    return result


def _epochs(run_dir: str, model: Model, guide: nn.Module, dataset: ImageDataset, trainer: Trainer,
            config: RunConfig, metrics: List[Dict[str, Any]], progress: bool, board: Board,
            mlflow: MLflowTracker) -> None:
    """Train the epochs still to run (until patience runs out); append each one's metrics to
    ``metrics``."""
    p = paths(run_dir)
    main = distributed.is_main()
    epochs = range(trainer.epoch, config.train.epochs)
    bar = None
    if progress and len(epochs) and not trainer.stopped:
        bar = tqdm(total=config.train.epochs, initial=trainer.epoch, desc="epochs", unit="ep")
    # the epoch of the checkpoint on disk (None: none yet), for the message of a stop
    checkpointed = trainer.epoch if os.path.exists(p["checkpoint"]) else None
    try:
        for _ in epochs:
            if trainer.stopped:
                break
            m = trainer.train_epoch()
            metrics.append(m)
            state = {"trainer": trainer.state_dict()}  # collective: every rank
            if main:
                # metrics first, then the checkpoint: a crash in between leaves a metrics
                # line beyond the checkpoint, which resume drops (and TensorBoard purges);
                # best.pt last: a crash before it leaves checkpoint.pt the authority on it
                append_text(p["metrics"], json.dumps(m) + "\n")
                board.log_epoch(m, model, guide, dataset, seed=config.train.seed)
                save_checkpoint(p["checkpoint"], model, guide, state)
                mlflow.log_epoch(m)  # after the checkpoint: a store that fails loses no epoch
            checkpointed = trainer.epoch
            if main and m.get("best_epoch") == m["epoch"]:
                save_best(p["best"], *trainer.evaluated(), m["epoch"], m["valid_elbo"], trainer.average is not None)
            if bar is not None:
                bar.update(1)
                shown = {"train": f"{-m['train_loss']:.1f}"}
                if "valid_elbo" in m:
                    shown.update(valid_elbo=f"{m['valid_elbo']:.1f}", best=m["best_epoch"])
                bar.set_postfix(shown)
    except (KeyboardInterrupt, RuntimeError, MemoryError) as err:
        # SIGINT or SIGTERM, no memory, a peer gone: the message says where the run stands
        err.checkpoint_epoch = checkpointed  # type: ignore[attr-defined]
        raise
    except FloatingPointError as err:  # a resume would repeat the very same steps
        raise FloatingPointError(f"{err}; {_after_nan(run_dir, checkpointed)}") from None
    except OutputError as err:  # a full disk: the previous checkpoint is intact
        raise OutputError(f"{err}; {describe_checkpoint(run_dir, checkpointed)}") from None
    finally:
        if bar is not None:
            bar.close()
    if not epochs:  # zero epochs asked: still a loadable run
        state = {"trainer": trainer.state_dict()}
        if main and not os.path.exists(p["checkpoint"]):
            save_checkpoint(p["checkpoint"], model, guide, state)


def _after_nan(run_dir: str, checkpointed: Optional[int]) -> str:
    if checkpointed is None:
        return (f"{run_dir} holds no checkpoint: start it again with a smaller --lr or a --kl-warmup "
                f"(pyro-vae train --out {run_dir} --lr …)")
    return (f"the last checkpoint (epoch {checkpointed}) is {paths(run_dir)['checkpoint']}, but a resume "
            "would repeat the same steps: start a new run with a smaller --lr or a --kl-warmup")


def run_figures(run_dir: str, model: Model, guide: nn.Module, data: ImageDataset,
                metrics: List[Dict], seed: int) -> None:
    """``samples.png``, ``reconstructions.png`` (through the guide; a density flow's exact
    round trip x → z → x) of ``model`` — the selected weights, in evaluation mode — then
    ``loss.png``, and a flow's ``samples_temperature.png``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images, nrow = figure_samples(model, 64)  # a model that takes labels: a row per class
        save_grid(images, os.path.join(run_dir, "samples.png"), nrow=nrow)
        x = data.eval_data("test", dequantize=model.dequantize)[:32]
        x = x.to(next(model.parameters()).device)
        recon = model.reconstruct(x, guide, image_labels(model, data, list(range(len(x))), x))
        save_grid(reconstruction_grid(x, recon), os.path.join(run_dir, "reconstructions.png"),
                  nrow=min(8, len(x)))
        if not model.has_latent:  # one row of 8 samples per temperature
            grid = torch.cat([model.generate(8, t) for t in FLOW_TEMPERATURES])
            save_grid(grid, os.path.join(run_dir, "samples_temperature.png"))
    if metrics:
        loss_plot(metrics, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))
