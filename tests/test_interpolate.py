"""`pyro-vae sample RUN --interpolate I J`: the decoded path between two test images."""

import os

import pytest
import torch
from PIL import Image
from test_cli import digest, expect_error

from inference.cli import main
from inference.sample import interpolate

QUICK = ["--train-size", "120", "--test-size", "20", "--iwae-samples", "5", "--no-progress",
         "--batch-size", "40", "--no-tensorboard", "--epochs", "1"]


def test_slerp_keeps_the_norm_and_ends_at_both_points():
    a, b = torch.randn(16), torch.randn(16)
    b = b / b.norm() * a.norm()
    path = interpolate(a, b, 7, spherical=True)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(7), rtol=1e-5)  # on the sphere
    line = interpolate(a, b, 7, spherical=False)
    assert line[3].norm() < path[3].norm()  # a straight line cuts through the centre
    assert torch.allclose(interpolate(a, 2 * a, 3, spherical=True)[1], 1.5 * a)  # parallel: a line


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("interp") / "vae")
    assert main(["train", "--out", run, "--set", "hidden=[16]", "--z-dim", "3", *QUICK]) == 0
    return run


def test_interpolation_is_a_row_of_both_images_and_the_path(vae_run, capsys):
    assert main(["sample", vae_run, "--interpolate", "2", "7", "--steps", "5"]) == 0
    path = os.path.join(vae_run, "interpolation_2_7.png")
    assert f"wrote {path}" in capsys.readouterr().out
    assert Image.open(path).size == (7 * 30 + 2, 32)  # 5 points and the two images, one row
    before = open(path, "rb").read()
    assert main(["sample", vae_run, "--interpolate", "2", "7", "--steps", "5"]) == 0
    assert open(path, "rb").read() == before  # seeded


def test_a_flow_interpolates_between_its_latents(tmp_path):
    run = str(tmp_path / "flow")
    assert main(["train", "--out", run, "--model", "realnvp", "--set", "num_scales=1",
                 "--set", "hidden_channels=4", *QUICK]) == 0
    out = str(tmp_path / "path.png")
    assert main(["sample", run, "--interpolate", "0", "1", "--out", out]) == 0
    assert Image.open(out).size == (12 * 30 + 2, 32)  # default 10 steps


@pytest.mark.parametrize("argv, fragment", [
    (["--interpolate", "0", "20"], "argument --interpolate: image 20 is out of range: the test split has 20 images (valid indices 0..19)"),
    (["--interpolate", "-1", "3"], "the test split has 20 images"),
    (["--interpolate", "0", "1", "--steps", "1"], "argument --steps: steps must be an integer from 2"),
    (["--steps", "4"], "argument --steps: steps goes with an interpolation"),
    (["--interpolate", "0", "1", "--n", "4"], "argument --n/--interpolate: n does not apply to an interpolation"),
    (["--interpolate", "0", "1", "--temperature", "0.5"], "argument --temperature/--interpolate: temperature does not apply"),
    (["--interpolate", "0", "1", "--out", "CHECKPOINT"], "the run's own checkpoint.pt"),
    (["--out", "CHECKPOINT"], "the run's own checkpoint.pt"),
    (["--out", "METRICS"], "the run's own metrics.jsonl"),
])
def test_bad_sample_input_is_one_line_and_touches_no_run_file(vae_run, capsys, argv, fragment):
    argv = [{"CHECKPOINT": os.path.join(vae_run, "checkpoint.pt"),
             "METRICS": os.path.join(vae_run, "metrics.jsonl")}.get(a, a) for a in argv]
    before = digest(vae_run)
    expect_error(capsys, ["sample", vae_run, *argv], fragment)
    assert digest(vae_run) == before


def test_interpolate_needs_two_indices(vae_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", vae_run, "--interpolate", "3"])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
