"""Network blocks: sizes derived from the input for every size, residual blocks start as the
identity, leading dimensions and evaluation chunks."""

import pytest
import torch
from torch import nn

from pyro_vae import build_vae
from pyro_vae.nets import Batched, ResBlock
from pyro_vae.nets.conv import DownConv, UpConv


@pytest.mark.parametrize("height", range(1, 20))
def test_up_conv_inverts_down_conv_for_every_size(height):
    width = 2 * height + 3  # a different parity on the other side
    x = torch.randn(2, 3, height, width)
    down = DownConv(3, 4)(x)
    up = UpConv(4, 3, down.shape[-2:], (height, width))(down)
    assert up.shape == x.shape


def test_up_conv_refuses_unreachable_sizes():
    with pytest.raises(ValueError, match="cannot map"):
        UpConv(4, 3, (4, 4), (10, 8))


def test_residual_blocks_start_as_the_identity_and_learn():
    block = ResBlock(6)
    x = torch.randn(3, 6, 5, 5)
    assert torch.equal(block(x), x)  # the last conv of the branch is zero-initialised
    block(x).pow(2).sum().backward()
    last = block.branch[-1]
    assert last.weight.grad.abs().sum() > 0  # ... but it receives a gradient
    assert block.branch[1].weight.grad.abs().sum() == 0  # (only it, at the first step)


def test_resnet_depth_and_width_are_configurable():
    def count(vae):
        return sum(isinstance(m, ResBlock) for m in vae.modules())

    shallow = build_vae("resnet", x_shape=(1, 28, 28), z_dim=4, channels=[4, 8], blocks=1, hidden=8)
    deep = build_vae("resnet", x_shape=(1, 28, 28), z_dim=4, channels=[4, 8, 16], blocks=3, hidden=8)
    assert count(shallow) == 2 * 2 * 1  # encoder and decoder, 2 stages, 1 block each
    assert count(deep) == 2 * 3 * 3
    assert deep.encoder.trunk.shapes[-1] == (16, 4, 4)  # 28 → 14 → 7 → 4
    assert build_vae("resnet", x_shape=(1, 28, 28), blocks=0).generate(2).shape == (2, 1, 28, 28)


def test_batched_restores_leading_dims_and_chunks_without_gradients():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ELU())
    net = Batched(conv, event_dims=3, max_rows=4)
    x = torch.randn(3, 5, 2, 6, 6)
    out = net(x)  # gradients on: one pass
    assert out.shape == (3, 5, 3, 6, 6)
    assert torch.allclose(out[1, 2], conv(x[1, 2 : 3])[0], atol=1e-6)
    with torch.no_grad():  # 15 rows in chunks of 4
        assert torch.allclose(net(x), out, atol=1e-6)
    assert net(torch.randn(2, 6, 6)).shape == (3, 6, 6)  # no leading dims at all
