r"""The hierarchical ResNet VAE with top-down (bidirectional) inference of Kingma et al. 2016
(arXiv:1606.04934, §4–5 and appendix C), as a Pyro model/guide pair.

L stochastic layers z_L, …, z_1 (top first) and one deterministic *top-down* path, shared by
the model and the guide::

    s_L = h_top                                   (a learned vector)
    z_l ~ p(z_l | z_{>l})   = N(μ_p(s_l), σ_p(s_l)²)      (the top: p(z_L) = vae.prior())
    s_{l−1} = s_l + g_l(s_l, z_l)                  (residual top-down step)
    x ~ p(x | z_1..L)     = likelihood(decoder([z_L, …, z_1]))

The guide runs the *same* top-down path and combines it, layer by layer, with a bottom-up
path over x (the ResNet trunk, then a residual block per layer, h_1 → … → h_L)::

    q(z_l | x, z_{>l}) = N(μ_q(s_l, h_l), σ_q(s_l, h_l)²)

so the posterior of each layer sees both the image and every latent sampled above it — the
IAF paper's bidirectional inference — and its prior p(z_l | z_{>l}) and posterior are computed
from the same state s_l. The decoder (the ResNet decoder) sees every z_l through skip
connections (as in BIVA, Maaløe et al. 2019, arXiv:1902.02102), not the paper's final
top-down state: fed with that state (alone or beside the z's) the decoder learned to ignore
the latents on mnist5k (test KL ≈ 4 nats after 6 epochs, against 22 for the single-latent
ResNet VAE; docs/benchmarks.md). As Pyro programs::

    model:  with plate("data"):  z_L ~ p(z_L); …; z_1 ~ p(z_1 | z_{>1}); x ~ p(x | z)
    guide:  with plate("data"):  z_L ~ q(z_L | x); …; z_1 ~ q(z_1 | x, z_{>1})

Site names are ``"z_L"``, …, ``"z_1"`` (``"z_2"``, ``"z_1"`` for two layers), each of event
shape (d_l,); :attr:`HierarchicalVAE.latent_sites` lists them top first, and the joint latent
z of the model contract is their concatenation in that order. Every ELBO, IWAE, free-bits,
NUTS and latent-usage tool of pyro-vae reads latent sites from traces, so it sums (or reports
per layer) over all of them. The top-down path is registered with Pyro once, by the model;
the guide registers only the bottom-up path and its posterior heads (and its flows).

Where the paper's latents are feature maps at every ResNet block, these are vectors (the
bottom-up and top-down paths are dense residual blocks on the ResNet trunk's features), so
they read as plain vectors in a trace and in ArviZ, and NUTS can sample them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..guides.base import Guide
from ..guides.flows import FlowSteps
from ..likelihoods import build_likelihood
from ..nets.mlp import act_dropout, activation
from ..nets.resnet import ResNetDecoderNet, ResNetEncoderTrunk
from ..priors import SOFTPLUS_ONE, StandardNormalPrior
from .base import MODELS, VAE, Decoder
from .conv import check_widths


def _normal(params: Tensor, min_scale: float) -> dist.TorchDistribution:
    """N(μ, σ²) with event shape (d,) from params (..., 2d) = (μ, softplus⁻¹-scale)."""
    loc, raw = params.chunk(2, dim=-1)
    return dist.Normal(loc, F.softplus(raw) + min_scale).to_event(1)


def _cat(a: Tensor, b: Tensor) -> Tensor:
    """``[a, b]`` along the last dim, leading (particle, batch) dims broadcast."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], dim=-1)


class DenseResBlock(nn.Module):
    """``h + W₂ drop(act(W₁ act(h)))``, the last layer zero-initialised (the block starts as
    the identity, as the ResNet blocks of :mod:`pyro_vae.nets.resnet`)."""

    def __init__(self, width: int, mid: int, act: str = "elu", dropout: float = 0.0) -> None:
        super().__init__()
        self.branch = nn.Sequential(activation(act)(), nn.Linear(width, mid), *act_dropout(act, dropout),
                                    nn.Linear(mid, width))
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.branch(h)


