"""One typed configuration: options checked against the constructors' annotations, the
versioned config.json, run directories written by pyro-vae 0.1, and the flags derived from
the dataclass fields."""

import dataclasses
import json
import os
import shutil

import pytest
import torch
from test_cli import expect_error

from inference.cli import main
from inference.args import flag_fields
from inference.config import Choices, DataConfig, RunConfig
from inference.restore import load_run
from inference.rundir import read_config
from pyro_vae import ConfigError, PyroVAEError, build_guide, build_vae
from pyro_vae.infer.config import TrainConfig
from pyro_vae.options import bind_options, check_value

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
QUICK = ["--train-size", "64", "--test-size", "16", "--z-dim", "2", "--set", "hidden_dims=[8]",
         "--iwae-samples", "4", "--no-progress", "--epochs", "1"]


# ---------------------------------------------------------------------- typed options
@pytest.mark.parametrize("argv, fragments", [
    (["--set", "hidden=512"], ["option hidden_dims of model 'dense' must be a list of integers",
                               "got 512 (int)", "valid options: z_dim, likelihood, hidden_dims"]),
    (["--set", "hidden_dims=[abc]"], ["must be a list of integers", "got '[abc]' (str)"]),
    (["--set", "activation=3"], ["option activation of model 'dense' must be a string"]),
    (["--model", "conv", "--set", "hidden=[32]"], ["option hidden of model 'conv' must be an integer"]),
    (["--model", "conv", "--set", "channels=32"], ["option channels of model 'conv' must be a list"]),
    (["--set", "hiden=3"], ["unknown option hiden for model 'dense'", "valid options: z_dim"]),
    (["--set", "z_dim=3"], ["--set z_dim=… is spelled --z-dim"]),
    (["--set", "hidden"], ["--set expects KEY=VALUE"]),
    (["--guide", "iaf", "--guide-set", "hidden_dims=8"], ["option hidden_dims of guide 'iaf' must be a "
                                                          "list of integers or null"]),
    (["--guide", "spline", "--guide-set", "count_bins=2.5"], ["option count_bins of guide 'spline' must be "
                                                              "an integer"]),
    (["--guide", "sylvester", "--guide-set", "colour=1"], ["unknown option colour for guide 'sylvester'",
                                                           "valid options: num_flows, hidden_dims, variant"]),
    (["--flows", "2"], ["unknown option num_flows for guide 'gaussian'", "none (it takes no options)"]),
    (["--prior", "realnvp", "--prior-set", "hidden_dims=64"], ["option hidden_dims of prior 'realnvp' must be"]),
    (["--prior", "realnvp", "--prior-set", "layers=2"], ["unknown option layers for prior 'realnvp'",
                                                         "valid options: num_couplings, hidden_dims"]),
    (["--prior-set", "scale=2"], ["unknown option scale for prior 'normal'"]),
    (["--model", "nice", "--prior-set", "num_couplings=2"], ["--prior-set cannot be used with the density flow"]),
    (["--model", "realnvp", "--set", "hidden_channels=[4]"], ["option hidden_channels of flow model 'realnvp'"]),
])
def test_ill_typed_options_are_one_line_with_exit_2(tmp_path, capsys, argv, fragments):
    out = tmp_path / "run"
    expect_error(capsys, ["train", *argv, "--out", str(out), "--train-size", "32", "--test-size", "4",
                          "--no-progress"], *fragments)
    assert not out.exists()  # refused before anything was written


