"""Runs that take labels, as a new user mistreats them: class-conditional samples of a class
the run does not have or of a run without labels, evaluation of a conditional VAE on data
without labels or of a classifier on another label set — each one line, exit status 2, and
the run's files untouched."""

import numpy as np
import pytest

from reliability_helpers import TINY, one_thread, refused, run_cli, snapshot


@pytest.fixture(scope="module")
def labelled_runs(tmp_path_factory):
    """A tiny semi-supervised run and a tiny conditional VAE."""
    root = tmp_path_factory.mktemp("labelled")
    runs = {"ssvae": str(root / "ssvae"), "cvae": str(root / "cvae")}
    with one_thread():
        from inference.cli import main

        assert main(["train", "--model", "ssvae", "--labels-per-class", "2", "--epochs", "1",
                     "--out", runs["ssvae"], *TINY]) == 0
        assert main(["train", "--condition", "label", "--epochs", "1", "--out", runs["cvae"], *TINY]) == 0
    grey = np.random.default_rng(0).random((6, 1, 28, 28)).astype(np.float32)
    np.savez(root / "unlabelled.npz", train=grey, test=grey[:4])
    np.savez(root / "twelve.npz", train=grey, test=grey[:4], train_labels=np.arange(6) + 6,
             test_labels=np.array([0, 3, 11, 2]))
    return runs, root


@pytest.mark.parametrize("which, argv, fragments", [
    ("ssvae", ["sample", "{run}", "--label", "12"], ["argument --label: 12 is not a class of", "its labels are 0..9"]),
    ("cvae", ["sample", "{run}", "--label", "10", "--n", "2"], ["10 is not a class of"]),
    ("ssvae", ["sample", "{run}", "--label", "all", "--n", "1001"], ["10 classes × n=1001 is more than 10000 images"]),
    ("cvae", ["evaluate", "{run}", "--dataset", "{root}/unlabelled.npz", "--iwae-samples", "2"],
     ["a conditional VAE is judged on log p(x | y), but the test split of", "has no labels"]),
    ("ssvae", ["evaluate", "{run}", "--dataset", "{root}/twelve.npz", "--iwae-samples", "2"],
     ["labels must be classes 0..9, got values in [0, 11]"]),
    ("ssvae", ["train", "--resume", "--out", "{run}", "--labels-per-class", "5"],
     ["--labels-per-class cannot change a run being resumed"]),
    ("cvae", ["train", "--resume", "--out", "{run}", "--beta", "3"], ["--beta cannot change a run being resumed"]),
])
def test_a_labelled_run_mistreated_is_one_line_and_left_as_it_was(labelled_runs, capsys, which, argv, fragments):
    runs, root = labelled_runs
    run = runs[which]
    before = snapshot(run)
    refused(capsys, [a.replace("{run}", run).replace("{root}", str(root)) for a in argv], *fragments)
    assert snapshot(run) == before


def test_the_ssvae_evaluates_p_x_on_data_without_labels(labelled_runs, capsys):
    """No labels, no accuracy — but log p(x), the label summed out, is defined."""
    runs, root = labelled_runs
    code, out, err = run_cli(capsys, "evaluate", runs["ssvae"], "--dataset", f"{root}/unlabelled.npz",
                             "--iwae-samples", "2", "--no-progress")
    assert code == 0, err
    assert "log-likelihood" in out and "accuracy" not in out
