"""Invertible transforms for image flows that Pyro does not ship.

Pyro provides the affine coupling layer (:class:`~pyro.distributions.transforms.AffineCoupling`,
which splits along one tensor dimension — channels, for images), permutations
(:class:`~pyro.distributions.transforms.Permute`) and Glow's invertible 1×1 convolution
(:class:`~pyro.distributions.transforms.GeneralizedChannelPermute`). What it lacks for the
image flows of Dinh et al. and Kingma & Dhariwal is written here, each as a Pyro
``Transform`` / ``TransformModule`` with an exact inverse and log-determinant:

* :class:`ActNorm` — per-channel affine map with data-dependent initialisation (Glow);
* :class:`CheckerboardAffineCoupling` — RealNVP's spatial checkerboard coupling;
* :class:`Squeeze` — space-to-depth, (C, H, W) → (4C, H/2, W/2);
* :class:`FactorOut` — the multi-scale architecture: half of the channels stop and become
  latent, the other half continue through a deeper (nested) flow;
* :func:`preprocessing` — the fixed map from the flow's working space to grey levels in
  [0, 1) (logit or centring), with its log-determinant, so densities stay densities of y.

Direction convention. Every transform here (and every flow in :mod:`pyro_vae.flows`) is
written in the *normalizing* direction ``_call: data-side u → latent-side z``, the direction
in which the papers define their layers and in which the log-likelihood is evaluated;
sampling runs ``.inv``. A model's ``TransformedDistribution`` therefore lists
``flow.inv`` (base → data). ``log_abs_det_jacobian(x, y)`` is ``log |det ∂y/∂x|`` of ``_call``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform
from torch.distributions.transforms import AffineTransform, SigmoidTransform

from ..errors import ConfigError
from ..options import check_choice

#: Preprocessing maps from the flow's working space to grey levels y ∈ [0, 1).
PREPROCESSING = ("logit", "center", "none")


def clear_caches(module: nn.Module) -> None:
    """Forget the last (x, y) pair every transform module inside ``module`` has cached.

    Pyro's and torch's transforms with ``cache_size=1`` return the cached input when asked
    to invert the very tensor they produced last — or to score, again, the very tensor they
    inverted last. After a parameter update that cached value is stale (and its autograd
    graph freed), so a model that is scored twice on the same tensor object across an
    optimizer step would be silently wrong. Flows and flow priors call this each time they
    build a distribution: caching then serves only within one distribution's lifetime
    (sample → log_prob), where it is exact.
    """
    for m in module.modules():
        if isinstance(m, Transform) and getattr(m, "_cache_size", 0) == 1:
            m._cached_x_y = None, None
            if hasattr(m, "_cached_log_scale"):
                m._cached_log_scale = None


def _batch_zeros(x: Tensor, event_dim: int) -> Tensor:
    return torch.zeros(x.shape[: x.dim() - event_dim], dtype=x.dtype, device=x.device)


class ActNorm(TransformModule):
    r"""Activation normalisation: a per-channel affine map, initialised from data.

    In the normalizing direction, for features ``f`` (channels of an image or entries of a
    vector),

        :math:`y_{f\ldots} = (x_{f\ldots} + b_f)\, e^{s_f}`,
        :math:`\log|\det \partial y / \partial x| = S \sum_f s_f`

    with ``S`` the number of spatial positions (H·W for images, 1 for vectors). With
    ``data_init=True`` the first call in training mode sets ``b = −mean`` and
    ``s = −log std`` of its input per feature, so that the initial output has zero mean
    and unit variance per channel on that batch (Kingma & Dhariwal 2018, §3.1). Whether
    that happened is a buffer, so a checkpoint never re-initialises.

    Args:
        num_features: number of channels C (``event_dim=3``) or of entries F (``event_dim=1``).
        event_dim: 3 for images ``(…, C, H, W)``, 1 for vectors ``(…, F)``.
        data_init: initialise from the first training batch (else: identity).
        eps: added to the standard deviation at initialisation.

    Example:
        >>> t = ActNorm(3)
        >>> x = torch.randn(16, 3, 4, 4) * 5 + 2
        >>> y = t(x)
        >>> bool(y.mean((0, 2, 3)).abs().max() < 1e-5)
        True

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039.
    """

    bijective = True

    def __init__(
        self, num_features: int, event_dim: int = 3, data_init: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__(cache_size=1)
        if event_dim not in (1, 3):
            raise ConfigError(f"ActNorm works on vectors (event_dim 1) or images (3), got {event_dim}")
        self.num_features = int(num_features)
        self._event_dim = int(event_dim)
        self.eps = eps
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(not data_init))
        #: the buffer's value as a Python bool, which the forward branches on: reading the
        #: buffer would be a host read of a tensor, which a captured step cannot hold
        self._ready = not data_init

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = bool(self.initialized)

    @constraints.dependent_property(is_discrete=False)
    def domain(self):
        return constraints.independent(constraints.real, self._event_dim)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self):
        return constraints.independent(constraints.real, self._event_dim)

    def _view(self, p: Tensor) -> Tensor:
        # (F,) → (F, 1, 1) so it broadcasts over (…, C, H, W)
        return p.view(-1, *([1] * (self._event_dim - 1)))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set b, s so that ``x`` maps to zero mean, unit variance per feature. In a
        data-parallel run (``torch.distributed`` initialised, several processes) ``x`` is
        this rank's shard: the statistics are those of the global batch (one all-reduce of
        the per-feature sums), so that every rank starts from the same parameters — DDP
        broadcasts the parameters only when it wraps the model, before this first call."""
        fdim = x.dim() - self._event_dim
        flat = x.transpose(0, fdim).reshape(self.num_features, -1)
        dist_ = torch.distributed
        if dist_.is_available() and dist_.is_initialized() and dist_.get_world_size() > 1:
            moments = torch.stack([flat.sum(1), flat.pow(2).sum(1),
                                   torch.full_like(flat[:, 0], flat.shape[1])])
            dist_.all_reduce(moments)
            mean = moments[0] / moments[2]
            std = (moments[1] / moments[2] - mean.pow(2)).clamp_min(0.0).sqrt()
        else:  # one process: the two-pass statistics (no cancellation)
            mean = flat.mean(1)
            std = flat.std(1, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._ready = True

    def _call(self, x: Tensor) -> Tensor:
        if self.training and not self._ready:
            self.initialize(x)
        return (x + self._view(self.bias)) * torch.exp(self._view(self.log_scale))

    def _inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self._view(self.log_scale)) - self._view(self.bias)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        spatial = math.prod(x.shape[x.dim() - self._event_dim + 1 :])
        return _batch_zeros(x, self._event_dim) + spatial * self.log_scale.sum()


