"""Labels through the command line, as a new user would use them: the semi-supervised VAE
prints its test accuracy beside the NLL, records its labelled images, resumes exactly, samples
a row per class, is evaluated on an image folder with class sub-folders and analysed by
``posterior``; the conditional VAE is judged on log p(x | y); ``compare`` shows β and the
accuracy."""

import json
import os

import pytest
import torch

from inference.cli import main

QUICK = ["--train-size", "200", "--test-size", "30", "--z-dim", "3", "--iwae-samples", "3", "--batch-size", "64",
         "--no-progress", "--no-tensorboard", "--set", "hidden_dims=[16]"]


def read(run, name):
    with open(os.path.join(run, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ssvae_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("ssvae") / "run")
    torch.set_num_threads(1)
    assert main(["train", "--model", "ssvae", "--labels-per-class", "3", "--epochs", "1", "--out", run,
                 *QUICK]) == 0
    return run


def test_the_ssvae_prints_its_accuracy_beside_the_nll_and_records_its_labels(ssvae_run, capsys):
    main(["evaluate", ssvae_run, "--iwae-samples", "2", "--no-progress"])
    line = capsys.readouterr().out.splitlines()[0]
    assert "IWAE (k=2 per class, y summed out) log-likelihood" in line and "NLL" in line and "accuracy" in line
    config, result = read(ssvae_run, "config.json"), read(ssvae_run, "eval.json")
    assert config["model"]["num_classes"] == 10 and config["data"]["labels_per_class"] == 3
    labelled = config["data"]["labelled"]
    assert len(labelled) == 30 and labelled == sorted(labelled) and config["data"]["label_seed"] == 0
    labels = torch.load(os.path.join(ssvae_run, "checkpoint.pt"), weights_only=True)  # the run is whole
    assert labels["trainer"]["epoch"] == 1
    assert 0 <= result["accuracy"] <= 1 and len(result["confusion"]) == 10 and result["likelihood"] == "p(x)"
    assert sum(map(sum, result["confusion"])) == 30 and result["label_sum"] == 10
    assert os.path.getsize(os.path.join(ssvae_run, "confusion.png")) > 1000
    metrics = [json.loads(x) for x in open(os.path.join(ssvae_run, "metrics.jsonl"))]
    assert 0 <= metrics[-1]["valid_accuracy"] <= 1


def test_samples_of_a_class_and_a_row_per_class(ssvae_run, tmp_path, capsys):
    from PIL import Image

    out = str(tmp_path / "all.png")
    assert main(["sample", ssvae_run, "--label", "all", "--n", "4", "--out", out]) == 0
    width, height = Image.open(out).size
    assert (width, height) == (4 * 30 + 2, 10 * 30 + 2)  # 10 rows of 4 images, 2-pixel padding
    assert main(["sample", ssvae_run, "--label", "7", "--n", "3", "--out", str(tmp_path / "seven.png")]) == 0
    assert main(["sample", ssvae_run, "--interpolate", "0", "1", "--out", str(tmp_path / "path.png")]) == 0


def test_the_ssvae_resumes_exactly(tmp_path):
    from reliability.reliability_helpers import assert_same_training, checkpoint, one_thread

    # the classifier's random shifts too: drawn from torch's generator, which the checkpoint keeps
    argv = ["--model", "ssvae", "--labels-per-class", "2", "--set", "classifier_shift=2", *QUICK]
    with one_thread():
        assert main(["train", "--epochs", "2", "--out", str(tmp_path / "straight"), *argv]) == 0
        assert main(["train", "--epochs", "1", "--out", str(tmp_path / "split"), *argv]) == 0
        assert main(["train", "--resume", "--epochs", "2", "--out", str(tmp_path / "split"), "--no-progress"]) == 0
    assert_same_training(checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "split"))
    assert read(tmp_path / "straight", "config.json")["data"] == read(tmp_path / "split", "config.json")["data"]


def test_the_conditional_vae_is_judged_on_log_p_x_given_y(tmp_path, capsys):
    run = str(tmp_path / "cvae")
    assert main(["train", "--condition", "label", "--prior-set", "conditional=true", "--beta", "2", "--epochs", "1",
                 "--out", run, *QUICK]) == 0
    assert "IWAE (k=3) log p(x | y)" in capsys.readouterr().out
    config, result = read(run, "config.json"), read(run, "eval.json")
    assert config["model"]["num_classes"] == 10 and "condition" not in config["model"]
    assert config["prior"] == {"name": "normal", "conditional": True} and config["train"]["beta"] == 2.0
    assert result["likelihood"] == "p(x | y)" and "accuracy" not in result
    assert main(["sample", run, "--label", "all", "--n", "2", "--out", str(tmp_path / "rows.png")]) == 0
    plain = str(tmp_path / "plain")
    assert main(["train", "--epochs", "1", "--out", plain, *QUICK]) == 0
    capsys.readouterr()
    assert main(["compare", run, plain, "--figure", str(tmp_path / "c.png")]) == 0
    table = capsys.readouterr().out
    assert "ELBO of p(x|y), β=2" in table and "−log p(x | y), not −log p(x)" in table


def test_an_image_folder_with_class_sub_folders(labelled_digit_folder, ssvae_run, tmp_path, capsys):
    run = str(tmp_path / "folder")
    assert main(["train", "--model", "ssvae", "--dataset", labelled_digit_folder, "--labels-per-class", "4",
                 "--epochs", "1", "--out", run, "--z-dim", "2", "--iwae-samples", "2", "--no-progress",
                 "--no-tensorboard", "--set", "network=conv", "--set", "channels=[4,8]", "--set", "hidden=16"]) == 0
    out = capsys.readouterr().out
    assert "128 train / 7 valid / 15 test images" in out and "accuracy" in out
    assert main(["sample", run, "--label", "all", "--n", "2"]) == 0
    # the mnist5k run evaluated on the folder: its accuracy on the folder's test images
    assert main(["evaluate", ssvae_run, "--dataset", labelled_digit_folder, "--split", "test",
                 "--iwae-samples", "2", "--no-progress"]) == 0
    result = read(ssvae_run, "eval.json")
    assert result["dataset"] == os.path.abspath(labelled_digit_folder) and result["num_examples"] == 15
    assert sum(map(sum, result["confusion"])) == 15


def test_posterior_compares_the_classifier_with_the_models_posterior_of_the_label(ssvae_run, tmp_path, capsys):
    out = str(tmp_path / "post")
    assert main(["posterior", ssvae_run, "--index", "0", "--chains", "2", "--draws", "4", "--warmup", "4",
                 "--iwae-samples", "4", "--local-steps", "5", "--out", out, "--no-progress"]) == 0
    labels = read(out, "labels.json")["examples"][0]
    assert abs(sum(labels["p"]) - 1) < 1e-9 and abs(sum(labels["q"]) - 1) < 1e-6 and labels["kl_p_q"] >= -1e-9
    assert os.path.isfile(os.path.join(out, "labels.png")) and os.path.isfile(os.path.join(out, "nuts.nc"))
    assert "p(y|x) says" in capsys.readouterr().out
