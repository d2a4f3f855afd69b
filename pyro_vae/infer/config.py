"""The settings of the algorithms, one typed dataclass each, their defaults, help texts and
range checks declared once: training (:class:`TrainConfig`, recorded in ``config.json``),
the NUTS reference posterior (:class:`NUTSConfig`) and the locally optimal guides of the
inference gaps (:class:`LocalFitConfig`). Their fields are declared with
:func:`~pyro_vae.options.option`, so the command line derives its flags from them; no torch
is imported here, so it checks its arguments before the heavy imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from ..errors import ConfigError
from ..options import check_choice, check_fields, check_ranges, dataclass_from_dict, option

#: Largest ``particles`` (see TrainConfig's checks).
MAX_PARTICLES = 1000
#: Largest ``free_bits``, in nats per latent dimension.
MAX_FREE_BITS = 100.0
#: Largest ``beta``: beyond it the KL terms swamp any likelihood (a β of 10⁶ is a typo).
MAX_BETA = 1000.0

#: Seeds are 32-bit (numpy's limit).
MAX_SEED = 2**32 - 1
#: Most importance samples per image of an evaluation: it runs in chunks, so memory is
#: bounded, but time is not (k = 10⁶ on 1,000 images is 10⁹ decoder passes).
MAX_IWAE_SAMPLES = 1_000_000
PRECISIONS = ("float32", "bf16")
#: Most epochs of a run: more is a typo, not a plan (an epoch of 4,000 images takes seconds).
MAX_EPOCHS = 100_000
#: Bounds of NUTS, each generous beside its default yet finite, so that a typo (``--draws
#: 5000000``, ``--max-tree-depth 64``: 2⁶⁴ leapfrog steps a draw) is refused instead of
#: running for ever: chains per image, draws and warm-up steps per chain, tree depth.
MAX_CHAINS = 64
MAX_DRAWS = 100_000
MAX_TREE_DEPTH = 15
#: Most SVI steps of one local fit (each with ``particles`` samples; 3000 by default).
MAX_LOCAL_STEPS = 100_000
#: The range of a sampling temperature T (z ~ N(0, T² I)): beyond it float32 samples
#: underflow to 0 or overflow to infinity.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3
#: Training objectives: the ELBO, or the IWAE bound (:mod:`pyro_vae.infer.elbo`).
OBJECTIVES = ("elbo", "iwae")
#: How DDP sends gradients between processes: as they are, or compressed to 16 bits (and
#: back) by torch's communication hooks.
GRAD_COMPRESSIONS = ("none", "fp16", "bf16")
#: Estimators of the ELBO: Pyro's ``Trace_ELBO`` (Monte-Carlo KL) or ``TraceMeanField_ELBO``
#: (the KL in closed form where torch knows it).
ELBO_ESTIMATORS = ("trace", "meanfield")
#: How the locally optimal guide q* of an image is parameterised (see
#: :func:`~pyro_vae.infer.gaps.local_guide`).
LOCAL_METHODS = ("auto", "gaussian", "copy")


@dataclass
class TrainConfig:
    """Optimisation settings (recorded in ``config.json``).

    Attributes:
        epochs: total number of epochs.
        batch_size: mini-batch size M.
        lr: Adam learning rate.
        lr_decay: multiplicative learning-rate decay per epoch (1 = constant).
        clip_norm: elementwise gradient clip of ClippedAdam, for the *per-example* loss.
        particles: L, samples of z per data point in each step (vectorized); K of the
            IWAE objective.
        objective: ``elbo`` (Trace_ELBO, averaged over the L particles) or ``iwae`` (the
            importance-weighted bound L_K of Burda et al. 2015, arXiv:1509.00519, with
            K = ``particles``; :class:`~pyro_vae.infer.elbo.IWAE_ELBO`).
        elbo: the estimator of ``objective="elbo"``: ``trace`` (Pyro's ``Trace_ELBO``: the
            KL term by Monte Carlo, log q(z | x) − log p(z) at the sampled z) or ``meanfield``
            (Pyro's ``TraceMeanField_ELBO``: KL(q(z | x) ‖ p(z)) in closed form where torch
            registers one — the diagonal Gaussian guide with the Normal prior — else Monte
            Carlo). The same bound, a lower-variance estimator of it.
        kl_warmup: W, epochs of linear KL warm-up (0 = none).
        beta: β, the weight of the KL terms (the β-VAE of Higgins et al. 2017; 1 = the ELBO),
            a ``poutine.scale`` of the latent sites in model and guide, as the warm-up's.
        free_bits: λ, nats per latent dimension below which the KL is not penalised
            (:class:`~pyro_vae.infer.elbo.FreeBitsTrace_ELBO`; 0 = the plain ELBO).
        seed: seed of torch, numpy and Pyro (and of the data order, shared by all ranks).
        precision: ``float32``, or ``bf16`` — the networks under ``torch.autocast`` with
            bfloat16, the distributions, log-likelihood sums and the ELBO in float32.
        validate: keep Pyro's per-step distribution validation on (data are validated
            once when loaded, so it is off by default for speed).
        grad_compression: under DDP, send the gradients as they are (``none``) or compressed
            to ``fp16`` / ``bf16`` for the all-reduce (torch's ``fp16_compress_hook`` /
            ``bf16_compress_hook``): half the bytes, and the averaged gradient rounded to 16
            bits (fp16: 11 significant bits, bf16: 8) before ClippedAdam uses it.
        capture: run the training step as the Pyro program's operations captured once per
            batch shape and replayed (:class:`~pyro_vae.infer.compiled.CompiledLoss` with
            ``compile=False``): the eager step's loss and gradients to the bit, without
            Pyro's handlers running at every step; ``False`` runs the program each step. A
            model that cannot be captured, or learns from labels, runs it each step anyway.
        compile: run the training step compiled (:class:`~pyro_vae.infer.compiled.CompiledLoss`:
            the Pyro program captured once into one graph, compiled by ``torch.compile``;
            the same noise and loss as eager; a model that cannot be compiled trains eagerly).
        eval_samples: importance samples for the per-epoch validation ELBO estimate.
        patience: stop when the validation ELBO has not improved for this many epochs
            (``None``: train all ``epochs``); needs a validation split.
        ema: β of an exponential moving average of the weights (``None`` or 0: none), used
            for validation, the best checkpoint and evaluation
            (:class:`~pyro_vae.infer.selection.WeightAverage`).
        weight_decay: λ of the decoupled weight decay (AdamW's;
            :class:`~pyro_vae.infer.optim.ClippedAdamW`).
        skip_threshold: skip an update whose gradient norm (of the per-example −ELBO)
            exceeds it, as VDVAE does (``None``: never skip); skipped updates are counted.
    """

    epochs: int = option(200, "total epochs (default 200)", on_resume=True)
    batch_size: int = option(128, "mini-batch size (default 128)", metavar="B")
    lr: float = option(1e-3, "Adam learning rate (default 0.001)")
    lr_decay: float = option(1.0, "learning-rate decay per epoch (default 1: constant)")
    clip_norm: float = option(10.0, "elementwise gradient clip per example", cli=False)
    particles: int = option(1, "samples of z per point and step (default 1); K of --objective iwae",
                            metavar="L")
    objective: str = option("elbo", "training objective: elbo | iwae (the importance-weighted bound "
                                    "with K = --particles; default elbo)", latent=True)
    elbo: str = option("trace", "estimator of the ELBO: trace (Monte-Carlo KL, Trace_ELBO) | meanfield "
                                "(closed-form KL where it exists, TraceMeanField_ELBO) (default trace)",
                       latent=True)
    kl_warmup: int = option(0, "epochs of linear KL warm-up (default 0: none)", metavar="EPOCHS", latent=True)
    beta: float = option(1.0, "β-VAE: weight of the KL terms (default 1: the ELBO)", metavar="BETA", latent=True)
    free_bits: float = option(0.0, "free bits: nats per latent dimension not penalised (default 0)",
                              metavar="LAMBDA", latent=True)
    seed: int = option(0, "seed of torch, numpy and Pyro (default 0)")
    precision: str = option("float32", "float32 | bf16: the networks in bfloat16 under torch.autocast, "
                                       "the ELBO in float32 (default float32)")
    validate: bool = option(False, "Pyro's distribution validation at every step", cli=False)
    grad_compression: str = option("none", "data parallel: none | fp16 | bf16 — gradients compressed to 16 "
                                           "bits for the all-reduce (default none)")
    capture: bool = option(True, "replay the training step as the Pyro program's operations, captured once "
                                 "per batch shape (the same loss and gradients; --no-capture runs the "
                                 "program's handlers at every step)")
    compile: bool = option(False, "compile the training step: the Pyro program captured once into one graph "
                                  "and compiled by torch.compile (same noise and loss as eager; falls back "
                                  "to eager for a model that cannot be compiled)")
    eval_samples: int = option(1, "importance samples of the per-epoch validation ELBO", cli=False)
    patience: Optional[int] = option(None, "stop when the validation ELBO has not improved for N epochs "
                                           "(default: train every epoch)", metavar="N", on_resume=True)
    ema: Optional[float] = option(None, "decay β of an exponential moving average of the weights, used for "
                                        "validation, best.pt and evaluation (default: none)",
                                  metavar="DECAY")
    weight_decay: float = option(0.0, "decoupled weight decay λ (as AdamW) (default 0)", metavar="LAMBDA")
    skip_threshold: Optional[float] = option(None, "skip an update whose gradient norm (of the per-example "
                                                   "loss) exceeds G; counted per epoch (default: never)",
                                             metavar="G")

    def __post_init__(self) -> None:
        check_fields(self, "training setting")
        check_ranges(self, {
            "epochs": (0 <= self.epochs <= MAX_EPOCHS, f"from 0 to {MAX_EPOCHS}"),
            "batch_size": (self.batch_size >= 1, "≥ 1"),
            "lr": (self.lr > 0, "> 0"),
            "lr_decay": (0 < self.lr_decay <= 1, "in (0, 1]"),
            "clip_norm": (self.clip_norm > 0, "> 0"),
            # particles × batch × the decoder's output are held at once: 10⁵ particles of
            # a 128-image batch is ~40 GB for 28×28 images; beyond K = 1000 the IWAE bound
            # hardly moves (Burda et al. used up to 50)
            "particles": (1 <= self.particles <= MAX_PARTICLES, f"from 1 to {MAX_PARTICLES}"),
            "kl_warmup": (self.kl_warmup >= 0, "≥ 0"),
            "beta": (0 < self.beta <= MAX_BETA, f"> 0 and ≤ {MAX_BETA:g}"),
            # λ is nats per latent dimension: beyond a few the KL is never penalised at all
            "free_bits": (0 <= self.free_bits <= MAX_FREE_BITS, f"from 0 to {MAX_FREE_BITS:g}"),
            "seed": (0 <= self.seed <= MAX_SEED, f"from 0 to {MAX_SEED}"),
            "eval_samples": (self.eval_samples >= 1, "≥ 1"),
            "patience": (self.patience is None or self.patience >= 1, "≥ 1"),
            # β = 0 averages nothing (θ̄ = θ): the way to turn a default average off
            "ema": (self.ema is None or 0 <= self.ema < 1, "from 0 (no averaging) to below 1"),
            "weight_decay": (self.weight_decay >= 0, "≥ 0"),
            "skip_threshold": (self.skip_threshold is None or self.skip_threshold > 0, "> 0"),
        }, "training settings")
        check_choice(self.precision, PRECISIONS, "precision", "precision")
        check_choice(self.objective, OBJECTIVES, "objective", "objective")
        check_choice(self.elbo, ELBO_ESTIMATORS, "ELBO estimator", "elbo")
        check_choice(self.grad_compression, GRAD_COMPRESSIONS, "gradient compression", "grad_compression",
                     valid="compressions")
        # the one place these combinations are refused: make_elbo trusts a TrainConfig
        if self.objective == "iwae" and self.free_bits > 0:
            raise ConfigError("objective='iwae' cannot be combined with free_bits > 0",
                              params=("objective", "free_bits"))
        if self.elbo == "meanfield":
            clash = ("objective", "objective='iwae'") if self.objective != "elbo" else \
                ("free_bits", "free_bits > 0") if self.free_bits > 0 else None
            if clash:
                raise ConfigError(f"elbo='meanfield' estimates the plain ELBO: it cannot be combined with "
                                  f"{clash[1]}", params=("elbo", clash[0]))
        # a step shrinks the weights by the factor 1 − lr·λ: from lr·λ = 1 on it zeroes or flips
        # them (both flags are named: λ may be the model's default, not the user's)
        if self.lr * self.weight_decay >= 1:
            raise ConfigError(f"lr × weight_decay must be below 1 (a step shrinks the weights by the factor "
                              f"1 − lr·λ), got lr={self.lr:g} × weight_decay={self.weight_decay:g} = "
                              f"{self.lr * self.weight_decay:g}", params=("lr", "weight_decay"))
        if self.compile and not self.capture:
            raise ConfigError("compile=true compiles the captured step: it cannot be combined with capture=false",
                              params=("compile", "capture"))
        if self.objective == "iwae" and self.particles < 2:
            raise ConfigError("objective='iwae' needs particles = K ≥ 2 (with K = 1 the IWAE bound is "
                              "the ELBO: objective='elbo')", params=("objective", "particles"))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """From ``config.json``'s ``train``: unknown keys and wrong types raise. The ``jit``
        key of pyro-vae 0.1 (TorchScript, no longer used) is dropped."""
        if isinstance(d, dict) and "jit" in d:
            d = {k: v for k, v in d.items() if k != "jit"}
        return dataclass_from_dict(cls, d, "training settings")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def check_selection(self, has_valid: bool) -> None:
        """Refuse early stopping without a validation split (nothing to stop on) — the one
        place this is checked: the command line calls it before any data are loaded
        (``valid_fraction=0``), the trainer with the data it is given."""
        if self.patience is not None and not has_valid:
            raise ConfigError("patience needs a validation split to stop on (valid_fraction > 0)",
                              params=("patience", "valid_fraction"))

    def kl_scale(self, epoch: int) -> float:
        """The weight of the KL terms at 0-based ``epoch``: β · min(1, (epoch + 1) / (W + 1))."""
        if self.kl_warmup <= 0:
            return self.beta
        return self.beta * min(1.0, (epoch + 1) / (self.kl_warmup + 1))

    def check_enumeration(self, model: str) -> None:
        """Refuse the objectives that cannot sum out the discrete label of ``model`` (the
        semi-supervised VAE, trained by ``TraceEnum_ELBO``): the IWAE bound, free bits and
        the mean-field ELBO."""
        for name, used in (("objective", self.objective == "iwae"), ("free_bits", self.free_bits > 0),
                           ("elbo", self.elbo == "meanfield")):
            if used:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not available for the {model} model: it sums "
                                  "its label out by enumeration (TraceEnum_ELBO), which the IWAE bound, free "
                                  "bits and the mean-field ELBO do not", params=(name,))


def check_temperature(temperature: Any, name: str = "temperature") -> float:
    """``temperature`` as a float if it is a number from :data:`MIN_TEMPERATURE` to
    :data:`MAX_TEMPERATURE`; else one ConfigError about the parameter ``name``.

    Example:
        >>> check_temperature(1e300)
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: temperature must be a number from 0.001 to 1000, got 1e+300
    """
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool) \
        and MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE
    if not ok:
        raise ConfigError(f"{name} must be a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, got {temperature!r}",
                          params=(name,))
    return float(temperature)


def check_local_method(method: str) -> str:
    """``method`` if it is one of :data:`LOCAL_METHODS`; else a ConfigError listing them."""
    return check_choice(method, LOCAL_METHODS, "local-guide method", "method", valid="methods")


@dataclass
class NUTSConfig:
    """Settings of the NUTS reference posterior (:func:`~pyro_vae.infer.nuts.nuts_posterior`).

    Attributes:
        chains: independent chains per image (≥ 2, so that R-hat compares chains).
        draws: kept draws per chain.
        warmup: adaptation steps per chain (step size and diagonal mass matrix), discarded.
        target_accept: target acceptance probability of the step-size adaptation.
        max_tree_depth: cap on the NUTS trajectory length (2^depth leapfrog steps).
        jit: compile the potential energy with the PyTorch JIT (``torch.jit.trace``): about
            twice as fast on the dense VAE, same draws; off by default because tracing
            silently freezes data-dependent Python control flow of a model.
        threads: torch intra-op threads while sampling (``None``: leave as set). NUTS
            evaluates one image at a time, where thread synchronisation costs more than
            it gains: a gradient of the dense decoder took 0.4 ms on 1 thread and 14 ms
            on 2 on the shared 2-core reference machine.
        seed: base seed; chain c of dataset image n is seeded from (seed, n, c), so an
            image's draws do not depend on which other images were asked for.
    """

    chains: int = option(4, "NUTS chains per image (≥ 2)")
    draws: int = option(500, "NUTS draws per chain")
    warmup: int = option(500, "NUTS warm-up steps per chain")
    target_accept: float = option(0.8, "target acceptance probability of the step-size adaptation", cli=False)
    max_tree_depth: int = option(10, "cap on the NUTS trajectory length: 2^depth leapfrog steps (default 10)")
    jit: bool = option(False, "compile NUTS' potential energy (torch.jit.trace)")
    threads: Optional[int] = option(1, "torch intra-op threads while sampling", cli=False)
    # shared with the other settings of a command: the command line sets it from its own seed
    seed: int = option(0, "base seed of the chains", cli=False)

    def __post_init__(self) -> None:
        check_fields(self, "NUTS setting")
        check_ranges(self, {
            "threads": (self.threads is None or self.threads >= 1, "≥ 1"),
            "chains": (2 <= self.chains <= MAX_CHAINS, f"≥ 2, for R-hat, and ≤ {MAX_CHAINS}"),
            "draws": (4 <= self.draws <= MAX_DRAWS, f"from 4 to {MAX_DRAWS}"),
            "warmup": (0 <= self.warmup <= MAX_DRAWS, f"from 0 to {MAX_DRAWS}"),
            "target_accept": (0 < self.target_accept < 1, "strictly between 0 and 1"),
            "max_tree_depth": (1 <= self.max_tree_depth <= MAX_TREE_DEPTH, f"from 1 to {MAX_TREE_DEPTH}: "
                               f"2^{MAX_TREE_DEPTH} leapfrog steps a draw"),
        }, "NUTS settings")


@dataclass
class LocalFitConfig:
    """Settings of the per-image SVI fit of the locally optimal guide q*
    (:func:`~pyro_vae.infer.gaps.fit_local_guide`).

    The fit runs Adam on ``Trace_ELBO(num_particles, vectorize_particles=True)`` and halves
    the learning rate whenever the mean loss over ``window`` steps has not improved by
    ``tol`` nats for ``patience`` windows (``torch.optim.lr_scheduler.ReduceLROnPlateau``);
    it has converged once the rate has been halved ``reductions`` times. Near the optimum
    the window means fluctuate by Monte-Carlo noise only, so the halvings become a
    step-size annealing schedule that lets Adam settle instead of rattling around q*.

    Attributes:
        method: ``auto`` (``gaussian`` when q(z|x) is a diagonal Normal, else ``copy``),
            ``gaussian`` (free mean and scale per image) or ``copy`` (a per-image copy of
            the guide; see :func:`~pyro_vae.infer.gaps.local_guide`).
        max_steps: hard cap on SVI steps per image.
        particles: samples of z per step (vectorized).
        lr: initial Adam learning rate.
        window: steps per window mean.
        patience: windows without improvement before the rate is halved.
        tol: improvement (nats) that counts.
        reductions: number of halvings that ends the fit.
        threads: torch intra-op threads during the fit (see :class:`NUTSConfig`).
    """

    method: str = option("auto", "auto | gaussian | copy", flag="--local-method", metavar="LOCAL_METHOD")
    max_steps: int = option(3000, "cap on SVI steps of each local guide", flag="--local-steps",
                            metavar="LOCAL_STEPS")
    particles: int = option(16, "samples of z per SVI step", cli=False)
    lr: float = option(0.01, "Adam learning rate of the local fits", flag="--local-lr", metavar="LOCAL_LR")
    window: int = option(50, "steps per window mean", cli=False)
    patience: int = option(1, "windows without improvement before the rate is halved", cli=False)
    tol: float = option(0.01, "improvement (nats) that counts", cli=False)
    reductions: int = option(5, "halvings of the rate that end the fit", cli=False)
    threads: Optional[int] = option(1, "torch intra-op threads during the fit", cli=False)

    def __post_init__(self) -> None:
        check_fields(self, "local-fit setting")
        check_local_method(self.method)
        check_ranges(self, {
            "max_steps": (1 <= self.max_steps <= MAX_LOCAL_STEPS, f"from 1 to {MAX_LOCAL_STEPS}"),
            "particles": (self.particles >= 1, "≥ 1"),
            "lr": (self.lr > 0, "> 0"),
            "window": (self.window >= 1, "≥ 1"),
            "patience": (self.patience >= 0, "≥ 0"),
            "tol": (self.tol >= 0, "≥ 0"),
            "reductions": (self.reductions >= 1, "≥ 1"),
            "threads": (self.threads is None or self.threads >= 1, "≥ 1"),
        }, "local-fit settings")
