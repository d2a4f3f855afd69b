"""``pyro-vae evaluate``: the ELBO and IWAE log-likelihood of a run, as ``eval.json`` — for a
conditional VAE of log p(x | y), for the semi-supervised VAE of log p(x) with the label summed
out, with the accuracy of its classifier q(y | x) and its confusion matrix (``confusion.png``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict

from torch import nn

from pyro_vae.contract import Model
from pyro_vae.data import ImageDataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer import distributed
from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.labels import classification
from pyro_vae.infer.usage import latent_usage

from .checkpoint import stopping
from .config import RunConfig, defaults_for
from .distributed import check_device
from .io import atomic_write_json
from .plots import confusion_figure
from .restore import dataset_path, load_data, load_run
from .rundir import CONFUSION, paths
from .settings import EvaluateOptions
from .tensorboard import Board


def evaluate_model(
    model: Model,
    guide: nn.Module,
    data: ImageDataset,
    split: str = "test",
    iwae_samples: int = 5000,
    seed: int = 0,
    progress: bool = False,
    sharded: bool = False,
) -> Dict[str, Any]:
    """ELBO / IWAE of ``split`` with the keys of ``eval.json``: for a model with a latent
    also the KL per dimension and the active units (in total and per latent site, i.e. per
    layer of a hierarchical VAE); for grey levels bits/dim.

    A model that takes labels is judged given the split's labels — a conditional VAE on
    log p(x | y) (``likelihood``) — and a semi-supervised VAE on log p(x), plus the accuracy
    and the confusion matrix of its classifier where the split has labels.

    With ``sharded=True`` inside a process group, every rank (each must call this)
    evaluates its share of the images; rank 0 adds the latent usage and the classifier's
    accuracy (cheap passes)."""
    if tuple(data.x_shape) != model.x_shape:
        raise ConfigError(
            f"the model was trained on images of shape {model.x_shape}; "
            f"{data.name} has {tuple(data.x_shape)}"
        )
    model.check_data(data.binary)
    device = next(model.parameters()).device
    x = data.eval_data(split, dequantize=model.dequantize).to(device)
    if not model.has_latent:  # no latent site: the k = 1 "IWAE" is log p(x) itself
        iwae_samples = 1
    labels = data.labels(split)
    if labels is not None and model.num_classes is not None:  # another label set: refused before the work
        model.check_y(labels, len(labels), values=True)
    given = None  # the labels the bounds are conditioned on: a conditional VAE's
    if model.num_classes is not None and not model.label_is_latent:
        if labels is None:
            raise DataError(f"a conditional VAE is judged on log p(x | y), but the {split} split of {data.name} "
                            "has no labels")
        given = labels.to(device)
    result = evaluate(model, guide, x, num_samples=iwae_samples, seed=seed, progress=progress,
                      sharded=sharded, y=given)
    result.update(dataset=data.name, split=split, binarize=data.binarize)
    result["estimator"] = f"iwae-{iwae_samples}" if model.has_latent else "exact"
    if model.num_classes is not None:
        result["likelihood"] = "p(x | y)" if given is not None else "p(x)"
        if model.label_is_latent:  # k samples for each class of the sum over y
            result["label_sum"] = model.num_classes
    if model.label_is_latent and labels is not None and distributed.is_main():
        result.update(classification(model, x, labels.to(device)))
    if not data.binary:
        result["bits_per_dim"] = model.bits_per_dim(result["nll"])
        result["elbo_bits_per_dim"] = model.bits_per_dim(-result["elbo"])
    if model.has_latent and distributed.is_main():  # how many latent dimensions carry information
        usage = latent_usage(model, guide, x, seed=seed, y=given)
        result["active_units"] = usage["active_units"]
        result["kl_per_dim"] = usage["kl_per_dim"]
        # per latent site (per layer of a hierarchical VAE: "z_2", "z_1"): KL (exact given the
        # layers above, averaged over their draws) and active units
        result["latent_sites"] = {name: {"dims": site["dims"], "kl": site["kl_total"],
                                         "active_units": site["active_units"]}
                                  for name, site in usage["sites"].items()}
    return result


def summarize(result: Dict[str, Any]) -> str:
    """One human line: test ELBO and IWAE NLL (nats; bits/dim for grey levels), and which
    weights they are of."""
    if result.get("estimator") == "exact":  # a density flow: no latent, no bound
        return (
            f"{result['split']} log-likelihood {-result['nll']:.2f} nats (exact: no latent "
            f"variable; NLL {result['nll']:.2f} ± {result['nll_sem']:.2f}) on "
            f"{result['num_examples']} images; {result['bits_per_dim']:.3f} bits/dim"
        )
    k = f"k={result['iwae_samples']}" + (" per class, y summed out" if result.get("label_sum") else "")
    what = "log p(x | y)" if result.get("likelihood") == "p(x | y)" else "log-likelihood"
    line = (
        f"{result['split']} ELBO {result['elbo']:.2f} nats, "
        f"IWAE ({k}) {what} {-result['nll']:.2f} nats "
        f"(NLL {result['nll']:.2f} ± {result['nll_sem']:.2f}) on {result['num_examples']} images"
    )
    if "accuracy" in result:
        line += f"; accuracy {100 * result['accuracy']:.2f} %"
    if "bits_per_dim" in result:
        line += f"; {result['bits_per_dim']:.3f} bits/dim"
    if "active_units" in result:
        line += f"; KL {result['kl']:.2f} nats, {result['active_units']} active units"
    layers = result.get("latent_sites") or {}
    if len(layers) > 1:
        line += " (" + ", ".join(
            f"{name}: KL {'?' if site['kl'] is None else format(site['kl'], '.2f')}, "
            f"{site['active_units']}/{site['dims']} active" for name, site in layers.items()) + ")"
    return line + weights_text(result)


def weights_text(result: Dict[str, Any]) -> str:
    """Which weights a result is of, for its summary line: ``; best checkpoint (epoch 47 of
    57, averaged)`` — nothing for an ``eval.json`` of pyro-vae ≤ 0.2, which does not say."""
    if "checkpoint" not in result:
        return ""
    text = f"; {result['checkpoint']} checkpoint (epoch {result['checkpoint_epoch']}"
    if result.get("epochs") and result["epochs"] != result["checkpoint_epoch"]:
        text += f" of {result['epochs']}"
    if result.get("stopped_early"):
        text += ", stopped early"
    return text + (", averaged weights)" if result.get("averaged") else ")")


def record_weights(result: Dict[str, Any], payload: Dict[str, Any], config: RunConfig) -> Dict[str, Any]:
    """``result`` with which weights it is of — ``checkpoint`` (``best`` or ``last``),
    ``checkpoint_epoch``, ``averaged`` (the moving average), as
    :func:`~inference.restore.load_run` selected them from ``payload`` (``checkpoint.pt``) — the
    run's ``epochs`` and its best epoch, and whether it ``stopped_early``: the keys
    ``eval.json`` holds for them."""
    selected = payload["selected"]
    state = stopping(payload, config.train.patience)
    result.update(checkpoint=selected["checkpoint"], checkpoint_epoch=int(selected["epoch"]),
                  averaged=bool(selected["averaged"]), epochs=int(payload.get("trainer", {}).get("epoch", 0)),
                  best_epoch=state.best_epoch or None, stopped_early=state.stopped)
    return result


def evaluation_figures(run_dir: str, result: Dict[str, Any]) -> None:
    """The figures of an evaluation in the run directory: a classifier's confusion matrix."""
    if "confusion" in result:
        confusion_figure(result["confusion"], os.path.join(run_dir, CONFUSION), result["accuracy"])