class TopDownLayer(nn.Module):
    """One stochastic layer of the top-down path: the prior head p(z_l | s_l) (none for the
    top layer, whose prior is the VAE's prior module) and the residual step s_l → s_{l−1}
    (none for the bottom layer: below z_1 the decoder reads the z's).

    Args:
        width: width H of the state s.
        z_dim: d_l.
        mid: width inside the step.
        top: whether this is z_L.
        bottom: whether this is z_1.
        act: activation name.
        min_scale: lower bound on σ.
        dropout: dropout probability inside the step.
    """

    def __init__(self, width: int, z_dim: int, mid: int, top: bool, bottom: bool = False,
                 act: str = "elu", min_scale: float = 1e-4, dropout: float = 0.0) -> None:
        super().__init__()
        make = activation(act)
        self.min_scale = min_scale
        self.prior_head: Optional[nn.Module] = None
        if not top:  # starts at N(0, I) for every state
            self.prior_head = nn.Sequential(make(), nn.Linear(width, 2 * z_dim))
            nn.init.zeros_(self.prior_head[-1].weight)
            with torch.no_grad():
                self.prior_head[-1].bias.copy_(torch.cat([torch.zeros(z_dim),
                                                          torch.full((z_dim,), SOFTPLUS_ONE)]))
        self.step: Optional[nn.Module] = None
        if not bottom:
            self.step = nn.Sequential(nn.Linear(width + z_dim, mid), *act_dropout(act, dropout),
                                      nn.Linear(mid, width))

    def prior(self, state: Tensor) -> dist.TorchDistribution:
        """p(z_l | z_{>l}), batch shape ``state.shape[:-1]``, event (d_l,)."""
        return _normal(self.prior_head(state), self.min_scale)

    def forward(self, state: Tensor, z: Tensor) -> Tensor:
        """s_{l−1} = s_l + g_l(s_l, z_l), shape (..., H) over the broadcast leading dims."""
        both = _cat(state, z)
        return both[..., : state.shape[-1]] + self.step(both)


class TopDownPath(nn.Module):
    """The top-down path shared by model and guide: the learned top state h_top and one
    :class:`TopDownLayer` per stochastic layer (top first)."""

    def __init__(self, width: int, sizes: Sequence[int], mid: int, act: str = "elu", dropout: float = 0.0) -> None:
        super().__init__()
        self.h_top = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(TopDownLayer(width, d, mid, i == 0, i == len(sizes) - 1, act, dropout=dropout)
                                    for i, d in enumerate(sizes))

    def start(self, batch_shape: Sequence[int]) -> Tensor:
        """s_L = h_top, expanded to ``batch_shape``."""
        return self.h_top.expand(*batch_shape, self.h_top.shape[-1])


