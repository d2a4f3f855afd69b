"""A worker of the two-agent test (tests/test_distributed.py): `pyro-vae` as torchrun starts it,
which also saves this rank's trained parameters to $RANK_DUMP/rank<RANK>.pt, so that the test can
compare the ranks (only rank 0 writes the run directory)."""

import os
import sys

import torch

import inference.train as train
from inference.cli import main

_fit = train._fit


def _fit_and_dump(run_dir, model, *args, **kwargs):
    result = _fit(run_dir, model, *args, **kwargs)
    torch.save(model.state_dict(), os.path.join(os.environ["RANK_DUMP"], f"rank{os.environ['RANK']}.pt"))
    return result


if __name__ == "__main__":  # (pytest's doctest collection imports this file: patch only when run)
    train._fit = _fit_and_dump
    sys.exit(main(sys.argv[1:]))
