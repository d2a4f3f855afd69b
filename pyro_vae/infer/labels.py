"""Training and judging a model that learns from labels: the loss of one step, the
mini-batches it draws, and the classifier's accuracy.

**One step.** A conditional VAE sees every image with its label: a step is one labelled
mini-batch, and its loss the ELBO of p(x | y). The semi-supervised VAE (M2 of Kingma et al.
2014, arXiv:1406.5298) is trained on N_l labelled and N_u unlabelled images of the training
split: every step draws a mini-batch of B unlabelled images *and* one of min(B, N_l)
labelled ones (the labelled subset reshuffled and cycled as often as needed; an epoch is one
pass over the unlabelled images), and its loss is an unbiased estimate of −J^α
(:mod:`pyro_vae.models.ssvae`), three Pyro programs with their plates scaled to their own
populations:

    −J^α ≈ −(N_u / B_u) Σ_unlabelled U(x)                  TraceEnum_ELBO, y enumerated
           −(N_l / B_l) Σ_labelled L(x, y)                 the same ELBO, y observed
           −(N_l / B_l) Σ_labelled (α / N_l) log q(y | x)  Trace_ELBO of the classifier's program

:class:`LabelledLoss` is that sum as one ``nn.Module`` (one forward, so that
``DistributedDataParallel`` wraps it as it wraps the ``ELBOModule``); in a process group each
rank takes its shard of both mini-batches and weights each part by R · b_r / B as the
engine does for one (:mod:`pyro_vae.infer.trainer`). :func:`labelled_steps` draws the parts.

**The classifier against the model.** q(y | x) is the semi-supervised VAE's amortized guess
of the label; the model's own answer is the exact posterior of the discrete latent,

    p(y | x) = p(y) p(x | y) / Σ_y' p(y') p(x | y'),

whose terms :func:`label_posterior` estimates by IWAE-k for each class (z ~ q(z | x, y)):
what the classifier loses against it is the discrete latent's inference gap.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..contract import Model
from ..data import ImageDataset
from ..labels import split_labelled
from . import distributed
from .context import frozen, isolated
from .elbo import SyncFreeTrace_ELBO
from .evaluate import per_image

#: One part of a step: images, their labels (``None``: unlabelled), the size of the
#: population they were drawn from, and the part's weight in this rank's loss.
Part = Tuple[Tensor, Optional[Tensor], int, float]


def _no_guide(*args: Any, **kwargs: Any) -> None:
    """The empty guide of the classification term (it has no latent site)."""


class LabelledLoss(nn.Module):
    """The loss of one step of a model that learns from labels (see the module docstring).

    Args:
        elbo: the Pyro ELBO of the model (``make_elbo``: ``TraceEnum_ELBO`` for the
            semi-supervised VAE).
        model: the model.
        guide: its guide.
        alpha: α of the classification term (the semi-supervised VAE; ``None``: none).
        num_labelled: N_l, the labelled images of the training split (α / N_l per image).
        labelled_weight: λ, the weight of the labelled images' ELBO (1: J^α).
    """

    def __init__(self, elbo: Any, model: Model, guide: nn.Module, alpha: Optional[float] = None,
                 num_labelled: int = 1, labelled_weight: float = 1.0) -> None:
        super().__init__()
        #: Pyro's ELBOModule of model and guide (its parameters are theirs)
        self.elbo = elbo(model, guide)
        self.classification = SyncFreeTrace_ELBO(max_plate_nesting=1) if alpha else None
        self.scale = (alpha or 0.0) / max(1, num_labelled)
        self.labelled_weight = labelled_weight

    def forward(self, parts: Sequence[Part], kl_scale: float = 1.0) -> Tuple[Tensor, Tensor]:
        """``(Σ weight · loss, Σ loss)`` over the parts: what to differentiate on this rank,
        and the step's estimate of −J^α of the whole training split (detached)."""
        weighted, total = 0.0, 0.0
        for x, y, num_data, weight in parts:
            loss = self.elbo(x, num_data=num_data, kl_scale=kl_scale, **({} if y is None else {"y": y}))
            if y is not None and self.labelled_weight != 1.0:
                loss = self.labelled_weight * loss
            if y is not None and self.classification is not None:
                loss = loss + self.classification.differentiable_loss(
                    self.elbo.model.classifier_model, _no_guide, x, y, num_data=num_data, scale=self.scale)
            weighted = weighted + weight * loss
            total = total + loss.detach()
        return weighted, total


