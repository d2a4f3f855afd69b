"""``pyro-vae``: the command line. It parses, builds a :class:`~inference.config.RunConfig`
and calls the commands (:mod:`inference.train`, :mod:`.evaluate`, :mod:`.sample`,
:mod:`.posterior`, :mod:`.compare`).

Bad input (unknown names, wrong types, wrong shapes, NaN, data outside a likelihood's
support, a missing or foreign run directory, a corrupt checkpoint, a dataset missing
offline, an output that cannot be written) is reported as one line on stderr with exit
status 2; an existing run is never overwritten. Faults are one line too: a NaN loss, a full
disk or no memory (exit 1), SIGINT or SIGTERM (exit 130 / 143), each saying where the last
checkpoint is and how to resume. The ``train`` flags are derived from the fields of the
configuration dataclasses; argument errors and unwritable or protected outputs are found
before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from typing import Optional, Sequence

from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.infer.config import MAX_IWAE_SAMPLES, MAX_SEED, TrainConfig
from pyro_vae.options import check_int, check_positive

from . import signals
from .config import MAX_SAMPLES, Choices, DataConfig, RunConfig, add_flags, given_flag_names, given_flags

PROG = "pyro-vae"
#: The dataclasses whose fields are the ``train`` flags (besides the runtime flags).
TRAIN_FLAGS = (Choices, DataConfig, TrainConfig, RunConfig)
SPLITS = ("train", "test")


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


def _check_seed(seed: int) -> None:
    check_int(seed, "--seed", 0, MAX_SEED)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _default_out(config: RunConfig) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model['name']}-"
                                f"{config.guide['name']}")


def _train(args: argparse.Namespace) -> int:
    if args.jit:
        raise ConfigError("--jit is gone: the training engine (Pyro's ELBOModule and a torch optimizer) "
                          "is as fast without TorchScript (docs/benchmarks.md)")
    restart = _check_train_out(args)  # before the model registry imports torch
    config, resume_epochs = _train_config(args)
    if args.out is None and "WORLD_SIZE" not in os.environ:
        # named before any process starts, so that every message (and every rank) names it
        args.out = _default_out(config)
        args.argv = [*args.argv, "--out", args.out]
        restart = _check_train_out(args)
    if args.nproc is not None:
        _check_device(args.device)  # here, not in every worker
        from .launch import launch

        return launch(args.nproc, args.argv, out=args.out)
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

        if args.out is None:  # under torchrun: rank 0 names the run for all
            args.out = broadcast(_default_out(config))
        result = train_run(args.out, config, download=args.download, progress=progress, device=device,
                           log=log, restart=restart, tensorboard=not args.no_tensorboard)
        log(summarize(result))
        log(f"run directory: {args.out}")
    return 0


def _check_train_out(args: argparse.Namespace) -> Optional[bool]:
    """The checks of ``--out`` (before torch, data or a process group): a resumed run must be
    a run, writable; a new one must not damage anything (see
    :func:`~inference.rundir.check_new_run`, whose answer — restart a run stopped before its
    first checkpoint — this returns; ``None`` when the run is not named yet)."""
    from .io import check_writable
    from .rundir import check_new_run, read_config

    if args.out is None:
        return None
    if args.resume:
        read_config(args.out)
        check_writable(args.out)
        return None
    return check_new_run(args.out)


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
    from pyro_vae.build import check_specs, model_class

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
    check_specs(model, guide, prior, binary=data.binarize != "none")  # before any data are loaded
    iwae_samples = given_flags(args, RunConfig).get("iwae_samples", defaults.final_iwae_samples)
    return RunConfig(model, guide, prior, data, train, iwae_samples, kind="vae" if cls.has_latent else "flow"), None


def _dataset_path(name: str) -> str:
    """``name`` as given if it is a registered dataset or no existing path, else absolute."""
    from pyro_vae.datasets import DATASETS

    return os.path.abspath(name) if name not in DATASETS and os.path.exists(name) else name


def _evaluate(args: argparse.Namespace) -> int:
    from .io import check_output_file
    from .rundir import check_trained, paths

    if args.iwae_samples is not None:
        check_int(args.iwae_samples, "--iwae-samples", 1, MAX_IWAE_SAMPLES)
    _check_seed(args.seed)
    _check_split(args.split)
    check_trained(args.run_dir)
    check_output_file(paths(args.run_dir)["eval"])
    _check_device(args.device)
    from .evaluate import evaluate_run, summarize

    dataset = None if args.dataset is None else _dataset_path(args.dataset)
    result = evaluate_run(args.run_dir, iwae_samples=args.iwae_samples, split=args.split,
                          dataset=dataset, data_dir=args.data_dir, download=args.download,
                          seed=args.seed, progress=not args.no_progress, device=args.device)
    print(summarize(result))
    print(f"wrote {os.path.join(args.run_dir, 'eval.json')}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .rundir import check_run_output, check_trained

    _check_seed(args.seed)
    if args.interpolate is not None:
        for flag, value in (("--n", args.n), ("--temperature", args.temperature)):
            if value is not None:
                raise ConfigError(f"{flag} does not apply to --interpolate (use --steps)")
        i, j = args.interpolate
        steps = 10 if args.steps is None else check_int(args.steps, "--steps", 2, MAX_SAMPLES)
        own = f"interpolation_{i}_{j}.png"
    else:
        if args.steps is not None:
            raise ConfigError("--steps goes with --interpolate I J")
        n = 64 if args.n is None else check_int(args.n, "--n", 1, MAX_SAMPLES)
        if args.temperature is not None:
            check_positive(args.temperature, "--temperature")
        own = "samples.png"
    out = args.out or os.path.join(args.run_dir, own)
    config = check_trained(args.run_dir)
    if args.temperature is not None and config.kind != "flow":
        raise ConfigError("--temperature applies to flow models (nice, realnvp, glow) only")
    check_run_output(out, args.run_dir, own=(own,))
    _check_device(args.device)
    from .sample import interpolate_run, sample_run

    if args.interpolate is not None:
        path = interpolate_run(args.run_dir, i, j, steps=steps, out=out, seed=args.seed, device=args.device)
    else:
        path = sample_run(args.run_dir, n=n, out=out, seed=args.seed, device=args.device,
                          temperature=args.temperature)
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
    from .rundir import POSTERIOR, check_analysis_output, check_trained

    _check_seed(args.seed)
    _check_split(args.split)
    if check_trained(args.run_dir).kind == "flow":
        raise ConfigError(f"{args.run_dir} holds a density flow: it has no latent variable, so no posterior")
    check_analysis_output(args.out or os.path.join(args.run_dir, POSTERIOR), args.run_dir)
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


def _out_of_memory(err: BaseException) -> Optional[str]:
    """The one line for an allocation that failed (``None`` if ``err`` is something else)."""
    text = str(err)
    if not (isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text):
        return None
    size = re.search(r"allocate (\d+) bytes", text)
    amount = f" (an allocation of {int(size[1]) / 2**30:,.1f} GiB failed)" if size else ""
    return (f"out of memory{amount}; a smaller --batch-size, --particles, --z-dim or smaller networks "
            "need less")


def _where(args: argparse.Namespace, err: BaseException) -> str:
    """Where a command stopped by a fault or a signal leaves things (for its one line)."""
    if args.command != "train":
        return "nothing was left half-written (every file is written atomically)"
    from .rundir import describe_checkpoint

    return describe_checkpoint(args.out, getattr(err, "checkpoint_epoch", None))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pyro-vae`` console script."""
    previous = signals.install()
    try:
        return _main(argv)
    except KeyboardInterrupt as err:  # before the command started (parsing arguments)
        print(f"{PROG}: interrupted by {signals.name(err)}; nothing was written", file=sys.stderr)
        return signals.EXIT_STATUS[signals.name(err)]
    finally:
        signals.restore(previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"train": _train, "evaluate": _evaluate, "sample": _sample, "posterior": _posterior,
               "compare": _compare, "list": _list}[args.command]
    # under torchrun every rank runs this; rank 0 speaks for all, and under `--nproc` the
    # launcher speaks for the workers when the run is interrupted or a peer fails
    speak = os.environ.get("RANK", "0") == "0"
    launched = bool(os.environ.get("PYRO_VAE_LAUNCHED"))
    prefix = f"{PROG} {args.command}"
    try:
        with warnings.catch_warnings():
            # a NaN loss is reported once, as the error line, not also as Pyro's warning
            warnings.filterwarnings("ignore", message="Encountered NaN")
            return handler(args)
    except (PyroVAEError, FloatingPointError) as err:  # bad input (2), or a NaN loss (1)
        if speak:
            print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, PyroVAEError) else 1
    except (RuntimeError, MemoryError) as err:
        memory = _out_of_memory(err)
        if memory is not None:
            if speak:
                print(f"{prefix}: error: {memory}; {_where(args, err)}", file=sys.stderr)
            return 1
        if not isinstance(err, RuntimeError) or not _peer_failure(err):
            raise
        # another rank died (torchrun's agent is ending the run): say so once, no traceback
        if speak and not launched:
            print(f"{prefix}: error: another process of the run failed ({_first_line(err)}); "
                  "the last checkpoint is intact; continue with --resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM (signals.Terminated)
        if speak and not launched:
            print(f"{prefix}: interrupted by {signals.name(err)}; {_where(args, err)}", file=sys.stderr)
        return signals.EXIT_STATUS[signals.name(err)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
