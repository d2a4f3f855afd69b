"""Two classes of bad input a new user finds: a resource argument without a bound (a NUTS
run of 2⁶⁴ leapfrog steps a draw hangs instead of being refused), and a data file that is
there but damaged — truncated, emptied, overwritten, failing its checksum — which ended in
a traceback from the dataset's reader. Each is one line (the bound, or the file), exit
status 2, in ``train`` and in ``evaluate``, and leaves every file as it was."""

import os
import shutil
import struct

import numpy as np
import pytest
import torch

from inference.cli import main
from pyro_vae import ConfigError, build_flow_model
from reliability_helpers import TINY, refused, snapshot

# ---------------------------------------------------------------------- resource arguments
BOUNDS = [
    # posterior: NUTS, the guide's draws, the local fits, how many images
    ("posterior", ["--draws", "10000000"], "draws=10000000 (must be from 4 to 100000)"),
    ("posterior", ["--warmup", "10000000"], "warmup=10000000 (must be from 0 to 100000)"),
    ("posterior", ["--chains", "1000"], "chains=1000 (must be ≥ 2, for R-hat, and ≤ 64)"),
    ("posterior", ["--max-tree-depth", "64"], "max_tree_depth=64 (must be from 1 to 15: 2^15 leapfrog steps a draw)"),
    ("posterior", ["--guide-draws", "1000000000"], "guide_draws=1000000000 (must be from 4 to 1000000)"),
    ("posterior", ["--local-steps", "1000000000"], "argument --local-steps: invalid local-fit settings: "
                                                   "max_steps=1000000000 (must be from 1 to 100000)"),
    ("posterior", ["--iwae-samples", "10000000"], "iwae_samples=10000000 (must be from 1 to 1000000)"),
    ("posterior", ["--index", *map(str, range(101))], "argument --index: index takes at most 100 image indices, got 101"),
    # sample and evaluate
    ("sample", ["--temperature", "1e300"], "argument --temperature: temperature must be a number from 0.001 to 1000"),
    ("sample", ["--temperature", "1e-300"], "temperature must be a number from 0.001 to 1000, got 1e-300"),
    ("sample", ["--n", "1000000"], "n must be an integer from 1 to 10000"),
    ("sample", ["--interpolate", "0", "1", "--steps", "1000000"], "steps must be an integer from 2 to 10000"),
    ("evaluate", ["--iwae-samples", "1000000000"], "iwae_samples must be an integer from 1 to 1000000"),
]


@pytest.mark.parametrize("cmd, extra, fragment", BOUNDS, ids=[f"{c} {' '.join(e)[:40]}" for c, e, _ in BOUNDS])
def test_an_unbounded_resource_argument_is_refused(trained_run, capsys, cmd, extra, fragment):
    before = snapshot(trained_run)
    refused(capsys, [cmd, trained_run, *extra], fragment)
    assert snapshot(trained_run) == before


TRAIN_BOUNDS = [
    (["--epochs", "1000000000000000000000"], "epochs=1000000000000000000000 (must be from 0 to 100000)"),
    (["--z-dim", "100000000"], "argument --z-dim: z_dim must be at most 100,000, got 100,000,000"),
    (["--guide", "iaf", "--flows", "1000000"], "argument --flows: num_flows must be a positive integer up to 1000"),
]