def evaluate_run(opts: EvaluateOptions) -> Dict[str, Any]:
    """Evaluate a run (optionally on another dataset of the same image shape); write eval.json.

    ``opts.iwae_samples=None`` takes the model's own default (5000; fewer for an expensive
    decoder, :func:`~inference.config.defaults_for`).
    """
    opts.check_paths()  # before the work, not after it
    model, guide, config, payload = load_run(opts.run_dir, device=opts.device, checkpoint=opts.checkpoint)
    iwae_samples = opts.iwae_samples
    if iwae_samples is None:
        iwae_samples = defaults_for(config.model["name"], model.has_latent).eval_iwae_samples
    data_cfg = config.data
    if opts.dataset is not None:  # other data: the folder options that fix the image shape stay
        dataset = dataset_path(opts.dataset)
        folder = os.path.isdir(dataset)
        data_cfg = dataclasses.replace(
            data_cfg, name=dataset, train_size=None, test_size=None, fingerprint=None, path_from_run=None,
            test_fraction=None, dataset_set=(), labels_per_class=None, labelled=None,
            valid_fraction=data_cfg.valid_fraction if opts.split == "valid" else 0.0,
            image_size=data_cfg.image_size if folder else None, channels=data_cfg.channels if folder else None)
    if opts.data_dir is not None:
        data_cfg = dataclasses.replace(data_cfg, data_dir=opts.data_dir)
    data = load_data(opts.run_dir, data_cfg, download=opts.download)
    result = evaluate_model(model, guide, data, opts.split, iwae_samples, seed=opts.seed,
                            progress=not opts.no_progress)
    record_weights(result, payload, config)
    evaluation_figures(opts.run_dir, result)
    atomic_write_json(paths(opts.run_dir)["eval"], result)
    if opts.projector:  # at the run's last step, beside training's (nothing is purged)
        board = Board(opts.run_dir, result["epochs"], result["epochs"])
        try:
            board.log_projector(model, guide, data, seed=opts.seed, step=result["epochs"], split=opts.split)
        finally:
            board.close()
    return result


def main(opts: EvaluateOptions, _: Any = None) -> int:
    """``pyro-vae evaluate``."""
    check_device(opts.device)
    print(summarize(evaluate_run(opts)))
    print(f"wrote {paths(opts.run_dir)['eval']}")
    return 0
