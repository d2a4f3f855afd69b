"""The run directory: its files, and reading them back.

A run directory holds ``config.json`` (a :class:`~inference.config.RunConfig`),
``checkpoint.pt`` (written atomically after every epoch), ``metrics.jsonl`` (one line per
epoch), ``samples.png``, ``reconstructions.png``, ``loss.png``, ``eval.json``, TensorBoard's
``tb/`` (and, for a density flow, ``samples_temperature.png``); ``posterior`` adds
``posterior/``. Every command works from the directory alone, and no command writes a
file of its own over one of the run's (:func:`check_output`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

from pyro_vae.contract import Model
from pyro_vae.data import ImageDataset, load_dataset
from pyro_vae.errors import CheckpointError, ConfigError, DataError
from torch import nn

from .checkpoint import build_from_checkpoint, load_checkpoint
from .config import DataConfig, RunConfig

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
#: Files a run's commands write; nothing else may be written over them.
RUN_FILES = (CONFIG, CHECKPOINT, METRICS, EVAL, "samples.png", "reconstructions.png", "loss.png",
             "samples_temperature.png")


def paths(run_dir: str) -> Dict[str, str]:
    """``config``, ``checkpoint``, ``metrics``, ``eval``: the paths of a run's own files."""
    return {k: os.path.join(run_dir, v) for k, v in
            dict(config=CONFIG, checkpoint=CHECKPOINT, metrics=METRICS, eval=EVAL).items()}


def is_run(run_dir: str) -> bool:
    p = paths(run_dir)
    return os.path.exists(p["config"]) or os.path.exists(p["checkpoint"])


def check_output(path: str, allow: Tuple[str, ...] = ()) -> None:
    """Refuse to write ``path`` where its directory does not exist, or if it is one of a
    run directory's own files (or inside its ``tb/``), unless its name is in ``allow``
    (``sample`` rewrites ``samples.png``)."""
    parent, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {path}: directory {parent} does not exist")
    if os.path.basename(parent) == "tb" and is_run(os.path.dirname(parent)):
        raise ConfigError(f"{path} is inside the TensorBoard folder of a run; choose another file")
    if name in RUN_FILES and name not in allow and is_run(parent):
        raise ConfigError(f"{path} is the run's own {name}; choose another file")


def load_data(data: DataConfig, download: bool = False) -> ImageDataset:
    """The data of a run as its config says; data that changed since the run recorded
    them (an image folder whose files differ) are refused, naming the way around it."""
    dataset = load_dataset(**data.load_kwargs(), download=download)
    now = dataset.source.get("fingerprint")
    if data.fingerprint is not None and now != data.fingerprint:
        raise DataError(f"the files of {data.name} changed since the run was trained (fingerprint "
                        f"{data.fingerprint}, now {now}); to use them as they are, evaluate with "
                        f"--dataset {data.name}")
    return dataset


def read_config(run_dir: str) -> RunConfig:
    """The ``config.json`` of a run directory, validated (any version)."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run directory {run_dir} does not exist")
    path = paths(run_dir)["config"]
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir} is not a pyro-vae run directory (no {CONFIG})")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None
    return RunConfig.from_dict(config, path)


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """The lines of ``metrics.jsonl`` that are whole (a crash mid-write may tear the last)."""
    path = paths(run_dir)["metrics"]
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
                    break  # a torn last line: keep what is whole
    return rows


def load_run(run_dir: str, device: str = "cpu") -> Tuple[Model, nn.Module, RunConfig, Dict[str, Any]]:
    """Rebuild a run's model and guide from its directory, on ``device``.

    Returns:
        ``(model, guide, config, checkpoint)``.
    """
    config = read_config(run_dir)
    payload = load_checkpoint(paths(run_dir)["checkpoint"])
    if (payload["model_spec"], payload["guide_spec"], payload.get("prior_spec")) != (
            config.model, config.guide, config.prior):
        raise CheckpointError(
            f"{run_dir}: the checkpoint's model/guide do not match {CONFIG} (foreign checkpoint?)"
        )
    model, guide = build_from_checkpoint(payload)
    model.to(device)
    guide.to(device)
    return model, guide, config, payload
