r"""The semi-supervised VAE — M2 of Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised
learning with deep generative models" (arXiv:1406.5298) — as a Pyro model/guide pair in which
the label of an unlabelled image is a discrete latent variable that Pyro sums out exactly.

The model is a conditional VAE (:meth:`~pyro_vae.models.base.VAE.condition_on_labels`) whose
label is a random variable with a uniform prior::

    model:  with plate("data"):
                y ~ p(y) = Cat(1/C)          observed where the label is known
                z ~ p(z)                     (p(z | y) with a conditional prior)
                x ~ p(x | z, y)
    guide:  with plate("data"):
                y ~ q(y | x) = Cat(π_φ(x))   only where the label is unknown: enumerated
                z ~ q(z | x, y)

For a labelled image the ELBO is that of the conditional VAE plus log p(y),

    L(x, y) = E_q(z|x,y)[log p(x | z, y) + log p(y) + log p(z) − log q(z | x, y)],

and for an unlabelled one the guide's ``"y"`` is marked for parallel enumeration
(:func:`pyro.infer.config_enumerate`), so that ``TraceEnum_ELBO(max_plate_nesting=1)``
computes the expectation over y as a sum over its C values (one extra batch dimension, left
of the ``"data"`` plate) rather than a sample:

    U(x) = Σ_y q(y | x) L(x, y) + H(q(y | x)).

The classifier q(y | x) learns from U only through the unlabelled images, so Kingma et al. add
a classification term on the labelled ones — the training objective of N images, N_l labelled,

    J^α = Σ_labelled L(x, y) + Σ_unlabelled U(x) + α · (1 / N_l) Σ_labelled log q(y | x),

with α = 0.1 · N by default, as in the paper. ``labelled_weight`` λ multiplies the first sum:
λ = 1 is J^α; with N_l ≪ N_u the labelled images then shape the decoder's classes little,
and λ = N_u / N_l weighs the labelled and the unlabelled halves of a step alike. :meth:`SemiSupervisedVAE.classifier_model` is
that term as a Pyro program (an observed site under ``poutine.scale``, as Pyro's own
``examples/vae/ss_vae_M2.py`` has it); :class:`~pyro_vae.infer.labels.LabelledLoss` adds the
three parts in one training step.

The encoder, the decoder and the classifier's trunk are dense (``network="dense"``: an MLP of
``hidden_dims``, the paper's one layer of 500 softplus units) or convolutional
(``network="conv"``: the conv VAE's ``channels`` and ``hidden``); the classifier has its own
trunk, as in the paper.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from torch import Tensor, nn

from ..errors import ConfigError
from ..guides.base import GaussianGuide, Guide
from ..guides.flows import FlowSteps
from ..likelihoods import build_likelihood
from ..nets.conv import ConvDecoderNet, ConvEncoderTrunk
from ..nets.mlp import check_dropout
from ..nets.resnet import ResNetEncoderTrunk
from ..nets.shift import random_shift
from ..options import check_choice, check_int, check_ranges
from ..plates import data_plate, full_precision
from .base import MODELS, VAE, Decoder, Encoder
from .conv import check_stages, check_widths
from .dense import check_hidden_dims, dense_decoder_net, dense_trunk

#: The networks of the semi-supervised VAE.
NETWORKS = ("dense", "conv")
#: The classifier's: its own of either kind, or ``shared``, the VAE encoder's trunk.
CLASSIFIER_NETWORKS = NETWORKS + ("shared",)


class SharedTrunk(nn.Module):
    """The classifier's trunk that *is* the encoder's (the same module, so its weights learn
    from every image's ELBO as the encoder's do, and from the labels), then the classifier's
    own dropout: a joint form of Kingma et al.'s M1 + M2 stack, whose classifier read the
    features of a VAE trained on every image."""

    def __init__(self, trunk: nn.Module, dropout: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.trunk(x))


def check_network_options(network: str, y_network: str, hidden_dims: Optional[Sequence[int]],
                          channels: Optional[Sequence[int]], hidden: Optional[int], classifier_blocks: int) -> str:
    """One ConfigError for an option of a network that neither the VAE (``network``) nor its
    classifier (``y_network``; ``shared``: the VAE's) uses; else the kind of the classifier's
    trunk (``dense`` or ``conv``)."""
    if y_network != "conv" and classifier_blocks:
        raise ConfigError("classifier_blocks is an option of a conv classifier of its own (network='conv' or "
                          "classifier_network='conv')", params=("classifier_blocks",))
    y_network = network if y_network == "shared" else y_network
    if "conv" not in (network, y_network) and (channels is not None or hidden is not None):
        raise ConfigError("channels and hidden are options of a conv network (the dense network takes "
                          "hidden_dims)", params=("channels", "hidden"))
    if "dense" not in (network, y_network) and hidden_dims is not None:
        raise ConfigError("hidden_dims is an option of a dense network (the conv network takes channels "
                          "and hidden)", params=("hidden_dims",))
    return y_network


@MODELS.register("ssvae")
class SemiSupervisedVAE(VAE):
    """M2 of Kingma et al. 2014 (see the module docstring); build it with ``num_classes``
    (``build_vae("ssvae", x_shape, num_classes=10)``).

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        likelihood: ``bernoulli`` for binary images, ``gaussian`` or ``logistic`` for grey levels.
        network: ``dense`` or ``conv``: the encoder's, the decoder's and the classifier's.
        hidden_dims: widths of the dense network (default ``[500]``); only for ``dense``.
        channels: stage widths of the conv network (default ``[32, 64]``); only for ``conv``.
        hidden: width of the conv network's dense features (default 256); only for ``conv``.
        activation: ``softplus`` (the paper's), ``elu``, ``relu`` or ``tanh``.
        alpha: α, the weight of the classification term; ``None``: 0.1 × the number of
            training images, the paper's.
        labelled_weight: λ, the weight of the labelled images' ELBO against the unlabelled
            ones' — 1 is J^α; N_u / N_l weighs the two halves of every step alike, as the
            per-mini-batch means of many implementations do (see the module docstring).
        dropout: probability of dropout after every activation of the encoder, the decoder
            and the classifier (0: none; off in evaluation).
        classifier_dropout: the classifier's own dropout probability (``None``: ``dropout``).
            The classifier learns from far fewer examples than the VAE (its labelled images
            and the enumerated term) and over-fits first; a supervised conv classifier of
            this network on mnist5k's 3,800 images reached 96.5 % with 0.3 against 94–95 %
            without (docs/benchmarks.md, "Labels").
        classifier_shift: the classification term sees each labelled training image moved
            by up to this many pixels in each direction (:func:`~pyro_vae.nets.shift.random_shift`;
            0: unmoved). An augmentation of the α-term only: the ELBO terms, and so p(x),
            see the images as they are.
        classifier_blocks: residual blocks per stage of the classifier's trunk (0: the conv
            network's strided convolutions; ≥ 1: the ResNet VAE's encoder trunk of the same
            ``channels``, each stage a strided convolution and this many 3 × 3 residual
            blocks); only for a conv classifier.
        classifier_network: the classifier's network when it differs from ``network``
            (``None``: the same), e.g. the dense VAE, whose decoder the unlabelled images run
            once per class, with a conv classifier, which runs once per image and is
            translation-equivariant where a dense one is not. ``channels``, ``hidden`` and
            ``classifier_blocks`` shape whichever part is conv, ``hidden_dims`` whichever is
            dense. ``shared``: the encoder's own trunk (:class:`SharedTrunk`), so that the
            classifier reads features that every image's ELBO trains.

    Example:
        >>> vae = SemiSupervisedVAE((1, 28, 28), z_dim=4, hidden_dims=(16,))
        >>> vae.condition_on_labels(10)
        >>> vae.classify(torch.zeros(2, 1, 28, 28)).probs.shape
        torch.Size([2, 10])
    """

    label_is_latent = True

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        network: str = "dense",
        hidden_dims: Optional[Sequence[int]] = None,
        channels: Optional[Sequence[int]] = None,
        hidden: Optional[int] = None,
        activation: str = "softplus",
        alpha: Optional[float] = None,
        labelled_weight: float = 1.0,
        dropout: float = 0.0,
        classifier_dropout: Optional[float] = None,
        classifier_shift: int = 0,
        classifier_blocks: int = 0,
        classifier_network: Optional[str] = None,
    ) -> None:
        check_choice(network, NETWORKS, "network", "network")
        y_network = network if classifier_network is None else check_choice(
            classifier_network, CLASSIFIER_NETWORKS, "classifier network", "classifier_network")
        # a shift of a whole side would leave nothing of the image
        check_int(classifier_shift, "classifier_shift", 0, min(int(s) for s in x_shape[1:]) - 1)
        check_int(classifier_blocks, "classifier_blocks", 0)
        lik = build_likelihood(likelihood, x_shape)
        drop_y = dropout if classifier_dropout is None else check_dropout(classifier_dropout, "classifier_dropout")
        y_kind = check_network_options(network, y_network, hidden_dims, channels, hidden, classifier_blocks)
        if "dense" in (network, y_kind):
            dense_widths = check_hidden_dims(hidden_dims if hidden_dims is not None else (500,))
        if "conv" in (network, y_kind):
            conv_h = int(hidden if hidden is not None else 256)
            conv_widths = check_widths(channels if channels is not None else (32, 64), conv_h)
            check_stages(x_shape, len(conv_widths), "ssvae")

        def make_trunk(kind: str, p: float, blocks: int = 0) -> nn.Module:
            if kind == "dense":
                return dense_trunk(x_shape, dense_widths, activation, p)
            if blocks:
                return ResNetEncoderTrunk(x_shape, conv_widths, blocks, conv_h, activation, p)
            return ConvEncoderTrunk(x_shape, conv_widths, conv_h, activation, p)

        # built in this order (encoder, classifier, decoder): the order the random initial weights
        # of a seed were drawn in before classifier_network
        trunk = make_trunk(network, dropout)
        classifier_trunk = (SharedTrunk(trunk, drop_y) if y_network == "shared"
                            else make_trunk(y_network, drop_y, classifier_blocks))
        if network == "dense":
            h_dim, net = dense_widths[-1], dense_decoder_net(z_dim, dense_widths, lik, activation, dropout)
        else:
            h_dim, net = conv_h, ConvDecoderNet(z_dim, trunk.shapes, lik.param_shape[0], conv_h, activation, dropout)
        y_h_dim = dense_widths[-1] if y_kind == "dense" else conv_h
        check_ranges({"alpha": alpha, "labelled_weight": labelled_weight}, {
            "alpha": (alpha is None or alpha >= 0, "≥ 0"),
            "labelled_weight": (labelled_weight > 0, "> 0"),
        }, "options of the ssvae model")
        super().__init__(x_shape, z_dim, Encoder(trunk, h_dim, z_dim), Decoder(net, lik))
        #: the classifier's trunk; its head, h → C logits, comes with the number of classes
        self.classifier_trunk = classifier_trunk
        self.classifier_h_dim = y_h_dim
        self.classifier_head: Optional[nn.Linear] = None
        self.alpha = alpha
        self.labelled_weight = float(labelled_weight)
        self.classifier_shift = classifier_shift
        self.guide = SemiSupervisedGuide(self, GaussianGuide(self))
        self.guide.spec = {"name": "gaussian"}

    def condition_on_labels(self, num_classes: int) -> None:
        """The conditional VAE's inputs (see :meth:`VAE.condition_on_labels`), the classifier's
        head and the uniform prior p(y) over ``num_classes`` classes."""
        super().condition_on_labels(num_classes)
        self.classifier_head = nn.Linear(self.classifier_h_dim, self.num_classes)
        self.register_buffer("label_logits", torch.zeros(self.num_classes))

    def label_alpha(self, num_data: int) -> float:
        """α for a training split of ``num_data`` images: the option, or 0.1 · N."""
        return 0.1 * num_data if self.alpha is None else float(self.alpha)

    # ------------------------------------------------------------------ the classifier
    def label_posterior(self, x: Tensor) -> dist.Categorical:
        """q_φ(y | x) of checked images x (B, C, H, W): batch shape (B,)."""
        return dist.Categorical(logits=full_precision(self.classifier_head(self.classifier_trunk(x))))

    def classify(self, x: Tensor) -> dist.Categorical:
        """q_φ(y | x), the classifier the semi-supervised VAE learns, for images ``x``; its
        ``probs`` (B, C), and the predicted classes ``classify(x).probs.argmax(-1)``."""
        return self.label_posterior(self.check_x(x, values=True))

    def register_classifier(self) -> None:
        self._register("classifier_trunk", self.classifier_trunk)
        self._register("classifier_head", self.classifier_head)

    # ------------------------------------------------------------------ Pyro programs
    def label_site(self, y: Optional[Tensor]) -> Tensor:
        """Site ``"y"`` ~ p(y) = Cat(1/C), observed where the labels ``y`` are given."""
        return pyro.sample("y", dist.Categorical(logits=self.label_logits), obs=y)

    def classifier_model(self, x: Tensor, y: Tensor, num_data: Optional[int] = None, scale: float = 1.0) -> None:
        """The classification term ``scale`` · log q(y | x) of labelled images as a Pyro
        program: the labels observed under the classifier, in the ``"data"`` plate and a
        ``poutine.scale`` (α / N_l, so that the plate's N_l / B makes it α times the mean over
        the N_l labelled images); its guide is empty. In training the images are moved by
        up to ``classifier_shift`` pixels first."""
        x = self.check_x(x)
        if y is None:
            raise ConfigError("the classification term needs the labels y", params=("y",))
        y = self.check_y(y, len(x))
        self.register_classifier()
        if self.training:
            x = random_shift(x, self.classifier_shift)
        with data_plate(x, num_data), poutine.scale(scale=scale):
            pyro.sample("y", self.label_posterior(x), obs=y)

    # ------------------------------------------------------------------ guides by kind
    def flow_guide(self, steps: FlowSteps, num_flows: int, hidden_dims: Optional[Sequence[int]],
                   **options) -> Guide:
        """q(y | x) and the flow guide of the conditional VAE for q(z | x, y)."""
        return SemiSupervisedGuide(self, super().flow_guide(steps, num_flows, hidden_dims, **options))


class SemiSupervisedGuide(Guide):
    """q_φ(y | x) q_φ(z | x, y): site ``"y"`` from the VAE's classifier where the labels are
    not given — marked for parallel enumeration (``config_enumerate``), so that
    ``TraceEnum_ELBO`` sums it out and a plain trace samples it — then the ``inner`` guide's
    latent sites given y (the Gaussian head, or a flow guide).

    Args:
        vae: the :class:`SemiSupervisedVAE`.
        inner: a guide of its latent sites given the label.
    """

    def __init__(self, vae: SemiSupervisedVAE, inner: Guide) -> None:
        super().__init__(vae)
        self.inner = inner
        self.label = config_enumerate(self._label, default="parallel")

    def _label(self, x: Tensor) -> Tensor:
        return pyro.sample("y", self.vae.label_posterior(x))

    def register(self) -> None:
        super().register()
        self.vae.register_classifier()

    def sample(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """``"y"`` ~ q(y | x) where ``y`` is not given, then z ~ q(z | x, y)."""
        return self.inner.sample(x, self.label(x) if y is None else y)

    def predict(self, x: Tensor, y: Optional[Tensor]) -> Tensor:
        """``y``, or where not given the most probable class under q(y | x)."""
        return self.vae.label_posterior(x).probs.argmax(-1) if y is None else y

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The inner guide's location given y (the predicted class where y is not given)."""
        return self.inner._location(x, self.predict(x, y))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Reconstructions through z = :meth:`location` and the label (the predicted class
        where ``y`` is not given)."""
        x = self.check_x(x)
        y = self.predict(x, self.check_y(y, len(x)))
        return self.vae.decode(self.inner._location(x, y), y)

    def local_parameters(self) -> List[nn.Parameter]:
        return self.inner.local_parameters()

    def extra_repr(self) -> str:
        return f"inner={type(self.inner).__name__}"
