"""The run directory: its files, reading them back, and what may be written where.

A run directory holds ``config.json`` (a :class:`~inference.config.RunConfig`),
``checkpoint.pt`` (written atomically after every epoch), ``best.pt`` (the weights of the
best validation epoch, written after it), ``metrics.jsonl`` (one line per epoch),
``samples.png``, ``reconstructions.png``, ``loss.png``, ``eval.json``, TensorBoard's ``tb/``
(and, for a density flow, ``samples_temperature.png``; for the semi-supervised VAE
``confusion.png``); ``posterior`` adds ``posterior/``. Every command
works from the directory alone, wherever it was moved: a dataset file is found by its
absolute path or by its path relative to the run, and checked against its fingerprint (a
file's sha256, a folder's hash of its files); :mod:`inference.restore` rebuilds a run from it.

No command writes onto a run's own files except the command that owns them (``train``;
``evaluate`` its ``eval.json`` and ``confusion.png``; ``sample`` the run's ``samples.png``), and every check of an
output happens here, before the heavy imports and before any data are loaded. Importing
this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from pyro_vae.errors import CheckpointError, ConfigError, DataError, DatasetNotFoundError, OutputError
from pyro_vae.plugins import file_hash

from .config import FORMAT, DataConfig, RunConfig
from .io import check_can_create, check_output_file, check_writable, clean_stale_temps

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
#: The weights a command may use (``--checkpoint``): of the best validation epoch, or of the last.
CHECKPOINTS = ("best", "last")
METRICS = "metrics.jsonl"
EVAL = "eval.json"
POSTERIOR = "posterior"
#: TensorBoard's event files.
TB = "tb"
#: The MLflow run a run logs to (``--tracker mlflow``: :mod:`inference.tracking`).
MLFLOW = "mlflow.json"
#: A classifier's confusion matrix (``train`` and ``evaluate`` of a semi-supervised VAE).
CONFUSION = "confusion.png"
#: The figures ``train`` writes.
FIGURES = ("samples.png", "reconstructions.png", "loss.png", "samples_temperature.png", CONFUSION)
#: Every file a run owns.
RUN_FILES = (CONFIG, CHECKPOINT, BEST, METRICS, EVAL, MLFLOW) + FIGURES


def paths(run_dir: str) -> Dict[str, str]:
    """``config``, ``checkpoint``, ``best``, ``metrics``, ``eval``: the paths of a run's own files."""
    return {k: os.path.join(run_dir, v) for k, v in
            dict(config=CONFIG, checkpoint=CHECKPOINT, best=BEST, metrics=METRICS, eval=EVAL).items()}


def is_run(run_dir: str) -> bool:
    p = paths(run_dir)
    return os.path.exists(p["config"]) or os.path.exists(p["checkpoint"])


