"""Errors caused by what a user asked for.

Every exception raised because of user input (an unknown name, a wrong shape, data
outside a likelihood's support, a corrupt checkpoint, a dataset missing offline, an output
that cannot be written) derives from :class:`PyroVAEError`. The command-line interface
prints its message as one line and exits with status 2; library users can catch the
specific subclasses, which also derive from the matching builtin (``ValueError``,
``FileNotFoundError``, ``OSError``).

Messages speak the library's own language: they name parameters (``num_samples must be
…``, ``pass download=True``), never command-line flags, and :attr:`PyroVAEError.params`
lists the parameters a message is about, so that a caller that knows its own spelling of
them (the command line knows its flags) can say which one it was.
"""

from __future__ import annotations

from typing import Sequence


class PyroVAEError(Exception):
    """Base class of every user-facing error of pyro-vae.

    Its message is one line. What a wrapper appends after a newline is dropped: Pyro's
    ``poutine.trace`` re-raises a ``ValueError`` or ``RuntimeError`` from inside a model or
    guide as a new one of the same class with the trace's shapes appended (the original
    stays chained as ``__cause__``).

    Args:
        *args: the message (and whatever the builtin base takes).
        params: the names of the parameters the message is about (``("objective",
            "free_bits")``); empty when it is about no parameter in particular.

    Example:
        >>> import pickle
        >>> err = ConfigError("num_samples must be an integer ≥ 1, got 0", params=("num_samples",))
        >>> again = pickle.loads(pickle.dumps(err))  # e.g. from another process
        >>> str(again), again.params
        ('num_samples must be an integer ≥ 1, got 0', ('num_samples',))
    """

    def __init__(self, *args: object, params: Sequence[str] = ()) -> None:
        if args and isinstance(args[0], str) and "\n" in args[0]:
            args = (_first_line(args[0]), *args[1:])
        super().__init__(*args)
        # an instance attribute, so that pickling (BaseException keeps ``__dict__`` beside
        # ``args``) carries it across processes
        self.params = tuple(params)


def _first_line(message: str) -> str:
    """The line of ``message`` that says what went wrong: its first, or — for an error that
    torch's ``DataLoader`` re-raises from a worker, "Caught … in DataLoader worker …"
    followed by the worker's traceback — the original message on the traceback's last line."""
    first = message.split("\n", 1)[0]
    if first.startswith("Caught ") and "DataLoader worker" in first:
        last = message.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return first


class ConfigError(PyroVAEError, ValueError):
    """An unknown name, an invalid option or an incompatible combination of options."""


class DataError(PyroVAEError, ValueError):
    """Data of the wrong shape, with NaN, or outside the support of the likelihood."""


class DatasetNotFoundError(PyroVAEError, FileNotFoundError):
    """A dataset is not on disk and may not (or could not) be downloaded."""


class CheckpointError(PyroVAEError, RuntimeError):
    """A run directory or checkpoint that is missing, corrupt or does not match."""


class OutputError(PyroVAEError, OSError):
    """A file or directory that cannot be written: no permission, a read-only file system,
    a full disk, a missing parent, a path that is a directory (or lies under a file), or
    the path of a file a run owns."""
