"""Commands pointed at runs the wrong way — missing, foreign, hand-edited, corrupt, finished
— and given bad numbers: each is one line, exit status 2, and every file of the run is
byte-identical afterwards."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reliability_helpers import TINY, refused, run_cli, snapshot

COMMANDS = {
    "evaluate": ["evaluate", "{run}", "--iwae-samples", "2", "--no-progress"],
    "sample": ["sample", "{run}", "--n", "4"],
    "posterior": ["posterior", "{run}", "--draws", "4", "--warmup", "0", "--no-progress"],
    "resume": ["train", "--resume", "--out", "{run}", "--epochs", "3", "--no-progress"],
}


def command(name, run, *extra):
    return [a.replace("{run}", str(run)) for a in COMMANDS[name]] + list(extra)


# ---------------------------------------------------------------------- not a run
NOT_RUNS = {
    "missing": (lambda d: None, "does not exist"),
    "a file": (lambda d: open(d, "w").close(), "is a file, not a run directory"),
    "empty": (lambda d: os.mkdir(d), "not a pyro-vae run directory (no config.json)"),
    "foreign config": (lambda d: (os.mkdir(d), open(os.path.join(d, "config.json"), "w").write('{"lr": 1}')),
                       "not a pyro-vae run config"),
}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(NOT_RUNS))
def test_a_command_on_something_that_is_not_a_run(tmp_path, capsys, cmd, kind):
    make, fragment = NOT_RUNS[kind]
    target = str(tmp_path / "target")
    make(target)
    before = snapshot(tmp_path)
    refused(capsys, command(cmd, target), fragment)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- config.json
def _set(path, value):
    def edit(config):
        *parents, key = path
        node = config
        for p in parents:
            node = node[p]
        node[key] = value
    return edit


def _drop(key):
    return lambda config: config.pop(key)


CONFIG_EDITS = {
    "data is a string": (_set(["data"], "mnist5k"), "data settings must be a JSON object"),
    "epochs is text": (_set(["train", "epochs"], "many"), "training settings.epochs must be an integer"),
    "epochs is 2.5": (_set(["train", "epochs"], 2.5), "training settings.epochs must be an integer, got 2.5"),
    "a train seed of -1": (_set(["train", "seed"], -1), "seed=-1"),
    "an unknown train key": (_set(["train", "colour"], 1), "unknown key colour in training settings"),
    "data.name is a number": (_set(["data", "name"], 5), "data settings.name must be a string"),
    "iwae_samples is text": (_set(["iwae_samples"], "k"), "config.json: iwae_samples must be an integer"),
    "kind is gan": (_set(["kind"], "gan"), "kind must be 'vae' or 'flow'"),
    "version 7": (_set(["version"], 7), "run-config version 7"),
    "no model": (_drop("model"), "lacks 'model'"),
    "model is a list": (_set(["model"], [1, 2]), "the model spec must be an object with a name"),
    "z_dim of 2.7": (_set(["model", "z_dim"], 2.7), "do not match"),
}


@pytest.mark.parametrize("cmd", ["evaluate", "sample", "resume"])
@pytest.mark.parametrize("edit", sorted(CONFIG_EDITS))
def test_a_hand_edited_config_json_is_one_line(run_copy, capsys, cmd, edit):
    change, fragment = CONFIG_EDITS[edit]
    path = os.path.join(run_copy, "config.json")
    config = json.load(open(path))
    change(config)
    with open(path, "w") as f:
        json.dump(config, f)
    before = snapshot(run_copy)
    refused(capsys, command(cmd, run_copy), fragment)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("text, fragment", [("", "is unreadable"), ('{"format": "pyro-vae-run", "vers', "unreadable"),
                                            ("[1, 2]", "not a pyro-vae run config")])
def test_an_unreadable_config_json(run_copy, capsys, text, fragment):
    with open(os.path.join(run_copy, "config.json"), "w") as f:
        f.write(text)
    before = snapshot(run_copy)
    refused(capsys, command("evaluate", run_copy), fragment)
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------------- checkpoint.pt
def _garbage(path):
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"garbage" * 50)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _empty(path):
    open(path, "w").close()


def _missing_weight(path):
    """A weight missing from the trained weights and from their moving average (what
    `evaluate` and `sample` use)."""
    ckpt = torch.load(path, weights_only=True)
    for state in (ckpt["model_state"], ckpt["trainer"]["average"]["model"]):
        state.pop(next(iter(state)))
    torch.save(ckpt, path)


def _pickle(path):
    torch.save({"format": "pyro-vae-checkpoint", "version": 2, "x": object()}, path)


CHECKPOINT_DAMAGE = {
    "garbage": (_garbage, "corrupt or not a pyro-vae checkpoint"),
    "truncated": (_truncate, "corrupt or not a pyro-vae checkpoint"),
    "empty": (_empty, "corrupt or not a pyro-vae checkpoint"),
    "a missing weight": (_missing_weight, "weights do not match"),
    "pickled code": (_pickle, "corrupt or not a pyro-vae checkpoint"),
}


@pytest.mark.parametrize("cmd", ["evaluate", "sample", "resume"])
@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_is_one_line(run_copy, capsys, cmd, damage):
    spoil, fragment = CHECKPOINT_DAMAGE[damage]
    spoil(os.path.join(run_copy, "checkpoint.pt"))
    before = snapshot(run_copy)
    refused(capsys, command(cmd, run_copy), fragment)
    assert snapshot(run_copy) == before


def test_a_checkpoint_of_another_run(run_copy, tmp_path, capsys):
    other = tmp_path / "other"
    assert run_cli(capsys, "train", "--epochs", "1", "--out", other, *TINY, "--z-dim", "3")[0] == 0
    shutil.copy(other / "checkpoint.pt", os.path.join(run_copy, "checkpoint.pt"))
    before = snapshot(run_copy)
    refused(capsys, command("evaluate", run_copy), "do not match config.json (foreign checkpoint?)")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("cmd", ["evaluate", "sample", "posterior"])
def test_a_run_without_checkpoint_says_how_to_train_it(run_copy, capsys, cmd):
    os.unlink(os.path.join(run_copy, "checkpoint.pt"))
    before = snapshot(run_copy)
    refused(capsys, command(cmd, run_copy), "holds no checkpoint", f"pyro-vae train --resume --out {run_copy}")
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------------- finished runs
@pytest.mark.parametrize("epochs, fragment", [
    ("0", "--epochs 0 is fewer than the 2 epochs"),
    ("1", "--epochs 1 is fewer than the 2 epochs"),
    (None, "has completed its 2 epochs and been evaluated"),
    ("2", "has completed its 2 epochs and been evaluated"),
])
def test_a_finished_run_is_never_shortened_nor_rewritten(trained_run, capsys, epochs, fragment):
    before = snapshot(trained_run)
    argv = ["train", "--resume", "--out", trained_run] + (["--epochs", epochs] if epochs else [])
    refused(capsys, argv, fragment)
    assert snapshot(trained_run) == before


@pytest.mark.parametrize("flag, value", [("--lr", "0.1"), ("--model", "conv"), ("--set", "hidden_dims=[4]"),
                                         ("--seed", "3"), ("--dataset", "mnist")])
def test_a_resume_refuses_to_change_the_run(trained_run, capsys, flag, value):
    before = snapshot(trained_run)
    refused(capsys, ["train", "--resume", "--out", trained_run, "--epochs", "3", flag, value],
            f"{flag} cannot change a run being resumed")
    assert snapshot(trained_run) == before


# ---------------------------------------------------------------------- numbers of the other commands
NUMBERS = [
    ("sample", ["--n", "0"], "argument --n: n must be an integer from 1 to 10000, got 0"),
    ("sample", ["--n", "1000000000"], "argument --n: n must be an integer from 1 to 10000"),
    ("sample", ["--seed", "-1"], "argument --seed: seed must be an integer from 0 to 4294967295, got -1"),
    ("sample", ["--seed", str(2**70)], "argument --seed: seed must be an integer from 0"),
    ("sample", ["--temperature", "nan"], "argument --temperature: option temperature must be a finite number, got nan"),
    ("sample", ["--temperature", "inf"], "argument --temperature: "),
    ("sample", ["--temperature", "0"], "argument --temperature: "),
    ("sample", ["--temperature", "0.7"], "argument --temperature: temperature applies to flow models"),
    ("evaluate", ["--iwae-samples", "0"], "argument --iwae-samples: iwae_samples must be an integer from 1 to 1000000, got 0"),
    ("evaluate", ["--iwae-samples", str(10**22)], "argument --iwae-samples: iwae_samples must be an integer from 1 to 1000000"),
    ("evaluate", ["--seed", "-1"], "argument --seed: seed must be an integer from 0"),
    ("evaluate", ["--split", "validation"], "unknown split 'validation'"),
    ("evaluate", ["--device", "tpu"], "unknown device 'tpu'"),
    ("posterior", ["--iwae-samples", "0"], "iwae_samples=0"),
    ("posterior", ["--index", "0", "0"], "argument --index: index needs distinct image indices"),
    ("posterior", ["--index", "99999"], "argument --index: image 99999 is out of range"),
    ("posterior", ["--chains", "1"], "chains=1"),
    ("posterior", ["--guide-draws", "1"], "guide_draws=1"),
    ("posterior", ["--local-method", "best"], "unknown local-guide method 'best'"),
    ("posterior", ["--local-lr", "-1"], "lr=-1.0"),
    ("posterior", ["--seed", "-5"], "argument --seed: seed must be an integer from 0"),
    ("posterior", ["--split", "validation"], "unknown split 'validation'"),
]


@pytest.mark.parametrize("cmd, extra, fragment", NUMBERS, ids=[f"{c} {' '.join(e)}"[:40] for c, e, _ in NUMBERS])
def test_bad_numbers_of_evaluate_sample_and_posterior(trained_run, capsys, cmd, extra, fragment):
    before = snapshot(trained_run)
    refused(capsys, command(cmd, trained_run, *extra), fragment)
    assert snapshot(trained_run) == before


def test_evaluate_on_a_dataset_of_another_shape(trained_run, tmp_path, capsys):
    path = tmp_path / "colour.npz"
    arr = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    np.savez(path, train=arr, test=arr)
    before = snapshot(trained_run)
    refused(capsys, command("evaluate", trained_run, "--dataset", path), "trained on images of shape (1, 28, 28)")
    assert snapshot(trained_run) == before


# ---------------------------------------------------------------------- a run that moves with its data
def test_a_run_on_a_dataset_file_works_from_anywhere_and_checks_the_file(tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(project / "data" / "x.npz", train=rng.random((64, 1, 6, 6), np.float32),
             test=rng.random((16, 1, 6, 6), np.float32))
    monkeypatch.chdir(project)
    code, _, err = run_cli(capsys, "train", "--dataset", "data/x.npz", "--binarize", "none", "--epochs", "1",
                           "--z-dim", "2", "--set", "hidden_dims=[8]", "--iwae-samples", "2", "--no-progress",
                           "--out", "runs/a")
    assert code == 0, err
    config = json.load(open(project / "runs" / "a" / "config.json"))["data"]
    assert os.path.isabs(config["name"]) and config["path_from_run"] == os.path.join("..", "..", "data", "x.npz")
    assert config["fingerprint"].startswith("sha256:")
    # the project moves: the run finds its data relative to itself, from any directory
    moved = tmp_path / "moved"
    shutil.move(str(project), str(moved))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", moved / "runs" / "a", "--iwae-samples", "2", "--no-progress")
    assert code == 0, err
    # another file at the same place is not the run's data
    rng = np.random.default_rng(1)
    np.savez(moved / "data" / "x.npz", train=rng.random((64, 1, 6, 6), np.float32),
             test=rng.random((16, 1, 6, 6), np.float32))
    before = snapshot(moved / "runs" / "a")
    refused(capsys, command("evaluate", moved / "runs" / "a"), "is not the dataset file", "sha256 differs")
    assert snapshot(moved / "runs" / "a") == before
