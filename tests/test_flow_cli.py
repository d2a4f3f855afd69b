"""Density flows and the learned prior through the command line and run directories."""

import json
import math
import os
import shutil

import pytest
import torch
from test_cli import expect_error, run_cli

from inference.cli import main

QUICK = ["--train-size", "64", "--test-size", "16", "--batch-size", "32", "--no-progress"]
TINY_REALNVP = ["--set", "hidden=4", "--set", "couplings=1", "--set", "num_scales=2"]
TINY_GLOW = ["--set", "hidden=4", "--set", "steps=1"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "realnvp")
    assert main(["train", "--model", "realnvp", "--binarize", "none", "--epochs", "1", "--out", run,
                 *TINY_REALNVP, *QUICK]) == 0
    return run


def test_flow_run_directory_reports_exact_bits_per_dim(flow_run):
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "samples.png",
                 "samples_temperature.png", "reconstructions.png", "loss.png", "eval.json"):
        assert os.path.isfile(os.path.join(flow_run, name)), name
    config = json.load(open(os.path.join(flow_run, "config.json")))
    assert config["kind"] == "flow" and config["guide"] == {"name": "empty"}
    assert config["model"]["name"] == "realnvp" and config["model"]["hidden_channels"] == 4
    result = json.load(open(os.path.join(flow_run, "eval.json")))
    assert result["estimator"] == "exact" and result["iwae_samples"] == 1
    assert result["elbo"] == result["iwae"] and result["kl"] == 0.0
    d = 28 * 28
    assert result["bits_per_dim"] == pytest.approx((result["nll"] + d * math.log(256)) / (d * math.log(2)))
    assert math.isfinite(result["bits_per_dim"])


def test_flow_train_prints_exact_log_likelihood_and_bits_per_dim(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--model", "nice", "--epochs", "1", "--set", "hidden=[8]",
                           "--out", str(tmp_path / "r"), *QUICK)  # --binarize none is the default
    assert code == 0 and "density flow" in out
    assert "exact" in out and "bits/dim" in out and "ELBO" not in out


def test_flow_evaluate_and_sample_with_temperature_from_the_run_directory(flow_run, tmp_path, capsys):
    run = str(tmp_path / "moved")
    shutil.copytree(flow_run, run)
    before = json.load(open(os.path.join(run, "eval.json")))
    code, out, _ = run_cli(capsys, "evaluate", run, "--iwae-samples", "50", "--no-progress")
    assert code == 0 and "bits/dim" in out
    after = json.load(open(os.path.join(run, "eval.json")))
    # no latent, so k is irrelevant: evaluation is the exact likelihood, and deterministic
    assert after["iwae_samples"] == 1 and after["bits_per_dim"] == pytest.approx(before["bits_per_dim"], abs=1e-9)
    code, _, _ = run_cli(capsys, "sample", run, "--n", "9", "--temperature", "0.7", "--out", str(tmp_path / "s.png"))
    assert code == 0 and os.path.getsize(tmp_path / "s.png") > 100


def test_flow_resume_continues_exactly(tmp_path, capsys):
    """Glow (ActNorm initialised from data, then checkpointed): 1 + 1 epochs = 2 epochs."""
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["train", "--model", "glow", "--epochs", "2", "--out", straight, *TINY_GLOW, *QUICK]) == 0
    assert main(["train", "--model", "glow", "--epochs", "1", "--out", split, *TINY_GLOW, *QUICK]) == 0
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", split, "--epochs", "2", "--no-progress")
    assert code == 0 and "resuming" in out
    a = torch.load(os.path.join(straight, "checkpoint.pt"), weights_only=True)
    b = torch.load(os.path.join(split, "checkpoint.pt"), weights_only=True)
    assert any(k.endswith("initialized") for k in a["model_state"])
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key


@pytest.mark.parametrize("argv, fragments", [
    (["--model", "realnvp", "--guide", "gaussian"], ["--guide", "no latent variable"]),
    (["--model", "glow", "--z-dim", "8", "--prior", "realnvp"], ["--z-dim, --prior", "'glow'"]),
    (["--model", "nice", "--flows", "4", "--kl-warmup", "2"], ["--flows, --kl-warmup"]),
    (["--model", "nice", "--free-bits", "0.5"], ["--free-bits", "no latent variable"]),
    (["--model", "realnvpp"], ["unknown model 'realnvpp'", "valid models: conv, dense", "glow"]),
    (["--model", "nice", "--binarize", "dynamic"], ["binarized", "argument --", "binarize='none'"]),
    (["--model", "glow", "--set", "num_scales=3"], ["cannot squeeze"]),
    (["--model", "realnvp", "--set", "z_dim=3"], ["unknown option z_dim", "num_scales"]),
])
def test_bad_flow_options(tmp_path, capsys, argv, fragments):
    run = tmp_path / "run"
    expect_error(capsys, ["train", "--out", str(run), *QUICK, *argv], *fragments)
    assert not run.exists()


def test_vae_with_realnvp_prior_trains_evaluates_and_refuses_temperature(tmp_path, capsys):
    run = str(tmp_path / "vae")
    code, out, _ = run_cli(capsys, "train", "--prior", "realnvp", "--epochs", "1", "--out", run,
                           "--set", "hidden=[32]", "--z-dim", "4", "--iwae-samples", "10", *QUICK)
    assert code == 0 and "IWAE (k=10)" in out
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["kind"] == "vae" and config["prior"]["name"] == "realnvp"
    state = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)["model_state"]
    assert any(k.startswith("prior.couplings.") for k in state)
    code, out, _ = run_cli(capsys, "evaluate", run, "--iwae-samples", "10", "--no-progress")
    assert code == 0 and json.load(open(os.path.join(run, "eval.json")))["estimator"] == "iwae-10"
    expect_error(capsys, ["sample", run, "--temperature", "0.5"], "flow models")
