"""Honest model selection from the command line: best.pt holds the best validation epoch's
weights, early stopping says where it stopped, commands take --checkpoint best|last, a
stopped run is resumed only with a larger --patience, and the curves are readable."""

import json
import os

import pytest
import torch

from inference.cli import main
from inference.plots import readable_limits
from pyro_vae.infer import trainer as trainer_module

QUICK = ["--train-size", "160", "--test-size", "16", "--set", "hidden_dims=[16]", "--z-dim", "2",
         "--iwae-samples", "3", "--no-progress", "--batch-size", "40", "--no-tensorboard"]


def scripted(monkeypatch, values):
    """The validation ELBO of epoch e is ``values[e - 1]`` (training itself is untouched)."""
    script = iter(values)
    monkeypatch.setattr(trainer_module, "evaluate",
                        lambda *a, **k: {"elbo": next(script), "rec": 0.0, "kl": 0.0})


def load(run, name):
    return torch.load(os.path.join(run, name), weights_only=True)


def test_best_pt_holds_the_weights_of_the_best_validation_epoch(tmp_path, capsys, monkeypatch):
    run, two = str(tmp_path / "run"), str(tmp_path / "two")
    scripted(monkeypatch, [-9.0, -5.0, -6.0, -7.0])
    assert main(["train", "--epochs", "4", "--ema", "0", "--out", run, *QUICK]) == 0  # the trained weights
    scripted(monkeypatch, [-9.0, -5.0])
    assert main(["train", "--epochs", "2", "--ema", "0", "--out", two, *QUICK]) == 0  # the same, stopped at 2
    out = capsys.readouterr().out
    best, straight = load(run, "best.pt"), load(two, "checkpoint.pt")
    assert best["best"] == {"epoch": 2, "valid_elbo": -5.0, "averaged": False}
    assert all(torch.equal(best["model_state"][k], v) for k, v in straight["model_state"].items())
    assert not all(torch.equal(load(run, "checkpoint.pt")["model_state"][k], v)
                   for k, v in straight["model_state"].items())  # the last epoch is another
    result = json.load(open(os.path.join(run, "eval.json")))
    assert (result["checkpoint"], result["checkpoint_epoch"], result["epochs"]) == ("best", 2, 4)
    assert "best checkpoint (epoch 2 of 4)" in out
    monkeypatch.undo()
    for which, epoch in (("last", 4), ("best", 2)):
        assert main(["evaluate", run, "--checkpoint", which, "--iwae-samples", "3", "--no-progress"]) == 0
        assert json.load(open(os.path.join(run, "eval.json")))["checkpoint_epoch"] == epoch
    assert f"{which} checkpoint (epoch {epoch}" in capsys.readouterr().out
    assert main(["sample", run, "--checkpoint", "last", "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_early_stopping_says_where_and_a_stopped_run_resumes_only_with_more_patience(tmp_path, capsys,
                                                                                   monkeypatch):
    run = str(tmp_path / "run")
    scripted(monkeypatch, [-9.0, -5.0, -6.0, -5.5, -7.0, -8.0])
    assert main(["train", "--epochs", "6", "--patience", "2", "--ema", "0.9", "--out", run, *QUICK]) == 0
    out = capsys.readouterr().out
    assert "stopped early after epoch 4: the validation ELBO has not improved for 2 epochs (best: epoch 2" in out
    assert "best checkpoint (epoch 2 of 4, stopped early, averaged weights)" in out
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    result = json.load(open(os.path.join(run, "eval.json")))
    assert result["stopped_early"] and result["best_epoch"] == 2 and result["averaged"]
    assert load(run, "best.pt")["best"]["averaged"]
    # a stopped run: one line, exit 2, nothing written; a larger patience continues it
    before = open(os.path.join(run, "checkpoint.pt"), "rb").read()
    assert main(["train", "--resume", "--out", run]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped early at epoch 4" in err and "--patience N with N > 2" in err
    assert open(os.path.join(run, "checkpoint.pt"), "rb").read() == before
    scripted(monkeypatch, [-4.0, -4.5])
    assert main(["train", "--resume", "--out", run, "--patience", "3", "--no-progress"]) == 0
    assert "best checkpoint (epoch 5 of 6" in capsys.readouterr().out
    assert json.load(open(os.path.join(run, "config.json")))["train"]["patience"] == 3


def test_without_a_validation_split_nothing_is_selected(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--epochs", "2", "--valid-fraction", "0", "--ema", "0.9", "--out", run, *QUICK]) == 0
    out = capsys.readouterr().out
    assert "no validation split (--valid-fraction 0): nothing is selected" in out
    assert "last checkpoint (epoch 2, averaged weights)" in out
    assert not os.path.exists(os.path.join(run, "best.pt"))
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert not any(k.startswith(("valid", "test", "best")) for m in metrics for k in m)
    assert main(["train", "--epochs", "2", "--valid-fraction", "0", "--patience", "3",
                 "--out", str(tmp_path / "no"), *QUICK]) == 2
    assert "argument --patience/--valid-fraction: patience needs a validation split" in capsys.readouterr().err


def test_the_curves_keep_the_late_epochs_readable():
    """The first epochs' ELBO, hundreds of nats below, must not set the axis."""
    curve = [(1, -280.0), (2, -150.0)] + [(e, -100.0 + 0.01 * e) for e in range(3, 201)]
    low, high = readable_limits([curve])
    assert low > -110 and high < -97
    assert readable_limits([[(1, -5.0), (2, -4.0)]]) == pytest.approx((-5.08, -3.92))


@pytest.mark.parametrize("argv, model, ema, epochs, dropout, decay", [
    ([], "dense", 0.999, 300, 0.0, 0.0),
    (["--binarize", "static"], "dense", 0.999, 300, 0.1, 0.0),  # a static binarization is memorised: dropout
    (["--binarize", "static", "--set", "dropout=0"], "dense", 0.999, 300, 0.0, 0.0),
    (["--model", "conv", "--ema", "0"], "conv", 0.0, 400, 0.0, 0.1),
    (["--model", "conv", "--weight-decay", "0"], "conv", 0.999, 400, 0.0, 0.0),  # a flag wins
    (["--model", "resnet"], "resnet", 0.999, 500, 0.0, 0.1),
    (["--model", "hvae"], "hvae", 0.999, 400, 0.0, 0.1),  # and a KL warm-up: below
    (["--model", "linear"], "linear", 0.999, 200, 0.0, 0.0),
    (["--prior", "vamp"], "dense", 0.999, 300, 0.0, 0.1),  # a prior's training defaults over its model's
    (["--prior", "vamp", "--weight-decay", "0"], "dense", 0.999, 300, 0.0, 0.0),
    (["--model", "pixel"], "pixel", None, 20, 0.0, 0.0),
    (["--valid-fraction", "0"], "dense", 0.999, 300, 0.0, 0.0),
])
def test_the_defaults_of_the_command_line(argv, model, ema, epochs, dropout, decay):
    from inference.args import build_parser, options
    from inference.train import run_config

    argv = ["train", *argv]
    config = run_config(options(build_parser().parse_args(argv), argv))
    assert config.model["name"] == model and config.model.get("dropout", 0.0) == dropout
    assert (config.train.ema, config.train.epochs, config.train.weight_decay, config.data.valid_fraction) == (
        ema, epochs, decay, 0.0 if "--valid-fraction" in argv else 0.05)


@pytest.mark.parametrize("argv, warmup", [(["--model", "hvae"], 50), (["--model", "hvae", "--kl-warmup", "0"], 0),
                                          (["--model", "resnet"], 0), ([], 50), (["--prior", "vamp"], 50),
                                          (["--binarize", "static"], 50), (["--kl-warmup", "0"], 0)])
def test_the_hierarchical_and_dense_vaes_warm_their_kl_up_by_default_and_a_flag_overrides_it(argv, warmup):
    from inference.args import build_parser, options
    from inference.train import run_config

    argv = ["train", *argv]
    assert run_config(options(build_parser().parse_args(argv), argv)).train.kl_warmup == warmup


def test_the_help_of_train_gives_each_models_default_from_the_one_table(monkeypatch, capsys):
    from inference import config
    from inference.args import build_parser

    assert config.defaults_by_model("kl_warmup") == "50 for dense, hvae; 0 for the others"
    assert config.defaults_by_model("ema") == "none for pixel, density flows; 0.999 for the others"
    assert config.defaults_by_model("lr") == ""  # every model keeps the library's
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "total epochs (default: 300 for dense; 400 for conv, hvae; 500 for resnet; 20 for pixel; " \
           "10 for density flows; 200 for the others)" in help_text
    assert "decoupled weight decay λ (as AdamW) (default: 0.1 for conv, resnet, hvae, --prior vamp; 0 for the others)" \
        in help_text
    assert "Adam learning rate (default 0.001)" in help_text
    # derived, not written: a new model default shows in the help
    monkeypatch.setitem(config.MODEL_DEFAULTS, "linear", config.RunDefaults(train={"kl_warmup": 7}))
    assert config.defaults_by_model("kl_warmup") == "50 for dense, hvae; 7 for linear; 0 for the others"
