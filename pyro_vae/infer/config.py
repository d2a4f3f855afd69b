"""Training settings: one typed dataclass, recorded in ``config.json`` and turned into the
``pyro-vae train`` flags (no torch is imported here, so the CLI checks its arguments first)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

from ..errors import ConfigError
from ..options import check_fields, check_ranges, dataclass_from_dict, option

#: Largest --particles (see TrainConfig's checks).
MAX_PARTICLES = 1000
#: Largest --free-bits, in nats per latent dimension.
MAX_FREE_BITS = 100.0

#: Seeds are 32-bit (numpy's limit).
MAX_SEED = 2**32 - 1
#: Most importance samples per image of an evaluation: it runs in chunks, so memory is
#: bounded, but time is not (k = 10⁶ on 1,000 images is 10⁹ decoder passes).
MAX_IWAE_SAMPLES = 1_000_000
PRECISIONS = ("float32", "bf16")


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
        kl_warmup: W, epochs of linear KL warm-up (0 = none).
        free_bits: λ, nats per latent dimension below which the KL is not penalised
            (:class:`~pyro_vae.infer.elbo.FreeBitsTrace_ELBO`; 0 = the plain ELBO).
        seed: seed of torch, numpy and Pyro (and of the data order, shared by all ranks).
        precision: ``float32``, or ``bf16`` — the networks under ``torch.autocast`` with
            bfloat16, the distributions, log-likelihood sums and the ELBO in float32.
        validate: keep Pyro's per-step distribution validation on (data are validated
            once when loaded, so it is off by default for speed).
        eval_samples: importance samples for the per-epoch test ELBO estimate.
    """

    epochs: int = option(200, "total epochs (default 200; 20 for pixel, 10 for density flows)",
                         on_resume=True)
    batch_size: int = option(128, "mini-batch size (default 128)", metavar="B")
    lr: float = option(1e-3, "Adam learning rate (default 0.001)")
    lr_decay: float = option(1.0, "learning-rate decay per epoch (default 1: constant)")
    clip_norm: float = option(10.0, "elementwise gradient clip per example", cli=False)
    particles: int = option(1, "samples of z per point and step (default 1); K of --objective iwae",
                            metavar="L")
    objective: str = option("elbo", "training objective: elbo | iwae (the importance-weighted bound "
                                    "with K = --particles; default elbo)", latent=True)
    kl_warmup: int = option(0, "epochs of linear KL warm-up (default 0)", metavar="EPOCHS", latent=True)
    free_bits: float = option(0.0, "free bits: nats per latent dimension not penalised (default 0)",
                              metavar="LAMBDA", latent=True)
    seed: int = option(0, "seed of torch, numpy and Pyro (default 0)")
    precision: str = option("float32", "float32 | bf16: the networks in bfloat16 under torch.autocast, "
                                       "the ELBO in float32 (default float32)")
    validate: bool = option(False, "Pyro's distribution validation at every step", cli=False)
    eval_samples: int = option(1, "importance samples of the per-epoch test ELBO", cli=False)

    def __post_init__(self) -> None:
        check_fields(self, "training setting")
        check_ranges(self, {
            "epochs": (self.epochs >= 0, "≥ 0"),
            "batch_size": (self.batch_size >= 1, "≥ 1"),
            "lr": (self.lr > 0, "> 0"),
            "lr_decay": (0 < self.lr_decay <= 1, "in (0, 1]"),
            "clip_norm": (self.clip_norm > 0, "> 0"),
            # particles × batch × the decoder's output are held at once: 10⁵ particles of
            # a 128-image batch is ~40 GB for 28×28 images; beyond K = 1000 the IWAE bound
            # hardly moves (Burda et al. used up to 50)
            "particles": (1 <= self.particles <= MAX_PARTICLES, f"from 1 to {MAX_PARTICLES}"),
            "kl_warmup": (self.kl_warmup >= 0, "≥ 0"),
            # λ is nats per latent dimension: beyond a few the KL is never penalised at all
            "free_bits": (0 <= self.free_bits <= MAX_FREE_BITS, f"from 0 to {MAX_FREE_BITS:g}"),
            "seed": (0 <= self.seed <= MAX_SEED, f"from 0 to {MAX_SEED}"),
            "eval_samples": (self.eval_samples >= 1, "≥ 1"),
        }, "training settings")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; valid precisions: {', '.join(PRECISIONS)}")
        if self.objective not in ("elbo", "iwae"):
            raise ConfigError(f"unknown objective {self.objective!r}; valid objectives: elbo, iwae")
        if self.objective == "iwae" and self.free_bits > 0:
            raise ConfigError("--objective iwae cannot be combined with --free-bits")
        if self.objective == "iwae" and self.particles < 2:
            raise ConfigError("--objective iwae needs --particles K with K ≥ 2 (with K = 1 the IWAE bound "
                              "is the ELBO: --objective elbo)")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """From ``config.json``'s ``train``: unknown keys and wrong types raise. The ``jit``
        key of pyro-vae 0.1 (TorchScript, no longer used) is dropped."""
        if isinstance(d, dict) and "jit" in d:
            d = {k: v for k, v in d.items() if k != "jit"}
        return dataclass_from_dict(cls, d, "training settings")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def kl_scale(self, epoch: int) -> float:
        """β for 0-based ``epoch``: min(1, (epoch + 1) / (W + 1))."""
        if self.kl_warmup <= 0:
            return 1.0
        return min(1.0, (epoch + 1) / (self.kl_warmup + 1))