def test_options_are_typed_once_for_every_kind():
    vae = build_vae("dense", (1, 28, 28), z_dim=3, hidden_dims=[16, 8])
    assert vae.spec["hidden_dims"] == [16, 8]  # JSON-ready, list
    assert build_vae("dense", (1, 28, 28), z_dim=3, hidden=(16,)).spec["hidden_dims"] == [16]  # old spelling
    with pytest.raises(ConfigError, match="given twice"):
        build_vae("dense", (1, 28, 28), hidden=(16,), hidden_dims=(8,))
    with pytest.raises(ConfigError, match="option z_dim of model 'dense' must be an integer, got 2.7"):
        build_vae("dense", (1, 28, 28), z_dim=2.7)
    with pytest.raises(ConfigError, match="option lr must be a finite number|must be a finite number"):
        check_value(float("nan"), float, "option lr")
    assert check_value(3, float, "x") == 3.0 and isinstance(check_value(3, float, "x"), float)
    with pytest.raises(ConfigError, match="must be true or false"):
        check_value(1, bool, "flag")
    guide = build_guide("spline", vae, bound=3)  # an int where a float is asked: fine
    assert guide.spec["bound"] == 3.0


def test_bind_options_fills_defaults_in_signature_order():
    def f(a: int, b: float = 1.0, c: str = "x"):
        return a, b, c

    assert bind_options(f, {"c": "y", "a": 2}, "f") == {"a": 2, "b": 1.0, "c": "y"}
    with pytest.raises(ConfigError, match="f needs the option a"):
        bind_options(f, {}, "f")


def test_prior_options_are_set_and_recorded(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--prior", "realnvp", "--prior-set", "num_couplings=2",
                 "--prior-set", "hidden_dims=[16]", "--out", str(run), *QUICK]) == 0
    config = json.load(open(run / "config.json"))
    assert config["version"] == 3
    assert config["prior"] == {"name": "realnvp", "num_couplings": 2, "hidden_dims": [16]}
    vae, _, _, _ = load_run(str(run))
    assert len(vae.prior.couplings) == 2


# ---------------------------------------------------------------------- config.json
def test_run_config_round_trips_and_checks_types():
    config = RunConfig({"name": "dense", "z_dim": 2}, {"name": "gaussian"}, {"name": "normal"})
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    bad = config.to_dict()
    bad["train"]["epochs"] = "many"
    with pytest.raises(PyroVAEError, match="config.json: training settings.epochs must be an integer"):
        RunConfig.from_dict(bad)
    bad = config.to_dict()
    bad["data"]["colour"] = True
    with pytest.raises(PyroVAEError, match="unknown key colour in data settings; valid keys: name"):
        RunConfig.from_dict(bad)
    bad = config.to_dict()
    bad["data"] = "mnist5k"
    with pytest.raises(PyroVAEError, match="data settings must be a JSON object"):
        RunConfig.from_dict(bad)
    bad = config.to_dict()
    bad["version"] = 7
    with pytest.raises(PyroVAEError, match="run-config version 7"):
        RunConfig.from_dict(bad)
    with pytest.raises(PyroVAEError, match="not a pyro-vae run config"):
        RunConfig.from_dict({"format": "other"})


def test_config_classes_refuse_bad_values():
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig(seed=-1)
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig(seed=2**33)
    with pytest.raises(ConfigError, match="training setting epochs must be an integer"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ConfigError, match="unknown binarization"):
        DataConfig(binarize="maybe")


@pytest.mark.parametrize("name", ["v1_vae", "v1_flow"])
def test_a_run_written_by_version_1_evaluates_samples_and_resumes(tmp_path, capsys, name):
    run = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), run)
    config = read_config(str(run))
    assert config.kind == ("vae" if name == "v1_vae" else "flow")
    if name == "v1_vae":  # the prior moved out of the model spec; old option names still build
        assert config.prior == {"name": "realnvp"} and config.model["hidden"] == [8]
    old_eval = json.load(open(run / "eval.json"))
    assert main(["evaluate", str(run), "--iwae-samples", "4", "--no-progress"]) == 0
    new_eval = json.load(open(run / "eval.json"))
    # the same model, data and seed: the same numbers as pyro-vae 0.1 wrote
    assert new_eval["nll"] == pytest.approx(old_eval["nll"], abs=1e-4)
    assert new_eval["elbo"] == pytest.approx(old_eval["elbo"], abs=1e-4)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    config = json.load(open(run / "config.json"))
    assert config["version"] == 3 and config["train"]["epochs"] == 2
    assert config["data"]["valid_fraction"] == 0  # resumed as it was trained: without a validation split
    if name == "v1_vae":  # rewritten in today's spellings, and it loads again
        assert config["model"]["hidden_dims"] == [8] and "prior" not in config["model"]
        assert config["prior"] == {"name": "realnvp", "num_couplings": 4, "hidden_dims": [64, 64]}
    model, guide, _, payload = load_run(str(run))
    assert payload["trainer"]["epoch"] == 2


