"""``pyro-vae train --nproc N``: the same command, data-parallel in N processes on this
machine, started by torch's own launcher (``torch.distributed.launcher``, what ``torchrun``
runs) — no home-made process management.

Workers write to this terminal as they would alone (rank 0 prints; the others are silent).
If one of them fails, the launcher's agent ends the others and this prints one line: which
rank failed and how, and that the last checkpoint is intact. SIGINT and SIGTERM reach the
agent, which passes them on to the workers; when they have stopped this prints one line:
where the last checkpoint is and how to resume.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from typing import List, Optional

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from .rundir import describe_checkpoint
from .signals import LAUNCHED


def _without_nproc(argv: List[str]) -> List[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: List[str], out: Optional[str] = None) -> int:
    """Run ``pyro-vae`` with ``argv`` (less ``--nproc``) in ``nproc`` processes; return the
    exit status (that of the failed rank, if one failed); ``nproc`` was checked with the
    command's options (:class:`inference.settings.TrainRun`)."""
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.2)
    args = ["-m", "inference.cli", *_without_nproc(argv)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    os.environ[LAUNCHED] = "1"  # the workers leave the report of a failed peer to this process
    # the agent logs a worker's failure or a signal at length, through loggers that set their
    # own levels; this process logs nothing else, and prints the one line that matters
    logging.disable(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)(*args)
    except SignalException as err:
        # SIGINT / SIGTERM reached this process: the agent has passed it on to the workers and
        # waited for them; the workers stay silent (PYRO_VAE_LAUNCHED) and this speaks once
        sig = signal.Signals(err.sigval).name
        print(f"pyro-vae train: interrupted by {sig}; {describe_checkpoint(out)}", file=sys.stderr)
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if rank == 0 and failure.exitcode in (1, 2):  # rank 0 has said what went wrong
            return failure.exitcode
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        where = f"the last checkpoint of {out} is intact; continue with --resume" if out else \
            "the last checkpoint is intact; continue with --resume"
        print(f"pyro-vae train: error: process {rank} of {nproc} {how}; {where}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    finally:
        logging.disable(logging.NOTSET)
    return 0
