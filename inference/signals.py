"""SIGINT and SIGTERM stop a command the same way.

Ctrl-C raises ``KeyboardInterrupt`` in Python's main thread; a scheduler's ``SIGTERM`` (or
``torchrun``'s, passing on its own) would kill the process without a word. :func:`install`
makes SIGTERM raise :class:`Terminated`, a ``KeyboardInterrupt``, at the same safe points
(between two Python bytecodes, never inside a torch kernel), so both unwind alike: an
atomic write in progress removes its temporary file and leaves the previous file intact,
the last checkpoint stays loadable, and the command line prints one line saying where the
run stands and how to resume it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

#: Exit status of a command stopped by a signal: 128 + the signal's number, as a shell says.
EXIT_STATUS = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def install() -> Any:
    """Turn SIGTERM into :class:`Terminated`; return the handler it replaced (``None`` off
    the main thread, where no handler can be installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def restore(previous: Any) -> None:
    """Put back the SIGTERM handler :func:`install` replaced (a no-op for ``None``)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def name(err: BaseException) -> str:
    """``SIGTERM`` or ``SIGINT``: which signal raised ``err``."""
    return "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
