"""The latent space in TensorBoard's projector: at the end of training and from ``pyro-vae
evaluate --projector``, the posterior means of the test images with their thumbnails and
labels (``add_embedding``), read back from ``projector_config.pbtxt`` and the tensors."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inference.cli import main
from inference.restore import load_data, load_run
from pyro_vae.infer.usage import posterior_means
from test_cli import digest, expect_error

pytest.importorskip("tensorboard")
from google.protobuf import text_format  # noqa: E402
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig  # noqa: E402

QUICK = ["--train-size", "96", "--test-size", "24", "--set", "hidden_dims=[8]", "--z-dim", "3",
         "--iwae-samples", "2", "--no-progress", "--batch-size", "32"]


def projector(run):
    config = ProjectorConfig()
    text_format.Parse(open(os.path.join(run, "tb", "projector_config.pbtxt")).read(), config)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("projector") / "run")
    assert main(["train", "--epochs", "2", "--out", run, *QUICK]) == 0
    return run


def test_training_ends_with_the_test_images_in_the_projector(run):
    (embedding,) = projector(run).embeddings
    assert embedding.tensor_name == "posterior_mean_test:00002"
    folder = os.path.join(run, "tb", "00002", "posterior_mean_test")
    assert embedding.tensor_path == "00002/posterior_mean_test/tensors.tsv"
    means = np.loadtxt(os.path.join(folder, "tensors.tsv"), delimiter="\t")
    model, guide, config, _ = load_run(run)
    data = load_data(run, config.data)
    expected = posterior_means(model, guide, data.eval_data("test"), seed=config.train.seed)
    assert means.shape == (24, 3) and np.allclose(means, expected.numpy(), atol=1e-4)
    labels = open(os.path.join(folder, "metadata.tsv")).read().split()
    assert labels == [str(y) for y in data.labels("test").tolist()]
    assert list(embedding.sprite.single_image_dim) == [28, 28]
    sprite = Image.open(os.path.join(folder, "sprite.png"))
    assert sprite.size == (5 * 28, 5 * 28)  # ⌈√24⌉ thumbnails a side


def test_evaluate_writes_the_projector_of_a_split_again(run, tmp_path, capsys):
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    assert main(["evaluate", copy, "--projector", "--split", "train", "--iwae-samples", "2", "--no-progress"]) == 0
    assert main(["evaluate", copy, "--projector", "--iwae-samples", "2", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().out  # the step written again is replaced, not warned about
    names = {e.tensor_name for e in projector(copy).embeddings}
    assert "posterior_mean_test:00002" in names
    train = np.loadtxt(os.path.join(copy, "tb", "00002", "posterior_mean_train", "tensors.tsv"), delimiter="\t")
    assert train.shape == (91, 3)  # 96 training images, 5 of them held out for validation


def test_a_density_flow_has_no_latent_space_to_project(tmp_path, capsys):
    run = str(tmp_path / "flow")
    assert main(["train", "--model", "nice", "--set", "couplings=2", "--set", "hidden_dims=[8]", "--epochs", "1",
                 "--train-size", "64", "--test-size", "8", "--no-progress", "--out", run]) == 0
    assert not os.path.exists(os.path.join(run, "tb", "projector_config.pbtxt"))
    before = digest(run)
    expect_error(capsys, ["evaluate", run, "--projector"], "argument --projector:", "density flow", "no latent space")
    assert digest(run) == before


def test_large_images_get_small_thumbnails(tmp_path):
    images = np.random.default_rng(0).random((40, 3, 96, 96)).astype(np.float32)
    np.savez(tmp_path / "big.npz", train=images[:30], test=images[30:])
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", str(tmp_path / "big.npz"), "--binarize", "none", "--epochs", "1",
                 "--z-dim", "2", "--set", "hidden_dims=[8]", "--iwae-samples", "2", "--no-progress",
                 "--out", run]) == 0
    (embedding,) = projector(run).embeddings
    assert list(embedding.sprite.single_image_dim) == [64, 64] and not embedding.metadata_path
    assert torch.tensor(np.loadtxt(os.path.join(run, "tb", embedding.tensor_path), delimiter="\t")).shape == (10, 2)
