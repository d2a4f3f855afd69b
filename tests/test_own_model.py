"""The user's own components through the whole toolchain: the model, guide and dataset of
``examples/own_model/`` (written as a user writes them, outside pyro_vae/) named by import
path are trained, evaluated, sampled, resumed, analysed by ``posterior``, shown by
``compare`` and logged to TensorBoard from their run directory alone; a module path from the
current directory, data-parallel training, and an installed package's entry points."""

import glob
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from inference.cli import main
from pyro_vae import plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "own_model")
#: The example at a size that trains in seconds.
TINY = ["--set", "width=16", "--set", "blocks=1", "--z-dim", "2", "--train-size", "128", "--test-size", "16",
        "--iwae-samples", "4", "--batch-size", "32", "--no-progress"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cli(cwd, *argv, env=None, timeout=300):
    environ = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "inference.cli", *argv], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def test_the_own_model_example_through_the_whole_toolchain(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLE)
    run = str(tmp_path / "run")
    assert main(["train", "--model", "my_vae.py:ResidualMLPVAE", "--guide", "my_vae.py:StudentTGuide",
                 "--dataset", "my_data.py:small_digits", "--dataset-set", "size=14", "--epochs", "1",
                 "--out", run, *TINY]) == 0
    assert "ResidualMLPVAE VAE with my_vae.py:StudentTGuide guide on" in capsys.readouterr().out
    config = json.load(open(os.path.join(run, "config.json")))
    model_file, data_file = os.path.join(EXAMPLE, "my_vae.py"), os.path.join(EXAMPLE, "my_data.py")
    # the run records the import paths (files absolute) and a hash of each source file
    assert config["model"]["name"] == f"{model_file}:ResidualMLPVAE" and config["model"]["width"] == 16
    assert config["model"]["x_shape"] == [1, 14, 14] and config["guide"]["df"] == 5.0
    assert config["data"]["name"] == f"{data_file}:small_digits" and config["data"]["dataset_set"] == ["size=14"]
    for kind, path in (("model", model_file), ("guide", model_file), ("dataset", data_file)):
        assert config["sources"][kind]["file"] == path and config["sources"][kind]["sha256"] == sha256(path)

    monkeypatch.chdir(tmp_path)  # from elsewhere: the run directory alone
    assert main(["evaluate", run, "--iwae-samples", "4", "--no-progress"]) == 0
    assert json.load(open(os.path.join(run, "eval.json")))["num_examples"] == 16
    assert main(["sample", run, "--n", "4"]) == 0
    assert main(["sample", run, "--interpolate", "0", "1", "--steps", "3"]) == 0
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--no-progress"]) == 0
    assert [json.loads(line)["epoch"] for line in open(os.path.join(run, "metrics.jsonl"))] == [1, 2]
    assert main(["posterior", run, "--index", "0", "--chains", "2", "--draws", "4", "--warmup", "2",
                 "--local-steps", "10", "--iwae-samples", "8", "--no-progress"]) == 0
    gaps = json.load(open(os.path.join(run, "posterior", "gaps.json")))
    assert gaps["guide"]["name"] == f"{model_file}:StudentTGuide" and len(gaps["examples"]) == 1
    assert glob.glob(os.path.join(run, "tb", "events.out.tfevents.*"))
    capsys.readouterr()
    assert main(["compare", run, "--figure", str(tmp_path / "compare.png")]) == 0
    table = capsys.readouterr().out
    assert "| my_vae.py:ResidualMLPVAE | my_vae.py:StudentTGuide | normal |" in table
    assert "my_data.py:small_digits (dynamic, test split, first 16 images, size=14)" in table