class CheckerboardAffineCoupling(TransformModule):
    r"""RealNVP's affine coupling with a spatial checkerboard mask (Pyro has only splits).

    With a binary mask ``b`` over (H, W) (``b = 1`` where ``(i + j) % 2 == parity``) and a
    network ``(t, s) = NN(b ⊙ x)``, masked so that ``t`` and ``s`` vanish where ``b = 1``,

        :math:`y = x \odot e^{s(b \odot x)} + t(b \odot x)`,
        :math:`\log|\det \partial y / \partial x| = \sum s`.

    The masked half passes unchanged, so the inverse
    :math:`x = (y - t(b \odot y))\, e^{-s(b \odot y)}` is exact.

    Args:
        channels: C.
        height: H.
        width: W.
        net: network ``(…, C, H, W) → (t, s)``, each ``(…, C, H, W)``.
        parity: which squares condition (0 or 1); alternate it between layers.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP, arXiv:1605.08803.
    """

    bijective = True
    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(self, channels: int, height: int, width: int, net: nn.Module, parity: int = 0):
        super().__init__(cache_size=1)
        self.net = net
        ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        self.register_buffer("mask", ((ii + jj) % 2 == parity).to(torch.get_default_dtype()))
        self._cached_log_scale: Optional[Tensor] = None

    def _params(self, x_masked: Tensor) -> Tuple[Tensor, Tensor]:
        shift, log_scale = self.net(x_masked)
        free = 1 - self.mask
        return shift * free, log_scale * free

    def _call(self, x: Tensor) -> Tensor:
        shift, log_scale = self._params(x * self.mask)
        self._cached_log_scale = log_scale
        return x * torch.exp(log_scale) + shift

    def _inverse(self, y: Tensor) -> Tensor:
        shift, log_scale = self._params(y * self.mask)  # b ⊙ y = b ⊙ x
        self._cached_log_scale = log_scale
        return (y - shift) * torch.exp(-log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        x_old, y_old = self._cached_x_y
        if self._cached_log_scale is not None and x is x_old and y is y_old:
            log_scale = self._cached_log_scale
        else:
            _, log_scale = self._params(x * self.mask)
        return log_scale.sum((-3, -2, -1))


def check_squeezable(height: int, width: int, flow: Optional[str] = None) -> None:
    """Refuse an image that a :class:`Squeeze` cannot halve (a side of odd length); ``flow``
    names the multi-scale flow whose ``num_scales`` asked for one squeeze too many."""
    if height % 2 or width % 2:
        if flow is None:
            raise ConfigError(f"cannot squeeze an image of size {height}×{width}: both sides must be even")
        raise ConfigError(f"{flow} cannot squeeze a {height}×{width} image: use fewer num_scales",
                          params=("num_scales",))


class Squeeze(Transform):
    """Space-to-depth: ``(…, C, H, W) → (…, 4C, H/2, W/2)``; each 2×2 block becomes 4 channels.

    Output channel ``4c + 2i + j`` holds input channel ``c`` at offset ``(i, j)`` of each
    block. A permutation of entries: ``log |det| = 0``. (Dinh et al. 2016, arXiv:1605.08803, §3.6.)

    Example:
        >>> Squeeze().forward_shape((1, 28, 28))
        (4, 14, 14)
    """

    bijective = True
    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(self, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Squeeze)

    def _call(self, x: Tensor) -> Tensor:
        *batch, c, h, w = x.shape
        n = len(batch)
        x = x.reshape(*batch, c, h // 2, 2, w // 2, 2)
        x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
        return x.reshape(*batch, 4 * c, h // 2, w // 2)

    def _inverse(self, y: Tensor) -> Tensor:
        *batch, c4, h, w = y.shape
        n = len(batch)
        y = y.reshape(*batch, c4 // 4, 2, 2, h, w)
        y = y.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        return y.reshape(*batch, c4 // 4, 2 * h, 2 * w)

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        *batch, c, h, w = shape
        check_squeezable(h, w)
        return (*batch, 4 * c, h // 2, w // 2)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        *batch, c, h, w = shape
        return (*batch, c // 4, 2 * h, 2 * w)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _batch_zeros(x, 3)


class FactorOut(Transform):
    r"""Multi-scale factor-out: the first ``keep`` channels go on through ``inner``, the
    others are final (RealNVP §3.6; Glow's "split").

        :math:`y = (\mathrm{inner}(x_{:k}),\ x_{k:})`,
        :math:`\log|\det| = \log|\det \partial\,\mathrm{inner}|`

    Nesting ``FactorOut`` inside ``inner`` gives the whole multi-scale architecture as one
    bijection of the image onto a latent of the same shape, whose factored-out channels are
    scored by the base distribution directly. ``inner`` must preserve shapes. It is built
    per call from modules (it holds no parameters itself), so it is a ``Transform``.

    The log-determinant of ``inner`` is computed in the same pass as the map (while the
    caches of ``inner``'s parts are valid) and reused by :meth:`log_abs_det_jacobian`, so
    scoring costs one pass through the network, not two.

    Args:
        inner: a shape-preserving transform of ``(…, keep, H, W)``.
        keep: number of channels that continue.
    """

    bijective = True
    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(self, inner: Transform, keep: int) -> None:
        super().__init__(cache_size=1)
        self.inner = inner
        self.keep = int(keep)
        self._cached_ld: Optional[Tensor] = None

    def _split(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return x[..., : self.keep, :, :], x[..., self.keep :, :, :]

    def _call(self, x: Tensor) -> Tensor:
        x_keep, x_out = self._split(x)
        y_keep = self.inner(x_keep)
        self._cached_ld = self.inner.log_abs_det_jacobian(x_keep, y_keep)
        return torch.cat([y_keep, x_out], dim=-3)

    def _inverse(self, y: Tensor) -> Tensor:
        y_keep, y_out = self._split(y)
        x_keep = self.inner.inv(y_keep)
        self._cached_ld = self.inner.log_abs_det_jacobian(x_keep, y_keep)
        return torch.cat([x_keep, y_out], dim=-3)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        x_old, y_old = self._cached_x_y
        if self._cached_ld is not None and x is x_old and y is y_old:
            return self._cached_ld
        x_keep, _ = self._split(x)
        return self.inner.log_abs_det_jacobian(x_keep, self.inner(x_keep))

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return tuple(shape)


def preprocessing(kind: str, alpha: float = 0.05) -> List[Transform]:
    r"""The fixed map from a flow's working space ``u`` to grey levels ``y ∈ [0, 1)``.

    Flows are fitted to dequantized grey levels y (see :mod:`pyro_vae.data`) but work better
    on unbounded or centred values. These transforms (base → data direction, to be appended
    to a ``TransformedDistribution``) carry their log-determinants, so the model's density is
    still a density over y and bits/dim stay honest:

    * ``"logit"``: :math:`y = (\sigma(u) - \alpha) / (1 - 2\alpha)`, i.e.
      :math:`u = \operatorname{logit}(\alpha + (1 - 2\alpha) y)` (RealNVP, arXiv:1605.08803,
      §4.1); α keeps u finite at y = 0. The density of y then lives on the slightly larger
      cube (−α/(1−2α), (1−α)/(1−2α))^D; what mass it puts outside [0, 1)^D is lost, so
      bits/dim computed on data in [0, 1)^D remain an upper bound;
    * ``"center"``: :math:`y = u + 1/2`, i.e. u ∈ [−½, ½) (Glow, arXiv:1807.03039);
    * ``"none"``: y = u.

    Args:
        kind: one of :data:`PREPROCESSING`.
        alpha: the logit boundary margin, in [0, ½).

    Returns:
        transforms of event dim 0 or 3, to apply in order after the flow's inverse.
    """
    check_choice(kind, PREPROCESSING, "preprocessing", "preprocess")
    if kind == "logit":
        if not 0.0 <= alpha < 0.5:
            raise ConfigError(f"alpha must lie in [0, 0.5), got {alpha}", params=("alpha",))
        return [
            SigmoidTransform(),
            AffineTransform(-alpha / (1 - 2 * alpha), 1.0 / (1 - 2 * alpha), event_dim=3),
        ]
    if kind == "center":
        return [AffineTransform(0.5, 1.0, event_dim=3)]
    return []
