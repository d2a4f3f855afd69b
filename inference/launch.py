"""``pyro-vae train --nproc N``: the same command, data-parallel in N processes on this
machine, started by torch's own launcher (``torch.distributed.launcher``, what ``torchrun``
runs) — no home-made process management.

Workers write to this terminal as they would alone (rank 0 prints; the others are silent).
If one of them fails, the launcher's agent ends the others and this prints one line: which
rank failed and how, and that the last checkpoint is intact.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import List, Optional

from pyro_vae.errors import ConfigError

#: Most processes ``--nproc`` starts on one machine.
MAX_PROCESSES = 64
#: Set in the workers' environment by :func:`launch`.
LAUNCHED = "PYRO_VAE_LAUNCHED"


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
    exit status (that of the failed rank, if one failed)."""
    if not 1 <= nproc <= MAX_PROCESSES:
        raise ConfigError(f"--nproc must be between 1 and {MAX_PROCESSES}, got {nproc}")
    if os.environ.get("WORLD_SIZE"):
        raise ConfigError("--nproc cannot be used under torchrun: torchrun already started the processes")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # the agent logs every worker's failure at length; this prints the one line that matters
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL + 1)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.2)
    args = ["-m", "inference.cli", *_without_nproc(argv)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    os.environ[LAUNCHED] = "1"  # the workers leave the report of a failed peer to this process
    try:
        elastic_launch(config, sys.executable)(*args)
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
    return 0
