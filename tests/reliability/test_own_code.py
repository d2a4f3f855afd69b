"""A user's own model, guide or dataset (named by import path) that cannot be imported or
does not meet its contract is one line naming what it lacks, before anything is written; a
run whose code is missing or has changed since it was trained says so in one line, and no
file of the run changes."""

import os
import shutil

import pytest

from inference.cli import main
from reliability_helpers import ROOT, one_line, refused, run_cli, snapshot

EXAMPLE = os.path.join(ROOT, "examples", "own_model")
WRONG = os.path.join(ROOT, "tests", "fixtures", "own_code")
BASE = ["--train-size", "64", "--test-size", "8", "--epochs", "1", "--iwae-samples", "2", "--no-progress"]
VAE = f"{EXAMPLE}/my_vae.py:ResidualMLPVAE"
DATA = f"{EXAMPLE}/my_data.py:small_digits"

CASES = [
    # what cannot be imported
    (["--model", "no_such_module:VAE"], ["argument --model: cannot import module no_such_module", "Python path"]),
    (["--model", "{wrong}/missing.py:VAE"], ["argument --model: model 'missing.py:VAE'", "missing.py does not exist"]),
    (["--model", f"{EXAMPLE}/my_vae.py:Nope"], ["my_vae.py has no attribute 'Nope'"]),
    (["--model", "{wrong}/broken_syntax.py:VAE"], ["importing", "broken_syntax.py failed: SyntaxError: '(' was never closed", "broken_syntax.py, line 3)"]),
    (["--model", "{wrong}/raises_on_import.py:VAE"], ["raises_on_import.py failed: ValueError: math domain error",
                                                    "line 5"]),
    (["--model", "{wrong}"], ["unknown model"]),
    # models that do not meet the model contract
    (["--model", "{wrong}/wrong_models.py:PyroExampleVAE"], [
        "model 'wrong_models.py:PyroExampleVAE' does not meet the model contract: it is no subclass of "
        "pyro_vae.Model and lacks make_guide, generate, reconstruct, dequantize, check_data, bits_per_dim"]),
    (["--model", "{wrong}/wrong_models.py:HalfModel"], ["lacks generate, reconstruct of the model contract"]),
    (["--model", "{wrong}/wrong_models.py:LatentModel"], ["has a latent variable but lacks latent_sites, latents",
                                                         "subclass pyro_vae.VAE"]),
    (["--model", "{wrong}/wrong_models.py:FixedLikelihoodVAE"], ["constructor without the parameter likelihood",
                                                                "(x_shape, z_dim=…, likelihood=…, **options)"]),
    (["--model", "{wrong}/wrong_models.py:not_a_class"], ["model 'wrong_models.py:not_a_class' is a int, not a class"]),
    (["--model", f"{EXAMPLE}/my_data.py:small_digits"], ["is a function, not a class"]),
    # guides and datasets that do not meet theirs
    (["--guide", VAE], ["argument --guide: guide 'my_vae.py:ResidualMLPVAE' is no subclass of pyro_vae.Guide"]),
    (["--guide", "{wrong}/wrong_guides.py:NoSample"], ["guide 'wrong_guides.py:NoSample' lacks sample of the guide "
                                                     "contract"]),
    (["--guide", "{wrong}/wrong_guides.py:NoVAE"], ["without a first parameter for the VAE"]),
    (["--dataset", "{wrong}/wrong_data.py:two_arguments"], ["argument --dataset: dataset 'wrong_data.py:two_arguments' "
                                                          "takes (a, b)"]),
    (["--dataset", "{wrong}/wrong_data.py:returns_nothing"], ["returned NoneType, not (train, train_labels, test"]),
    (["--dataset", f"{EXAMPLE}/my_vae.py:StudentTGuide"], ["is a class: a loader is called as load(name, data_dir"]),
    # their options, checked against their annotated signatures like the built-in ones'
    (["--model", VAE, "--set", "depth=3"], ["unknown option depth for model 'my_vae.py:ResidualMLPVAE'",
                                           "valid options: z_dim, likelihood, width, blocks"]),
    (["--model", VAE, "--set", "width=wide"], ["option width of model 'my_vae.py:ResidualMLPVAE' must be an integer"]),
    (["--model", VAE, "--set", "width=0"], ["argument --set: width must be ≥ 1"]),
    (["--guide", f"{EXAMPLE}/my_vae.py:StudentTGuide", "--guide-set", "df=-1"], ["argument --guide-set: df must be "
                                                                                 "positive"]),
    (["--dataset", DATA, "--dataset-set", "size=40"], ["argument --dataset-set: size must be from 4 to 28"]),
    (["--dataset", DATA, "--dataset-set", "colour=1"], ["unknown option colour for dataset 'my_data.py:small_digits'"]),
    (["--dataset", DATA, "--dataset-set", "size"], ["--dataset-set expects KEY=VALUE, got 'size'"]),
    (["--dataset-set", "size=14"], ["unknown option size for dataset 'mnist5k'"]),
]


