"""Checkpoints: written atomically, validated on load, rebuilt from their recorded specs.

A checkpoint holds the specs the model, guide and prior were built from and their
``state_dict`` s (plus, in a run directory, the trainer's state), loaded with
``torch.load(weights_only=True)``: it never executes pickled code.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, Tuple

import torch
from torch import nn

from pyro_vae.build import build_model_and_guide
from pyro_vae.contract import Model
from pyro_vae.errors import CheckpointError, PyroVAEError

from .config import upgrade_model_spec
from .io import atomic_write

FORMAT = "pyro-vae-checkpoint"
#: Version 2 records the prior's spec beside the model's (version 1 kept its name inside).
VERSION = 2


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically.

    The checkpoint is serialised in memory first: torch's own file writer reports a full
    disk as an opaque ``RuntimeError`` of its zip container, a plain file write as the
    ``OSError`` it is.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def save_checkpoint(path: str, model: Model, guide: nn.Module, extra: Dict[str, Any] | None = None) -> None:
    """Save model and guide (specs and weights) plus ``extra`` (e.g. trainer state)."""
    if not model.spec or not getattr(guide, "spec", None):
        raise ValueError("only models and guides built from specs (build_vae, build_guide, …) can be saved")
    prior = getattr(model, "prior", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": model.spec,
        "guide_spec": guide.spec,
        "prior_spec": getattr(prior, "spec", None) if model.has_latent else None,
        "model_state": model.state_dict(),
        "guide_state": guide.state_dict(),
        **(extra or {}),
    }
    atomic_save(payload, path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint file of any version (as the current version)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:  # unreadable, not corrupt
        raise CheckpointError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    except Exception as err:
        raise CheckpointError(
            f"{path} is corrupt or not a pyro-vae checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint")
    version = payload.get("version")
    if version not in (1, VERSION):
        raise CheckpointError(f"{path} has checkpoint version {version!r}; this pyro-vae reads 1 and {VERSION}")
    for key in ("model_spec", "guide_spec", "model_state", "guide_state"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks {key!r}")
    if version == 1:
        kind = "flow" if payload["guide_spec"] == {"name": "empty"} else "vae"
        payload["model_spec"], payload["prior_spec"] = upgrade_model_spec(payload["model_spec"], kind)
        payload["version"] = VERSION
    return payload


def build_from_checkpoint(payload: Dict[str, Any]) -> Tuple[Model, nn.Module]:
    """Rebuild the model and guide recorded in a loaded checkpoint and load their weights."""
    try:
        model, guide = build_model_and_guide(payload["model_spec"], payload["guide_spec"],
                                             payload.get("prior_spec"))
    except PyroVAEError as err:
        raise CheckpointError(f"checkpoint specs cannot be rebuilt: {err}") from None
    for module, state, what in ((model, payload["model_state"], "model"),
                                (guide, payload["guide_state"], "guide")):
        try:
            module.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()
            raise CheckpointError(
                f"checkpoint {what} weights do not match its spec: "
                f"{first[1].strip() if len(first) > 1 else first[0]}"
            ) from None
    return model, guide
