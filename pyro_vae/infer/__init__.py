"""The algorithms of pyro-vae: training (:mod:`.trainer`, :mod:`.config`, :mod:`.elbo`,
:mod:`.optim`), honest evaluation (:mod:`.evaluate`), and posterior analysis — latent usage
(:mod:`.usage`), the NUTS reference with ArviZ (:mod:`.nuts`) and the inference gaps
(:mod:`.gaps`). Nothing here knows of run directories, checkpoints or the command line
(the application, :mod:`inference`).

The names below are imported on first use (PEP 562), so that :mod:`.config` — the settings
of the algorithms, without torch — can be imported without importing torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "Trainer": "trainer",
    "FreeBitsTrace_ELBO": "elbo",
    "FusedClippedAdam": "optim",
    "LogWeights": "evaluate",
    "bounds": "evaluate",
    "evaluate": "evaluate",
    "log_weights": "evaluate",
    "latent_usage": "usage",
    "NUTSConfig": "config",
    "nuts_posterior": "nuts",
    "LocalFitConfig": "config",
    "fit_local_guide": "gaps",
    "inference_gaps": "gaps",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
