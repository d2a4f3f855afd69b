import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_vae.infer.optim import FusedClippedAdam
from pyro_vae import build_vae


def test_fused_clipped_adam_follows_pyro_clipped_adam():
    """Same algorithm, one optimizer: the parameter trajectories agree to float precision."""
    x = torch.bernoulli(torch.full((16, 1, 28, 28), 0.3))
    trajectories = []
    for optim_factory in (
        lambda vae: ClippedAdam({"lr": 1e-2, "clip_norm": 5.0}),
        lambda vae: FusedClippedAdam({"lr": 1e-2, "clip_norm": 5.0}, params=list(vae.parameters())),
    ):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=3, hidden=(16,))
        svi = SVI(vae.model, vae.guide, optim_factory(vae), Trace_ELBO())
        torch.manual_seed(1)
        for _ in range(5):
            svi.step(x)
        trajectories.append([p.detach().clone() for p in vae.parameters()])
    for a, b in zip(*trajectories):
        assert torch.allclose(a, b, atol=1e-6)


def test_fused_state_round_trip_and_late_parameters():
    w = torch.nn.Parameter(torch.ones(3))
    v = torch.nn.Parameter(torch.ones(2))
    opt = FusedClippedAdam({"lr": 0.1}, params=[w])
    w.grad = torch.ones(3)
    opt([w])
    v.grad = torch.ones(2)
    opt([w, v])  # a parameter seen for the first time joins as a new group
    assert len(opt.optimizer.param_groups) == 2 and bool((v < 1).all())
    state = opt.state_dict()
    clone = FusedClippedAdam({"lr": 0.1}, params=[w])
    clone._add([v])
    clone.load_state_dict(state)
    assert clone.state_dict()["state"][0]["step"] == state["state"][0]["step"]
