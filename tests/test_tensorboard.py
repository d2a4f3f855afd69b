"""TensorBoard event files of a run, read back with TensorBoard's own EventAccumulator."""

import json
import os

import pytest
import torch

from inference.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

QUICK = ["--train-size", "120", "--test-size", "20", "--set", "hidden=[16]", "--z-dim", "3",
         "--iwae-samples", "5", "--no-progress", "--batch-size", "40"]


def events(run):
    acc = EventAccumulator(os.path.join(run, "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def board_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("tb") / "run")
    assert main(["train", "--epochs", "3", "--out", run, *QUICK]) == 0
    return run


def test_every_epoch_scalar_matches_metrics_jsonl(board_run):
    metrics = [json.loads(line) for line in open(os.path.join(board_run, "metrics.jsonl"))]
    acc = events(board_run)
    expected = {"valid/elbo": "valid_elbo", "valid/reconstruction": "valid_rec", "valid/kl": "valid_kl",
                "valid/best_elbo": "best_valid_elbo", "valid/best_epoch": "best_epoch",
                "train/beta": "kl_scale", "train/lr": "lr", "train/seconds": "seconds"}
    for tag, key in expected.items():
        assert scalars(acc, tag) == [(m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in metrics], tag
    assert scalars(acc, "train/objective") == [(m["epoch"], pytest.approx(-m["train_loss"], rel=1e-6))
                                               for m in metrics]
    assert not any(tag.startswith("test/") for tag in acc.Tags()["scalars"])  # never the test split


def test_image_grids_and_the_final_evaluation(board_run):
    acc = events(board_run)
    assert {"samples", "reconstructions"} <= set(acc.Tags()["images"])
    assert [e.step for e in acc.Images("samples")] == [1, 2, 3]  # 3 epochs: every epoch
    assert acc.Images("samples")[0].width == 8 * 30 + 2  # 8 images of 28 + 2 of padding each
    result = json.load(open(os.path.join(board_run, "eval.json")))
    assert scalars(acc, "eval/nll") == [(3, pytest.approx(result["nll"], rel=1e-6))]
    assert scalars(acc, "eval/active_units") == [(3, result["active_units"])]


def test_grey_levels_log_bits_per_dim(tmp_path):
    run = str(tmp_path / "grey")
    assert main(["train", "--epochs", "1", "--out", run, "--binarize", "none", *QUICK]) == 0
    acc = events(run)
    assert len(scalars(acc, "valid/elbo_bits_per_dim")) == 1 and len(scalars(acc, "eval/bits_per_dim")) == 1


def test_a_resumed_run_continues_its_curves_without_duplicates(tmp_path):
    run = str(tmp_path / "resumed")
    assert main(["train", "--epochs", "1", "--out", run, *QUICK]) == 0
    first = open(os.path.join(run, "checkpoint.pt"), "rb").read()
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--no-progress"]) == 0
    # as if epoch 2 had died after its metrics and events, before its checkpoint
    open(os.path.join(run, "checkpoint.pt"), "wb").write(first)
    assert main(["train", "--resume", "--out", run, "--epochs", "3", "--no-progress"]) == 0
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [s for s, _ in scalars(events(run), "valid/elbo")] == [1, 2, 3]
    assert scalars(events(run), "valid/elbo")[1][1] == pytest.approx(metrics[1]["valid_elbo"], rel=1e-6)


def test_tensorboard_changes_nothing_of_the_training(tmp_path):
    """The image grids are drawn with their own seed: weights are the same with or without."""
    a, b = str(tmp_path / "with"), str(tmp_path / "without")
    assert main(["train", "--epochs", "2", "--out", a, *QUICK]) == 0
    assert main(["train", "--epochs", "2", "--out", b, "--no-tensorboard", *QUICK]) == 0
    assert os.path.isdir(os.path.join(a, "tb")) and not os.path.exists(os.path.join(b, "tb"))
    wa = torch.load(os.path.join(a, "checkpoint.pt"), weights_only=True)["model_state"]
    wb = torch.load(os.path.join(b, "checkpoint.pt"), weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_without_the_package_it_is_silently_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("inference.tensorboard.available", lambda: False)
    run = str(tmp_path / "run")
    assert main(["train", "--epochs", "1", "--out", run, *QUICK]) == 0
    assert not os.path.exists(os.path.join(run, "tb"))
    assert "tensorboard" not in capsys.readouterr().err.lower()