@pytest.mark.parametrize("argv, fragments", CASES, ids=[" ".join(a)[-48:] for a, _ in CASES])
def test_own_code_that_is_wrong_is_one_line_and_leaves_nothing(tmp_path, capsys, argv, fragments):
    argv = [a.replace("{wrong}", WRONG) for a in argv]
    out = tmp_path / "run"
    refused(capsys, ["train", *BASE, *argv, "--out", out], *fragments)
    assert not out.exists()


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A tiny run of the example's model, guide and dataset from a copy of their files."""
    base = tmp_path_factory.mktemp("own")
    code = base / "code"
    shutil.copytree(EXAMPLE, code)
    run = str(base / "run")
    assert main(["train", "--model", f"{code}/my_vae.py:ResidualMLPVAE", "--guide", f"{code}/my_vae.py:StudentTGuide",
                 "--dataset", f"{code}/my_data.py:small_digits", "--set", "width=8", "--set", "blocks=0",
                 "--z-dim", "2", *BASE, "--out", run]) == 0
    return str(code), run


COMMANDS = {
    "evaluate": ["evaluate", "{run}", "--iwae-samples", "2", "--no-progress"],
    "sample": ["sample", "{run}", "--n", "4"],
    "posterior": ["posterior", "{run}", "--draws", "4", "--warmup", "0", "--no-progress"],
    "resume": ["train", "--resume", "--out", "{run}", "--epochs", "2", "--no-progress"],
}
DAMAGE = {
    "model file edited": ("my_vae.py", "edit", "the code of the model my_vae.py:ResidualMLPVAE has changed since the "
                                               "run was trained"),
    "model file gone": ("my_vae.py", "remove", "the code of the model my_vae.py:ResidualMLPVAE is missing"),
    "dataset file gone": ("my_data.py", "remove", "the code of the dataset my_data.py:small_digits is missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_run_whose_code_is_missing_or_changed_is_one_line(own_run, capsys, cmd, damage):
    code, run = own_run
    name, how, fragment = DAMAGE[damage]
    path = os.path.join(code, name)
    original = open(path, "rb").read()
    before = snapshot(run)
    try:
        if how == "edit":
            with open(path, "ab") as f:
                f.write(b"\n# tuned the widths\n")
        else:
            os.remove(path)
        refused(capsys, [a.replace("{run}", run) for a in COMMANDS[cmd]], fragment)
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert snapshot(run) == before


def test_compare_shows_a_run_whose_code_changed_with_a_warning(own_run, tmp_path, capsys):
    code, run = own_run
    path = os.path.join(code, "my_vae.py")
    original = open(path, "rb").read()
    try:
        with open(path, "ab") as f:
            f.write(b"\n# edited\n")
        status, out, err = run_cli(capsys, "compare", run, "--figure", tmp_path / "c.png")
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert status == 0 and "| my_vae.py:ResidualMLPVAE |" in out
    assert "has changed since the run was trained" in out and "(its parameters are not counted)" in out
    one_line(err)  # only "wrote …"