def test_a_run_written_by_version_2_evaluates_samples_resumes_exactly_and_compares(tmp_path, capsys):
    """pyro-vae 0.2 ran without a validation split and kept no best.pt: every command reads
    its run as it is (the last epoch's weights), and a resumed run continues exactly as 0.2's
    own straight two-epoch run did (tests/fixtures/README.md)."""
    run = tmp_path / "v2"
    shutil.copytree(os.path.join(FIXTURES, "v2_vae"), run)
    assert read_config(str(run)).data.valid_fraction == 0
    old_eval = json.load(open(run / "eval.json"))
    assert main(["evaluate", str(run), "--iwae-samples", "4", "--no-progress"]) == 0
    new_eval = json.load(open(run / "eval.json"))
    assert new_eval["nll"] == pytest.approx(old_eval["nll"], abs=1e-4)
    assert new_eval["checkpoint"] == "last" and new_eval["checkpoint_epoch"] == 1  # nothing was selected
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["compare", str(run), "--figure", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "last (epoch 1)" in out and f"{new_eval['nll']:.2f}" in out
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model_state"]
    straight = torch.load(os.path.join(FIXTURES, "v2_vae_epoch2.pt"), weights_only=True)["model_state"]
    assert all(torch.equal(state[k], straight[k]) for k in straight)
    assert not (run / "best.pt").exists()
    metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert "test_elbo" in metrics[0] and not any(k.startswith("test") for k in metrics[1])


# ---------------------------------------------------------------------- derived flags
def test_every_option_field_is_a_train_flag_and_the_latent_ones_are_refused_for_flows():
    from inference.args import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for cls in (Choices, DataConfig, TrainConfig, RunConfig):
        for f, _, flag in flag_fields(cls):
            assert flag in flags, flag
    latent = [flag for cls in (Choices, DataConfig, TrainConfig)
              for f, _, flag in flag_fields(cls) if f.metadata["latent"]]
    assert set(latent) >= {"--z-dim", "--guide", "--flows", "--prior", "--prior-set", "--kl-warmup",
                           "--free-bits", "--likelihood", "--guide-set"}
    only_on_resume = [flag for cls in (Choices, DataConfig, TrainConfig, RunConfig)
                      for f, _, flag in flag_fields(cls) if f.metadata["on_resume"]]
    assert only_on_resume == ["--epochs", "--patience"]


def test_a_new_training_field_becomes_a_flag_without_other_edits():
    from pyro_vae.options import option

    @dataclasses.dataclass
    class Extra:
        warmup_steps: int = option(0, "steps of something")

    import argparse

    from inference.args import add_flags, given_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, Extra)
    assert given_flags(parser.parse_args(["--warmup-steps", "5"]), Extra) == {"warmup_steps": 5}


def test_resume_refuses_every_stored_setting(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    for flag, value in (("--lr", "0.1"), ("--prior-set", "num_couplings=1"), ("--iwae-samples", "9"),
                        ("--test-size", "3"), ("--particles", "2")):
        expect_error(capsys, ["train", "--resume", "--out", str(run), flag, value],
                     f"{flag} cannot change a run being resumed")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["trainer"]["epoch"] == 1