def _is_pyro_vae_config(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_not_a_file(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputError(f"--out {directory} exists and is not a directory")


def check_new_run(run_dir: str) -> bool:
    """Refuse a ``train --out`` that could damage something; say whether it *restarts* a
    run that stopped before its first checkpoint.

    Allowed: a directory that does not exist yet (and can be created), an empty one, one
    without run files, and one holding a pyro-vae ``config.json`` but no checkpoint (a run
    stopped by Ctrl-C, a NaN or a full disk before its first epoch ended: it holds no
    trained state). Refused: a run with a checkpoint, a foreign ``config.json``, and a
    directory holding a run's other files (``metrics.jsonl``, ``eval.json``, figures)
    without its ``config.json``.

    Returns:
        ``True`` if ``run_dir`` holds such a stopped run, which ``train`` starts afresh.
    """
    _check_not_a_file(run_dir)
    p = paths(run_dir)
    if os.path.exists(p["checkpoint"]):
        raise CheckpointError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if os.path.exists(p["config"]):
        if not _is_pyro_vae_config(p["config"]):
            raise CheckpointError(f"{run_dir} holds a {CONFIG} that is not a pyro-vae run config; "
                                  "choose another --out")
        check_writable(run_dir)
        return True
    if os.path.isdir(run_dir):
        debris = sorted(n for n in os.listdir(run_dir) if n in RUN_FILES)
        if debris:
            raise CheckpointError(f"{run_dir} holds {', '.join(debris)} but no {CONFIG}: not a run this "
                                  "command may start in (it would append to or replace them); choose "
                                  "another --out")
    check_can_create(run_dir)
    return False


#: The figures ``sample --interpolate I J`` writes into a run by default.
INTERPOLATION = re.compile(r"interpolation_\d+_\d+\.png")


def check_output(path: str, run_dir: Optional[str] = None, own: Tuple[str, ...] = (),
                 flag: str = "--out") -> None:
    """Refuse a file output (``flag``) that is a file a run owns — its own files, its
    figures, its interpolations — other than the names in ``own`` of ``run_dir`` (what the
    command itself writes there: ``sample`` its ``samples.png``), that lies in a run's
    TensorBoard folder or posterior analysis, or that cannot be written."""
    owner, name = os.path.split(os.path.abspath(path))
    parent = os.path.dirname(owner)
    for folder, what in ((TB, "the TensorBoard folder"), (POSTERIOR, "the posterior analysis")):
        if os.path.basename(owner) == folder and is_run(parent):
            raise OutputError(f"{flag} {path} is inside {what} of the run in {parent}; choose another file")
    if (name in RUN_FILES or INTERPOLATION.fullmatch(name)) and is_run(owner):
        mine = run_dir is not None and name in own and os.path.samefile(owner, run_dir)
        if not mine:
            raise OutputError(f"{flag} {path} is the {name} of the run in {owner} (the run's own {name}); "
                              "choose another file")
    check_output_file(path)


def check_run_output(path: str, run_dir: str, own: Tuple[str, ...] = ("samples.png",)) -> None:
    """Refuse an image ``--out`` that is not a writable ``.png`` path, or that is a file of a
    run (another run's, or this run's other than ``own``: what the command writes there)."""
    if os.path.isdir(path):
        raise OutputError(f"--out {path} is a directory; give a file name such as "
                          f"{os.path.join(path, own[0] if own else 'samples.png')}")
    check_output(path, run_dir, own)  # a run's own file is named as such, whatever its ending
    if not path.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {path}")


def check_analysis_output(out: str, run_dir: str) -> None:
    """Refuse a ``posterior --out`` directory that is a run, or another run's ``posterior/``."""
    _check_not_a_file(out)
    if is_run(out):
        raise OutputError(f"--out {out} is a run directory; give a directory of its own "
                          f"(default {os.path.join(run_dir, POSTERIOR)})")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.basename(os.path.abspath(out)) == POSTERIOR and is_run(parent) \
            and not os.path.samefile(parent, run_dir):
        raise OutputError(f"--out {out} is the posterior analysis of another run; choose another directory")
    check_can_create(out)


def read_config(run_dir: str) -> RunConfig:
    """The ``config.json`` of a run directory, validated (any version)."""
    if not os.path.isdir(run_dir):
        if os.path.exists(run_dir):
            raise CheckpointError(f"{run_dir} is a file, not a run directory")
        raise CheckpointError(f"run directory {run_dir} does not exist")
    path = paths(run_dir)["config"]
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir} is not a pyro-vae run directory (no {CONFIG})")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None
    return RunConfig.from_dict(config, path)


def check_trained(run_dir: str) -> RunConfig:
    """The config of a run that has a checkpoint (what ``evaluate``, ``sample`` and
    ``posterior`` need), checked before anything heavy is imported."""
    config = read_config(run_dir)
    if not os.path.isfile(paths(run_dir)["checkpoint"]):
        raise CheckpointError(f"{run_dir} holds no checkpoint: it stopped before its first epoch ended; "
                              f"train it with: pyro-vae train --resume --out {run_dir}")
    return config


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """The lines of ``metrics.jsonl`` that are whole (a crash mid-write may tear the last)."""
    path = paths(run_dir)["metrics"]
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # a torn last line: keep what is whole
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    break
                rows.append(row)
    return rows


#: The per-epoch held-out ELBO of a metrics line: the validation split's (pyro-vae ≥ 0.3), or
#: the test split's in the lines of pyro-vae ≤ 0.2, which monitored the test split.
HELD_OUT_KEYS = ("valid_elbo", "test_elbo")


def held_out_curve(metrics: List[Dict[str, Any]]) -> Tuple[str, List[Tuple[int, float]]]:
    """``(label, [(epoch, ELBO), …])``: the held-out ELBO per epoch of a run's metrics lines
    (validation; a 0.2 run's test split, labelled as such); no points without one."""
    for key in HELD_OUT_KEYS:
        points = [(m["epoch"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if points:
            return ("validation ELBO" if key == "valid_elbo" else "test ELBO (pyro-vae ≤ 0.2)"), points
    return "validation ELBO", []


def best_of(metrics: List[Dict[str, Any]]) -> Optional[Tuple[int, float]]:
    """``(epoch, validation ELBO)`` of the best epoch the last metrics line records (``None``:
    no validation split, or a run of pyro-vae ≤ 0.2)."""
    for m in reversed(metrics):
        if m.get("best_epoch"):
            return int(m["best_epoch"]), float(m["best_valid_elbo"])
    return None


def clean_run(run_dir: str) -> List[str]:
    """Remove debris of killed writers from the run (and its ``posterior/``); only the
    process that writes the run does it (rank 0 of a process group)."""
    if os.environ.get("RANK", "0") != "0":
        return []
    return clean_stale_temps(run_dir) + clean_stale_temps(os.path.join(run_dir, POSTERIOR))


def fingerprint(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes (what identifies a dataset file)."""
    return "sha256:" + file_hash(path)


def run_dataset(run_dir: str, data: DataConfig) -> DataConfig:
    """The run's data settings with its dataset file or folder found: at its recorded path,
    or at its path relative to the run directory (the run and its data moved together); a
    file is checked against its fingerprint here, a folder by :func:`load_data` (its source
    hashes the files it reads). Named datasets are returned as they are."""
    if data.fingerprint is None and data.path_from_run is None:
        if os.path.isabs(data.name) or os.path.exists(data.name) or \
                not os.path.isfile(os.path.join(run_dir, data.name)):
            return data  # a name, or a path of a run written before fingerprints
        return dataclasses.replace(data, name=os.path.join(run_dir, data.name))
    candidates = [data.name] + ([os.path.join(run_dir, data.path_from_run)] if data.path_from_run else [])
    found = next((c for c in candidates if os.path.exists(c)), None)
    if found is None:
        raise DatasetNotFoundError(f"the dataset of {run_dir} is not at {' nor at '.join(candidates)}; "
                                   "put it back there (`pyro-vae evaluate` can also name it with --dataset PATH)")
    if os.path.isfile(found) and data.fingerprint is not None and fingerprint(found) != data.fingerprint:
        raise DataError(f"{found} is not the dataset file {run_dir} was trained on (its sha256 differs); "
                        "`pyro-vae evaluate --dataset FILE` evaluates on another file")
    return dataclasses.replace(data, name=found)


#: what a command stopped before it wrote anything says (the end of its one line)
NOTHING_WRITTEN = "nothing was written"


def describe_checkpoint(run_dir: Optional[str], epoch: Optional[int] = None) -> str:
    """Where a stopped training run stands and how to continue it (for one-line messages)."""
    if not run_dir or not os.path.isdir(run_dir):
        return NOTHING_WRITTEN
    resume = f"pyro-vae train --resume --out {run_dir}"
    checkpoint = paths(run_dir)["checkpoint"]
    if not os.path.exists(checkpoint):
        if not os.path.exists(paths(run_dir)["config"]):
            return NOTHING_WRITTEN
        return f"{run_dir} holds no checkpoint yet; start it again with: {resume}"
    at = f" (epoch {epoch})" if epoch is not None else ""
    return f"the last checkpoint{at} is {checkpoint}; continue with: {resume}"
