"""The training objectives and :func:`make_elbo`, the one place where a
:class:`~pyro_vae.infer.config.TrainConfig` becomes a Pyro ELBO object (for ``SVI`` or, as
``elbo(model, guide)``, the ``ELBOModule`` the training engine steps): Pyro's ``Trace_ELBO``
with its losses kept on the device (:class:`SyncFreeTrace_ELBO`), Pyro's
``TraceMeanField_ELBO`` likewise (:class:`SyncFreeTraceMeanField_ELBO`, closed-form KL
terms), free bits on top of it, and the IWAE bound (:class:`IWAE_ELBO`).

**Free bits** — a Trace_ELBO that stops pushing a latent's KL below a floor. Kingma et al.
2016 (arXiv:1606.04934, appendix C): with a strong decoder the ELBO is easily
maximised by ignoring z (posterior collapse, KL → 0). Free bits replaces each latent
dimension's KL term by max(λ, KL_j), where KL_j is the KL of dimension j averaged over the
mini-batch:

    L̃ = E_q[log p(x | z)] − Σ_j max(λ, E_batch[KL_j]).

Below λ nats a dimension's KL is no longer penalised (its gradient is zero), so the encoder
can afford to put information into it. The KL terms are the Monte-Carlo ones of Trace_ELBO,
log q(z_j | x) − log p(z_j), per dimension when guide and prior factorise over dimensions
(the diagonal Gaussian guide with a Normal prior); otherwise the whole latent site is one
group with floor λ·dim. Every latent site is treated so: in a hierarchical VAE each layer
z_l gets its own floors — the paper's free bits *per layer* — with the KL of a layer below
the top taken given the layers above (log q(z_l | x, z_{>l}) − log p(z_l | z_{>l})). Pyro has no
such ELBO; this subclass changes only how a particle's loss is assembled from the traces
Trace_ELBO already builds.

**IWAE** (Burda et al. 2015, arXiv:1509.00519): with K samples z_k ~ q(z | x) per image,

    L_K(x) = E[log (1/K) Σ_k w_k],   w_k = p(x, z_k) / q(z_k | x),   ELBO = L_1 ≤ L_K ≤ log p(x).

Pyro's ``RenyiELBO(alpha=0)`` is this bound, but (Pyro 1.9) it has no ``differentiable_loss``
(so no ``ELBOModule``) and takes the log-mean-exp of log-densities *already scaled* by the
subsampled plate, i.e. of (N/B) log w_k rather than log w_k, which is not the IWAE bound of
a mini-batch. :class:`IWAE_ELBO` computes the bound per image from the unscaled log-densities,
then scales by N / B.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_identically_zero, torch_item
from torch.distributions import Independent, kl_divergence

from .config import TrainConfig


class SyncFreeTrace_ELBO(Trace_ELBO):
    """Pyro's ``Trace_ELBO`` — the same estimator and gradients — whose losses stay tensors.

    ``Trace_ELBO`` turns every sample site's log-density sum into a Python float to report
    the loss (``torch_item``): on a GPU each is a host–device round trip, several per step,
    and on a CPU a few microseconds of pure overhead. Here the reported loss is the same
    number kept as a detached tensor, so :meth:`differentiable_loss` — the forward of the
    ``ELBOModule`` that :class:`~pyro_vae.infer.trainer.Trainer` steps — never waits for
    the device; ``SVI`` works with it unchanged. Pyro lacks this, hence the subclass.

    Example:
        >>> import torch
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", (1, 4, 4), z_dim=2, hidden_dims=(8,))
        >>> loss = SyncFreeTrace_ELBO()(vae, vae.guide)(torch.ones(3, 1, 4, 4))
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−ELBO (its value) with the gradient of the surrogate, as one tensor: the surrogate
        itself where every particle's loss is its surrogate (every latent site
        reparameterized), else ``loss + (surrogate − surrogate.detach())``."""
        particles = [self._loss_and_surrogate(model_trace, guide_trace)
                     for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs)]
        surrogate = 0.0
        for _, surrogate_particle in particles:
            surrogate = surrogate + surrogate_particle
        if all(loss_particle is None for loss_particle, _ in particles):
            return surrogate / self.num_particles  # the loss's value is the surrogate's: one sum
        loss = 0.0
        for loss_particle, surrogate_particle in particles:
            loss = loss + (surrogate_particle.detach() if loss_particle is None else loss_particle)
        return (loss + (surrogate - surrogate.detach())) / self.num_particles

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        """Pyro's contract (used by ``SVI``'s ``loss_and_grads``): the particle's loss, a
        detached tensor, and its surrogate."""
        loss, surrogate = self._loss_and_surrogate(model_trace, guide_trace)
        return (surrogate.detach() if loss is None else loss), surrogate

    def _loss_and_surrogate(self, model_trace, guide_trace):
        """``Trace_ELBO._differentiable_loss_particle`` with the loss a detached tensor, or
        ``None`` where it is the surrogate's value: no site has a score function and each
        latent's entropy term is its log-density (``rsample``), so −ELBO and the surrogate
        are one sum, taken once."""
        if all(site["type"] != "sample"
               or (not site["is_observed"] and site["fn"].has_rsample
                   and is_identically_zero(site["score_parts"].score_function))
               for site in guide_trace.nodes.values()):
            elbo = 0.0
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        elbo = elbo + site["log_prob_sum"] if sign > 0 else elbo - site["log_prob_sum"]
            return None, -elbo
        elbo = 0.0
        surrogate = 0.0
        log_r = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"].detach()
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                elbo = elbo - site["log_prob_sum"].detach()
                if not is_identically_zero(entropy_term):
                    surrogate = surrogate - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    weight = log_r.sum_to(site["cond_indep_stack"])
                    surrogate = surrogate + (weight * score_function_term).sum()
        return -elbo, -surrogate


class SyncFreeTraceMeanField_ELBO(SyncFreeTrace_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` — the KL term of each latent site in closed form,
    KL(q(z | x) ‖ p(z)), where torch registers one, else by Monte Carlo — with its loss kept
    on the device like :class:`SyncFreeTrace_ELBO`'s (``TraceMeanField_ELBO`` turns each
    particle's ELBO into a float, a host–device round trip that a captured graph cannot
    hold either). It assumes what Pyro's does: reparameterized latent sites, and no latent's
    parents in the model among its descendants in the guide (true of every VAE here,
    hierarchical ones included: each layer's KL is taken given the layers above, as drawn).

    Example:
        >>> import torch
        >>> from pyro.infer import TraceMeanField_ELBO
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", (1, 4, 4), z_dim=2, hidden_dims=(8,))
        >>> x = torch.ones(3, 1, 4, 4)
        >>> ours = SyncFreeTraceMeanField_ELBO()(vae, vae.guide)
        >>> torch.manual_seed(0); a = ours(x)
        <...>
        >>> torch.manual_seed(0); b = TraceMeanField_ELBO().differentiable_loss(vae, vae.guide, x)
        <...>
        >>> torch.allclose(a, b)
        True
    """

    def _loss_and_surrogate(self, model_trace, guide_trace):
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            q = guide_trace.nodes[name]
            try:
                kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), scale=q["scale"], mask=q["mask"])
                elbo = elbo - kl.sum()
            except NotImplementedError:  # no closed form (a flow guide, a learned prior)
                elbo = elbo + site["log_prob_sum"] - q["score_parts"].entropy_term.sum()
        for name, q in guide_trace.nodes.items():  # auxiliary guide sites have no model site
            if q["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - q["score_parts"].entropy_term.sum()
        return None, -elbo  # the loss is the surrogate's value


def _per_dim_log_prob(fn, value: torch.Tensor):
    """log-density per latent dimension (…, d) if ``fn`` factorises over the last dim, else None."""
    base = fn
    while hasattr(base, "base_dist") and not isinstance(base, Independent):
        base = base.base_dist  # ExpandedDistribution and friends
    if isinstance(base, Independent) and base.reinterpreted_batch_ndims == 1:
        inner = base.base_dist
        if type(inner).__name__ in ("Normal", "Laplace", "StudentT", "Cauchy"):
            return inner.log_prob(value)
    return None


class FreeBitsTrace_ELBO(SyncFreeTrace_ELBO):
    """``Trace_ELBO`` with free bits λ (nats per latent dimension) on every latent site.

    Args:
        free_bits: λ ≥ 0; 0 gives exactly Trace_ELBO.
        **kwargs: passed to :class:`pyro.infer.Trace_ELBO`.

    The reported loss is the free-bits objective (what is optimised); evaluate the true ELBO
    with :func:`pyro_vae.infer.evaluate.evaluate`.
    """

    def __init__(self, free_bits: float = 0.0, **kwargs):
        if free_bits < 0:
            raise ValueError(f"free_bits must be non-negative, got {free_bits}")
        super().__init__(**kwargs)
        self.free_bits = float(free_bits)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The free-bits objective (Trace_ELBO's ``loss`` would return the plain −ELBO, which
        is not what :meth:`loss_and_grads` optimises)."""
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def _loss_and_surrogate(self, model_trace, guide_trace):
        loss, surrogate = super()._loss_and_surrogate(model_trace, guide_trace)
        if self.free_bits <= 0:
            return loss, surrogate
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or name not in model_trace.nodes:
                continue
            prior_site = model_trace.nodes[name]
            z = site["value"]
            log_q = _per_dim_log_prob(site["fn"], z)
            log_p = _per_dim_log_prob(prior_site["fn"], z)
            if log_q is None or log_p is None:  # one group: the whole site
                kl = (site["fn"].log_prob(z) - prior_site["fn"].log_prob(z)).unsqueeze(-1)
                floor = self.free_bits * z.shape[-1]
            else:
                kl = log_q - log_p  # (..., B, d)
                floor = self.free_bits
            count = kl[..., 0].numel()  # examples × vectorized particles in this trace
            kl_mean = kl.reshape(-1, kl.shape[-1]).mean(0)  # per group, over batch & particles
            # replace Σ_n KL_n = count · Σ_j mean_j by count · Σ_j max(λ, mean_j), with the
            # site's scale (N / B for the data plate, β for KL warm-up)
            scale = site["scale"] * count
            if isinstance(scale, torch.Tensor):  # a captured step's β (float64): rounded as a float would be
                scale = scale.to(kl.dtype)
            correction = scale * (torch.clamp(kl_mean, min=floor) - kl_mean).sum()
            if loss is not None:  # else the loss is the surrogate's value, correction included
                loss = loss + correction.detach()
            surrogate = surrogate + correction
        return loss, surrogate


class IWAE_ELBO(RenyiELBO):
    """The importance-weighted bound L_K as a training objective: ``RenyiELBO(alpha=0)`` with
    a ``differentiable_loss``, correct for a subsampled ``"data"`` plate.

    For each image n and particle k the log weight is the sum over sites of the *unscaled*
    log-densities, each weighted by its site's scale relative to the plate's N / B (so the
    KL warm-up's β still multiplies the latent sites: log w = log p(x|z) + β(log p(z) −
    log q(z|x))); the loss is −(N / B) Σ_n [logsumexp_k log w_nk − log K]. With K = 1 it is
    Trace_ELBO's loss exactly. Gradients flow through the reparameterized samples (the
    IWAE estimator of Burda et al.); a non-reparameterized latent site is refused, as in
    Pyro's ``RenyiELBO``.

    Args:
        num_particles: K.
        vectorize_particles: draw the K samples at once on a leading dimension.
        max_plate_nesting: as for every Pyro ELBO (1 here: the ``"data"`` plate).

    Example:
        >>> import torch
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", (1, 28, 28), z_dim=4, hidden_dims=(16,))
        >>> x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
        >>> loss = IWAE_ELBO(num_particles=5, vectorize_particles=True).differentiable_loss(
        ...     vae.model, vae.guide, x, num_data=80)
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)
    """

    def __init__(self, num_particles: int = 2, vectorize_particles: bool = True,
                 max_plate_nesting: int = 1, **kwargs: Any) -> None:
        super().__init__(alpha=0, num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting, **kwargs)

    def log_weights(self, model, guide, *args, **kwargs) -> Tuple[torch.Tensor, float]:
        """Log importance weights (K, B) (β-weighted, unscaled by the plate) and the plate's
        scale N / B."""
        particles, plate_scale = [], None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            log_w = 0.0
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for site in trace.nodes.values():
                    if site["type"] != "sample":
                        continue
                    if sign < 0 and not is_identically_zero(site["score_parts"].score_function):
                        raise NotImplementedError("the IWAE objective needs reparameterized latent sites")
                    subsample = 1.0
                    for frame in site["cond_indep_stack"]:
                        if frame.full_size is not None:
                            subsample *= frame.full_size / frame.size
                    if plate_scale is None:
                        plate_scale = subsample
                    elif not math.isclose(plate_scale, subsample):
                        raise ValueError("the IWAE objective needs every site in the same data plate")
                    log_w = log_w + sign * site["unscaled_log_prob"] * (site["scale"] / subsample)
            particles.append(log_w)
        vectorized = self.vectorize_particles and self.num_particles > 1
        log_w = particles[0] if vectorized else torch.stack(particles)
        return log_w.reshape(self.num_particles, -1), float(plate_scale or 1.0)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−(N / B) Σ_n L_K(x_n): a differentiable estimate of −IWAE-K of the whole data set."""
        log_w, scale = self.log_weights(model, guide, *args, **kwargs)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        # no warn_if_nan here (Pyro's RenyiELBO has one): it reads the value, which a captured
        # step cannot; the trainer stops on a non-finite epoch loss, as for every objective
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return torch_item(loss)


