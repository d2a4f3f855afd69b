"""`pyro-vae compare`: runs side by side, with different data and estimators flagged."""

import csv
import json
import os
import shutil

import pytest
from test_cli import digest, expect_error

from inference.cli import main

QUICK = ["--train-size", "120", "--test-size", "20", "--z-dim", "3", "--iwae-samples", "5",
         "--no-progress", "--batch-size", "40", "--no-tensorboard", "--epochs", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digit_folder):
    root = tmp_path_factory.mktemp("runs")
    argv = {
        "gauss": ["--set", "hidden=[16]", "--kl-warmup", "0"],
        "iaf": ["--set", "hidden=[16]", "--guide", "iaf", "--flows", "2", "--kl-warmup", "1", "--weight-decay", "0.01"],
        "folder": ["--set", "hidden=[16]", "--dataset", digit_folder, "--train-size", "100", "--test-size", "12"],
    }
    for name, extra in argv.items():
        assert main(["train", "--out", str(root / name), *QUICK, *extra]) == 0
    return {name: str(root / name) for name in argv}


def rows_of(text):
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_the_table_has_one_row_per_run_and_flags_other_data(runs, tmp_path, capsys):
    figure = str(tmp_path / "curves.png")
    assert main(["compare", runs["gauss"], runs["iaf"], runs["folder"], "--figure", figure]) == 0
    out = capsys.readouterr().out
    rows = rows_of(out)
    assert [r["guide"] for r in rows] == ["gaussian", "iaf", "gaussian"]
    assert [r["data"] for r in rows] == ["D1", "D1", "D2"]
    assert rows[1]["objective"] == "ELBO, KL warm-up 1, weight decay 0.01" and rows[0]["objective"] == "ELBO"
    assert rows[2]["objective"] == "ELBO, KL warm-up 50"  # the dense VAE's default
    assert all(r["epochs"] == "2" and r["k"] == "5" and r["bits/dim"] == "—" for r in rows)
    assert int(rows[1]["parameters"].replace(",", "")) > int(rows[0]["parameters"].replace(",", ""))
    evaluation = json.load(open(os.path.join(runs["gauss"], "eval.json")))
    assert rows[0]["NLL"] == f"{evaluation['nll']:.2f}" and rows[0]["± s.e."] == f"{evaluation['nll_sem']:.2f}"
    assert "D1 = mnist5k (dynamic, test split, first 20 images)" in out
    assert "warning: the runs use 2 different data sets (D1, D2)" in out
    assert os.path.getsize(figure) > 1000


def test_other_estimators_and_runs_without_evaluation_are_flagged(runs, tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    shutil.copytree(runs["gauss"], a)
    shutil.copytree(runs["iaf"], b)
    assert main(["evaluate", a, "--iwae-samples", "7", "--no-progress"]) == 0
    os.remove(os.path.join(b, "eval.json"))
    capsys.readouterr()
    assert main(["compare", a, b, runs["gauss"], "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    rows = rows_of(out)
    assert rows[1]["NLL"] == rows[1]["test ELBO"] == "—" and rows[1]["valid ELBO"] != "—"
    assert "warning: the NLLs come from different estimators (iwae-7:" in out
    assert f"warning: no eval.json yet (no test numbers): {os.path.normpath(b)}" in out
    assert "different data sets" not in out


def test_the_best_epoch_and_which_checkpoint_each_nll_comes_from(runs, tmp_path, capsys):
    """Each row names its best validation epoch and the weights its NLL is of; an eval.json
    of other weights than --checkpoint asks for is flagged, never shown as if it were."""
    a = str(tmp_path / "a")
    shutil.copytree(runs["gauss"], a)
    metrics = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
    best = metrics[-1]["best_epoch"]
    capsys.readouterr()
    assert main(["compare", a, "--figure", str(tmp_path / "f.png")]) == 0
    row = rows_of(capsys.readouterr().out)[0]
    assert row["best epoch"] == str(best) and row["from"] == f"best (epoch {best})"
    assert row["valid ELBO"] == f"{metrics[-1]['best_valid_elbo']:.2f}"
    assert main(["compare", a, "--checkpoint", "last", "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert rows_of(out)[0]["NLL"] == "—" and "is of its best checkpoint, not the last one asked for" in out
    assert main(["evaluate", a, "--checkpoint", "last", "--iwae-samples", "5", "--no-progress"]) == 0
    assert main(["compare", a, "--checkpoint", "last", "--figure", str(tmp_path / "f.png")]) == 0
    row = rows_of(capsys.readouterr().out)[0]
    assert row["from"] == "last (epoch 2)" and row["NLL"] != "—"


@pytest.mark.parametrize("ending", [".csv", ".json", ".md"])
def test_the_table_as_a_file(runs, tmp_path, capsys, ending):
    out = str(tmp_path / f"table{ending}")
    assert main(["compare", runs["gauss"], runs["folder"], "--out", out, "--figure", str(tmp_path / "f.png")]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.err and "wrote" not in printed.out  # stdout: the table alone
    text = open(out).read()
    if ending == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert [r["data"] for r in rows] == ["D1", "D2"] and float(rows[0]["nll"]) > 0
        assert rows[1]["dataset"].startswith("/") and "files " in rows[1]["dataset"]
    elif ending == ".json":
        table = json.loads(text)
        assert len(table["runs"]) == 2 and table["runs"][0]["estimator"] == "iwae-5"
        assert table["warnings"] and table["legend"][0].startswith("D1 = mnist5k")
    else:
        assert len(rows_of(text)) == 2


def test_bad_compare_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys):
    before = digest(runs["gauss"])
    config = os.path.join(runs["gauss"], "config.json")
    expect_error(capsys, ["compare", runs["gauss"], "--out", config], "the run's own config.json")
    expect_error(capsys, ["compare", runs["gauss"], "--figure", os.path.join(runs["gauss"], "loss.png")],
                 "the run's own loss.png")
    expect_error(capsys, ["compare", runs["gauss"], "--out", str(tmp_path / "t.txt")],
                 "unknown table format", ".md, .csv, .json")
    expect_error(capsys, ["compare", runs["gauss"], "--figure", str(tmp_path / "f.jpg")], "PNG")
    expect_error(capsys, ["compare", runs["gauss"], "--out", str(tmp_path / "no" / "t.csv")], "does not exist")
    expect_error(capsys, ["compare", runs["gauss"], str(tmp_path)], "not a pyro-vae run directory")
    expect_error(capsys, ["compare", str(tmp_path / "missing")], "does not exist")
    assert digest(runs["gauss"]) == before
    with pytest.raises(SystemExit) as exit_info:
        main(["compare"])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
