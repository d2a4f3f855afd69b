"""Files written atomically: through a temporary file in the same directory, renamed over
the target, so that a crash (or ``kill -9``) mid-write leaves the previous file intact.

Every file of a run directory goes through :func:`atomic_write`: checkpoints (torch),
``config.json``, ``eval.json``, ``metrics.jsonl``, figures and ArviZ netCDF files. Files get
the permissions of an ordinary ``open()`` (0666 less the umask), not ``mkstemp``'s 0600,
so that other users can read a shared run.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``os.replace`` is atomic on POSIX and Windows when source and target are on the same
    filesystem, which a file in the same directory is.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_netcdf(idata: Any, path: str) -> str:
    """Write an ArviZ ``InferenceData`` to ``path`` atomically; return ``path``.

    ArviZ writes netCDF only to a path of its own choosing, so it writes a scratch file
    whose bytes then go through :func:`atomic_write`.
    """
    scratch = f"{path}.{os.getpid()}.scratch.tmp"
    try:
        idata.to_netcdf(scratch)
        with open(scratch, "rb") as f:
            atomic_write_bytes(path, f.read())
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return path
