"""Pyro's ClippedAdam as one torch optimizer over all parameters, and with decoupled weight
decay (:class:`ClippedAdamW`, the optimizer of the training engine).

``pyro.optim.ClippedAdam`` wraps :class:`pyro.optim.clipped_adam.ClippedAdam` in a
:class:`~pyro.optim.PyroOptim` that builds *one torch optimizer per parameter tensor*; on
every step Pyro then loops over the tensors in Python, and ``SVI.step`` refills every
gradient with a fresh ``zeros_like`` so that the next backward pass has to add into it. For
a dense VAE at batch 128 these two cost several percent of a step
(``benchmarks/svi_overhead.py``). :class:`FusedClippedAdam` runs the very same algorithm
(elementwise clipping, per-step learning-rate decay) as a single torch optimizer and
releases gradients after the step (``set_to_none``), so SVI's ``zero_grads`` has nothing
to refill and backward writes instead of accumulating.

Pyro has no such optimizer; it is written here as a ``PyroOptim`` so that ``SVI`` accepts it.

Pyro's ClippedAdam has only a *coupled* weight decay (λθ added to the gradient, an L2
penalty that Adam's per-coordinate scaling then distorts); :class:`ClippedAdamW` adds the
decoupled one of AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) to Pyro's algorithm,
as ``torch.optim.AdamW`` adds it to Adam. torch has no clipped Adam to start from, hence a
subclass of Pyro's rather than of torch's AdamW.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import pyro
import torch
from pyro.optim import PyroOptim
from pyro.optim.clipped_adam import ClippedAdam as _TorchClippedAdam


class ClippedAdamW(_TorchClippedAdam):
    r"""Pyro's ClippedAdam algorithm with decoupled weight decay, as AdamW.

    Before each Adam step every parameter with a gradient shrinks by the factor
    1 − lr·λ, exactly as ``torch.optim.AdamW`` does (``param.mul_(1 - lr * weight_decay)``,
    with the step's learning rate); the Adam step that follows is Pyro's (elementwise
    clipping, per-step decay ``lrd``). With λ = 0 it is Pyro's ClippedAdam, bit for bit.

    Args:
        params: parameters or parameter groups.
        lr, betas, eps, clip_norm, lrd: as :class:`pyro.optim.clipped_adam.ClippedAdam`
            (its coupled ``weight_decay`` is not offered: one kind of decay at a time).
        weight_decay: λ ≥ 0, the decoupled weight decay.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = ClippedAdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = torch.zeros(2)
        >>> opt.step()
        >>> w.data  # shrunk by 1 − 0.1 · 0.5 (a zero gradient moves nothing else)
        tensor([0.9500, 0.9500])
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float = 10.0, lrd: float = 1.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0, clip_norm=clip_norm, lrd=lrd)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = float(weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # as AdamW: the closure sees the parameters before the step
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            decay = group.get("decoupled_weight_decay", 0.0)
            if decay:
                factor = 1 - group["lr"] * group["lrd"] * decay  # the rate this step uses
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, factor)
        super().step()
        return loss


class FusedClippedAdam(PyroOptim):
    """ClippedAdam over all parameters in one optimizer, for ``pyro.infer.SVI``.

    Args:
        optim_args: arguments of :class:`pyro.optim.clipped_adam.ClippedAdam`
            (``lr``, ``betas``, ``eps``, ``weight_decay``, ``clip_norm``, ``lrd``).
        params: parameters to optimize, in a fixed order (so that ``state_dict`` can be
            restored). Parameters that SVI reports later are appended as a new group,
            ordered by their param-store names.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = FusedClippedAdam({"lr": 0.1}, params=[w])
        >>> w.grad = torch.ones(3)
        >>> opt([w])
        >>> bool((w < 0).all()), w.grad is None
        (True, True)
    """

    def __init__(self, optim_args: Dict[str, Any], params: Optional[Iterable[torch.Tensor]] = None):
        super().__init__(_TorchClippedAdam, dict(optim_args))
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._known: set = set()
        if params is not None:
            self._add(list(params))

    def _add(self, params: List[torch.Tensor]) -> None:
        params = [p for p in params if p not in self._known]
        if not params:
            return
        self._known.update(params)
        if self.optimizer is None:
            self.optimizer = _TorchClippedAdam(params, **self.pt_optim_args)
        else:
            self.optimizer.add_param_group({"params": params})

    def __call__(self, params: Iterable[torch.Tensor], *args, **kwargs) -> None:
        params = list(params)
        new = [p for p in params if p not in self._known]
        if new:
            store = pyro.get_param_store()
            names = {}
            for p in new:
                try:
                    names[p] = store.param_name(p)
                except KeyError:  # not in the store: keep the order given
                    names[p] = ""
            self._add(sorted(new, key=lambda p: names[p]))
        if self.optimizer is None:
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        """Current learning rate of the first group."""
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float(
            self.pt_optim_args.get("lr", 1e-3)
        )

    def state_dict(self) -> Dict[str, Any]:
        """The torch optimizer's state (restorable when built with the same ``params``)."""
        return {} if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            if self.optimizer is None:
                raise RuntimeError("build FusedClippedAdam with params= before loading its state")
            self.optimizer.load_state_dict(state)

    # PyroOptim's name-keyed state API, so that pyro's save/load helpers work too.
    def get_state(self) -> Dict:
        return {"fused": self.state_dict()}

    def set_state(self, state_dict: Dict) -> None:
        self.load_state_dict(state_dict.get("fused", {}))
