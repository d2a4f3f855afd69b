"""``pyro-vae``: the command line. It parses, builds configs and calls :mod:`inference.run`.

Bad input (unknown names, wrong shapes, NaN, data outside a likelihood's support, a missing
or foreign run directory, a corrupt checkpoint, a dataset missing offline) is reported as
one line on stderr with exit status 2; an existing run is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

PROG = "pyro-vae"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit status 2, as argparse's)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _options(pairs: Optional[List[str]], flag: str = "--set") -> Dict[str, Any]:
    from pyro_vae.errors import ConfigError

    out: Dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    from pyro_vae import DATASETS, FLOW_MODELS, GUIDES, LIKELIHOODS, MODELS, PRIORS

    parser = _Parser(prog=PROG, description="Variational autoencoders as Pyro programs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a VAE or a density flow (default: dense VAE on embedded MNIST digits)")
    t.add_argument("--model", default=None,
                   help=f"model: VAEs {' | '.join(MODELS.names())} (default dense), or density flows "
                        f"{' | '.join(FLOW_MODELS.names())} (no latent: exact likelihood, grey levels)")
    t.add_argument("--guide", default=None, help=f"guide: {' | '.join(GUIDES.names())} (default gaussian)")
    t.add_argument("--flows", type=int, default=None, metavar="K", help="number of flow steps of a flow guide")
    t.add_argument("--guide-set", action="append", metavar="KEY=VALUE", dest="guide_options",
                   help="guide option, e.g. --guide-set variant=householder (repeatable; JSON values)")
    t.add_argument("--likelihood", default=None,
                   help=f"likelihood: {' | '.join(LIKELIHOODS.names())} "
                        "(default bernoulli for binarized data, gaussian otherwise)")
    t.add_argument("--prior", default=None, help=f"prior p(z): {' | '.join(PRIORS.names())} (default normal)")
    t.add_argument("--dataset", default=None,
                   help=f"dataset: {' | '.join(DATASETS.names())}, or a .npz/.pt file with "
                        "arrays 'train' and 'test' (default mnist5k)")
    t.add_argument("--data-dir", default=None, help="where torchvision datasets live (default ./data)")
    t.add_argument("--download", action="store_true", help="allow downloading a torchvision dataset")
    t.add_argument("--binarize", default=None, help="dynamic | static | none (default dynamic)")
    t.add_argument("--z-dim", type=int, default=None, help="latent dimension (default 32)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", dest="model_options",
                   help="model option, e.g. --set hidden=[512,256] (repeatable; JSON values)")
    t.add_argument("--epochs", type=int, default=None,
                   help="total epochs (default 200; 20 for pixel, 10 for density flows)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--lr-decay", type=float, default=None, help="learning-rate decay per epoch")
    t.add_argument("--particles", type=int, default=None, metavar="L", help="samples of z per point and step")
    t.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS", help="epochs of linear KL warm-up")
    t.add_argument("--free-bits", type=float, default=None, metavar="LAMBDA",
                   help="free bits: nats per latent dimension not penalised (default 0)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--jit", action="store_true", default=None, help="compile the ELBO (JitTrace_ELBO)")
    t.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    t.add_argument("--test-size", type=int, default=None, help="use only the first N test images")
    t.add_argument("--iwae-samples", type=int, default=None,
                   help="k of the final IWAE evaluation (default 1000; 100 for the pixel model)")
    t.add_argument("--device", default="cpu", help="cpu | cuda")
    t.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<time>-<model>-<guide>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="ELBO and IWAE log-likelihood of a trained run; writes eval.json")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--iwae-samples", type=int, default=None, metavar="K",
                   help="importance samples (default 5000; 500 for the pixel model, whose decoder "
                        "costs about a thousand times a dense one's)")
    e.add_argument("--split", default="test", help="train | test")
    e.add_argument("--dataset", default=None, help="evaluate on another dataset of the same image shape")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--download", action="store_true")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="write a grid of images decoded from the prior")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default=None, metavar="FILE.png", help="default RUN_DIR/samples.png")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="flow models: sample z ~ N(0, T² I) (default 1)")
    s.add_argument("--device", default="cpu")

    po = sub.add_parser("posterior", help="NUTS vs the guide for a few images: ArviZ data, figures, "
                                          "inference gaps, latent usage (writes RUN_DIR/posterior)")
    po.add_argument("run_dir", metavar="RUN_DIR")
    po.add_argument("--index", type=int, nargs="+", default=[0, 1, 2], metavar="I",
                    help="indices of the images in --split (default 0 1 2)")
    po.add_argument("--split", default="test", help="train | test")
    po.add_argument("--chains", type=int, default=4, help="NUTS chains per image (≥ 2)")
    po.add_argument("--draws", type=int, default=500, help="NUTS draws per chain")
    po.add_argument("--warmup", type=int, default=500, help="NUTS warm-up steps per chain")
    po.add_argument("--max-tree-depth", type=int, default=10)
    po.add_argument("--jit", action="store_true", help="compile NUTS' potential energy (torch.jit.trace)")
    po.add_argument("--guide-draws", type=int, default=None, help="guide draws per image (default chains × draws)")
    po.add_argument("--iwae-samples", type=int, default=5000, metavar="K", help="k of log p(x) and the ELBOs")
    po.add_argument("--local-steps", type=int, default=3000, help="cap on SVI steps of each local guide")
    po.add_argument("--local-method", default="auto", help="auto | gaussian | copy")
    po.add_argument("--local-lr", type=float, default=0.01, help="Adam learning rate of the local fits")
    po.add_argument("--seed", type=int, default=0)
    po.add_argument("--out", default=None, metavar="DIR", help="default RUN_DIR/posterior")
    po.add_argument("--device", default="cpu")
    po.add_argument("--no-progress", action="store_true")

    sub.add_parser("list", help="list registered models, guides, likelihoods and datasets")
    return parser


def _model_default(name: str, attribute: str, default: Any) -> Any:
    """A model class's own default, VAE or density flow (e.g. fewer IWAE samples for an
    expensive decoder, or its ``train_defaults``); ``default`` for an unknown name."""
    from pyro_vae import FLOW_MODELS, MODELS

    for registry in (MODELS, FLOW_MODELS):
        if name in registry:
            return getattr(registry.get(name), attribute, default)
    return default


def _check_device(device: str) -> None:
    import torch

    from pyro_vae.errors import ConfigError

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; valid devices: cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available")


def _train(args: argparse.Namespace) -> int:
    from inference.run import DataConfig, is_run, read_config, summarize, train_run
    from inference.svi import TrainConfig
    from pyro_vae.errors import CheckpointError, ConfigError

    _check_device(args.device)
    train_fields = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "lr_decay": args.lr_decay, "particles": args.particles, "kl_warmup": args.kl_warmup,
        "free_bits": args.free_bits,
        "seed": args.seed, "jit": args.jit,
    }
    given_train = {k: v for k, v in train_fields.items() if v is not None}
    progress = not args.no_progress

    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR")
        config = read_config(args.out)
        # With --resume the run's own config is authoritative; only --epochs may change it.
        conflicting = [
            f"--{name.replace('_', '-')}" for name, value in vars(args).items()
            if value not in (None, False) and name in (
                "model", "guide", "flows", "guide_options", "likelihood", "prior", "dataset", "binarize", "z_dim",
                "model_options", "batch_size", "lr", "lr_decay", "particles", "kl_warmup", "free_bits",
                "seed", "jit", "train_size", "test_size", "iwae_samples")
        ]
        if conflicting:
            raise ConfigError(
                f"{', '.join(conflicting)} cannot change a run being resumed; only --epochs can"
            )
        train = TrainConfig.from_dict({**config["train"], **given_train})
        result = train_run(args.out, config["model"], config["guide"],
                           DataConfig.from_dict(config["data"]), train, resume=True,
                           download=args.download, progress=progress, device=args.device)
        print(summarize(result, result["binarize"] != "none"))
        return 0

    name = args.model or "dense"
    if _is_flow_model(name, args):  # a density flow: no latent, grey levels by default
        binarize = args.binarize or "none"
        model: Dict[str, Any] = {"name": name, **_options(args.model_options)}
        guide: Dict[str, Any] = {"name": "empty"}
    else:
        binarize = args.binarize or "dynamic"
        likelihood = args.likelihood or ("gaussian" if binarize == "none" else "bernoulli")
        model = {"name": name, "z_dim": 32 if args.z_dim is None else args.z_dim,
                 "likelihood": likelihood, "prior": args.prior or "normal",
                 **_options(args.model_options)}
        guide = {"name": args.guide or "gaussian"}
        if args.flows is not None:
            guide["num_flows"] = args.flows
        guide.update(_options(args.guide_options, "--guide-set"))
    data = DataConfig(
        name=args.dataset or "mnist5k",
        binarize=binarize,
        data_dir=os.path.abspath(args.data_dir or "data"),
        train_size=args.train_size,
        test_size=args.test_size,
    )
    # a model may bring its own training defaults (density flows: 10 epochs; the pixel model:
    # 20 epochs and free bits against posterior collapse); what the user gives wins
    train = TrainConfig(**{**_model_default(model["name"], "train_defaults", {}), **given_train})
    out = args.out or os.path.join(
        "runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{model['name']}-{guide['name']}"
    )
    if is_run(out):
        raise CheckpointError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    result = train_run(out, model, guide, data, train,
                       iwae_samples=(int(_model_default(model["name"], "final_iwae_samples", 1000))
                                     if args.iwae_samples is None else args.iwae_samples),
                       download=args.download, progress=progress, device=args.device)
    print(summarize(result, data.binarize != "none"))
    print(f"run directory: {out}")
    return 0


def _is_flow_model(name: str, args: argparse.Namespace) -> bool:
    """Whether ``--model NAME`` is a density flow; refuses the options that need a latent."""
    from pyro_vae.errors import ConfigError
    from pyro_vae.flows import model_kind

    if model_kind(name) != "flow":
        return False
    latent_only = [flag for flag, value in (
        ("--guide", args.guide), ("--flows", args.flows), ("--z-dim", args.z_dim),
        ("--prior", args.prior), ("--likelihood", args.likelihood), ("--kl-warmup", args.kl_warmup),
        ("--free-bits", args.free_bits), ("--guide-set", args.guide_options),
    ) if value is not None]
    if latent_only:
        raise ConfigError(
            f"{', '.join(latent_only)} cannot be used with the density flow {name!r}: it has no "
            "latent variable (its guide is empty and its likelihood is exact)"
        )
    return True


def _evaluate(args: argparse.Namespace) -> int:
    from inference.run import evaluate_run, summarize
    from pyro_vae.errors import ConfigError

    if args.iwae_samples is None:
        from inference.run import read_config

        name = read_config(args.run_dir)["model"].get("name", "")
        args.iwae_samples = int(_model_default(name, "eval_iwae_samples", 5000))
    if args.iwae_samples < 1:
        raise ConfigError(f"--iwae-samples must be positive, got {args.iwae_samples}")
    _check_device(args.device)
    result = evaluate_run(args.run_dir, iwae_samples=args.iwae_samples, split=args.split,
                          dataset=args.dataset, data_dir=args.data_dir, download=args.download,
                          seed=args.seed, progress=not args.no_progress, device=args.device)
    print(summarize(result, result["binarize"] != "none"))
    print(f"wrote {os.path.join(args.run_dir, 'eval.json')}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from inference.run import sample_run

    _check_device(args.device)
    path = sample_run(args.run_dir, n=args.n, out=args.out, seed=args.seed, device=args.device,
                      temperature=args.temperature)
    print(f"wrote {path}")
    return 0


def _posterior(args: argparse.Namespace) -> int:
    from inference.posterior import (LocalFitConfig, NUTSConfig, PosteriorConfig, format_gaps,
                                     posterior_run)

    _check_device(args.device)
    config = PosteriorConfig(indices=tuple(args.index), split=args.split,
                             guide_draws=args.guide_draws, iwae_samples=args.iwae_samples,
                             seed=args.seed)
    nuts = NUTSConfig(chains=args.chains, draws=args.draws, warmup=args.warmup,
                      max_tree_depth=args.max_tree_depth, jit=args.jit, seed=args.seed)
    local = LocalFitConfig(method=args.local_method, max_steps=args.local_steps, lr=args.local_lr)
    result = posterior_run(args.run_dir, config, nuts, local, out=args.out,
                           progress=not args.no_progress, device=args.device)
    print(format_gaps(result["gaps"]))
    print(f"wrote {len(result['files'])} files to {result['out']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pyro_vae import DATASETS, FLOW_MODELS, GUIDES, LIKELIHOODS, MODELS, PRIORS

    for reg in (MODELS, FLOW_MODELS, GUIDES, LIKELIHOODS, PRIORS, DATASETS):
        print(f"{reg.kind}s: {', '.join(reg.names())}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pyro-vae`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pyro_vae.errors import PyroVAEError

    handler = {"train": _train, "evaluate": _evaluate, "sample": _sample, "posterior": _posterior,
               "list": _list}[args.command]
    try:
        return handler(args)
    except PyroVAEError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted (the last completed epoch is checkpointed; "
              "continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