@pytest.mark.parametrize("extra, fragment", TRAIN_BOUNDS, ids=[" ".join(e)[:40] for e, _ in TRAIN_BOUNDS])
def test_an_unbounded_training_argument_is_refused(tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    refused(capsys, ["train", *TINY, *extra, "--out", out], fragment)
    assert not out.exists()


def test_a_flow_refuses_a_temperature_out_of_range():
    flow = build_flow_model("nice", (1, 4, 4), couplings=2, hidden_dims=[8])
    with pytest.raises(ConfigError, match="temperature must be a number from 0.001 to 1000"):
        flow.generate(2, temperature=1e300)


# ---------------------------------------------------------------------- damaged data files
def _idx(path, array):
    """An MNIST file in its own format (IDX: a magic number, the sizes, the bytes)."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))
        for size in array.shape:
            f.write(struct.pack(">I", size))
        f.write(array.astype(np.uint8).tobytes())


def _mnist(root, rng):
    """A small MNIST as torchvision keeps it under ``data_dir`` (MNIST/raw/, unpacked)."""
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for split, n in (("train", 96), ("t10k", 24)):
        _idx(os.path.join(raw, f"{split}-images-idx3-ubyte"), rng.integers(0, 256, (n, 28, 28)))
        _idx(os.path.join(raw, f"{split}-labels-idx1-ubyte"), rng.integers(0, 10, (n,)))
    return raw


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _empty(path):
    open(path, "wb").close()


def _overwrite(path):
    open(path, "wb").write(b"these bytes are not what the reader expects " * 20)


DAMAGE = {"truncated": _truncate, "emptied": _empty, "overwritten": _overwrite}
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """A tiny run on a small MNIST in a data_dir; tests damage a copy of the data_dir."""
    base = tmp_path_factory.mktemp("mnist")
    _mnist(str(base / "data"), np.random.default_rng(0))
    run = str(base / "run")
    assert main(["train", "--dataset", "mnist", "--data-dir", str(base / "data"), "--epochs", "1",
                 "--z-dim", "2", "--set", "hidden_dims=[8]", "--iwae-samples", "2", "--no-progress",
                 "--no-tensorboard", "--out", run]) == 0
    return base


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", MNIST_FILES)
def test_a_damaged_torchvision_file_is_one_line_in_train_and_evaluate(mnist_run, tmp_path, capsys, name, damage):
    data = str(tmp_path / "data")
    shutil.copytree(mnist_run / "data", data)
    path = os.path.join(data, "MNIST", "raw", name)
    DAMAGE[damage](path)
    fragments = [f"argument --data-dir: {path} is damaged or truncated", "delete it and fetch mnist again"]
    out = tmp_path / "run"
    refused(capsys, ["train", "--dataset", "mnist", "--data-dir", data, "--out", out, *TINY], *fragments)
    assert not out.exists()
    run = str(tmp_path / "trained")
    shutil.copytree(mnist_run / "run", run)
    before = snapshot(run)
    refused(capsys, ["evaluate", run, "--data-dir", data, "--no-progress"], *fragments)
    assert snapshot(run) == before


def test_an_incomplete_torchvision_dataset_names_the_missing_file(mnist_run, tmp_path, capsys):
    data = str(tmp_path / "data")
    shutil.copytree(mnist_run / "data", data)
    missing = os.path.join(data, "MNIST", "raw", "t10k-labels-idx1-ubyte")
    os.remove(missing)
    refused(capsys, ["train", "--dataset", "mnist", "--data-dir", data, "--out", tmp_path / "run", *TINY],
            f"mnist under {data} is incomplete: {missing} is missing")


def test_a_cifar10_file_that_fails_its_checksum_is_damaged_not_missing(tmp_path, capsys):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x04 not CIFAR-10")
    refused(capsys, ["train", "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--out", tmp_path / "run",
                     *TINY], f"{folder / 'data_batch_1'} is damaged or truncated (its MD5 is not the published one)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A dataset file of each kind, whole, and damaged in the ways a disk or a copy does."""
    tmp = tmp_path_factory.mktemp("damaged")
    grey = np.random.default_rng(0).random((40, 1, 4, 4)).astype(np.float32)
    np.savez(tmp / "whole.npz", train=grey, test=grey[:8])
    torch.save({"train": torch.from_numpy(grey), "test": torch.from_numpy(grey[:8])}, tmp / "whole.pt")
    for suffix in ("npz", "pt"):
        data = (tmp / f"whole.{suffix}").read_bytes()
        (tmp / f"truncated.{suffix}").write_bytes(data[: len(data) // 2])
        (tmp / f"head.{suffix}").write_bytes(data[:64])
        (tmp / f"empty.{suffix}").write_bytes(b"")
    data = bytearray((tmp / "whole.npz").read_bytes())
    data[200:260] = bytes(60)  # inside the first member: its CRC no longer matches
    (tmp / "bitrot.npz").write_bytes(bytes(data))
    return tmp


FILE_CASES = [
    ("truncated.npz", "truncated.npz is truncated or damaged: its zip archive has no end"),
    ("head.npz", "head.npz is truncated or damaged"),
    ("empty.npz", "empty.npz is not a NumPy .npz archive"),
    ("bitrot.npz", "bitrot.npz is not a .npz archive of plain arrays (Bad CRC-32"),
    ("truncated.pt", "truncated.pt is truncated or damaged: its zip archive has no end"),
    ("head.pt", "head.pt is truncated or damaged"),
    ("empty.pt", "empty.pt is not a torch file of tensors (EOFError)"),
]


@pytest.fixture(scope="module")
def file_run(files, tmp_path_factory):
    """A tiny run on the whole .npz file, of the images' shape."""
    run = str(tmp_path_factory.mktemp("file-run") / "run")
    assert main(["train", "--dataset", str(files / "whole.npz"), "--binarize", "none", "--epochs", "1",
                 "--z-dim", "2", "--set", "hidden_dims=[8]", "--iwae-samples", "2", "--no-progress",
                 "--no-tensorboard", "--out", run]) == 0
    return run


@pytest.mark.parametrize("name, fragment", FILE_CASES, ids=[n for n, _ in FILE_CASES])
def test_a_damaged_dataset_file_is_one_line_in_train_and_evaluate(files, file_run, tmp_path, capsys, name, fragment):
    out = tmp_path / "run"
    refused(capsys, ["train", "--dataset", files / name, "--binarize", "none", "--out", out, "--epochs", "1",
                     "--no-progress"], fragment)
    assert not out.exists()
    before = snapshot(file_run)
    refused(capsys, ["evaluate", file_run, "--dataset", files / name, "--no-progress"], fragment)
    assert snapshot(file_run) == before


def test_a_run_whose_dataset_file_was_damaged_since_says_so(files, file_run, tmp_path, capsys):
    """The run's own file, damaged in place: its fingerprint says it is not the file the run
    was trained on (before the reader could fail on it)."""
    moved = tmp_path / "moved"
    shutil.copytree(os.path.dirname(file_run), moved)
    data = str(moved / "whole.npz")
    shutil.copy(files / "whole.npz", data)
    run = str(moved / "run")
    config = (moved / "run" / "config.json").read_text().replace(str(files / "whole.npz"), data)
    (moved / "run" / "config.json").write_text(config)
    _truncate(data)
    before = snapshot(run)
    refused(capsys, ["evaluate", run, "--no-progress"], f"{data} is not the dataset file {run} was trained on")
    assert snapshot(run) == before
