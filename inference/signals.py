"""SIGINT and SIGTERM stop a command the same way, and never mid-import.

Ctrl-C raises ``KeyboardInterrupt`` in Python's main thread; a scheduler's ``SIGTERM`` (or
``torchrun``'s, passing on its own) would kill the process without a word. :func:`install`
makes SIGTERM raise :class:`Terminated`, a ``KeyboardInterrupt``, at the same safe points
(between two Python bytecodes, never inside a torch kernel), so both unwind alike: an
atomic write in progress removes its temporary file and leaves the previous file intact,
the last checkpoint stays loadable, and the command line prints one line saying where the
run stands and how to resume it.

One place is not safe: a module being imported. A compiled extension's initialisation
(``torch._C._c10d_init`` when ``torch.distributed`` is imported) calls back into Python, and
an exception raised there cannot pass through its C++ frames: the process aborts with
"terminate called after throwing an instance of 'pybind11::error_already_set'". A signal
that arrives during an import is therefore held and raised once the import is over (the
handler looks again every 50 ms, with ``SIGALRM``).

Nor is the command's end: a signal that arrives while :func:`restore` puts the handlers back
(``torchrun``'s agent ends the other ranks of a run whose peer died just then) came too late
to stop anything, and raising it there would escape every ``except`` of the command line as a
traceback. It is dropped, and the command's own exit status stands.
"""

from __future__ import annotations

import os
import signal
import threading
from types import CodeType, FrameType
from typing import Any, Callable, Optional, Tuple

#: Exit status of a command stopped by a signal: 128 + the signal's number, as a shell says.
EXIT_STATUS = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
#: Set in the environment of the workers that ``pyro-vae train --nproc`` starts: the launcher
#: speaks for them when they are interrupted or a peer fails (:mod:`inference.launch`).
LAUNCHED = "PYRO_VAE_LAUNCHED"
#: Seconds between two looks at whether the import that holds a signal is over.
RETRY = 0.05

_held: Optional[int] = None  # a signal that arrived during an import


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _inside(frame: Optional[FrameType], test: Callable[[CodeType], bool]) -> bool:
    """Whether ``frame`` or a frame that called it runs code that passes ``test``."""
    while frame is not None:
        if test(frame.f_code):
            return True
        frame = frame.f_back
    return False


def _importing(frame: Optional[FrameType]) -> bool:
    return _inside(frame, lambda code: code.co_filename.startswith("<frozen importlib"))


def _ending(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` runs inside :func:`restore` (the command is over)."""
    return _inside(frame, lambda code: code is restore.__code__)


def _stop(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handle(signum: int, frame: Optional[FrameType]) -> None:
    global _held
    if _ending(frame):
        return
    if _importing(frame) and hasattr(signal, "setitimer"):
        _held = signum
        signal.setitimer(signal.ITIMER_REAL, RETRY)
        return
    _stop(signum)


def _look_again(_: int, frame: Optional[FrameType]) -> None:
    global _held
    if _held is None:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY)
        return
    signum, _held = _held, None
    _stop(signum)


def install() -> Optional[Tuple[Any, ...]]:
    """Handle SIGINT and SIGTERM as above; return the handlers replaced (``None`` off the
    main thread, where no handler can be installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = (signal.signal(signal.SIGINT, _handle), signal.signal(signal.SIGTERM, _handle))
    if hasattr(signal, "SIGALRM"):
        previous += (signal.signal(signal.SIGALRM, _look_again),)
    return previous


def restore(previous: Optional[Tuple[Any, ...]]) -> None:
    """Put back the handlers :func:`install` replaced, dropping a signal still held."""
    global _held
    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
    _held = None
    for sig, handler in zip((signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGALRM", None)), previous):
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def launched_worker() -> bool:
    """Whether this process is a worker of ``pyro-vae train --nproc`` (its launcher speaks)."""
    return bool(os.environ.get(LAUNCHED))


def name(err: BaseException) -> str:
    """``SIGTERM`` or ``SIGINT``: which signal raised ``err``."""
    return "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