class HierarchicalEncoder(nn.Module):
    """The inference network: the bottom-up path h_1 … h_L over x and, per layer, the head
    (s_l, h_l) → (μ_q, σ_q) of q(z_l | x, z_{>l}). Lists are top first, like the sites.

    Attributes:
        h_dim: width of a layer's inference features [s_l, h_l] (the context of flows).
    """

    def __init__(self, trunk: nn.Module, width: int, sizes: Sequence[int], mid: int, act: str = "elu",
                 min_scale: float = 1e-4, dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.up = nn.ModuleList(DenseResBlock(width, mid, act, dropout) for _ in sizes[1:])
        self.heads = nn.ModuleList(nn.Sequential(activation(act)(), nn.Linear(2 * width, 2 * d))
                                   for d in sizes)
        self.h_dim = 2 * width
        self.min_scale = min_scale
        self.labels: Optional[nn.Embedding] = None

    def condition(self, num_classes: int) -> None:
        """Condition the bottom-up path on a label: h_1 = trunk(x) + e_y."""
        self.labels = nn.Embedding(num_classes, self.h_dim // 2)

    def features(self, x: Tensor, y: Optional[Tensor] = None) -> List[Tensor]:
        """Bottom-up features ``[h_L, …, h_1]``, each (B, H): h_1 from the ResNet trunk (plus
        e_y given labels ``y``), each further layer one residual block up."""
        hs = [self.trunk(x) if y is None else self.trunk(x) + self.labels(y)]
        for block in self.up:
            hs.append(block(hs[-1]))
        return hs[::-1]

    def context(self, state: Tensor, h: Tensor) -> Tensor:
        """A layer's inference features [s_l, h_l], (..., 2H)."""
        return _cat(state, h)

    def posterior(self, i: int, context: Tensor) -> dist.TorchDistribution:
        """The diagonal Gaussian q(z_l | x, z_{>l}) of the i-th layer from the top."""
        return _normal(self.heads[i](context), self.min_scale)


@MODELS.register("hvae")
class HierarchicalVAE(VAE):
    """A ResNet VAE with ``levels`` stochastic layers and top-down inference (Kingma et al.
    2016, arXiv:1606.04934): the model of the module docstring.

    Args:
        x_shape: image shape ``(C, H, W)``; any size (the ResNet stages infer their shapes).
        z_dim: size of each latent layer (when ``group_sizes`` is not given). The joint
            latent has ``vae.z_dim`` = Σ_l d_l dimensions.
        likelihood: ``bernoulli``, ``gaussian`` or ``logistic``.
        levels: L, the number of stochastic layers (≥ 2).
        group_sizes: d_1, …, d_L (bottom first), overriding ``z_dim``.
        channels: widths of the ResNet stages (encoder; the decoder mirrors them).
        blocks: residual blocks per stage.
        hidden: width H of the trunk's features, of the bottom-up and of the top-down states
            (192: with two layers of 32 latents the model has 837,057 parameters, the
            ResNet VAE's default 885,377).
        mid: width inside each dense residual block and top-down step.
        activation: ``elu``, ``relu``, ``softplus`` or ``tanh``.
        dropout: probability of dropout in every residual branch, dense block and top-down
            step (0: none; off in evaluation).

    Example:
        >>> vae = HierarchicalVAE((1, 28, 28), z_dim=4, levels=3, hidden=32, mid=16)
        >>> vae.latent_sites, vae.z_dim
        ({'z_3': 4, 'z_2': 4, 'z_1': 4}, 12)
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        levels: int = 2,
        group_sizes: Optional[Sequence[int]] = None,
        channels: Sequence[int] = (16, 32),
        blocks: int = 1,
        hidden: int = 192,
        mid: int = 128,
        activation: str = "elu",
        dropout: float = 0.0,
    ) -> None:
        if int(levels) < 2:
            raise ConfigError(f"levels must be at least 2 (use the resnet model for one), got {levels}",
                              params=("levels",))
        sizes = [int(z_dim)] * int(levels) if group_sizes is None else [int(d) for d in group_sizes]
        if len(sizes) != int(levels) or min(sizes) < 1:
            raise ConfigError(f"group_sizes must be {levels} positive sizes (one per level, "
                              f"z_1 first), got {list(group_sizes or [])}", params=("group_sizes",))
        widths = check_widths(channels, hidden)
        if int(blocks) < 0 or int(mid) < 1:
            raise ConfigError(f"blocks must be ≥ 0 and mid positive, got {blocks} and {mid}",
                              params=("blocks", "mid"))
        width, top_first = int(hidden), sizes[::-1]
        lik = build_likelihood(likelihood, x_shape)
        trunk = ResNetEncoderTrunk(x_shape, widths, int(blocks), width, activation, dropout)
        net = ResNetDecoderNet(sum(sizes), trunk.shapes, lik.param_shape[0], int(blocks), width, activation,
                               dropout)
        encoder = HierarchicalEncoder(trunk, width, top_first, int(mid), activation, dropout=dropout)
        super().__init__(x_shape, sum(sizes), encoder, Decoder(net, lik),
                         prior=StandardNormalPrior(top_first[0]))
        self.sizes = {f"z_{len(sizes) - i}": d for i, d in enumerate(top_first)}
        self.top_down = TopDownPath(width, top_first, int(mid), activation, dropout)
        self.guide = HierarchicalGuide(self)
        self.guide.spec = {"name": "gaussian"}

    # ------------------------------------------------------------------ latent sites
    @property
    def latent_sites(self) -> Dict[str, int]:
        return dict(self.sizes)

    @property
    def prior_dim(self) -> int:
        """The prior module is p(z_L), the top layer's."""
        return next(iter(self.sizes.values()))

    # ------------------------------------------------------------------ Pyro program
    def register_model(self) -> None:
        super().register_model()
        self._register("top_down", self.top_down)  # once, here: the guide uses it unregistered

    def latents(self, y: Optional[Tensor] = None) -> Tensor:
        """z_L ~ p(z_L) (p(z_L | y) for a conditional prior), then z_l ~ p(z_l | z_{>l}) down to
        z_1, in the caller's plate; returns the decoder's input, the joint latent [z_L, …, z_1]
        (..., z_dim)."""
        state, values = None, {}
        for i, (name, layer) in enumerate(zip(self.sizes, self.top_down.layers)):
            values[name] = z = pyro.sample(name, self.prior_of(y) if i == 0 else layer.prior(state))
            if layer.step is not None:
                state = layer(self.top_down.start(z.shape[:-1]) if i == 0 else state, z)
        return self.join_latents(values)

    def flow_guide(self, steps: FlowSteps, num_flows: int, hidden_dims: Optional[Sequence[int]],
                   **options: Any) -> "HierarchicalGuide":
        """The guide of a flow-guide row (every registered flow guide; IAF is the paper's):
        each layer's Gaussian pushed through its own K steps, conditioned on the layer's
        inference features [s_l, h_l]. (The ``gaussian`` guide is ``vae.guide``, Gaussian
        layers.)"""
        flows = [steps.steps(d, self.encoder.h_dim, num_flows, hidden_dims, **options)
                 for d in self.sizes.values()]
        return HierarchicalGuide(self, flows)


class HierarchicalGuide(Guide):
    """q(z | x) = Π_l q(z_l | x, z_{>l}), sampled top first through the model's top-down path.

    Each layer's q depends on the layers drawn above it, so q(z | x) is no one distribution:
    the guide is a :class:`~pyro_vae.guides.base.Guide` whose core is :meth:`sample` (one
    site per layer), not a ``JointGuide``; its per-layer distributions are in a trace.

    Args:
        vae: the :class:`HierarchicalVAE`.
        flows: per layer (top first), conditional flow steps applied to the layer's Gaussian
            (conditioned on [s_l, h_l]); ``None`` for Gaussian layers (``vae.guide``).
    """

    def __init__(self, vae: HierarchicalVAE, flows: Optional[Sequence[Sequence[nn.Module]]] = None):
        super().__init__(vae)
        self.flows = nn.ModuleList(nn.ModuleList(f) for f in flows) if flows is not None else None

    def _layers(self, x: Tensor, y: Optional[Tensor], pick):
        """Run the layers top first for checked images ``x`` (and labels ``y``);
        ``pick(name, base, transforms)`` returns z_l (a sample or a summary)."""
        vae: HierarchicalVAE = self.vae
        encoder = vae.encoder
        hs = encoder.features(x, y)
        values: Dict[str, Tensor] = {}
        state = vae.top_down.start(hs[0].shape[:-1])
        for i, (name, layer, h) in enumerate(zip(vae.sizes, vae.top_down.layers, hs)):
            context = encoder.context(state, h)
            base = encoder.posterior(i, context)
            transforms = [t.condition(context) for t in self.flows[i]] if self.flows is not None else []
            z = pick(name, base, transforms)
            values[name] = z
            if layer.step is not None:
                state = layer(state, z)
        return vae.join_latents(values)

    def sample(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Sites ``"z_L"``, …, ``"z_1"``; returns the joint latent."""
        def draw(name, base, transforms):
            q = dist.TransformedDistribution(base, transforms) if transforms else base
            return pyro.sample(name, q)

        return self._layers(x, y, draw)

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Each layer's posterior mean (pushed through its flows), given the means above."""
        def mean(name, base, transforms):
            z = base.mean
            for t in transforms:
                z = t(z)
            return z

        return self._layers(x, y, mean)

    def local_parameters(self) -> List[nn.Parameter]:
        """The bias of every layer's posterior head and the flows (see ``Guide``)."""
        return list(self.parameters()) + [head[-1].bias for head in self.vae.encoder.heads]

    def extra_repr(self) -> str:
        return f"levels={len(self.vae.sizes)}, flows={self.spec.get('name', 'gaussian')}"