def make_elbo(config: TrainConfig, enumerate: bool = False):
    """The Pyro ELBO a :class:`~pyro_vae.infer.config.TrainConfig` asks for: ``Trace_ELBO``
    (:class:`SyncFreeTrace_ELBO`; :class:`FreeBitsTrace_ELBO` with ``free_bits``) with L =
    ``particles`` vectorized particles — :class:`SyncFreeTraceMeanField_ELBO` for
    ``elbo="meanfield"`` —, or :class:`IWAE_ELBO` with K = ``particles`` for
    ``objective="iwae"``; with ``enumerate`` (a model with a discrete latent, the
    semi-supervised VAE's label) Pyro's ``TraceEnum_ELBO``, which sums the sites its guide
    marks for parallel enumeration out exactly. ``max_plate_nesting=1``: the ``"data"``
    plate, so that enumeration (and vectorized particles) take the dimensions left of it.
    Use it with ``SVI`` or as ``make_elbo(config)(model, guide)``, an ``ELBOModule`` whose
    forward is the differentiable loss.

    The config is trusted: a ``TrainConfig`` has refused unknown objectives and the IWAE
    bound with free bits when it was built (its ``__post_init__``, the one place), and what
    enumeration cannot do when asked (:meth:`TrainConfig.check_enumeration`)."""
    kwargs = dict(num_particles=config.particles, vectorize_particles=config.particles > 1,
                  max_plate_nesting=1)
    if enumerate:
        # a labelled batch has nothing to enumerate: no warning for it
        return TraceEnum_ELBO(strict_enumeration_warning=False, **kwargs)
    if config.objective == "iwae":
        return IWAE_ELBO(**kwargs)
    if config.free_bits > 0:
        return FreeBitsTrace_ELBO(free_bits=config.free_bits, **kwargs)
    if config.elbo == "meanfield":
        return SyncFreeTraceMeanField_ELBO(**kwargs)
    return SyncFreeTrace_ELBO(**kwargs)
