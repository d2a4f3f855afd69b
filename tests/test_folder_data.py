"""Image folders as datasets: layouts, sizes, channels, the split, unreadable files, and the
streamed training split (read by DataLoader workers) against the in-memory one."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from image_files import _digits, write_digit_pngs, write_photo_jpegs

from pyro_vae import ConfigError, DataError, DatasetNotFoundError, load_dataset


def test_a_flat_folder_of_pngs_holds_the_digits_as_uint8(digit_folder):
    data = load_dataset(digit_folder, binarize="none")
    assert data.x_shape == (1, 28, 28)
    assert (len(data), data.num_examples("test")) == (108, 12)  # test fraction 0.1
    assert data.train_labels is None and data.source["classes"] is None
    assert data.split_levels("train").dtype == torch.uint8  # a quarter of the memory of floats
    assert data.train.dtype == torch.float32 and float(data.train.max()) <= 1.0
    # the PNGs are lossless: the folder holds exactly the digits that were written
    written = {bytes(x) for x in _digits()[:120].astype(np.uint8)}
    held = torch.cat([data.split_levels("train"), data.split_levels("test")]).reshape(120, -1)
    assert {bytes(x.numpy()) for x in held} == written
    assert not data.streamed("train")


def test_the_split_is_fixed_and_the_fraction_is_an_option(digit_folder):
    a = load_dataset(digit_folder, binarize="none")
    b = load_dataset(digit_folder, binarize="none", seed=7)  # the training seed does not move it
    assert torch.equal(a.split_levels("test"), b.split_levels("test"))
    assert a.source["fingerprint"] == b.source["fingerprint"]
    c = load_dataset(digit_folder, binarize="none", test_fraction=0.25)
    assert (len(c), c.num_examples("test")) == (90, 30)
    d = load_dataset(digit_folder, binarize="none", train_size=10, test_size=3)
    assert (len(d), d.num_examples("test")) == (10, 3)


def test_class_subfolders_resize_and_channels(photo_folder):
    data = load_dataset(photo_folder, binarize="none", image_size=(16, 24))
    assert data.x_shape == (3, 16, 24) and data.source["classes"] == ["left", "right"]
    assert set(data.train_labels.tolist()) == {0, 1} and len(data.test_labels) == 8
    grey = load_dataset(photo_folder, binarize="none", image_size=(16, 16), channels=1)
    assert grey.x_shape == (1, 16, 16)
    with pytest.raises(DataError, match=r"differ in size .*image_size=\(H, W\)") as err:
        load_dataset(photo_folder, binarize="none")
    assert err.value.params == ("image_size",)


def test_resize_covers_then_crops_the_centre(tmp_path):
    from PIL import Image

    image = np.zeros((40, 80), np.uint8)
    image[:, 20:60] = 255  # a white centre band, half the width
    for name in "abc":  # two test images at least, and one to train on
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    data = load_dataset(str(tmp_path), binarize="none", image_size=(20, 20))
    x = data.test[0, 0]  # 40×80 → 20×40 → centre 20×20: all of it inside the band
    assert x.shape == (20, 20) and float(x.min()) > 0.8 and float(x.mean()) > 0.95  # antialiased rim


def test_train_and_test_subfolders_fix_the_split(tmp_path):
    write_digit_pngs(str(tmp_path / "train" / "a"), 6)
    write_digit_pngs(str(tmp_path / "train" / "b"), 4, start=10)
    write_digit_pngs(str(tmp_path / "test" / "b"), 3, start=20)
    data = load_dataset(str(tmp_path), binarize="none")
    assert (len(data), data.num_examples("test")) == (10, 3)
    assert data.source["classes"] == ["a", "b"] and data.test_labels.tolist() == [1, 1, 1]
    assert sorted(data.train_labels.tolist()) == [0] * 6 + [1] * 4
    with pytest.raises(ConfigError, match="so test_fraction does not apply") as err:
        load_dataset(str(tmp_path), test_fraction=0.2)
    assert err.value.params == ("dataset.test_fraction",)  # a source's options are the dataset's
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DataError, match="train/ or a test/ sub-folder but not both"):
        load_dataset(str(tmp_path))


def test_a_valid_subfolder_is_the_validation_split(tmp_path):
    write_digit_pngs(str(tmp_path / "train" / "a"), 6)
    write_digit_pngs(str(tmp_path / "valid" / "a"), 2, start=10)
    write_digit_pngs(str(tmp_path / "valid" / "b"), 2, start=12)
    write_digit_pngs(str(tmp_path / "test" / "b"), 3, start=20)
    data = load_dataset(str(tmp_path), binarize="none", valid_fraction=0.1)
    assert [data.num_examples(s) for s in data.splits] == [6, 4, 3]  # the folder's, not a fraction
    assert data.source["classes"] == ["a", "b"] and sorted(data.labels("valid").tolist()) == [0, 0, 1, 1]
    assert data.source["valid_split"] == "the source's own"
    assert load_dataset(str(tmp_path), binarize="none").splits == ("train", "test")  # none asked for
    for part in ("train", "test"):
        shutil.rmtree(tmp_path / part)
    with pytest.raises(DataError, match="a valid/ sub-folder but no train/ and test/"):
        load_dataset(str(tmp_path))


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    write_digit_pngs(str(tmp_path), 20)
    (tmp_path / "notes.png").write_bytes(b"not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("ignored: not an image ending")
    data = load_dataset(str(tmp_path), binarize="none")
    assert sorted(data.source["skipped"]) == ["empty.jpg", "notes.png"]
    assert data.source["images"] == 20 and len(data) + data.num_examples("test") == 20
    assert "skipped 2 unreadable file(s)" in data.describe()


def test_corrupt_pixels_stop_the_load_with_the_file_name(tmp_path):
    write_digit_pngs(str(tmp_path), 10)
    png = (tmp_path / "00003.png").read_bytes()
    (tmp_path / "00003.png").write_bytes(png[: len(png) // 2])  # the header still opens
    with pytest.raises(DataError, match=r"cannot decode .*00003.png: .*truncated") as err:
        load_dataset(str(tmp_path), binarize="none")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("layout, message", [
    ("empty", "holds no PNG or JPEG images"),
    ("text", r"holds no PNG or JPEG images \(1 other files\)"),
    ("garbage", "none of the 2 image files"),
    ("mixed", "both at its top level and in sub-folders"),
    ("one", "too few readable images"),
])
def test_bad_folders_are_one_clear_error(tmp_path, layout, message):
    if layout == "text":
        (tmp_path / "a.txt").write_text("x")
    elif layout == "garbage":
        (tmp_path / "a.png").write_bytes(b"x")
        (tmp_path / "b.jpeg").write_bytes(b"y")
    elif layout == "mixed":
        write_digit_pngs(str(tmp_path), 2)
        write_digit_pngs(str(tmp_path / "sevens"), 2)
    elif layout == "one":
        write_digit_pngs(str(tmp_path), 1)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path))


def test_folder_options_are_checked(digit_folder, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "nope") + "/")
    with pytest.raises(ConfigError, match="unknown option image_size for dataset 'mnist5k'"):
        load_dataset("mnist5k", image_size=(32, 32))
    with pytest.raises(ConfigError, match=r"channels=2 \(must be 1 \(grey\) or 3 \(RGB\)\)") as err:
        load_dataset(digit_folder, channels=2)
    assert err.value.params == ("dataset.channels",)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_dataset(digit_folder, test_fraction=1.0)
    with pytest.raises(ConfigError, match=r"image_size=\(0, 8\) \(must be H and W from 1 to 4096\)"):
        load_dataset(digit_folder, image_size=(0, 8))
    with pytest.raises(ConfigError, match="must be an integer"):
        load_dataset(digit_folder, channels="3")


def test_grey_and_colour_images_default_to_rgb(tmp_path):
    write_digit_pngs(str(tmp_path), 3)
    write_photo_jpegs(str(tmp_path / "x"), 3, classes=("",), size=(28, 28))  # flat: classes=("",)
    for f in os.listdir(tmp_path / "x"):
        shutil.move(str(tmp_path / "x" / f), str(tmp_path / f))
    os.rmdir(tmp_path / "x")
    assert load_dataset(str(tmp_path), binarize="none").x_shape == (3, 28, 28)


@pytest.mark.parametrize("binarize", ["dynamic", "none"])
def test_a_streamed_split_gives_the_batches_of_the_in_memory_one(photo_folder, binarize):
    held = load_dataset(photo_folder, binarize=binarize, image_size=(16, 16))
    streamed = load_dataset(photo_folder, binarize=binarize, image_size=(16, 16), memory_limit=0)
    assert streamed.streamed("train") and not held.streamed("train")
    assert "streamed from disk" in streamed.describe()
    assert torch.equal(held.eval_data("test"), streamed.eval_data("test"))  # the test split is held
    for shuffle in (True, False):
        a = list(held.batches("train", 32, shuffle=shuffle, dequantize=True,
                              generator=torch.Generator().manual_seed(3)))
        b = list(streamed.batches("train", 32, shuffle=shuffle, dequantize=True,
                                  generator=torch.Generator().manual_seed(3)))
        assert [x.shape for x in a] == [x.shape for x in b] == [(32, 3, 16, 16), (32, 3, 16, 16), (8, 3, 16, 16)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(DataError, match="streamed from disk"):
        streamed.train
    with pytest.raises(ConfigError, match="static binarization needs the images in memory"):
        load_dataset(photo_folder, binarize="static", image_size=(16, 16), memory_limit=0)


@pytest.mark.parametrize("workers", [False, True])
def test_a_corrupt_file_met_while_streaming_is_one_line(tmp_path, monkeypatch, workers):
    if workers:  # read by DataLoader worker processes, whose errors come back wrapped
        monkeypatch.setattr("pyro_vae.splits.MIN_WORKER_IMAGES", 0)
    write_digit_pngs(str(tmp_path / "train"), 12)
    write_digit_pngs(str(tmp_path / "test"), 2)
    png = (tmp_path / "train" / "00005.png").read_bytes()
    (tmp_path / "train" / "00005.png").write_bytes(png[: len(png) // 2])
    data = load_dataset(str(tmp_path), binarize="none", memory_limit=0)  # the header still opens
    with pytest.raises(DataError, match=r"^cannot decode .*00005.png: .*truncated") as err:
        list(data.batches("train", 4))
    assert "\n" not in str(err.value)


def test_a_test_split_has_at_least_two_images(digit_folder):
    """The evaluation's standard errors need two: a tiny --test-fraction rounds up to 2."""
    data = load_dataset(digit_folder, binarize="none", test_fraction=0.001)
    assert data.num_examples("test") == 2 and data.num_examples("train") == 118


def test_the_folder_options_are_checked_without_torch():
    """The command line checks them with the source's own rule (one definition, in a module
    that imports no torch), before it imports torch."""
    code = ("import sys\n"
            "from pyro_vae.data_settings import MAX_IMAGE_SIZE, check_binarize, check_split, folder_checks\n"
            "assert MAX_IMAGE_SIZE == 4096 and not folder_checks((1, 4097), 1, 0.5)['image_size'][0]\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
