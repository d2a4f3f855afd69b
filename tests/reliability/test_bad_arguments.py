"""Bad ``pyro-vae train`` command lines, as a new user types them: each is one line on
stderr, exit status 2, no traceback, and no run directory left behind."""

import os

import numpy as np
import pytest
import torch

from reliability_helpers import refused

#: Small enough that a case wrongly accepted costs a second, not an afternoon.
BASE = ["--train-size", "128", "--test-size", "16", "--epochs", "1", "--iwae-samples", "2", "--no-progress"]

CASES = [
    # names
    (["--model", "densee"], ["unknown model 'densee'", "valid models: conv, dense"]),
    (["--guide", "iaff"], ["unknown guide 'iaff'", "gaussian"]),
    (["--prior", "flat"], ["unknown prior 'flat'", "valid priors: normal, realnvp"]),
    (["--likelihood", "poisson"], ["unknown likelihood 'poisson'", "bernoulli"]),
    (["--binarize", "sometimes"], ["unknown binarization", "dynamic"]),
    (["--dataset", "mnist7k"], ["unknown dataset 'mnist7k'", "mnist5k"]),
    (["--precision", "fp8"], ["unknown precision 'fp8'", "float32, bf16"]),
    (["--device", "tpu"], ["unknown device 'tpu'"]),
    (["--device", "cuda"], ["argument --device: the device cuda was asked for, but CUDA is not available"]),
    # model, guide and prior options
    (["--set", "hiden=[3]"], ["unknown option hiden", "valid options"]),
    (["--set", "hidden=[abc]"], ["option hidden_dims of model 'dense' must be a list of integers", "'[abc]'"]),
    (["--set", "hidden_dims=512"], ["must be a list of integers, got 512 (int)"]),
    (["--set", "hidden_dims=[]"], ["non-empty list of positive widths"]),
    (["--set", "activation=swish"], ["unknown activation 'swish'"]),
    (["--model", "conv", "--set", "hidden=[32]"], ["option hidden of model 'conv' must be an integer"]),
    (["--set", "z_dim=2.7"], ["--set z_dim=… is spelled --z-dim"]),
    (["--flows", "3"], ["unknown option num_flows for guide 'gaussian'", "valid options: none (it takes no options)"]),
    (["--guide", "iaf", "--flows", "0"], ["num_flows must be a positive integer"]),
    (["--guide", "sylvester", "--guide-set", "colour=1"], ["unknown option colour for guide 'sylvester'",
                                                          "valid options: num_flows"]),
    (["--model", "nice", "--z-dim", "4"], ["--z-dim cannot be used with the density flow 'nice'"]),
    # numbers
    (["--z-dim", "0"], ["z_dim must be positive"]),
    (["--z-dim", "2.7"], ["argument --z-dim: invalid int value: '2.7'"]),
    (["--seed", "-1"], ["argument --seed: seed must be an integer from 0 to 4294967295, got -1"]),
    (["--seed", "8589934592"], ["seed must be an integer from 0 to 4294967295, got 8589934592"]),
    (["--epochs", "-1"], ["invalid training settings", "epochs=-1"]),
    (["--epochs", "many"], ["argument --epochs: invalid int value: 'many'"]),
    (["--batch-size", "0"], ["batch_size=0"]),
    (["--lr", "nan"], ["lr must be a finite number, got nan"]),
    (["--lr", "-1"], ["lr=-1.0"]),
    (["--lr-decay", "2"], ["lr_decay=2.0"]),
    (["--particles", "0"], ["particles=0"]),
    (["--kl-warmup", "-2"], ["kl_warmup=-2"]),
    (["--free-bits", "-1"], ["free_bits=-1.0"]),
    (["--iwae-samples", "0"], ["argument --iwae-samples: iwae_samples must be an integer from 1 to 1000000, got 0"]),
    (["--iwae-samples", "2000000"], ["argument --iwae-samples: iwae_samples must be an integer from 1 to 1000000"]),
    (["--train-size", "100000"], ["train_size=100000 is more than the 4000 train images of mnist5k"]),
    (["--test-size", "0"], ["test_size=0"]),
    (["--nproc", "0"], ["argument --nproc: nproc must be an integer from 1 to 64, got 0"]),
    # data and likelihood
    (["--binarize", "none", "--likelihood", "bernoulli"], ["bernoulli likelihood needs binary data"]),
    (["--likelihood", "gaussian"], ["binarized", "argument --", "binarize='none'"]),
    (["--model", "realnvp", "--binarize", "dynamic"], ["binarized", "argument --", "binarize='none'"]),
    (["--dataset", "mnist", "--data-dir", "{tmp}/nodata"], ["mnist not found under", "--download"]),
    (["--dataset", "{tmp}/missing.npz"], ["dataset file", "missing.npz does not exist"]),
    (["--dataset", "{tmp}/text.npz"], ["text.npz is not a NumPy .npz archive"]),
    (["--dataset", "{tmp}/folder.npz"], ["folder.npz is a directory, not a file"]),
    (["--dataset", "{tmp}/nan.npz"], ["NaN"]),
    (["--dataset", "{tmp}/bright.npz"], ["bright.npz train data in [0, 1], got values in [2, 2]"]),
    (["--dataset", "{tmp}/flat.npz"], ["must have shape (N, C, H, W)"]),
    (["--dataset", "{tmp}/empty.npz"], ["is empty"]),
    (["--dataset", "{tmp}/nolabel.npz"], ["must hold arrays named 'train' and 'test'"]),
    (["--dataset", "{tmp}/broken.pt"], ["broken.pt is not a torch file"]),
    (["--dataset", "{tmp}/dot.npz", "--model", "conv"], ["conv model's 2 stride-2 stages need images of at "
                                                         "least 3×3 pixels, got 1×1"]),
    (["--dataset", "{tmp}/dot.npz", "--model", "resnet"], ["resnet model's 2 stride-2 stages"]),
    (["--dataset", "{tmp}/dot.npz", "--model", "pixel"], ["pixel model's 2 stride-2 stages"]),
    # objectives, the hierarchical VAE and the VampPrior (issue 15)
    (["--objective", "elbow"], ["unknown objective 'elbow'", "elbo, iwae"]),
    (["--objective", "iwae", "--particles", "0"], ["particles=0"]),
    (["--objective", "iwae", "--particles", "5", "--free-bits", "0.5"], ["argument --objective/--free-bits: objective='iwae' cannot be combined with free_bits > 0"]),
    (["--model", "hvae", "--set", "levels=0"], ["levels"]),
    (["--model", "hvae", "--set", "group_sizes=[4]", "--set", "levels=2"], ["group_sizes"]),
    (["--model", "hvae", "--set", "channels=0"], ["channels"]),
    (["--prior", "vamp", "--prior-set", "components=0"], ["components"]),
    (["--prior", "vamp", "--prior-set", "size=3"], ["unknown option size for prior 'vamp'"]),
    (["--model", "hvae", "--prior", "vamp"], ["vamp"]),
    # image folders (issue 16)
    (["--image-size", "0"], ["--image-size must be H or HxW with positive integers"]),
    (["--image-size", "32x"], ["--image-size must be H or HxW"]),
    (["--channels", "2", "--dataset", "{tmp}/pngs"], ["channels"]),
    (["--test-fraction", "1.5", "--dataset", "{tmp}/pngs"], ["test_fraction"]),
    (["--image-size", "8", "--dataset", "mnist5k"], ["image_size"]),
    (["--dataset", "{tmp}/nopngs/"], ["holds no PNG or JPEG images"]),
    (["--dataset", "{tmp}/mixed"], ["--image-size"]),
    (["--objective", "iwae"], ["argument --objective/--particles: objective='iwae' needs particles = K ≥ 2"]),
    (["--objective", "iwae", "--particles", "100000"], ["particles=100000 (must be from 1 to 1000)"]),
    (["--free-bits", "1e300"], ["free_bits=1e+300 (must be from 0 to 100)"]),
    (["--prior", "vamp", "--prior-set", "components=1000000000"], ["components from 1 to 10000"]),
    (["--image-size", "100000", "--dataset", "{tmp}/pngs"], ["argument --image-size: invalid data settings: image_size=(100000, 100000) (must be H and W from 1 to 4096)"]),
    (["--test-size", "1"], ["test_size=1 (must be ≥ 2)"]),
    # estimators and the compiled step (issue 23)
    (["--elbo", "analytic"], ["argument --elbo: unknown ELBO estimator 'analytic'", "trace, meanfield"]),
    (["--elbo", "meanfield", "--objective", "iwae", "--particles", "2"], ["elbo='meanfield' estimates the plain "
                                                                          "ELBO"]),
    (["--elbo", "meanfield", "--free-bits", "0.5"], ["argument --elbo/--free-bits"]),
    (["--model", "nice", "--elbo", "meanfield"], ["--elbo cannot be used with the density flow"]),
    (["--compile", "yes"], ["unrecognized arguments: yes"]),
    (["--compile", "--no-capture"], ["argument --compile/--capture: compile=true compiles the captured step: it "
                                     "cannot be combined with capture=false"]),
    (["--capture", "no"], ["unrecognized arguments: no"]),
    (["--grad-compression", "int8"], ["argument --grad-compression: unknown gradient compression 'int8'",
                                      "none, fp16, bf16"]),
    # labels: the conditional VAE, the semi-supervised VAE, β (issue 22)
    (["--model", "ssvae", "--dataset", "{tmp}/grey.npz", "--valid-fraction", "0"], [
        "the ssvae model needs labelled data, but", "grey.npz has no labels", "train_labels"]),
    (["--condition", "label", "--dataset", "{tmp}/grey.npz", "--valid-fraction", "0"],
     ["condition='label' needs labelled data"]),
    (["--condition", "labels"], ["argument --condition: unknown condition 'labels'; valid conditions: label"]),
    (["--model", "ssvae", "--condition", "label"], ["argument --condition:", "does not apply to the ssvae model"]),
    (["--model", "nice", "--condition", "label"], ["--condition cannot be used with the density flow 'nice'"]),
    (["--model", "ssvae", "--labels-per-class", "0"], ["argument --labels-per-class: labels_per_class must be a "
                                                       "positive integer or 'all', got 0"]),
    (["--model", "ssvae", "--labels-per-class", "ten"], ["labels_per_class must be a positive integer or 'all', "
                                                         "got 'ten'"]),
    (["--model", "ssvae", "--labels-per-class", "100"], ["argument --labels-per-class: labels_per_class=100 is more "
                                                         "than the", "training images of class"]),
    (["--labels-per-class", "10"], ["argument --labels-per-class: labels_per_class applies to a model that learns "
                                    "from a few labels (ssvae), not to 'dense'"]),
    (["--condition", "label", "--labels-per-class", "10"], ["a conditional VAE learns from every label"]),
    (["--model", "ssvae", "--objective", "iwae", "--particles", "2"], ["argument --objective:",
                                                                       "not available for the ssvae model"]),
    (["--model", "ssvae", "--free-bits", "0.5"], ["argument --free-bits:", "enumeration"]),
    (["--prior-set", "conditional=true"], ["conditional normal prior p(z | y) needs a VAE that takes labels"]),
    (["--model", "ssvae", "--set", "network=mlp"], ["argument --set: unknown network 'mlp'; valid networks: dense, "
                                                   "conv"]),
    (["--model", "ssvae", "--set", "channels=[4]"], ["channels and hidden are options of a conv network"]),
    (["--model", "ssvae", "--set", "network=conv", "--set", "hidden_dims=[4]"], ["hidden_dims is an option of a dense "
                                                                                "network"]),
    (["--model", "ssvae", "--set", "alpha=-1"], ["argument --set: invalid options of the ssvae model: "
                                                 "alpha=-1.0 (must be ≥ 0)"]),
    (["--set", "num_classes=3"], ["num_classes=… comes from the data"]),
    (["--beta", "0"], ["argument --beta: invalid training settings: beta=0.0 (must be > 0 and ≤ 1000)"]),
    (["--beta", "-1"], ["beta=-1.0"]),
    (["--beta", "nan"], ["beta must be a finite number, got nan"]),
    (["--beta", "big"], ["argument --beta: invalid float value: 'big'"]),
    (["--model", "realnvp", "--beta", "2"], ["--beta cannot be used with the density flow 'realnvp'"]),
    # the validation split, selection and regularisation (issue 21): all before any data are loaded
    (["--valid-fraction", "1"], ["argument --valid-fraction", "valid_fraction=1.0 (must be from 0 (no validation "
                                 "split) to below 1)"]),
    (["--valid-fraction", "-0.1"], ["argument --valid-fraction", "valid_fraction=-0.1"]),
    (["--valid-fraction", "0.001"], ["valid_fraction=0.001", "of the 128 training images", "leaves 0 for validation"]),
    (["--valid-fraction", "0.99"], ["valid_fraction=0.99", "leaves 127 for validation"]),
    (["--train-size", "4000", "--valid-fraction", "0.0001"], ["valid_fraction=0.0001", "of the 4000 training"]),
    (["--valid-fraction", "nan"], ["valid_fraction must be a finite number, got nan"]),
    (["--patience", "0"], ["argument --patience", "patience=0 (must be ≥ 1)"]),
    (["--patience", "2.5"], ["argument --patience: invalid int value: '2.5'"]),
    (["--patience", "3", "--valid-fraction", "0"], ["argument --patience/--valid-fraction: patience needs a "
                                                    "validation split"]),
    (["--ema", "1"], ["argument --ema", "ema=1.0 (must be from 0 (no averaging) to below 1)"]),
    (["--ema", "1.5"], ["ema=1.5 (must be from 0 (no averaging) to below 1)"]),
    (["--ema", "-0.5"], ["ema=-0.5"]),
    (["--weight-decay", "-0.1"], ["argument --weight-decay", "weight_decay=-0.1 (must be ≥ 0)"]),
    (["--weight-decay", "1000"], ["argument --lr/--weight-decay", "got lr=0.001 × weight_decay=1000 = 1"]),
    # a learning rate at which the conv VAE's default decay (λ = 0.1) would flip the weights' sign:
    # the line names --lr, the flag the user gave, beside the default's
    (["--model", "conv", "--lr", "20"], ["argument --lr/--weight-decay: lr × weight_decay must be below 1",
                                         "got lr=20 × weight_decay=0.1 = 2"]),
    (["--set", "dropout=1"], ["argument --set", "dropout must be a probability from 0 to below 1, got 1"]),
    (["--set", "dropout=-0.2"], ["dropout must be a probability from 0 to below 1, got -0.2"]),
    (["--model", "conv", "--set", "dropout=1.5"], ["dropout must be a probability"]),
    (["--set", "dropout=high"], ["option dropout of model 'dense' must be a number"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_dropout=1"],
     ["argument --set", "classifier_dropout must be a probability from 0 to below 1, got 1"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_shift=28"],
     ["argument --set", "classifier_shift must be an integer from 0 to 27, got 28"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_shift=2.5"],
     ["option classifier_shift of model 'ssvae' must be an integer, got 2.5"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_blocks=-1"],
     ["classifier_blocks must be an integer ≥ 0, got -1"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_blocks=1"],
     ["classifier_blocks is an option of a conv classifier"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_network=mlp"],
     ["unknown classifier network 'mlp'; valid classifier networks: dense, conv, shared"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_network=3"],
     ["option classifier_network of model 'ssvae' must be a string or null, got 3 (int)"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "network=conv", "--set", "classifier_network=conv",
      "--set", "hidden_dims=[8]"], ["hidden_dims is an option of a dense network"]),
    (["--model", "ssvae", "--labels-per-class", "all", "--set", "classifier_network=shared", "--set",
      "classifier_blocks=1"], ["classifier_blocks is an option of a conv classifier of its own"]),
    (["--skip-threshold", "inf"], ["argument --skip-threshold", "skip_threshold must be a finite number, got inf"]),
    (["--skip-threshold", "nan"], ["skip_threshold must be a finite number, got nan"]),
    (["--skip-threshold", "0"], ["skip_threshold=0.0 (must be > 0)"]),
    # the command itself
    (["--jit"], ["--jit is gone"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad dataset files, as they turn up on a user's disk."""
    tmp = tmp_path_factory.mktemp("files")
    grey = np.full((10, 1, 4, 4), 0.5, np.float32)
    np.savez(tmp / "nan.npz", train=np.full_like(grey, np.nan), test=grey[:2])
    np.savez(tmp / "bright.npz", train=grey * 4, test=grey[:2])
    np.savez(tmp / "flat.npz", train=np.zeros((10, 16), np.float32), test=np.zeros((2, 16), np.float32))
    np.savez(tmp / "empty.npz", train=grey[:0], test=grey[:2])
    np.savez(tmp / "nolabel.npz", images=grey)
    np.savez(tmp / "grey.npz", train=grey, test=grey[:2])  # images without labels
    np.savez(tmp / "dot.npz", train=np.random.default_rng(0).random((40, 1, 1, 1), np.float32),
             test=np.full((4, 1, 1, 1), 0.5, np.float32))
    (tmp / "text.npz").write_text("train,test\n0.5,0.5\n")
    (tmp / "folder.npz").mkdir()
    (tmp / "broken.pt").write_bytes(b"\x80\x02not a torch file")
    from PIL import Image  # image folders: one of real-looking PNGs, one empty, one of mixed sizes
    for folder in ("pngs", "nopngs", "mixed"):
        (tmp / folder).mkdir()
    (tmp / "nopngs" / "notes.txt").write_text("no images here")
    pixels = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp / "pngs" / f"{i}.png")
        Image.fromarray(image if i % 2 else np.pad(image, 2)).save(tmp / "mixed" / f"{i}.png")
    return tmp


#: The cases of issue 21, refused before any data are loaded (tested with the loader replaced).
BEFORE_DATA = [case for case in CASES if any(a in case[0] for a in ("--valid-fraction", "--patience", "--ema",
                                                                    "--weight-decay", "--skip-threshold"))
               or any("dropout" in a for a in case[0])
               if not any("{tmp}" in a for a in case[0])]  # (a file's own cases pass --valid-fraction 0)


@pytest.mark.parametrize("argv, fragments", BEFORE_DATA, ids=[" ".join(a)[:48] for a, _ in BEFORE_DATA])
def test_selection_and_regularisation_values_are_refused_before_any_data_are_loaded(tmp_path, capsys,
                                                                                     monkeypatch, argv, fragments):
    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded")

    monkeypatch.setattr("inference.train.load_dataset", no_data)
    refused(capsys, ["train", *BASE, *argv, "--out", tmp_path / "run"], *fragments)


@pytest.mark.parametrize("argv, fragments", CASES, ids=[" ".join(a)[:48] for a, _ in CASES])
def test_a_bad_train_command_is_one_line_and_leaves_nothing(tmp_path, capsys, files, argv, fragments):
    if argv[0] == "--device" and torch.cuda.is_available():
        pytest.skip("a GPU machine")
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    out = tmp_path / "run"
    base = BASE[4:] if any(a.startswith(str(files)) for a in argv) else BASE  # a file's own sizes
    refused(capsys, ["train", *base, *argv, "--out", out], *fragments)
    assert not out.exists()  # refused before anything was written
    assert not os.path.exists(os.path.join(files, "run"))
