"""Fixtures of the reliability tests: one tiny trained run shared by every case that must
leave it untouched, and one straight run every fault test's resumed run must equal."""

import json
import shutil

import pytest

from inference.cli import main
from reliability_helpers import EPOCHS, SELECTED, TINY, checkpoint, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny finished run (2 epochs, evaluated); tests that may write take a copy."""
    run = str(tmp_path_factory.mktemp("shared") / "run")
    with one_thread():
        assert main(["train", "--epochs", "2", "--out", run, *TINY]) == 0
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture(scope="session")
def straight(tmp_path_factory):
    """The checkpoint of an undisturbed run of EPOCHS epochs."""
    run = str(tmp_path_factory.mktemp("straight") / "run")
    with one_thread():
        assert main(["train", "--epochs", str(EPOCHS), "--out", run, *TINY]) == 0
    return checkpoint(run)


@pytest.fixture(scope="session")
def straight_selected(tmp_path_factory):
    """``(checkpoint.pt, best.pt, metrics)`` of an undisturbed run of EPOCHS epochs with every
    selection and regularisation option on (SELECTED)."""
    run = str(tmp_path_factory.mktemp("straight_selected") / "run")
    with one_thread():
        assert main(["train", "--epochs", str(EPOCHS), "--out", run, *SELECTED]) == 0
    with open(f"{run}/metrics.jsonl") as f:
        metrics = [json.loads(line) for line in f]
    return checkpoint(run), checkpoint(run, "best.pt"), metrics
