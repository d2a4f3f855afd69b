"""What each ``pyro-vae`` command is asked to do: one typed dataclass per command, its
defaults and help texts declared once beside its fields (the command line's flags are
derived from them, :mod:`inference.args`), its values checked as it is built, and its run
directory and outputs checked by :meth:`check_paths` — before torch is imported, before
any data are loaded. Nothing here imports torch.

Parameters are named as the fields are; the command line says which flag a message is
about (:func:`inference.args.flag_of`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from pyro_vae.data_settings import ALL_LABELS, check_split
from pyro_vae.errors import ConfigError
from pyro_vae.infer.config import MAX_IWAE_SAMPLES, MAX_SEED, LocalFitConfig, NUTSConfig, check_temperature
from pyro_vae.options import check_choice, check_fields, check_int, check_positive, check_ranges, option

from .config import RunConfig
from .io import check_output_file, check_writable
from .rundir import (CHECKPOINTS, CONFUSION, POSTERIOR, check_analysis_output, check_new_run, check_output,
                     check_run_output, check_trained, paths, read_config)

#: Most images ``pyro-vae sample`` draws into one grid (100 × 100), all in memory at once.
MAX_SAMPLES = 10_000
#: Most processes ``--nproc`` starts on one machine.
MAX_PROCESSES = 64
#: Most images ``pyro-vae posterior`` analyses in one run (each gets its own NUTS chains
#: and local fits: minutes apiece).
MAX_INDICES = 100
#: Table formats of ``compare --out``, by file ending.
TABLE_FORMATS = (".md", ".csv", ".json")
#: Experiment trackers ``train --tracker`` logs to beside TensorBoard (:mod:`inference.tracking`).
TRACKERS = ("mlflow", "none")
#: The devices a command runs on (``cuda:K`` a given GPU).
DEVICES = ("cpu", "cuda")


def check_indices(indices, count: int, split: str, param: str) -> None:
    """Refuse image indices outside a split of ``count`` images (``param`` names the option)."""
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ConfigError(f"image {bad[0]} is out of range: the {split} split has {count} images "
                          f"(valid indices 0..{count - 1})", params=(param,))


@dataclass
class Common:
    """The options every command that works on a run shares (one parent parser)."""

    seed: int = option(0, "seed (train: of torch, numpy, Pyro and the data order; other commands: of "
                          "their draws) (default 0)")
    device: str = option("cpu", "cpu | cuda | cuda:K (under torchrun: each rank its local GPU)")
    no_progress: bool = option(False, "no progress bars")

    def __post_init__(self) -> None:
        check_fields(self, "option")
        check_int(self.seed, "seed", 0, MAX_SEED)
        if self.device not in DEVICES and not (self.device.startswith("cuda:") and self.device[5:].isdigit()):
            raise ConfigError(f"unknown device {self.device!r}; valid devices: cpu, cuda, cuda:K",
                              params=("device",))


@dataclass
class Weights:
    """Which weights of a run a command uses: the option of every command that reads a
    trained run (``evaluate``, ``sample``, ``posterior``, ``compare``)."""

    checkpoint: str = option("best", "best | last: the weights of the best validation epoch (best.pt; a run "
                                     "without a validation split has only its last) or of the last epoch "
                                     "(default best)", metavar="best|last")

    def check_weights(self) -> None:
        check_choice(self.checkpoint, CHECKPOINTS, "checkpoint", "checkpoint")


@dataclass
class TrainRun(Common):
    """How this process runs ``train`` (not recorded in the run's ``config.json``)."""

    out: Optional[str] = option(None, "run directory (default runs/<time>-<model>-<guide>)", metavar="RUN_DIR")
    resume: bool = option(False, "continue the run in --out from its last epoch")
    nproc: Optional[int] = option(None, "train data-parallel in N processes on this machine (launches "
                                        "torchrun's agent; on GPUs one per GPU)", metavar="N")
    download: bool = option(False, "allow downloading a torchvision dataset")
    no_tensorboard: bool = option(False, "write no TensorBoard events to RUN_DIR/tb (written when "
                                         "tensorboard is installed)")
    tracker: Optional[str] = option(None, "also log the run to MLflow (MLFLOW_TRACKING_URI, default ./mlruns): "
                                          "mlflow | none (default none; a resumed run keeps its own)",
                                    metavar="mlflow|none")
    jit: bool = option(False, argparse.SUPPRESS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.jit:
            raise ConfigError("--jit is gone: the training engine (Pyro's ELBOModule and a torch optimizer) "
                              "is as fast without TorchScript (docs/benchmarks.md)")
        if self.nproc is not None:
            check_int(self.nproc, "nproc", 1, MAX_PROCESSES)
            if os.environ.get("WORLD_SIZE"):
                raise ConfigError("--nproc cannot be used under torchrun: torchrun already started the processes")
        if self.resume and self.out is None:
            raise ConfigError("--resume needs --out RUN_DIR")
        if self.tracker is not None:
            check_choice(self.tracker, TRACKERS, "tracker", "tracker")
            if self.tracker == "mlflow" and importlib.util.find_spec("mlflow") is None:
                raise ConfigError("the tracker mlflow needs MLflow: pip install \"pyro-vae[mlflow]\" (or "
                                  "mlflow-skinny)", params=("tracker",))


@dataclass
class TrainOptions:
    """``pyro-vae train``: how to run (:class:`TrainRun`) and the flags of the run
    configuration the user gave, per section (``{"Choices": {...}, "DataConfig": ...,
    "TrainConfig": ..., "RunConfig": ...}``): the model's own defaults fill in the rest
    (:func:`inference.config.defaults_for`), so what was given must be told from what was not."""

    run: TrainRun
    given: Dict[str, Dict[str, Any]]
    argv: List[str] = field(default_factory=list)

    def check_paths(self) -> Optional[bool]:
        """The checks of ``--out`` (before torch, data or a process group): a resumed run must
        be a run, writable; a new one must not damage anything (see
        :func:`~inference.rundir.check_new_run`, whose answer — restart a run stopped before
        its first checkpoint — this returns; ``None`` when the run is not named yet)."""
        if self.run.out is None:
            return None
        if self.run.resume:
            read_config(self.run.out)
            check_writable(self.run.out)
            return None
        return check_new_run(self.run.out)


@dataclass
class EvaluateOptions(Common, Weights):
    """``pyro-vae evaluate RUN_DIR``."""

    run_dir: str = option("", "the run", flag="run_dir", metavar="RUN_DIR")
    iwae_samples: Optional[int] = option(None, "importance samples (default 5000; 500 for the pixel model, "
                                               "whose decoder costs about a thousand times a dense one's)",
                                         metavar="K")
    split: str = option("test", "train | valid | test")
    dataset: Optional[str] = option(None, "evaluate on another dataset of the same image shape")
    data_dir: Optional[str] = option(None, "where torchvision datasets live", metavar="DIR")
    download: bool = option(False, "allow downloading a torchvision dataset")
    projector: bool = option(False, "also show the posterior means of the --split images in TensorBoard's "
                                    "projector (RUN_DIR/tb)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iwae_samples is not None:
            check_int(self.iwae_samples, "iwae_samples", 1, MAX_IWAE_SAMPLES)
        check_split(self.split)
        if self.projector and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("the projector is TensorBoard's: pip install \"pyro-vae[tensorboard]\"",
                              params=("projector",))
        self.check_weights()

    def check_paths(self) -> RunConfig:
        config = check_trained(self.run_dir)
        check_output_file(paths(self.run_dir)["eval"])
        if self.projector and config.kind == "flow":
            raise ConfigError(f"{self.run_dir} holds a density flow: it has no latent variable, so no latent "
                              "space for the projector", params=("projector",))
        check_output_file(os.path.join(self.run_dir, CONFUSION))
        return config


@dataclass
class SampleOptions(Common, Weights):
    """``pyro-vae sample RUN_DIR``: a grid of samples, or with ``interpolate`` the path
    between two test images."""

    run_dir: str = option("", "the run", flag="run_dir", metavar="RUN_DIR")
    n: Optional[int] = option(None, "number of samples (default 64; with --label all, per class: default 10)")
    label: Optional[str] = option(None, "a run that takes labels: samples of class K, or one row per class "
                                        "(all)", metavar="K|all")
    out: Optional[str] = option(None, "default RUN_DIR/samples.png (RUN_DIR/interpolation_I_J.png)",
                                metavar="FILE.png")
    temperature: Optional[float] = option(None, "flow models: sample z ~ N(0, T² I) (default 1)", metavar="T")
    interpolate: Optional[Tuple[int, int]] = option(None, "decode the path between the posterior means of "
                                                          "test images I and J (spherical for a Normal prior)",
                                                    metavar=("I", "J"), nargs=2)
    steps: Optional[int] = option(None, "points on the --interpolate path (default 10)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label is not None and self.label != ALL_LABELS:
            if not self.label.strip().isdigit():
                raise ConfigError(f"label must be a class (an integer ≥ 0) or '{ALL_LABELS}', got {self.label!r}",
                                  params=("label",))
            self.label = str(int(self.label))
        self.check_weights()
        if self.interpolate is not None:
            for name in ("n", "temperature", "label"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} does not apply to an interpolation (use steps)",
                                      params=(name, "interpolate"))
            self.steps = 10 if self.steps is None else check_int(self.steps, "steps", 2, MAX_SAMPLES)
        else:
            if self.steps is not None:
                raise ConfigError("steps goes with an interpolation (interpolate I J)", params=("steps",))
            per_class = self.label == ALL_LABELS
            self.n = (10 if per_class else 64) if self.n is None else check_int(self.n, "n", 1, MAX_SAMPLES)
            if self.temperature is not None:
                check_temperature(self.temperature)

    @property
    def own(self) -> str:
        """The file the command writes into the run by default."""
        return "samples.png" if self.interpolate is None else "interpolation_{}_{}.png".format(*self.interpolate)

    def check_paths(self) -> RunConfig:
        config = check_trained(self.run_dir)
        if self.temperature is not None and config.kind != "flow":
            raise ConfigError("temperature applies to flow models (nice, realnvp, glow) only",
                              params=("temperature",))
        if self.label is not None:
            classes = config.model.get("num_classes")
            if classes is None:
                raise ConfigError(f"{self.run_dir} holds a model that takes no labels (train with --condition label, "
                                  "or --model ssvae, for class-conditional samples)", params=("label",))
            if self.label != ALL_LABELS and int(self.label) >= classes:
                raise ConfigError(f"{self.label} is not a class of {self.run_dir}: its labels are 0..{classes - 1}",
                                  params=("label",))
            if self.label == ALL_LABELS and classes * self.n > MAX_SAMPLES:
                raise ConfigError(f"{classes} classes × n={self.n} is more than {MAX_SAMPLES} images",
                                  params=("n", "label"))
        self.out = self.out or os.path.join(self.run_dir, self.own)
        check_run_output(self.out, self.run_dir, own=(self.own,))
        return config


@dataclass
class CompareOptions(Weights):
    """``pyro-vae compare RUN_DIR...``: ``checkpoint`` says which weights the NLLs must come
    from (an ``eval.json`` of the others is flagged, not shown)."""

    run_dirs: Tuple[str, ...] = option((), "the runs", flag="run_dirs", metavar="RUN_DIR", nargs="+")
    out: Optional[str] = option(None, "also write the table as FILE.md, .csv or .json", metavar="FILE")
    figure: str = option("compare.png", "the validation-ELBO curves, best epochs marked (default compare.png)",
                         metavar="FILE.png")

    def __post_init__(self) -> None:
        check_fields(self, "option")
        self.check_weights()

    def check_paths(self) -> None:
        """The outputs: writable, no file of a run, of a known format."""
        for path, flag in ((self.out, "--out"), (self.figure, "--figure")):
            if path is not None:
                check_output(path, flag=flag)
        if self.out is not None and os.path.splitext(self.out)[1].lower() not in TABLE_FORMATS:
            raise ConfigError(f"--out {self.out}: unknown table format; valid endings: {', '.join(TABLE_FORMATS)}")
        if self.figure is not None and not self.figure.lower().endswith(".png"):
            raise ConfigError(f"--figure {self.figure}: the figure is a PNG file (FILE.png)")


@dataclass
class PosteriorOptions(Common, Weights):
    """``pyro-vae posterior RUN_DIR``: which images, and the settings of NUTS (:attr:`nuts`)
    and of the locally optimal guides (:attr:`local`)."""

    run_dir: str = option("", "the run", flag="run_dir", metavar="RUN_DIR")
    index: Tuple[int, ...] = option((0, 1, 2), "indices of the images in --split (default 0 1 2)",
                                    metavar="I", nargs="+")
    split: str = option("test", "train | valid | test")
    guide_draws: Optional[int] = option(None, "guide draws per image (default chains × draws)")
    iwae_samples: int = option(5000, "k of log p(x) and the ELBOs", metavar="K")
    out: Optional[str] = option(None, "default RUN_DIR/posterior", metavar="DIR")
    leading: int = option(4, "latent dimensions shown in marginal and traversal figures", cli=False)
    nuts: NUTSConfig = field(default_factory=NUTSConfig)
    local: LocalFitConfig = field(default_factory=LocalFitConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.index or len(set(self.index)) != len(self.index):
            raise ConfigError(f"index needs distinct image indices, got {list(self.index)}", params=("index",))
        if len(self.index) > MAX_INDICES:
            raise ConfigError(f"index takes at most {MAX_INDICES} image indices, got {len(self.index)}",
                              params=("index",))
        check_split(self.split)
        self.check_weights()
        check_ranges(self, {
            "guide_draws": (self.guide_draws is None or 4 <= self.guide_draws <= MAX_IWAE_SAMPLES,
                            f"from 4 to {MAX_IWAE_SAMPLES}"),
            "iwae_samples": (1 <= self.iwae_samples <= MAX_IWAE_SAMPLES, f"from 1 to {MAX_IWAE_SAMPLES}"),
            "leading": (self.leading >= 1, "≥ 1"),
        }, "posterior settings")

    def check_paths(self) -> RunConfig:
        config = check_trained(self.run_dir)
        if config.kind == "flow":
            raise ConfigError(f"{self.run_dir} holds a density flow: it has no latent variable, so no posterior")
        self.out = self.out or os.path.join(self.run_dir, POSTERIOR)
        check_analysis_output(self.out, self.run_dir)
        return config


