"""``pyro-vae``: the command line. It parses (:mod:`inference.args`), checks the typed
options of the command and its run directory and outputs (:mod:`inference.settings`), and
calls the command's ``main`` — :mod:`inference.train`, :mod:`.evaluate`, :mod:`.sample`,
:mod:`.posterior`, :mod:`.compare`, :mod:`.components` (``list``).

Bad input (unknown names, wrong types, wrong shapes, NaN, data outside a likelihood's
support, a missing or foreign run directory, a corrupt checkpoint, a dataset missing
offline, an output that cannot be written) is reported as one line on stderr with exit
status 2; an existing run is never overwritten. A library error names the parameter it is
about and this line says which flag that was (``argument --particles: …``, as argparse
says it). Faults are one line too: a NaN loss, a full disk or no memory (exit 1), SIGINT or
SIGTERM (exit 130 / 143), each saying where the last checkpoint is and how to resume.
Argument errors and unwritable or protected outputs are found before torch is imported.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from typing import Any, Optional, Sequence

from pyro_vae.errors import PyroVAEError

from . import signals
from .args import PROG, build_parser, flag_of, options
from .rundir import NOTHING_WRITTEN, describe_checkpoint

#: The module whose ``main(options)`` runs each command.
MODULES = {"train": "train", "evaluate": "evaluate", "sample": "sample", "posterior": "posterior",
           "compare": "compare", "list": "components"}


def error_line(command: str, err: BaseException) -> str:
    """The text of an error's line: an error about particular parameters is prefixed with
    the flags of ``command`` that set them (``argument --objective/--free-bits: …``), as
    argparse says it."""
    flags = []
    for param in getattr(err, "params", ()):
        flag = flag_of(command, param)
        if flag is not None and flag not in flags and flag not in str(err):
            flags.append(flag)
    return f"argument {'/'.join(flags)}: {err}" if flags else str(err)


def _peer_failure(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed because another rank is gone."""
    dist = sys.modules.get("torch.distributed")  # loaded by the process group, if there is one
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist is None:
        return False
    text = str(err)
    return isinstance(err, dist.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "ProcessGroup"))


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def _out_of_memory(err: BaseException) -> Optional[str]:
    """The one line for an allocation that failed (``None`` if ``err`` is something else)."""
    text = str(err)
    if not (isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text):
        return None
    size = re.search(r"allocate (\d+) bytes", text)
    amount = f" (an allocation of {int(size[1]) / 2**30:,.1f} GiB failed)" if size else ""
    return (f"out of memory{amount}; a smaller --batch-size, --particles, --z-dim or smaller networks "
            "need less")


def _where(command: str, opts: Any, err: BaseException) -> str:
    """Where a command stopped by a fault or a signal leaves things (for its one line)."""
    if opts is None:  # stopped while the arguments were still being read
        return NOTHING_WRITTEN
    if command != "train":
        return "nothing was left half-written (every file is written atomically)"
    return describe_checkpoint(opts.run.out, getattr(err, "checkpoint_epoch", None))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pyro-vae`` console script."""
    previous = signals.install()
    try:
        return _main(argv)
    except KeyboardInterrupt as err:  # before the command started (parsing arguments)
        if signals.launched_worker():  # a worker of `--nproc`: its launcher speaks for it
            return signals.EXIT_STATUS[signals.name(err)]
        print(f"{PROG}: interrupted by {signals.name(err)}; {NOTHING_WRITTEN}", file=sys.stderr)
        return signals.EXIT_STATUS[signals.name(err)]
    finally:
        signals.restore(previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # under torchrun every rank runs this; rank 0 speaks for all, and under `--nproc` the
    # launcher speaks for the workers when the run is interrupted or a peer fails
    speak = os.environ.get("RANK", "0") == "0"
    launched = signals.launched_worker()
    prefix = f"{PROG} {args.command}"
    opts = None
    try:
        opts = options(args, argv)
        checked = opts.check_paths() if opts is not None else None  # before torch is imported
        # the one deferred import: the command's module brings torch, Pyro and the library
        command = importlib.import_module(f".{MODULES[args.command]}", __package__)
        with warnings.catch_warnings():
            # a NaN loss is reported once, as the error line, not also as Pyro's warning
            warnings.filterwarnings("ignore", message="Encountered NaN")
            return command.main(opts, checked)
    except (PyroVAEError, FloatingPointError) as err:  # bad input (2), or a NaN loss (1)
        if speak:
            print(f"{prefix}: error: {error_line(args.command, err)}", file=sys.stderr)
        return 2 if isinstance(err, PyroVAEError) else 1
    except (RuntimeError, MemoryError) as err:
        memory = _out_of_memory(err)
        if memory is not None:
            if speak:
                print(f"{prefix}: error: {memory}; {_where(args.command, opts, err)}", file=sys.stderr)
            return 1
        if not isinstance(err, RuntimeError) or not _peer_failure(err):
            raise
        # another rank died (torchrun's agent is ending the run): say so once, no traceback
        if speak and not launched:
            print(f"{prefix}: error: another process of the run failed ({_first_line(err)}); "
                  "the last checkpoint is intact; continue with --resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM (signals.Terminated)
        if speak and not launched:
            print(f"{prefix}: interrupted by {signals.name(err)}; {_where(args.command, opts, err)}",
                  file=sys.stderr)
        return signals.EXIT_STATUS[signals.name(err)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
