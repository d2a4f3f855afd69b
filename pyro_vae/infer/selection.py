"""Honest model selection during training: the best epoch on the validation split, early
stopping, and an exponential moving average of the weights.

* :class:`EarlyStopping` follows the validation ELBO epoch by epoch, remembers the best
  epoch and says when ``patience`` epochs have passed without an improvement (the rule of the
  VampPrior's and the IWAE paper's reference code, and of pythae's best-model selection).
* :class:`WeightAverage` keeps θ̄ ← β θ̄ + (1 − β) θ after every optimizer step (the
  average of ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(β)``: the
  first update copies θ; here one fused ``_foreach_lerp_`` over lists gathered once), the
  weights that NVAE and VDVAE evaluate. The average is a copy of the
  model and its guide, so it is validated, saved and evaluated like them.

Both are part of a :class:`~pyro_vae.infer.trainer.Trainer`'s state, so a resumed run
selects and averages exactly as one that never stopped.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


class EarlyStopping:
    """The best validation value so far, its epoch, and whether to stop.

    Args:
        patience: stop once this many epochs have passed since the best one (``None``:
            never stop; the best epoch is still followed).

    Example:
        >>> stop = EarlyStopping(patience=2)
        >>> [stop.update(epoch, v) for epoch, v in enumerate([-3.0, -2.0, -2.5, -2.0], 1)]
        [True, True, False, False]
        >>> stop.best_epoch, stop.stopped
        (2, True)
    """

    def __init__(self, patience: Optional[int] = None) -> None:
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = 0  # 0: no epoch validated yet
        self.epoch = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record the validation value (higher is better) of 1-based ``epoch``; return
        whether it is a new best (a tie is not)."""
        self.epoch = epoch
        if value > self.best:
            self.best, self.best_epoch = float(value), epoch
            return True
        return False

    @property
    def stale(self) -> int:
        """Epochs since the best one."""
        return self.epoch - self.best_epoch

    @property
    def stopped(self) -> bool:
        """Whether ``patience`` epochs have passed without an improvement."""
        return self.patience is not None and self.best_epoch > 0 and self.stale >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "epoch": self.epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.epoch = int(state["epoch"])


class WeightAverage:
    """An exponential moving average of the parameters of a model and its guide.

    Only parameters are averaged; buffers (constants, ActNorm's "initialised" flag) are
    copied from the trained modules at every update, so the copy stays a valid model.

    Args:
        model: the model being trained.
        guide: its guide.
        decay: β in (0, 1).

    Attributes:
        model, guide: the averaged copies (validate and evaluate these).
    """

    def __init__(self, model: nn.Module, guide: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self._trained = nn.ModuleDict({"model": model, "guide": guide})
        # one deep copy of both: a guide that references its model keeps referencing the copy
        self._average = copy.deepcopy(self._trained)
        self.model: nn.Module = self._average["model"]
        self.guide: nn.Module = self._average["guide"]
        self._updates = 0
        self._pairs: Optional[Tuple[List[nn.Parameter], List[nn.Parameter], List[Tuple[Tensor, Tensor]]]] = None

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after an optimizer step of the trained modules: the
        first copies the weights, every later one is ``torch._foreach_lerp_`` by 1 − β —
        what ``AveragedModel.update_parameters`` with ``get_ema_multi_avg_fn`` computes, with
        the parameter lists gathered once and the count kept in Python (its per-call walk,
        grouping and tensor count cost about as much as the lerp itself on a small network,
        at every step)."""
        if self._pairs is None:
            # the Parameter objects themselves: `module.to(device)` keeps them (it swaps .data)
            self._pairs = (list(self._average.parameters()), list(self._trained.parameters()),
                           list(zip(self._average.buffers(), self._trained.buffers())))
        mine, theirs, buffers = self._pairs
        if self._updates == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)
        for mine_buffer, their_buffer in buffers:
            mine_buffer.copy_(their_buffer)
        self._updates += 1

    @property
    def updates(self) -> int:
        """Optimizer steps averaged so far."""
        return self._updates

    def state_dict(self) -> Dict[str, Any]:
        """The averaged model's and guide's ``state_dict`` s (as a checkpoint holds them) and
        the number of updates."""
        return {"model": self.model.state_dict(), "guide": self.guide.state_dict(),
                "n_averaged": torch.tensor(self._updates)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        self._updates = int(torch.as_tensor(state["n_averaged"]))

    def modules(self) -> Tuple[nn.Module, nn.Module]:
        return self.model, self.guide
