"""``--tracker mlflow``: the run's configuration, every metrics line, the figures and
``eval.json`` in an MLflow run of a local store, read back with MLflow's own client; a
resumed run continues the same MLflow run; without the package, one line saying how to
install it."""

import importlib.util
import json
import os

import pytest

from inference import settings
from inference.cli import main
from test_cli import expect_error

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

QUICK = ["--train-size", "96", "--test-size", "16", "--set", "hidden_dims=[8]", "--z-dim", "2",
         "--iwae-samples", "2", "--no-progress", "--batch-size", "32", "--no-tensorboard"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local file store at ./mlruns (the default) in a directory of the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return tmp_path


def test_a_run_and_its_resume_are_one_mlflow_run(store):
    run = str(store / "run")
    assert main(["train", "--tracker", "mlflow", "--epochs", "2", "--out", run, *QUICK]) == 0
    record = json.load(open(os.path.join(run, "mlflow.json")))
    assert record["tracking_uri"] == (store / "mlruns").as_uri()
    assert main(["train", "--resume", "--out", run, "--epochs", "3", "--no-progress"]) == 0  # keeps its tracker
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    mlflow_run = client.get_run(record["run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "pyro-vae"
    assert len(client.search_runs([mlflow_run.info.experiment_id])) == 1  # the resume continued it
    params, tags = mlflow_run.data.params, mlflow_run.data.tags
    config = json.load(open(os.path.join(run, "config.json")))
    assert params["model.name"] == "dense" and params["model.hidden_dims"] == "[8]"
    assert params["train.lr"] == str(config["train"]["lr"]) and params["data.train_size"] == "96"
    assert "train.epochs" not in params and tags["train.epochs"] == "3"  # what a resume may change: a tag
    lines = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    for key in ("train_loss", "valid_elbo", "valid_kl", "seconds"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(record["run_id"], key))
        assert history == [(m["epoch"], pytest.approx(m[key])) for m in lines], key
    result = json.load(open(os.path.join(run, "eval.json")))
    (nll,) = client.get_metric_history(record["run_id"], "eval.nll")[-1:]
    assert nll.step == 3 and nll.value == pytest.approx(result["nll"])
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"config.json", "eval.json", "samples.png", "reconstructions.png", "loss.png"} <= artifacts
    local = client.download_artifacts(record["run_id"], "eval.json", str(store))
    assert json.load(open(local)) == result


def test_the_tracking_uri_and_experiment_come_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (store / "elsewhere").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "digits")
    run = str(store / "run")
    assert main(["train", "--tracker", "mlflow", "--epochs", "1", "--out", run, *QUICK]) == 0
    client = MlflowClient(tracking_uri=(store / "elsewhere").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert found.info.run_id == json.load(open(os.path.join(run, "mlflow.json")))["run_id"]
    assert not (store / "mlruns").exists()


def test_a_resume_may_leave_mlflow(store):
    run = str(store / "run")
    assert main(["train", "--tracker", "mlflow", "--epochs", "1", "--out", run, *QUICK]) == 0
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--tracker", "none", "--no-progress"]) == 0
    record = json.load(open(os.path.join(run, "mlflow.json")))
    history = MlflowClient(tracking_uri=record["tracking_uri"]).get_metric_history(record["run_id"], "valid_elbo")
    assert [m.step for m in history] == [1]


def test_without_mlflow_the_flag_says_how_to_install_it(store, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(settings.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    expect_error(capsys, ["train", "--tracker", "mlflow", "--out", str(store / "run")],
            "argument --tracker: the tracker mlflow needs MLflow: pip install \"pyro-vae[mlflow]\"")
    assert not (store / "run").exists()


def test_an_unknown_tracker_is_one_line(store, capsys):
    expect_error(capsys, ["train", "--tracker", "wandb", "--out", str(store / "run")],
            "argument --tracker: unknown tracker 'wandb'; valid trackers: mlflow, none")


def test_a_store_that_cannot_be_written_is_one_line(store, capsys, monkeypatch):
    (store / "file").write_text("not a directory")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (store / "file" / "mlruns").as_uri())
    line = expect_error(capsys, ["train", "--tracker", "mlflow", "--epochs", "1", "--out", str(store / "run"), *QUICK],
                   "MLflow (file://")
    assert "Traceback" not in line
