"""The command line end to end on a small subset, and every bad input it must refuse."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from inference.cli import main

QUICK = ["--train-size", "200", "--test-size", "40", "--set", "hidden=[32]", "--z-dim", "4",
         "--iwae-samples", "20", "--no-progress", "--batch-size", "50"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "run")
    assert main(["train", "--epochs", "2", "--out", run, *QUICK]) == 0
    return run


def test_train_writes_a_complete_run_directory(trained_run):
    for name in ("config.json", "checkpoint.pt", "best.pt", "metrics.jsonl", "samples.png",
                 "reconstructions.png", "loss.png", "eval.json"):
        assert os.path.isfile(os.path.join(trained_run, name)), name
    metrics = [json.loads(line) for line in open(os.path.join(trained_run, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2]
    # every epoch is monitored on the validation split; the test split is never named
    assert all("valid_elbo" in m and not any("test" in k for k in m) for m in metrics)
    result = json.load(open(os.path.join(trained_run, "eval.json")))
    assert result["iwae_samples"] == 20 and result["num_examples"] == 40
    assert result["nll"] <= -result["elbo"] + 1e-6  # IWAE bound is tighter than the ELBO
    config = json.load(open(os.path.join(trained_run, "config.json")))
    assert config["model"]["hidden_dims"] == [32] and config["guide"] == {"name": "gaussian"}
    assert config["data"]["valid_fraction"] == 0.05
    assert {k: config["data"]["splits"][k] for k in ("train", "valid", "test")} == {"train": 190, "valid": 10,
                                                                                    "test": 40}
    assert result["checkpoint"] == "best" and result["checkpoint_epoch"] == metrics[-1]["best_epoch"]


def test_train_prints_elbo_and_iwae_with_k(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--epochs", "1", "--out", str(tmp_path / "r"), *QUICK)
    assert code == 0
    assert "ELBO" in out and "IWAE (k=20)" in out and "nats" in out


def test_resume_continues_exactly(tmp_path, capsys):
    """1 epoch + resume to 2 epochs gives the same weights as 2 epochs straight."""
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["train", "--epochs", "2", "--out", straight, *QUICK]) == 0
    assert main(["train", "--epochs", "1", "--out", split, *QUICK]) == 0
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", split, "--epochs", "2", "--no-progress")
    assert code == 0 and "resuming" in out
    a = torch.load(os.path.join(straight, "checkpoint.pt"), weights_only=True)
    b = torch.load(os.path.join(split, "checkpoint.pt"), weights_only=True)
    assert a["trainer"]["epoch"] == b["trainer"]["epoch"] == 2
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    lines = open(os.path.join(split, "metrics.jsonl")).read().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_evaluate_and_sample_from_the_run_directory_alone(trained_run, tmp_path, capsys):
    moved = str(tmp_path / "moved")
    shutil.copytree(trained_run, moved)
    code, out, _ = run_cli(capsys, "evaluate", moved, "--iwae-samples", "30", "--no-progress")
    assert code == 0 and "k=30" in out
    result = json.load(open(os.path.join(moved, "eval.json")))
    for key in ("elbo", "nll", "iwae_samples", "num_examples", "dataset", "split"):
        assert key in result
    assert result["iwae_samples"] == 30 and result["split"] == "test" and result["dataset"] == "mnist5k"
    code, out, _ = run_cli(capsys, "sample", moved, "--n", "16", "--out", str(tmp_path / "s.png"))
    assert code == 0 and os.path.getsize(tmp_path / "s.png") > 100


@pytest.mark.parametrize("split, images", [("train", 190), ("valid", 10)])
def test_evaluate_train_and_validation_split(trained_run, tmp_path, capsys, split, images):
    run = str(tmp_path / "copy")
    shutil.copytree(trained_run, run)
    code, _, _ = run_cli(capsys, "evaluate", run, "--iwae-samples", "5", "--split", split, "--no-progress")
    assert code == 0
    assert json.load(open(os.path.join(run, "eval.json")))["num_examples"] == images


def expect_error(capsys, argv, *fragments):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one clear line, no traceback
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# bad train command lines: tests/reliability/test_bad_arguments.py


def test_dataset_missing_offline_names_directory_and_flag(tmp_path, capsys):
    empty = tmp_path / "nodata"
    expect_error(capsys, ["train", "--dataset", "mnist", "--data-dir", str(empty),
                          "--out", str(tmp_path / "r")], str(empty), "--download")


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.full((10, 1, 4, 4), np.nan, dtype=np.float32), "NaN"),
        (np.full((10, 1, 4, 4), 2.0, dtype=np.float32), "[0, 1]"),
        (np.zeros((10, 16), dtype=np.float32), "shape"),
    ],
)
def test_bad_data_files(tmp_path, capsys, array, fragment):
    path = tmp_path / "data.npz"
    np.savez(path, train=array, test=array[:2])
    expect_error(capsys, ["train", "--dataset", str(path), "--out", str(tmp_path / "r")], fragment)


def test_grey_levels_with_bernoulli_and_no_binarization(tmp_path, capsys):
    path = tmp_path / "grey.npz"
    np.savez(path, train=np.full((10, 1, 4, 4), 0.5, np.float32), test=np.full((2, 1, 4, 4), 0.5, np.float32))
    expect_error(capsys, ["train", "--dataset", str(path), "--binarize", "none", "--likelihood",
                          "bernoulli", "--out", str(tmp_path / "r")], "binary")


def test_existing_run_is_never_overwritten(trained_run, capsys):
    before = digest(trained_run)
    expect_error(capsys, ["train", "--out", trained_run, *QUICK], "already holds a run", "--resume")
    expect_error(capsys, ["train", "--resume", "--out", trained_run, "--model", "dense"],
                 "cannot change a run being resumed")
    assert digest(trained_run) == before


def test_missing_foreign_and_corrupt_runs(trained_run, tmp_path, capsys):
    expect_error(capsys, ["evaluate", str(tmp_path / "nope")], "does not exist")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"hello": 1}')
    expect_error(capsys, ["evaluate", str(foreign)], "not a pyro-vae run config")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, ["sample", str(tmp_path / "empty")], "not a pyro-vae run directory")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained_run, corrupt)
    with open(corrupt / "checkpoint.pt", "r+b") as f:
        f.seek(100)
        f.write(b"garbage" * 50)
    before = digest(corrupt)
    expect_error(capsys, ["evaluate", str(corrupt)], "corrupt")
    expect_error(capsys, ["train", "--resume", "--out", str(corrupt)], "corrupt")
    assert digest(corrupt) == before

    mismatched = tmp_path / "mismatched"
    shutil.copytree(trained_run, mismatched)
    config = json.load(open(mismatched / "config.json"))
    config["model"]["hidden_dims"] = [64]
    (mismatched / "config.json").write_text(json.dumps(config))
    expect_error(capsys, ["evaluate", str(mismatched)], "do not match")

    bad_weights = tmp_path / "bad_weights"
    shutil.copytree(trained_run, bad_weights)
    # the trained weights (what a resume loads), then the averaged ones (what commands evaluate)
    for part, argv in (("model_state", ["train", "--resume", "--out", str(bad_weights), "--epochs", "3"]),
                       ("average", ["sample", str(bad_weights)])):
        ckpt = torch.load(bad_weights / "checkpoint.pt", weights_only=True)
        state = ckpt["model_state"] if part == "model_state" else ckpt["trainer"]["average"]["model"]
        state.pop(next(iter(state)))
        torch.save(ckpt, bad_weights / "checkpoint.pt")
        expect_error(capsys, argv, "weights do not match")


def test_evaluate_on_a_dataset_of_another_shape(trained_run, tmp_path, capsys):
    path = tmp_path / "colour.npz"
    arr = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    np.savez(path, train=arr, test=arr)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    expect_error(capsys, ["evaluate", str(run), "--dataset", str(path)], "shape")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid int value" in err[0]


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, in a subprocess, as a user would call it."""
    exe = shutil.which("pyro-vae")
    cmd = [exe] if exe else [sys.executable, "-m", "inference.cli"]
    proc = subprocess.run(cmd + ["evaluate", str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_training_with_warmup(tmp_path, capsys):
    run = tmp_path / "warm"
    code, out, _ = run_cli(capsys, "train", "--kl-warmup", "2", "--epochs", "2", "--out", str(run), *QUICK)
    assert code == 0
    metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [m["kl_scale"] for m in metrics] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert all(m["steps"] == 4 for m in metrics)  # 200 images, batch 50


def test_jit_is_refused_with_the_reason(tmp_path, capsys):
    expect_error(capsys, ["train", "--jit", "--out", str(tmp_path / "r"), *QUICK], "--jit is gone")
