"""The conv and ResNet VAEs and the discretized logistic through the command line, as a new
user would run them: train on mnist5k, then evaluate and sample from the run directory."""

import json
import os

import pytest

from inference.cli import main

QUICK = ["--train-size", "160", "--test-size", "20", "--z-dim", "4", "--iwae-samples", "10",
         "--no-progress", "--batch-size", "40", "--epochs", "1", "--set", "channels=[4,8]",
         "--set", "hidden=16"]


@pytest.mark.parametrize("model", ["conv", "resnet"])
def test_train_evaluate_sample_a_conv_model(model, tmp_path, capsys):
    run = str(tmp_path / model)
    assert main(["train", "--model", model, "--out", run, *QUICK]) == 0
    out = capsys.readouterr().out
    assert f"training {model} VAE" in out and "IWAE (k=10)" in out and "bits/dim" not in out
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["model"]["name"] == model and config["model"]["channels"] == [4, 8]
    assert main(["evaluate", run, "--iwae-samples", "12", "--no-progress"]) == 0
    assert "IWAE (k=12)" in capsys.readouterr().out
    assert main(["sample", run, "--n", "9"]) == 0
    assert os.path.getsize(os.path.join(run, "samples.png")) > 100


def test_grey_levels_with_the_logistic_likelihood_report_bits_per_dim(tmp_path, capsys):
    run = str(tmp_path / "grey")
    argv = ["train", "--model", "conv", "--binarize", "none", "--likelihood", "logistic",
            "--out", run, *QUICK]
    assert main(argv) == 0
    assert "bits/dim" in capsys.readouterr().out
    result = json.load(open(os.path.join(run, "eval.json")))
    # a discrete likelihood: bits/dim = NLL / (D ln 2), no dequantization offset
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * 0.6931471805599453))
    assert 0 < result["bits_per_dim"] < 8
    assert main(["evaluate", run, "--iwae-samples", "5", "--no-progress"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_logistic_on_binarized_data_is_refused_in_one_line(tmp_path, capsys):
    code = main(["train", "--model", "conv", "--likelihood", "logistic", "--out", str(tmp_path / "r"), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "logistic likelihood models grey levels, but the data are binarized" in err[0]
    assert not (tmp_path / "r").exists()


def test_pixel_model_trains_evaluates_and_samples_with_its_own_defaults(tmp_path, capsys):
    """`--model pixel` brings free bits (0.25 nats per latent dimension) as its default; a flag
    the user gives wins; the sample grid comes from the autoregressive sampler."""
    small = ["--set", "pixel_channels=4", "--set", "pixel_layers=1", "--set", "cond_channels=2"]
    run = str(tmp_path / "pixel")
    assert main(["train", "--model", "pixel", "--out", run, *QUICK, *small]) == 0
    assert "training pixel VAE" in capsys.readouterr().out
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["train"]["free_bits"] == 0.25 and config["train"]["epochs"] == 1
    result = json.load(open(os.path.join(run, "eval.json")))
    assert result["kl"] > 0 and result["nll"] <= result["elbo"] * -1 + 1e-6
    assert main(["sample", run, "--n", "4"]) == 0
    assert os.path.getsize(os.path.join(run, "samples.png")) > 100
    run2 = str(tmp_path / "pixel-nofb")
    assert main(["train", "--model", "pixel", "--free-bits", "0", "--out", run2, *QUICK, *small]) == 0
    assert json.load(open(os.path.join(run2, "config.json")))["train"]["free_bits"] == 0
