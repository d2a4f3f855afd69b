"""Checkpoints: written atomically, validated on load, rebuilt from their recorded specs."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from pyro_vae.errors import CheckpointError, PyroVAEError
from pyro_vae.flows import build_flow_guide, build_flow_model, model_kind
from pyro_vae.guides import Guide, build_guide
from pyro_vae.models import VAE, build_vae

FORMAT = "pyro-vae-checkpoint"
VERSION = 1


def _atomic_write(path: str, write) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``.

    A crash mid-write leaves the previous file intact: ``os.replace`` is atomic on POSIX
    and Windows when source and target are on the same filesystem.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(
    path: str, vae: VAE, guide: Guide, extra: Dict[str, Any] | None = None
) -> None:
    """Save model and guide (specs and weights) plus ``extra`` (e.g. trainer state)."""
    if not vae.spec or not getattr(guide, "spec", None):
        raise ValueError("only models and guides built with build_vae/build_guide can be saved")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": vae.spec,
        "guide_spec": guide.spec,
        "model_state": vae.state_dict(),
        "guide_state": guide.state_dict(),
        **(extra or {}),
    }
    atomic_save(payload, path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint file (never executes pickled code)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is corrupt or not a pyro-vae checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this pyro-vae reads {VERSION}"
        )
    for key in ("model_spec", "guide_spec", "model_state", "guide_state"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks {key!r}")
    return payload


def build_model_and_guide(
    model_spec: Dict[str, Any], guide_spec: Dict[str, Any], x_shape: Optional[Sequence[int]] = None
) -> Tuple[Any, Any]:
    """Build a model — a VAE or a density flow, told apart by its name — and its guide.

    Args:
        model_spec: ``{"name": ..., **options}`` (``build_vae`` / ``build_flow_model`` args).
        guide_spec: ``{"name": ..., **options}`` for a VAE; ``{"name": "empty"}`` for a flow.
        x_shape: image shape, overriding any ``x_shape`` in ``model_spec``.
    """
    spec = dict(model_spec)
    name = spec.pop("name")
    if x_shape is not None:
        spec["x_shape"] = tuple(x_shape)
    if model_kind(name) == "flow":
        flow = build_flow_model(name, **spec)
        return flow, build_flow_guide(flow, guide_spec)
    vae = build_vae(name, **spec)
    gspec = dict(guide_spec)
    return vae, build_guide(gspec.pop("name"), vae, **gspec)


def build_from_checkpoint(payload: Dict[str, Any]) -> Tuple[VAE, Guide]:
    """Rebuild the model and guide recorded in a loaded checkpoint and load their weights."""
    try:
        vae, guide = build_model_and_guide(payload["model_spec"], payload["guide_spec"])
    except PyroVAEError as err:
        raise CheckpointError(f"checkpoint specs cannot be rebuilt: {err}") from None
    for module, state, what in (
        (vae, payload["model_state"], "model"),
        (guide, payload["guide_state"], "guide"),
    ):
        try:
            module.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()
            raise CheckpointError(
                f"checkpoint {what} weights do not match its spec: {first[1].strip() if len(first) > 1 else first[0]}"
            ) from None
    return vae, guide
