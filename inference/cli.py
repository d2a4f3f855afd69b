"""``pyro-vae``: the command line. It parses, builds a :class:`~inference.config.RunConfig`
and calls the commands (:mod:`inference.train`, :mod:`.evaluate`, :mod:`.sample`,
:mod:`.posterior`, :mod:`.compare`).

Bad input (unknown names, wrong types, wrong shapes, NaN, data outside a likelihood's
support, a missing or foreign run directory, a corrupt checkpoint, a dataset missing
offline) is reported as one line on stderr with exit status 2; an existing run is never
overwritten. The ``train`` flags are derived from the fields of the configuration
dataclasses, and argument errors are found before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.infer.config import TrainConfig

from .config import Choices, DataConfig, RunConfig, add_flags, given_flag_names, given_flags

PROG = "pyro-vae"
#: The dataclasses whose fields are the ``train`` flags (besides the runtime flags).
TRAIN_FLAGS = (Choices, DataConfig, TrainConfig, RunConfig)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit status 2, as argparse's)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Variational autoencoders as Pyro programs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a VAE or a density flow (default: dense VAE on embedded MNIST digits)")
    for cls in TRAIN_FLAGS:
        add_flags(t, cls)
    t.add_argument("--download", action="store_true", help="allow downloading a torchvision dataset")
    t.add_argument("--device", default="cpu", help="cpu | cuda | cuda:K (under torchrun: each rank its "
                                                    "local GPU)")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (launches torchrun's "
                        "agent; on GPUs one per GPU)")
    t.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    t.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<time>-<model>-<guide>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard events to RUN_DIR/tb (written when tensorboard is installed)")

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

    s = sub.add_parser("sample", help="write a grid of images decoded from the prior, or the path "
                                      "between two test images (--interpolate)")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--n", type=int, default=None, help="number of samples (default 64)")
    s.add_argument("--out", default=None, metavar="FILE.png",
                   help="default RUN_DIR/samples.png (RUN_DIR/interpolation_I_J.png)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="flow models: sample z ~ N(0, T² I) (default 1)")
    s.add_argument("--interpolate", type=int, nargs=2, default=None, metavar=("I", "J"),
                   help="decode the path between the posterior means of test images I and J "
                        "(spherical for a Normal prior)")
    s.add_argument("--steps", type=int, default=None, help="points on the --interpolate path (default 10)")
    s.add_argument("--device", default="cpu")

    c = sub.add_parser("compare", help="runs side by side: a Markdown table on stdout and their "
                                       "test-ELBO curves")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", default=None, metavar="FILE", help="also write the table as FILE.md, .csv or .json")
    c.add_argument("--figure", default="compare.png", metavar="FILE.png",
                   help="the test-ELBO curves (default compare.png)")

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

    sub.add_parser("list", help="list registered models, guides, priors, likelihoods and datasets")
    return parser


def _check_device(device: str) -> None:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; valid devices: cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available")


def _train(args: argparse.Namespace) -> int:
    if args.jit:
        raise ConfigError("--jit is gone: the training engine (Pyro's ELBOModule and a torch optimizer) "
                          "is as fast without TorchScript (docs/benchmarks.md)")
    if args.nproc is not None:
        from .launch import launch

        return launch(args.nproc, args.argv, out=args.out)
    config, resume_epochs = _train_config(args)
    from .distributed import process_group
    from .evaluate import summarize

    with process_group(args.device) as (device, main):
        _check_device(device)
        progress = not args.no_progress
        log = print if main else (lambda line: None)
        if args.resume:
            from .train import resume_run

            result = resume_run(args.out, epochs=resume_epochs, download=args.download,
                                progress=progress, device=device, log=log,
                                tensorboard=not args.no_tensorboard)
            log(summarize(result))
            return 0
        from pyro_vae.infer.distributed import broadcast

        from .train import train_run

        out = broadcast(args.out or os.path.join(
            "runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model['name']}-{config.guide['name']}"))
        result = train_run(out, config, download=args.download, progress=progress, device=device, log=log,
                           tensorboard=not args.no_tensorboard)
        log(summarize(result))
        log(f"run directory: {out}")
    return 0


def _train_config(args: argparse.Namespace):
    """``(config, None)`` for a new run, ``(None, epochs)`` for ``--resume``; every check of
    the arguments happens here, before any process group or data."""
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR")
        # With --resume the run's own config is authoritative; only --epochs may change it.
        conflicting = given_flag_names(args, TRAIN_FLAGS, where=lambda meta: not meta["on_resume"])
        if conflicting:
            raise ConfigError(f"{', '.join(conflicting)} cannot change a run being resumed; only --epochs can")
        return None, given_flags(args, TrainConfig).get("epochs")

    choices = Choices(**given_flags(args, Choices))
    from pyro_vae.build import model_class

    cls = model_class(choices.model)
    if not cls.has_latent:
        latent_only = given_flag_names(args, TRAIN_FLAGS, where=lambda meta: meta["latent"])
        if latent_only:
            raise ConfigError(
                f"{', '.join(latent_only)} cannot be used with the density flow {choices.model!r}: it has "
                "no latent variable (its guide is empty and its likelihood is exact)"
            )
    # a model may bring its own defaults (density flows: grey levels, 10 epochs; the pixel
    # model: 20 epochs and free bits against posterior collapse); what the user gives wins
    defaults = cls.defaults
    data_given = given_flags(args, DataConfig)
    if "name" in data_given:  # a path is stored absolute, so the run works from anywhere
        data_given["name"] = _dataset_path(data_given["name"])
    data = DataConfig(**{"binarize": defaults.binarize, **data_given,
                         "data_dir": os.path.abspath(data_given.get("data_dir", "data"))})
    train = TrainConfig(**{**defaults.train, **given_flags(args, TrainConfig)})
    model, guide, prior = choices.specs(cls.has_latent, data.binarize)
    iwae_samples = given_flags(args, RunConfig).get("iwae_samples", defaults.final_iwae_samples)
    return RunConfig(model, guide, prior, data, train, iwae_samples, kind="vae" if cls.has_latent else "flow"), None


def _dataset_path(name: str) -> str:
    """``name`` as given if it is a registered dataset or no existing path, else absolute."""
    from pyro_vae.datasets import DATASETS

    return os.path.abspath(name) if name not in DATASETS and os.path.exists(name) else name


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run, summarize

    if args.iwae_samples is not None and args.iwae_samples < 1:
        raise ConfigError(f"--iwae-samples must be positive, got {args.iwae_samples}")
    _check_device(args.device)
    dataset = None if args.dataset is None else _dataset_path(args.dataset)
    result = evaluate_run(args.run_dir, iwae_samples=args.iwae_samples, split=args.split,
                          dataset=dataset, data_dir=args.data_dir, download=args.download,
                          seed=args.seed, progress=not args.no_progress, device=args.device)
    print(summarize(result))
    print(f"wrote {os.path.join(args.run_dir, 'eval.json')}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .sample import interpolate_run, sample_run

    if args.interpolate is not None:
        for flag, value in (("--n", args.n), ("--temperature", args.temperature)):
            if value is not None:
                raise ConfigError(f"{flag} does not apply to --interpolate (use --steps)")
    elif args.steps is not None:
        raise ConfigError("--steps goes with --interpolate I J")
    _check_device(args.device)
    if args.interpolate is not None:
        i, j = args.interpolate
        path = interpolate_run(args.run_dir, i, j, steps=10 if args.steps is None else args.steps,
                               out=args.out, seed=args.seed, device=args.device)
    else:
        path = sample_run(args.run_dir, n=64 if args.n is None else args.n, out=args.out, seed=args.seed,
                          device=args.device, temperature=args.temperature)
    print(f"wrote {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare

    print(compare(args.run_dirs, out=args.out, figure=args.figure), end="")
    for path in (args.out, args.figure):  # on stderr: `compare runs/* > table.md` is the table alone
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _posterior(args: argparse.Namespace) -> int:
    from pyro_vae.infer.gaps import LocalFitConfig
    from pyro_vae.infer.nuts import NUTSConfig

    from .posterior import PosteriorConfig, format_gaps, posterior_run

    config = PosteriorConfig(indices=tuple(args.index), split=args.split,
                             guide_draws=args.guide_draws, iwae_samples=args.iwae_samples,
                             seed=args.seed)
    nuts = NUTSConfig(chains=args.chains, draws=args.draws, warmup=args.warmup,
                      max_tree_depth=args.max_tree_depth, jit=args.jit, seed=args.seed)
    local = LocalFitConfig(method=args.local_method, max_steps=args.local_steps, lr=args.local_lr)
    _check_device(args.device)
    result = posterior_run(args.run_dir, config, nuts, local, out=args.out,
                           progress=not args.no_progress, device=args.device)
    print(format_gaps(result["gaps"]))
    print(f"wrote {len(result['files'])} files to {result['out']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pyro_vae import DATASETS, FLOW_MODELS, GUIDES, LIKELIHOODS, MODELS, PRIORS

    for reg in (MODELS, FLOW_MODELS, GUIDES, PRIORS, LIKELIHOODS, DATASETS):
        print(f"{reg.kind}s: {', '.join(reg.names())}")
    return 0


def _peer_failure(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed because another rank is gone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    text = str(err)
    return isinstance(err, dist.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "ProcessGroup"))


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pyro-vae`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"train": _train, "evaluate": _evaluate, "sample": _sample, "posterior": _posterior,
               "compare": _compare, "list": _list}[args.command]
    # under torchrun every rank runs this; rank 0 speaks for all
    speak = os.environ.get("RANK", "0") == "0"
    try:
        return handler(args)
    except PyroVAEError as err:
        if speak:
            print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        if speak:
            print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        if not _peer_failure(err):
            raise
        # another rank died (torchrun's agent is ending the run): say so once, no traceback
        if speak and not os.environ.get("PYRO_VAE_LAUNCHED"):
            print(f"{PROG} {args.command}: error: another process of the run failed ({_first_line(err)}); "
                  "the last checkpoint is intact; continue with --resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted (the last completed epoch is checkpointed; "
              "continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
