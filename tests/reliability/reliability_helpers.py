"""What the reliability tests share: running the command line in this process or in a
subprocess with faults injected, and the assertion of the README's promise — one clear line
on stderr, no traceback, the exit status, a run directory byte-identical before and after,
and a resumed run equal to a straight one bit for bit."""

import contextlib
import os
import subprocess
import sys

import torch

from inference.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver.py")
#: A run small enough to train in about a second: 128 digits, a 2-d latent, 8 hidden units.
TINY = ["--train-size", "128", "--test-size", "16", "--z-dim", "2", "--set", "hidden_dims=[8]",
        "--iwae-samples", "2", "--batch-size", "32", "--no-progress"]
#: Epochs of every fault test's run and of the straight run it must reproduce.
EPOCHS = 4
#: TINY with every selection and regularisation option on: a moving average, early stopping,
#: skipped updates (the gradient norms of this run are 21–33 per example: one update of epoch 1 is skipped), weight decay, dropout.
SELECTED = [*TINY, "--ema", "0.9", "--patience", "3", "--skip-threshold", "31", "--weight-decay", "0.01",
            "--set", "dropout=0.1"]


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as the subprocesses (OMP_NUM_THREADS=1): another number of
    threads sums in another order, and resumed runs are compared with straight ones bit for
    bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_cli(capsys, *argv):
    """``(exit status, stdout, stderr)`` of ``pyro-vae ARGV`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single line of ``err``; fails on a traceback or a second line."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def refused(capsys, argv, *fragments, code=2):
    """Run ``argv``; expect exit status ``code`` and one line holding every fragment."""
    status, out, err = run_cli(capsys, *argv)
    assert status == code, (status, out, err)
    line = one_line(err)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def snapshot(path):
    """Every file under ``path`` (relative name → bytes), to compare before and after."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = f.read()
    return files


def subprocess_cli(*argv, cwd=None, env=None):
    """``pyro-vae ARGV`` through the fault driver (faults named in ``env``) in a subprocess
    on one thread; returns the ``Popen``."""
    environ = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, DRIVER, *map(str, argv)], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint(run, name="checkpoint.pt"):
    return torch.load(os.path.join(run, name), weights_only=True)


def assert_same_training(a, b):
    """Two checkpoints hold the same weights, optimizer state, position and random state,
    bit for bit."""
    assert a["trainer"]["epoch"] == b["trainer"]["epoch"]
    for part in ("model_state", "guide_state"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for s, t in zip(a["trainer"]["optim"]["state"].values(), b["trainer"]["optim"]["state"].values()):
        for key in s:
            assert torch.equal(torch.as_tensor(s[key]), torch.as_tensor(t[key])), key
    assert torch.equal(a["trainer"]["rng"]["torch"], b["trainer"]["rng"]["torch"])
    assert torch.equal(a["trainer"]["data_rng"], b["trainer"]["data_rng"])
    # the selection state: best epoch, skipped updates, the moving average of the weights
    assert a["trainer"].get("stopping") == b["trainer"].get("stopping")
    assert a["trainer"].get("skipped") == b["trainer"].get("skipped")
    assert ("average" in a["trainer"]) == ("average" in b["trainer"])
    if "average" in a["trainer"]:
        for part in ("model", "guide"):
            for key, value in a["trainer"]["average"][part].items():
                assert torch.equal(value, b["trainer"]["average"][part][key]), (part, key)


def temp_files(run):
    return sorted(n for n in os.listdir(run) if n.endswith(".tmp"))
