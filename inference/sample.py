"""``pyro-vae sample``: a grid of images drawn from a trained model — of one class, or one row
per class, for a model that takes labels (``--label K|all``) — or the path decoded between two
test images (``--interpolate I J``)."""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from pyro_vae.contract import Model
from pyro_vae.data_settings import ALL_LABELS
from pyro_vae.data import ImageDataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer.usage import posterior_means
from pyro_vae.priors import StandardNormalPrior

from .distributed import check_device
from .plots import save_grid
from .restore import load_data, load_run
from .settings import SampleOptions, check_indices


def labelled_samples(model: Model, classes: Iterable[int], per_class: int) -> Tensor:
    """``per_class`` images of each of ``classes`` from a model that takes labels, decoded
    from z ~ p(z) (p(z | y) for a conditional prior) with y the class: class after class."""
    device = next(model.parameters()).device
    y = torch.tensor(list(classes), device=device).repeat_interleave(per_class)
    return model.generate(len(y), y=y)


def sample_run(opts: SampleOptions) -> str:
    """Write a grid of ``opts.n`` images decoded from z ~ p(z) (for a flow model: samples at
    ``opts.temperature``, z ~ N(0, T² I); with ``opts.label``, of that class, or ``n`` of
    each class in a row) of the weights ``opts.checkpoint`` names to ``opts.out`` (default
    ``RUN_DIR/samples.png``); return the file's path."""
    opts.check_paths()
    model, _, _, _ = load_run(opts.run_dir, device=opts.device, checkpoint=opts.checkpoint)
    nrow = max(1, int(round(opts.n**0.5)))
    with torch.random.fork_rng():
        torch.manual_seed(opts.seed)
        if opts.label is None:
            images = model.generate(opts.n, opts.temperature)
        elif opts.label == ALL_LABELS:
            images, nrow = labelled_samples(model, range(model.num_classes), opts.n), opts.n
        else:
            images = labelled_samples(model, [int(opts.label)], opts.n)
    save_grid(images, opts.out, nrow=nrow)
    return opts.out


def interpolate(a: Tensor, b: Tensor, steps: int, spherical: bool) -> Tensor:
    """``steps`` points from ``a`` to ``b`` (vectors of one size), both included:
    spherical (slerp, White 2016, arXiv:1609.04468 — it keeps the norm that Gaussian codes
    concentrate at, where a straight line passes through the improbable centre) or linear.

    Example:
        >>> interpolate(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 3, spherical=True)
        tensor([[1.0000, 0.0000],
                [0.7071, 0.7071],
                [0.0000, 1.0000]])
    """
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).unsqueeze(-1)
    if spherical:
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if omega > 1e-4:  # (nearly) parallel codes: the straight line is the same path
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


@torch.no_grad()
def interpolate_run(opts: SampleOptions) -> str:
    """Decode the path between test images ``I, J = opts.interpolate``; write it as one row
    (image I, ``opts.steps`` decoded points, image J) to ``opts.out`` (default
    ``RUN_DIR/interpolation_I_J.png``) and return the file's path.

    A VAE goes from the posterior mean E_q[z | x_i] to E_q[z | x_j] (the guide's; sampled
    for a flow guide), spherically for the standard Normal prior and linearly for a learned
    one, and decodes each point (the mean of p(x | z); a draw for the pixel model). A
    density flow goes between its latents z = f(x), which are N(0, I) under the model, so
    spherically too, and inverts the flow exactly. A VAE that takes labels takes each image's
    (its test label; the semi-supervised VAE's classifier's guess where there is none) for
    its posterior mean, and decodes the first half of the path with image I's label, the
    second with image J's.
    """
    opts.check_paths()
    (i, j), steps, seed, run_dir, device = opts.interpolate, opts.steps, opts.seed, opts.run_dir, opts.device
    model, guide, config, _ = load_run(run_dir, device=device, checkpoint=opts.checkpoint)
    data = load_data(run_dir, config.data)
    n = data.num_examples("test")
    check_indices((i, j), n, "test", "interpolate")
    x = data.eval_data("test", dequantize=model.dequantize)[[i, j]].to(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if model.has_latent:
            y = image_labels(model, data, [i, j], x)
            z = posterior_means(model, guide, x, seed=seed, y=y)
            path = interpolate(z[0], z[1], steps, spherical=isinstance(model.prior, StandardNormalPrior))
            images = model.decode(path, None if y is None else y[(torch.arange(steps) >= steps / 2).long()])
        else:
            z = model.encode(x)
            path = interpolate(z[0].flatten(), z[1].flatten(), steps, spherical=True)
            images = model.decode(path.reshape(steps, *z.shape[1:])).clamp(0.0, 1.0)
    save_grid(torch.cat([x[:1], images, x[1:]]), opts.out, nrow=steps + 2)
    return opts.out


def image_labels(model: Model, data: ImageDataset, indices: List[int], x: Tensor) -> Optional[Tensor]:
    """The labels of test images ``indices`` (``x``) for a model that takes labels: a
    conditional VAE's are the data's, the semi-supervised VAE's its classifier's guess
    (``None`` for a model without labels)."""
    if model.num_classes is None:
        return None
    if model.label_is_latent:
        return model.classify(x).probs.argmax(-1)
    labels = data.labels("test")
    if labels is None:
        raise DataError(f"a conditional VAE needs the labels of the images, but {data.name} has none")
    return labels[torch.as_tensor(indices)].to(x.device)


def figure_samples(model: Model, n: int) -> Tuple[Tensor, int]:
    """About ``n`` samples to look at and their grid's row length: of a model that takes
    labels, a row for each class."""
    if model.num_classes is None:
        return model.generate(n), 8
    per_class = max(1, n // model.num_classes)
    return labelled_samples(model, range(model.num_classes), per_class), per_class


def main(opts: SampleOptions, _: Any = None) -> int:
    """``pyro-vae sample``."""
    check_device(opts.device)
    print(f"wrote {interpolate_run(opts) if opts.interpolate is not None else sample_run(opts)}")
    return 0
