"""Image folders through the command line, as a new user would use them: train on a folder,
evaluate and sample from the run directory alone, and every bad input refused in one line."""

import json
import os
import shutil

import pytest
from image_files import write_digit_pngs
from test_cli import expect_error

from inference.cli import main

QUICK = ["--iwae-samples", "5", "--no-progress", "--batch-size", "36", "--epochs", "1",
         "--no-tensorboard"]
SMALL_CONV = ["--set", "channels=[4,8]", "--set", "hidden=16"]


@pytest.mark.parametrize("argv, shape", [
    (["--model", "dense", "--set", "hidden=[16]", "--z-dim", "4"], [1, 28, 28]),  # binarized, Bernoulli
    (["--model", "conv", "--z-dim", "4", "--image-size", "16", "--binarize", "none", "--likelihood", "logistic", *SMALL_CONV],
     [1, 16, 16]),
    (["--model", "realnvp", "--image-size", "8", "--set", "num_scales=1", "--set", "hidden_channels=4"],
     [1, 8, 8]),
])
def test_train_on_a_folder_then_evaluate_and_sample_from_the_run_alone(digit_folder, tmp_path, capsys,
                                                                       monkeypatch, argv, shape):
    run = str(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(digit_folder, tmp_path)
    assert main(["train", "--dataset", relative, "--out", run, *QUICK, *argv]) == 0
    out = capsys.readouterr().out
    assert "103 train / 5 valid / 12 test images" in out  # 5 % of the folder's training split held out
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["data"]["name"] == os.path.abspath(digit_folder)  # absolute: works from anywhere
    assert config["data"]["fingerprint"] and config["model"]["x_shape"] == shape
    moved = str(tmp_path / "elsewhere" / "run")
    shutil.copytree(run, moved)
    monkeypatch.chdir(os.path.join(tmp_path, "elsewhere"))
    assert main(["evaluate", moved, "--iwae-samples", "3", "--no-progress"]) == 0
    assert json.load(open(os.path.join(moved, "eval.json")))["num_examples"] == 12
    assert main(["sample", moved, "--n", "4"]) == 0
    assert main(["sample", moved, "--interpolate", "0", "1", "--steps", "3"]) == 0
    assert os.path.isfile(os.path.join(moved, "interpolation_0_1.png"))


def test_colour_photos_train_with_the_logistic_likelihood(photo_folder, tmp_path, capsys):
    run = str(tmp_path / "photos")
    assert main(["train", "--dataset", photo_folder, "--image-size", "12x16", "--binarize", "none",
                 "--likelihood", "logistic", "--model", "conv", *SMALL_CONV, "--z-dim", "4", "--out", run,
                 *QUICK]) == 0
    assert "bits/dim" in capsys.readouterr().out
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["model"]["x_shape"] == [3, 12, 16] and config["data"]["image_size"] == [12, 16]


def test_a_changed_folder_is_refused_unless_named_again(tmp_path, capsys):
    folder = tmp_path / "digits"
    write_digit_pngs(str(folder), 40)
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", str(folder), "--out", run, "--set", "hidden=[8]", "--z-dim", "2",
                 *QUICK]) == 0
    write_digit_pngs(str(folder / "more"), 0)  # an empty sub-folder changes nothing
    assert main(["evaluate", run, "--iwae-samples", "2", "--no-progress"]) == 0
    (folder / "00000.png").unlink()
    expect_error(capsys, ["evaluate", run], "changed since the run was trained", f"--dataset {folder}")
    expect_error(capsys, ["train", "--resume", "--out", run, "--epochs", "2"], "changed since")
    capsys.readouterr()
    assert main(["evaluate", run, "--dataset", str(folder), "--iwae-samples", "2", "--no-progress"]) == 0


@pytest.mark.parametrize("argv, fragments", [
    (["--image-size", "0"], ["--image-size must be H or HxW", "'0'"]),
    (["--image-size", "32x"], ["--image-size must be H or HxW"]),
    (["--image-size", "big"], ["--image-size must be H or HxW"]),
    (["--channels", "2"], ["invalid data settings", "channels=2"]),
    (["--channels", "rgb"], ["--channels", "invalid int value"]),
    (["--test-fraction", "1.5"], ["invalid data settings", "test_fraction=1.5"]),
    (["--test-fraction", "0"], ["invalid data settings", "test_fraction=0.0"]),
])
def test_bad_folder_options(digit_folder, tmp_path, capsys, argv, fragments):
    run = tmp_path / "run"
    try:
        expect_error(capsys, ["train", "--dataset", digit_folder, "--out", str(run), *argv], *fragments)
    except SystemExit as exit_info:  # argparse's own type errors
        assert exit_info.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(f in err[0] for f in fragments)
    assert not run.exists()


def test_bad_folders_through_the_command_line(photo_folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    cases = [
        (["--dataset", str(tmp_path / "empty")], ["holds no PNG or JPEG images"]),
        (["--dataset", str(tmp_path / "missing") + "/"], ["image folder", "does not exist"]),
        (["--dataset", photo_folder], ["differ in size", "--image-size"]),
        (["--dataset", "mnist5k", "--image-size", "32"], ["unknown option image_size for dataset 'mnist5k'"]),
    ]
    for argv, fragments in cases:
        expect_error(capsys, ["train", "--out", str(run), *argv], *fragments)
        assert not run.exists()


def test_run_configs_written_before_the_folder_options_still_load():
    from inference.config import DataConfig

    old = {"name": "mnist5k", "binarize": "dynamic", "data_dir": "/data", "seed": 0, "train_size": None,
           "test_size": 100}
    data = DataConfig.from_dict(old)
    assert (data.image_size, data.channels, data.test_fraction, data.fingerprint) == (None,) * 4
    # (a run config of version 1 or 2 sets valid_fraction 0 when it is read: RunConfig.from_dict)
    assert data.load_kwargs() == {**old, "image_size": None, "channels": None, "test_fraction": None,
                                  "valid_fraction": 0.05}
    assert DataConfig.from_dict(DataConfig(name="/x", image_size="24x32").to_dict()).image_size == (24, 32)
