"""Files written atomically, and every OS error of writing one as a single line naming it.

Every file of a run directory goes through :func:`atomic_write`: checkpoints (torch),
``config.json``, ``eval.json``, ``metrics.jsonl``, figures and ArviZ netCDF files. It writes
a temporary file beside the target and renames it over the target, so that a crash (or
``kill -9``) mid-write leaves the previous file intact. The temporary file's name carries
the writer's process id (``checkpoint.pt.<pid>.<random>.tmp``): one whose writer is gone is
debris of a killed process, and :func:`clean_stale_temps` removes it the next time a
command opens the directory. Files get the permissions of an ordinary ``open()`` (0666
less the umask), not ``mkstemp``'s 0600, so that other users can read a shared run.

An ``OSError`` of writing — no permission, a read-only file system, a full disk, a
file-size limit, a missing parent, a path under a file — becomes one
:class:`~pyro_vae.errors.OutputError` that names the path and the reason
(:func:`output_error`); :func:`check_writable` and :func:`check_can_create` find those
problems before a command does any work. Nothing here imports torch.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import tempfile
import time
from typing import IO, Any, Callable, List, Optional

from pyro_vae.errors import OutputError, PyroVAEError

#: ``<target>.<pid>.<random>.tmp``: a temporary file of :func:`atomic_write` (or a probe).
_TEMP = re.compile(r"^(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: ``<target>.<random>.tmp``, written by pyro-vae ≤ 0.2 (``mkstemp`` without a pid).
_LEGACY_TEMP = re.compile(r"^(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
#: A temporary file without a pid is removed once it is this old (its writer is long gone).
LEGACY_TEMP_AGE = 60.0

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file is too large (a file-size limit was reached)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "input/output error",
}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = "disk quota exceeded"


def _reason(err: OSError) -> str:
    return _REASONS.get(err.errno) or err.strerror or type(err).__name__


def output_error(err: OSError, path: str, action: str = "write") -> OutputError:
    """One line for an ``OSError`` of ``action`` on ``path``: the path and the reason."""
    return OutputError(f"cannot {action} {path}: {_reason(err)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``os.replace`` is atomic on POSIX and Windows when source and target are on the same
    filesystem, which a file in the same directory is. However the write ends — an
    ``OSError``, an exception of ``write``, ``KeyboardInterrupt`` — the temporary file is
    removed and ``path`` is as it was.

    Raises:
        OutputError: the file cannot be written (naming ``path`` and why).
    """
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp",
                                   dir=directory)
    except OSError as err:
        raise output_error(err, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _unlink_quietly(tmp)
        if isinstance(err, OSError) and not isinstance(err, PyroVAEError):
            raise output_error(err, path) from None
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_netcdf(idata: Any, path: str) -> str:
    """Write an ArviZ ``InferenceData`` to ``path`` atomically; return ``path``.

    ArviZ writes netCDF only to a path of its own choosing, so it writes a scratch file
    (``<path>.<pid>.scratch.tmp``, debris if killed) whose bytes then go through
    :func:`atomic_write`.
    """
    scratch = f"{path}.{os.getpid()}.scratch.tmp"
    try:
        try:
            idata.to_netcdf(scratch)
            with open(scratch, "rb") as f:
                data = f.read()
        except OSError as err:
            raise output_error(err, path) from None
        atomic_write_bytes(path, data)
    finally:
        _unlink_quietly(scratch)
    return path


def append_text(path: str, text: str) -> None:
    """Append ``text`` to ``path`` (an append-only log such as ``metrics.jsonl``)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise output_error(err, path) from None


# ---------------------------------------------------------------------- checks before work
def check_writable(directory: str, target: Optional[str] = None) -> None:
    """Raise :class:`OutputError` unless a file can be created in the existing ``directory``
    (to create ``target`` there, if given: the message names it).

    It tries (a probe file, removed at once): permission bits do not tell about a read-only
    file system, an ACL, ``/proc``, or root's rights.
    """
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe.{os.getpid()}.", suffix=".tmp", dir=directory)
    except OSError as err:
        if target is not None:
            raise OutputError(f"cannot create {target}: {directory} is not writable ({_reason(err)})") from None
        raise output_error(err, directory, "write to") from None
    os.close(fd)
    _unlink_quietly(probe)


def nearest_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_can_create(directory: str) -> None:
    """Raise :class:`OutputError` unless ``directory`` is, or can be created as, a writable
    directory (checked without creating it)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputError(f"cannot create the directory {directory}: a file of that name exists")
    existing = nearest_existing(directory)
    if not os.path.isdir(existing):
        raise OutputError(f"cannot create the directory {directory}: {existing} is a file, not a directory")
    check_writable(existing, target=directory if existing != os.path.abspath(directory) else None)


def check_output_file(path: str) -> None:
    """Raise :class:`OutputError` unless a file can be written at ``path``: not a directory,
    its directory exists and is writable."""
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory (give a file name)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        existing = nearest_existing(parent)
        reason = (f"the directory {parent} does not exist" if os.path.isdir(existing)
                  else f"{existing} is a file, not a directory")
        raise OutputError(f"cannot write {path}: {reason}")
    check_writable(parent)


def clean_stale_temps(directory: str, now: Optional[float] = None) -> List[str]:
    """Remove the temporary files of :func:`atomic_write` in ``directory`` whose writer is
    gone (a ``kill -9`` mid-write); return their paths. Files still being written by a live
    process are left alone, and so is everything that cannot be removed."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time() if now is None else now
    for name in names:
        if not name.endswith(".tmp"):
            continue
        path = os.path.join(directory, name)
        match = _TEMP.match(name)
        try:
            if match:
                if _alive(int(match["pid"])):
                    continue
            elif not _LEGACY_TEMP.match(name) or now - os.path.getmtime(path) < LEGACY_TEMP_AGE:
                continue
            if os.path.isfile(path):
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):  # a number no process has
        return False
    return True
