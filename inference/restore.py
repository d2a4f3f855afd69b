"""A run rebuilt from its directory: its model and guide from the checkpoint, its data
from where the run says they are (:mod:`inference.rundir` knows the format and finds them),
the code of a model, guide or dataset from outside pyro-vae from where the run recorded it —
refused when it is missing or has changed (:func:`check_sources`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from pyro_vae import plugins
from pyro_vae.build import code_sources, needs_labels
from pyro_vae.contract import Model
from pyro_vae.data import ImageDataset, load_dataset
from pyro_vae.data_settings import ALL_LABELS
from pyro_vae.datasets import DATASETS
from pyro_vae.errors import CheckpointError, DataError
from pyro_vae.labels import keep_labels, require_labels
from pyro_vae.plugins import check_source

from .checkpoint import build_from_checkpoint, load_checkpoint, select_weights
from .config import DataConfig, RunConfig
from .rundir import CONFIG, clean_run, fingerprint, paths, read_config, run_dataset


def dataset_path(name: str) -> str:
    """``name`` as given if it is a registered dataset or no existing path, else absolute
    (a dataset file or folder is recorded absolute, so the run works from anywhere; so is the
    file of a loader's import path, ``data.py:load``)."""
    if plugins.is_reference(name):
        return plugins.canonical(name)
    return os.path.abspath(name) if name not in DATASETS and os.path.exists(name) else name


def record_sources(config: RunConfig) -> RunConfig:
    """``config`` of a new run with where the code of its model, guide and dataset came from,
    for those from outside pyro-vae (:func:`~pyro_vae.build.code_sources`)."""
    sources = code_sources(config.model, config.guide, config.data.name)
    return dataclasses.replace(config, sources={kind: s.to_dict() for kind, s in sources.items()})


def check_sources(config: RunConfig) -> None:
    """Refuse a run whose code from outside pyro-vae is missing or has changed since it was
    recorded (one line, before the code is imported again)."""
    for kind in config.sources:
        check_source(kind, config.source(kind))  # type: ignore[arg-type]


def record_dataset(data: DataConfig, run_dir: str, source_fingerprint: Optional[str] = None) -> DataConfig:
    """``data`` of a new run with a dataset *file or folder* recorded so that the run can be
    moved: its absolute path, its path relative to the run directory and its fingerprint (a
    file's sha256; for a folder, ``source_fingerprint``, the folder source's hash of its files)."""
    if data.name in DATASETS or not os.path.exists(data.name):  # a name, even beside a file of that name
        return data
    path = os.path.abspath(data.name)
    stamp = fingerprint(path) if os.path.isfile(path) else source_fingerprint
    return dataclasses.replace(data, name=path, fingerprint=stamp,
                               path_from_run=os.path.relpath(path, os.path.abspath(run_dir)))


def load_data(run_dir: str, data: DataConfig, download: bool = False) -> ImageDataset:
    """The data of a run as its config says (found by :func:`run_dataset`); an image folder
    whose files changed since the run recorded them is refused, naming the way around it."""
    data = run_dataset(run_dir, data)
    dataset = load_dataset(**data.load_kwargs(), download=download)
    now = dataset.source.get("fingerprint")
    if os.path.isdir(data.name) and data.fingerprint is not None and now != data.fingerprint:
        raise DataError(f"the files of {data.name} changed since the run was trained (fingerprint "
                        f"{data.fingerprint}, now {now}); `pyro-vae evaluate --dataset {data.name}` "
                        "evaluates on them as they are")
    return dataset


def apply_labels(dataset: ImageDataset, data: DataConfig, model: Mapping[str, Any]) -> DataConfig:
    """The labels the run's model (its spec ``model``) learns from: none for a model without
    labels; otherwise the data must have labels (one clear error), and a semi-supervised run
    keeps those of its recorded pick — or, new, picks ``labels_per_class`` per class
    (:func:`~pyro_vae.labels.keep_labels`) and returns ``data`` recording the pick."""
    if not needs_labels(model):
        return data
    require_labels(dataset, f"the {model['name']} model" if model.get("condition") is None
                   else f"condition={model['condition']!r}")
    if data.labelled is not None:  # the run's own pick, whatever the picking rule is today
        if max(data.labelled, default=-1) >= len(dataset):
            raise CheckpointError(f"the run's labelled images ({len(data.labelled)}) are not all among the "
                                  f"{len(dataset)} training images of {data.name}: its data changed")
        dataset.labelled = torch.tensor(data.labelled)
        return data
    if data.labels_per_class in (None, ALL_LABELS):
        return data
    picked = keep_labels(dataset, data.labels_per_class, data.label_seed)
    return dataclasses.replace(data, labelled=tuple(picked.tolist()))


def load_run(run_dir: str, device: str = "cpu",
             checkpoint: str = "best") -> Tuple[Model, nn.Module, RunConfig, Dict[str, Any]]:
    """Rebuild a run's model and guide from its directory, on ``device`` (removing debris
    of killed writers first), with the weights ``checkpoint`` names (see
    :func:`~inference.checkpoint.select_weights`: ``best``, ``last``, or ``train`` to resume);
    in evaluation mode (dropout off) unless they are to be trained.

    Returns:
        ``(model, guide, config, checkpoint)``: ``checkpoint`` is ``checkpoint.pt`` as
        loaded, with ``"selected"``: which weights were loaded (``checkpoint``, ``epoch``,
        ``averaged``).
    """
    config = read_config(run_dir)
    check_sources(config)
    clean_run(run_dir)
    payload = load_checkpoint(paths(run_dir)["checkpoint"])
    if (payload["model_spec"], payload["guide_spec"], payload.get("prior_spec")) != (
            config.model, config.guide, config.prior):
        raise CheckpointError(
            f"{run_dir}: the checkpoint's model/guide do not match {CONFIG} (foreign checkpoint?)"
        )
    selected = select_weights(payload, checkpoint, paths(run_dir)["best"])
    model, guide = build_from_checkpoint({**payload, "model_state": selected.pop("model_state"),
                                          "guide_state": selected.pop("guide_state")})
    payload["selected"] = selected
    model.to(device)
    guide.to(device)
    if checkpoint != "train":
        model.eval()
        guide.eval()
    return model, guide, config, payload
