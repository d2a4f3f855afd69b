"""The process group of a data-parallel run: ``torchrun`` (or ``pyro-vae train --nproc``)
starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment; :func:`process_group` joins them (gloo on CPUs,
NCCL on GPUs) for the length of a command. One process without those variables is a world
of one: nothing is initialised."""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator, Tuple

import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError

#: How long a rank waits for the others in a collective before the run fails (a rank that
#: died is normally noticed at once by torchrun's agent, which ends the others).
TIMEOUT = datetime.timedelta(minutes=30)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Tuple[str, bool]]:
    """Join the process group the environment describes, if any; yield ``(device, is_main)``
    with ``device`` made this rank's own GPU for ``cuda``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield device, True
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    try:
        yield device, rank == 0
        # every rank leaves together: a rank that tore its connections down while rank 0
        # still wrote the run's last files was seen to abort (SIGABRT) at exit, now and then
        dist.barrier()
    finally:
        dist.destroy_process_group()


def check_device(device: str) -> None:
    """Refuse a GPU device where CUDA is not available (the name itself was checked with the
    command's options, :class:`inference.settings.Common`)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"the device {device} was asked for, but CUDA is not available", params=("device",))
