"""Checkpoints: written atomically, validated on load, rebuilt from their recorded specs.

A checkpoint holds the specs the model, guide and prior were built from and their
``state_dict`` s (plus, in a run directory, the trainer's state), loaded with
``torch.load(weights_only=True)``: it never executes pickled code.

A run has two: ``checkpoint.pt``, the resumable last state — the trained weights and the
trainer's state, which holds the moving average of the weights (``ema``) and the best
validation epoch so far — and ``best.pt``, the weights of that best epoch (the averaged
ones with ``ema``), written *after* ``checkpoint.pt``. :func:`select_weights` is the one
place that says which weights a command gets: ``checkpoint.pt`` is the authority on the
best epoch, so a ``best.pt`` left one epoch behind by a kill between the two writes is never
used — the weights of that epoch are ``checkpoint.pt``'s own evaluated weights.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from pyro_vae.build import build_model_and_guide
from pyro_vae.contract import Model
from pyro_vae.errors import CheckpointError, PyroVAEError
from pyro_vae.infer.selection import EarlyStopping

from .config import upgrade_model_spec
from .io import atomic_write
from .rundir import CHECKPOINT

FORMAT = "pyro-vae-checkpoint"
#: Version 3 adds the selection state (best epoch, moving average) to the trainer's and the
#: ``best`` record of best.pt; version 2 recorded the prior's spec beside the model's
#: (version 1 kept its name inside).
VERSION = 3
#: The versions :func:`load_checkpoint` reads.
READS = (1, 2, 3)


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
    if version not in READS:
        raise CheckpointError(f"{path} has checkpoint version {version!r}; this pyro-vae reads "
                              f"{', '.join(map(str, READS[:-1]))} and {READS[-1]}")
    for key in ("model_spec", "guide_spec", "model_state", "guide_state"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks {key!r}")
    if version == 1:
        kind = "flow" if payload["guide_spec"] == {"name": "empty"} else "vae"
        payload["model_spec"], payload["prior_spec"] = upgrade_model_spec(payload["model_spec"], kind)
        payload["version"] = VERSION
    return payload


def save_best(path: str, model: nn.Module, guide: nn.Module, epoch: int, valid_elbo: float,
              averaged: bool) -> None:
    """``best.pt``: the weights of the best validation epoch (the evaluated ``model`` and
    ``guide``: the moving average with ``ema``), with that epoch and its validation ELBO."""
    save_checkpoint(path, model, guide, {"best": {"epoch": int(epoch), "valid_elbo": float(valid_elbo),
                                                  "averaged": bool(averaged)}})


def evaluated_states(payload: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The weights a run evaluates at the epoch of ``checkpoint.pt``: the moving average
    when it trains with ``ema``, else the trained weights."""
    average = payload.get("trainer", {}).get("average")
    if average is not None:
        return average["model"], average["guide"]
    return payload["model_state"], payload["guide_state"]


def stopping(payload: Dict[str, Any], patience: Optional[int]) -> EarlyStopping:
    """The early-stopping state ``checkpoint.pt`` records, under ``patience`` (the run's, or
    a larger one asked for on resume): its best epoch (0: none — no validation split, or a
    run of pyro-vae ≤ 0.2) and whether it has stopped."""
    state = EarlyStopping(patience)
    if "stopping" in payload.get("trainer", {}):
        state.load_state_dict(payload["trainer"]["stopping"])
    return state


def best_epoch(payload: Dict[str, Any]) -> int:
    """The best validation epoch ``checkpoint.pt`` records (0: none)."""
    return stopping(payload, None).best_epoch


def best_is_behind(payload: Dict[str, Any], best_path: str) -> bool:
    """Whether ``best.pt`` lacks the weights of the best epoch that ``checkpoint.pt``
    (``payload``) records as its own last epoch — what a kill between the two writes leaves
    (``train --resume`` writes it again from ``checkpoint.pt``)."""
    best = best_epoch(payload)
    if not best or best != int(payload.get("trainer", {}).get("epoch", 0)):
        return False
    try:
        return load_checkpoint(best_path).get("best", {}).get("epoch") != best
    except CheckpointError:  # missing or torn: written again
        return True


def select_weights(payload: Dict[str, Any], checkpoint: str, best_path: str) -> Dict[str, Any]:
    """Which weights of a run a command gets, from its loaded ``checkpoint.pt`` (``payload``).

    Args:
        payload: ``checkpoint.pt``, loaded.
        checkpoint: ``"best"`` — the weights of the best validation epoch (``best.pt``; a run
            without a validation split has none, and gets its last); ``"last"`` — those
            evaluated at the last epoch (the moving average with ``ema``); ``"train"`` — the
            trained weights, to resume from.
        best_path: where the run's ``best.pt`` is.

    Returns:
        ``{"model_state", "guide_state", "checkpoint", "epoch", "averaged"}``: the states,
        which checkpoint they are (``best`` or ``last``) and the epoch they are of.
    """
    trainer = payload.get("trainer", {})
    last = int(trainer.get("epoch", 0))
    averaged = "average" in trainer
    if checkpoint == "train":
        return dict(model_state=payload["model_state"], guide_state=payload["guide_state"], checkpoint="train",
                    epoch=last, averaged=False)
    best = best_epoch(payload)
    if checkpoint == "best" and best and best != last:
        if not os.path.isfile(best_path):
            raise CheckpointError(f"{best_path} is missing: the weights of the best epoch ({best}) are gone; "
                                  "use --checkpoint last")
        stored = load_checkpoint(best_path)
        held = stored.get("best", {}).get("epoch")
        if held != best or (stored["model_spec"], stored["guide_spec"]) != (payload["model_spec"],
                                                                            payload["guide_spec"]):
            raise CheckpointError(f"{best_path} holds epoch {held}, not the best epoch {best} that {CHECKPOINT} "
                                  "records (a foreign or damaged file); use --checkpoint last")
        return dict(model_state=stored["model_state"], guide_state=stored["guide_state"], checkpoint="best",
                    epoch=best, averaged=averaged)
    # the best epoch is the last one (best.pt may be a kill behind: these are its weights), or
    # "last" was asked for, or the run selected nothing
    model_state, guide_state = evaluated_states(payload)
    return dict(model_state=model_state, guide_state=guide_state, checkpoint="best" if checkpoint == "best" and best
                else "last", epoch=last, averaged=averaged)


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