def test_a_module_path_is_imported_from_the_current_directory(tmp_path):
    """As ``python -m`` does (the console script does not put the current directory on the
    path), and the run finds the module again from elsewhere through its recorded root."""
    code = textwrap.dedent("""
        import os, sys
        sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
        from pyro_vae import plugins
        cls, source = plugins.resolve("model", "my_vae:ResidualMLPVAE")
        print(cls.__name__, source.module, source.root)
    """)
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ResidualMLPVAE", "my_vae", EXAMPLE]
    check = ("import sys\nfrom pyro_vae import plugins\n"
             f"plugins.check_source('model', plugins.Source('my_vae:ResidualMLPVAE', 'my_vae', "
             f"{os.path.join(EXAMPLE, 'my_vae.py')!r}, {sha256(os.path.join(EXAMPLE, 'my_vae.py'))!r}, {EXAMPLE!r}))\n"
             "print(plugins.resolve('model', 'my_vae:ResidualMLPVAE')[0].__name__)\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ResidualMLPVAE", proc.stderr


def test_the_own_model_trains_data_parallel_and_resumes_in_one_process(tmp_path):
    run = str(tmp_path / "run")
    proc = cli(EXAMPLE, "train", "--model", "my_vae:ResidualMLPVAE", "--epochs", "1", "--out", run, *TINY,
               "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(os.path.join(run, "config.json")))["sources"]["model"]["module"] == "my_vae"
    proc = cli(str(tmp_path), "train", "--resume", "--out", run, "--epochs", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]


def _installed_package(folder):
    """A package installed the way pip leaves it — its module and a ``.dist-info`` with
    ``entry_points.txt`` — on a path of its own (importlib.metadata finds it there)."""
    os.makedirs(os.path.join(folder, "toy_vaes"))
    with open(os.path.join(folder, "toy_vaes", "__init__.py"), "w") as f:
        f.write(textwrap.dedent("""
            from pyro_vae.models.dense import DenseVAE

            class ToyVAE(DenseVAE):
                '''The dense VAE under another name, from an installed package.'''

            def toy_digits(name, data_dir, download, n: int = 64):
                from pyro_vae.datasets.mnist5k import load_mnist5k  # the embedded digits
                xtr, ytr, xte, yte = load_mnist5k(name, data_dir, download)
                return xtr[:n], ytr[:n], xte[:16], yte[:16]
        """))
    info = os.path.join(folder, "toy_vaes-0.1.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: toy-vaes\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write("[pyro_vae.models]\ntoy = toy_vaes:ToyVAE\n\n[pyro_vae.datasets]\ntoy-digits = toy_vaes:toy_digits\n")
    return info


def test_an_installed_package_registers_components_through_entry_points(tmp_path):
    site = str(tmp_path / "site")
    info = _installed_package(site)
    env = {"PYTHONPATH": site + os.pathsep + ROOT}
    proc = cli(str(tmp_path), "list", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "models of installed packages (pyro_vae.models): toy (toy-vaes 0.1)" in proc.stdout
    assert "datasets of installed packages (pyro_vae.datasets): toy-digits (toy-vaes 0.1)" in proc.stdout
    run = str(tmp_path / "run")
    proc = cli(str(tmp_path), "train", "--model", "toy", "--dataset", "toy-digits", "--dataset-set", "n=32",
               "--set", "hidden_dims=[8]", "--z-dim", "2", "--epochs", "1", "--iwae-samples", "2",
               "--no-progress", "--out", run, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sources = json.load(open(os.path.join(run, "config.json")))["sources"]
    assert sources["model"]["distribution"] == "toy-vaes 0.1" and sources["model"]["module"] == "toy_vaes"
    assert cli(str(tmp_path), "evaluate", run, "--iwae-samples", "2", "--no-progress", env=env).returncode == 0
    # the package uninstalled: one line saying where the code came from
    os.rename(info, info + ".gone")
    proc = cli(str(tmp_path), "evaluate", run, "--no-progress", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no installed package registers model 'toy' any more (it came from toy-vaes 0.1)" in proc.stderr


def test_display_names_are_short():
    assert plugins.display_name("/a/b/my_vae.py:VAE") == "my_vae.py:VAE"
    assert plugins.display_name("pkg.mod:VAE") == "pkg.mod:VAE" and plugins.display_name("dense") == "dense"
    assert plugins.canonical("x.py:A") == os.path.abspath("x.py") + ":A"
