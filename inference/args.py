"""The command line's arguments: the parser of ``pyro-vae``, derived from the typed options
of each command, and the one table from a parameter's name to its flag.

This module is the torch-free boundary of the application: it, and what it imports
(:mod:`inference.settings`, :mod:`inference.config`, :mod:`inference.rundir`,
:mod:`inference.io` and the library's torch-free :mod:`pyro_vae.errors`,
:mod:`pyro_vae.options`, :mod:`pyro_vae.infer.config`), never import torch, so that a
mistyped flag, a bad value or an unusable output is answered in a fraction of a second
(tests/test_architecture.py checks it).

Every flag is a field of an options dataclass declared with
:func:`~pyro_vae.options.option` (its annotation is the flag's type, its help text beside
its default); :func:`add_flags` turns the fields into arguments, and each sub-parser is the
sum of its command's dataclasses (:data:`COMMANDS`) plus the :class:`~.settings.Common`
options every command that loads a run shares, from one parent parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from pyro_vae.errors import ConfigError
from pyro_vae.infer.config import LocalFitConfig, NUTSConfig, TrainConfig
from pyro_vae.options import fields_of

from .config import Choices, DataConfig, RunConfig, defaults_by_model
from .settings import (Common, CompareOptions, EvaluateOptions, PosteriorOptions, SampleOptions,
                       TrainOptions, TrainRun)

PROG = "pyro-vae"

#: command → (help, the dataclasses whose fields are its flags, whether it shares
#: :class:`Common`); for ``train`` the fields of the run configuration (recorded in
#: ``config.json``) and of how this process runs it.
COMMANDS: Dict[str, Tuple[str, Tuple[type, ...], bool]] = {
    "train": ("train a VAE or a density flow (default: dense VAE on embedded MNIST digits)",
              (Choices, DataConfig, TrainConfig, RunConfig, TrainRun), True),
    "evaluate": ("ELBO and IWAE log-likelihood of a trained run; writes eval.json", (EvaluateOptions,), True),
    "sample": ("write a grid of images decoded from the prior, or the path between two test images "
               "(--interpolate)", (SampleOptions,), True),
    "compare": ("runs side by side: a Markdown table on stdout and their test-ELBO curves",
                (CompareOptions,), False),
    "posterior": ("NUTS vs the guide for a few images: ArviZ data, figures, inference gaps, latent usage "
                  "(writes RUN_DIR/posterior)", (PosteriorOptions, NUTSConfig, LocalFitConfig), True),
    "list": ("list registered models, guides, priors, likelihoods and datasets", (), False),
}
#: The dataclasses of ``train`` that make up its :class:`~inference.config.RunConfig`.
RUN_SECTIONS = (Choices, DataConfig, TrainConfig, RunConfig)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit status 2, as argparse's)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------- flags from fields
def flag_fields(cls: type) -> Iterator[Tuple[dataclasses.Field, Any, str]]:
    """``(field, annotation, flag)`` of every command-line option of the dataclass ``cls``
    (a flag without leading dashes is a positional argument)."""
    fields, hints = fields_of(cls)
    for f in fields:
        if f.metadata.get("cli"):
            yield f, hints[f.name], f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _own_fields(cls: type) -> Iterator[Tuple[dataclasses.Field, Any, str]]:
    """:func:`flag_fields` of ``cls`` less those of :class:`Common` (its parent parser's)."""
    common = {f.name for f in dataclasses.fields(Common)}
    for f, annotation, flag in flag_fields(cls):
        if f.name not in common:
            yield f, annotation, flag


def _arg_type(annotation: Any, nargs: Any = None):
    """The type of one value of the flag (of each of its ``nargs`` values); ``str`` for
    what the dataclass parses itself (e.g. ``--image-size 32x48``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is typing.Union else annotation
    if nargs is not None and typing.get_origin(base) in (tuple, list):
        base = typing.get_args(base)[0]
    return base if base in (int, float, str) else str


def add_flags(parser: argparse.ArgumentParser, cls: type, common: bool = False) -> None:
    """Add every command-line option of the dataclass ``cls`` to ``parser`` (default None,
    so that what the user gave can be told from what the defaults say); those of
    :class:`Common` only if ``common`` (elsewhere they come from the parent parser)."""
    for f, annotation, flag in (flag_fields(cls) if common else _own_fields(cls)):
        meta = f.metadata
        dest = f"{cls.__name__}.{f.name}"
        by_model = defaults_by_model(f.name) if cls is TrainConfig else ""
        # the model's default replaces the library's "(default …)" at the end of the help
        help_text = f"{re.sub(r' *[(]default[^()]*[)]$', '', meta['help'])} (default: {by_model})" \
            if by_model else meta["help"]
        kwargs: Dict[str, Any] = {"default": None, "help": help_text}
        metavar = meta["metavar"] or f.name.upper()
        nargs = meta.get("nargs")
        if annotation is bool:
            # a run setting may default to True for some models (inference.config.defaults_for):
            # --x and --no-x; any other switch only turns on
            kwargs["action"] = argparse.BooleanOptionalAction if cls in RUN_SECTIONS else "store_true"
        elif nargs is not None:
            kwargs.update(nargs=nargs, type=_arg_type(annotation, nargs), metavar=metavar)
        elif typing.get_origin(annotation) in (tuple, list):  # repeatable: --set A=1 --set B=2
            kwargs.update(action="append", metavar=metavar)
        else:
            kwargs.update(type=_arg_type(annotation), metavar=metavar)
        if flag.startswith("-"):
            parser.add_argument(flag, dest=dest, **kwargs)
        else:  # positional: its name is its dest
            kwargs.pop("default")
            parser.add_argument(dest, **kwargs)


def given_flags(args: argparse.Namespace, cls: type) -> Dict[str, Any]:
    """The fields of ``cls`` the user set on the command line, ``{field: value}``."""
    out = {}
    for f, _, _ in flag_fields(cls):
        value = getattr(args, f"{cls.__name__}.{f.name}", None)
        if value is None:
            value = getattr(args, f"{Common.__name__}.{f.name}", None)
        if value is not None:  # None: not given (every flag's default), False: --no-x
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def given_flag_names(given: Dict[str, Dict[str, Any]], classes: Sequence[type] = RUN_SECTIONS,
                     where=lambda meta: True) -> List[str]:
    """Spellings of the flags of ``classes`` in ``given`` (``{class name: {field: value}}``,
    what :func:`given_flags` found) whose metadata satisfies ``where`` (e.g. the latent-only
    ones, or those a resume may not change)."""
    names = []
    for cls in classes:
        for f, _, flag in flag_fields(cls):
            if f.name in given.get(cls.__name__, {}) and where(f.metadata):
                names.append(flag)
    return names


#: Parameters of the library that a flag feeds under another name, per scope: the options of
#: a component built by name are its constructor's (``model.hidden_dims``), given with
#: ``--set``, ``--guide-set`` or ``--prior-set`` unless a flag of their own sets them.
SCOPED_FLAGS = {
    "model": ("--set", {"z_dim": "--z-dim", "likelihood": "--likelihood"}),
    "flow model": ("--set", {}),
    "guide": ("--guide-set", {"num_flows": "--flows"}),
    "prior": ("--prior-set", {}),
    "likelihood": ("--likelihood", {}),
    "dataset": ("--dataset-set", {"name": "--dataset"}),
}
#: Keyword parameters of library functions that a flag of this name feeds.
ALIASES = {"num_samples": "--iwae-samples", "download": "--download", "data_dir": "--data-dir",
           "dataset": "--dataset"}


def flag_of(command: str, param: str):
    """The flag of ``command`` that sets the library parameter ``param`` (``None`` if none
    does): a field of the command's options, or a component's option (``"model.channels"``:
    ``--set``). This is how the command line says which flag an error is about
    (:attr:`~pyro_vae.errors.PyroVAEError.params`); the library never names flags."""
    scope, _, name = param.rpartition(".")
    if scope in SCOPED_FLAGS:
        default, own = SCOPED_FLAGS[scope]
        return own.get(name) or (_fields(command).get(name) if scope == "dataset" else None) or default
    return _fields(command).get(name) or ALIASES.get(name)


def _fields(command: str) -> Dict[str, str]:
    """Field name → flag over the dataclasses of ``command`` (and the shared ones)."""
    _, classes, shared = COMMANDS[command]
    return {f.name: flag for cls in ((Common,) if shared else ()) + classes
            for f, _, flag in flag_fields(cls) if flag.startswith("-")}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyro-vae`` and its sub-commands."""
    common = Parser(add_help=False)
    add_flags(common, Common, common=True)
    parser = Parser(prog=PROG, description="Variational autoencoders as Pyro programs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, classes, shared) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, parents=[common] if shared else [])
        for cls in classes:
            add_flags(p, cls)
    return parser


def options(args: argparse.Namespace, argv: Sequence[str]) -> Any:
    """The typed options of the parsed command (each checks its values as it is built)."""
    if args.command == "train":
        run = TrainRun(**given_flags(args, TrainRun))
        given = {cls.__name__: given_flags(args, cls) for cls in RUN_SECTIONS}
        if run.resume:  # the run's own config is authoritative; only --epochs may change it
            conflicting = given_flag_names(given, where=lambda meta: not meta["on_resume"])
            if conflicting:
                raise ConfigError(f"{', '.join(conflicting)} cannot change a run being resumed; only --epochs can")
        elif given["TrainConfig"] or given["DataConfig"] or given["Choices"]:
            # each value checked now, before torch: the model's own defaults, which fill in the
            # rest once the model is known (inference.train.run_config), never make a value bad
            _, data, train = [cls(**given[cls.__name__]) for cls in (Choices, DataConfig, TrainConfig)]
            if "patience" in given["TrainConfig"]:  # asked for, not a model's default
                train.check_selection(data.valid_fraction > 0)
        return TrainOptions(run=run, given=given, argv=list(argv))
    if args.command == "posterior":
        opts = given_flags(args, PosteriorOptions)
        common = {k: v for k, v in opts.items() if k == "seed"}
        return PosteriorOptions(**opts, nuts=NUTSConfig(**given_flags(args, NUTSConfig), **common),
                                local=LocalFitConfig(**given_flags(args, LocalFitConfig)))
    cls = {"evaluate": EvaluateOptions, "sample": SampleOptions, "compare": CompareOptions}.get(args.command)
    return cls(**given_flags(args, cls)) if cls is not None else None