def _cycle(data: ImageDataset, indices: Tensor, batch_size: int, generator: torch.Generator,
           dequantize: bool) -> Iterator[Tuple[Tensor, Tensor]]:
    """Labelled mini-batches of the training images ``indices``, reshuffled at every pass."""
    while True:
        yield from data.batches("train", batch_size, shuffle=True, dequantize=dequantize, generator=generator,
                                drop_last=True, indices=indices, labels=True)


def labelled_steps(data: ImageDataset, batch_size: int, generator: torch.Generator,
                   dequantize: bool) -> Iterator[Tuple[List[Part], int]]:
    """The parts of each step of one epoch and this rank's number of images: one pass over
    the unlabelled training images in mini-batches of ``batch_size``, each with a labelled
    mini-batch of min(``batch_size``, N_l); without unlabelled images (every label known),
    one pass over the labelled ones. Parts are this rank's shards, weighted R · b_r / B."""
    world = distributed.world()[1]
    labelled, unlabelled = split_labelled(data)
    n_l, n_u = len(labelled), len(unlabelled)
    if n_u == 0:
        steps = ((None, batch) for batch in data.batches("train", batch_size, shuffle=True, dequantize=dequantize,
                                                         generator=generator, labels=True))
    else:
        pairs = _cycle(data, labelled, min(batch_size, n_l), generator, dequantize)
        steps = ((batch, next(pairs)) for batch in data.batches("train", batch_size, shuffle=True,
                                                                dequantize=dequantize, generator=generator,
                                                                indices=unlabelled))
    for x_u, (x_l, y_l) in steps:
        parts: List[Part] = []
        for x, y, population in ((x_u, None, n_u), (x_l, y_l, n_l)):
            if x is None or len(x) < world:  # a shard would be empty
                continue
            shard = distributed.shard(x)
            parts.append((shard, None if y is None else distributed.shard(y), population,
                          world * len(shard) / len(x)))
        if parts:
            yield parts, sum(len(p[0]) for p in parts)


# ---------------------------------------------------------------------- the classifier
@torch.no_grad()
def predict(model: Model, x: Tensor, batch_size: int = 500) -> Tensor:
    """The most probable class under q(y | x) of each image, (B,) (a model with a
    classifier: ``model.label_is_latent``)."""
    with frozen(model):
        return torch.cat([model.classify(x[i : i + batch_size]).probs.argmax(-1)
                          for i in range(0, len(x), batch_size)])


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts (C, C): row = the true class, column = the predicted one."""
    index = labels.long().cpu() * num_classes + predicted.long().cpu()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification(model: Model, x: Tensor, labels: Tensor) -> Dict[str, Any]:
    """The accuracy of q(y | x) on the images ``x`` of true classes ``labels``, and its
    confusion matrix (``confusion[i][j]``: images of class i predicted as j)."""
    model.check_y(labels, len(labels), values=True)  # data of another label set: one clear error
    confusion = confusion_matrix(predict(model, x), labels, model.num_classes)
    correct = int(confusion.diagonal().sum())
    return {"accuracy": correct / max(1, len(labels)), "confusion": confusion.tolist(),
            "num_classes": model.num_classes}



@torch.no_grad()
def label_posterior(model: Model, guide: nn.Module, x: Tensor, num_samples: int = 5000,
                    seed: int = 0) -> Dict[str, Tensor]:
    """q(y | x) against the model's posterior p(y | x) ∝ p(y) p(x | y) for each image, log
    p(x | y) of every class estimated by IWAE-k (k = ``num_samples``; see the module
    docstring).

    Returns:
        ``q`` and ``p`` (B, C) probabilities; ``log_px_y`` (B, C), the IWAE estimates of
        log p(x | y); ``log_px`` (B,), of log p(x) = log Σ_y p(y) p(x | y); and ``kl_p_q``
        (B,), KL(p(y | x) ‖ q(y | x)) in nats.
    """
    x = model.check_x(x, values=True)
    with frozen(model, guide), isolated(x, seed):
        q = model.label_posterior(x).probs.double()
        joint = torch.stack([per_image(model, guide, x, num_samples,
                                       y=torch.full((len(x),), c, dtype=torch.long, device=x.device))["iwae"]
                             for c in range(model.num_classes)], dim=-1)  # log p(y) + log p(x | y)
    log_prior = model.label_logits.double().log_softmax(-1)
    log_px = torch.logsumexp(joint, dim=-1)
    log_p = joint - log_px.unsqueeze(-1)
    tiny = torch.finfo(torch.float64).tiny
    kl = (log_p.exp() * (log_p - q.clamp_min(tiny).log())).sum(-1)
    return {"q": q, "p": log_p.exp(), "log_px_y": joint - log_prior, "log_px": log_px, "kl_p_q": kl}
