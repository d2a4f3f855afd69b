"""A conditional gated PixelCNN with vertical and horizontal stacks.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016, "Conditional Image
Generation with PixelCNN Decoders" (arXiv:1606.05328). The network maps an image x
(B, C, H, W) and a conditioning map s (B, S, H, W) to per-pixel likelihood parameters
(B, P, H, W) such that the parameters of pixel (r, c) depend only on the pixels before it in
raster order (rows above, and pixels to the left in the same row) and on s. Every channel of
a pixel is predicted together; the order between the channels of one pixel (R → G → B) is left
to the per-pixel likelihood (the discretized logistic mixture of PixelCNN++ conditions G on R
and B on R, G; Salimans et al. 2017, arXiv:1701.05517).

Masks are implemented by padding and cropping instead of masked kernels:

* the **vertical stack** convolves with a (k//2 + 1) × k kernel over rows r − k//2 … r, so its
  output at row r sees rows ≤ r;
* the **horizontal stack** convolves with a 1 × (k//2 + 1) kernel over columns c − k//2 … c
  of row r (type B), or c − k//2 − 1 … c − 1 in the first layer (type A: not the pixel itself);
* the vertical pre-activations reach the horizontal stack only after a **shift down by one
  row**, so the horizontal stack at row r sees rows < r through them: no blind spot;
* each layer's activation is the gate tanh(W_f ∗ x + V_f ∗ s) ⊙ σ(W_g ∗ x + V_g ∗ s), with the
  conditioning s entering every gate of both stacks through 1 × 1 convolutions.

The output at (r, c) is read from the horizontal stack only. Because the vertical stack at
row r needs only rows ≤ r − 1 to produce what the horizontal stack uses at row r, and the
horizontal stack at (r, c) needs only row r up to column c, sampling can reuse work:
:meth:`GatedPixelCNN.sample` computes the vertical stack once per row, on the window of rows
its receptive field covers, and the horizontal stack once per pixel on a window of one row.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _gate(a: Tensor) -> Tensor:
    """tanh(first half of the channels) ⊙ sigmoid(second half)."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


def _shift_down(x: Tensor) -> Tensor:
    """Row r of the result is row r − 1 of ``x`` (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2], :]


class GatedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack.

    Args:
        in_channels: channels of the stacks' inputs (image channels in the first layer).
        channels: F, channels of the stacks' outputs.
        kernel: k, odd kernel width.
        cond_channels: S, channels of the conditioning map.
        first: type-A layer (the horizontal stack excludes the current pixel; no residual).
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, cond_channels: int, first: bool):
        super().__init__()
        if kernel % 2 != 1 or kernel < 3:
            raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
        self.first = first
        self.half = kernel // 2
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.half + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.half + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1)  # V_v and V_h in one 1×1 conv

    def cond_maps(self, s: Tensor) -> Tuple[Tensor, Tensor]:
        """The conditioning terms (V_v ∗ s, V_h ∗ s), each (B, 2F, H, W)."""
        return self.cond(s).chunk(2, dim=1)

    def vertical(self, v: Tensor, cond_v: Tensor) -> Tuple[Tensor, Tensor]:
        """Vertical stack: returns (pre-activation (B, 2F, H, W), output (B, F, H, W))."""
        h = self.half
        pre = self.v_conv(F.pad(v, (h, h, h, 0)))
        return pre, _gate(pre + cond_v)

    def horizontal(self, x: Tensor, v_pre_above: Tensor, cond_h: Tensor) -> Tensor:
        """Horizontal stack, given the vertical pre-activations already shifted down a row."""
        if self.first:  # type A: columns c − k//2 − 1 … c − 1
            pre = self.h_conv(F.pad(x, (self.half + 1, 0)))[..., : x.shape[-1]]
        else:  # type B: columns c − k//2 … c
            pre = self.h_conv(F.pad(x, (self.half, 0)))
        out = self.h_out(_gate(pre + self.v_to_h(v_pre_above) + cond_h))
        return out if self.first else out + x


class GatedPixelCNN(nn.Module):
    """Conditional gated PixelCNN: (x, s) → per-pixel likelihood parameters.

    Args:
        in_channels: C, image channels.
        out_channels: P, likelihood parameters per pixel (e.g. 1 Bernoulli logit).
        cond_channels: S, channels of the conditioning map.
        channels: F, width of the stacks.
        layers: number of gated layers (≥ 1; the first is type A).
        kernel: odd kernel width k.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_channels: int,
        channels: int = 32,
        layers: int = 5,
        kernel: int = 5,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.layers = nn.ModuleList(
            GatedLayer(in_channels if i == 0 else channels, channels, kernel, cond_channels, first=i == 0)
            for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ELU(), nn.Conv2d(channels, channels, 1), nn.ELU(), nn.Conv2d(channels, out_channels, 1)
        )
        self.half = kernel // 2

    @property
    def receptive_rows(self) -> int:
        """Rows of input the vertical stack's output at one row depends on."""
        return len(self.layers) * self.half + 1

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        """Parameters (B, P, H, W) for images x (B, C, H, W) and conditioning s (B, S, H, W)."""
        v = h = x
        for layer in self.layers:
            cond_v, cond_h = layer.cond_maps(s)
            v_pre, v = layer.vertical(v, cond_v)
            h = layer.horizontal(h, _shift_down(v_pre), cond_h)
        return self.head(h)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        s: Tensor,
        x_shape: Sequence[int],
        draw: Callable[[Tensor], Tensor],
        cache: bool = True,
    ) -> Tensor:
        """Draw images pixel by pixel in raster order.

        Args:
            s: conditioning maps (B, S, H, W).
            x_shape: (C, H, W).
            draw: maps parameters (B, P, h, w) to a sample (B, C, h, w) of the per-pixel
                likelihood (all channels of each pixel, in their own order).
            cache: reuse work between steps (conditioning terms once; the vertical stack once
                per row on its receptive window; the horizontal stack on a window of one
                row). ``False`` reruns the whole network for every pixel (the reference the
                tests compare against).

        Returns:
            images (B, C, H, W).
        """
        c, height, width = x_shape
        batch = s.shape[0]
        x = s.new_zeros(batch, c, height, width)
        if not cache:
            for r in range(height):
                for col in range(width):
                    params = self(x, s)[:, :, r : r + 1, col : col + 1]
                    x[:, :, r, col] = draw(params)[:, :, 0, 0]
            return x

        conds = [layer.cond_maps(s) for layer in self.layers]  # computed once
        rows = self.receptive_rows
        cols = rows  # the horizontal stack's reach: half columns per layer (+1)
        for r in range(height):
            # Vertical stack on rows r − rows … r − 1 (already drawn): its pre-activations at
            # row r − 1, shifted down, are what every layer's horizontal stack uses at row r.
            v_above: List[Tensor] = []
            lo = max(0, r - rows)
            if r == 0:
                v_above = [x.new_zeros(batch, layer.v_conv.out_channels, 1, width) for layer in self.layers]
            else:
                v = x[:, :, lo:r, :]
                for layer, (cond_v, _) in zip(self.layers, conds):
                    v_pre, v = layer.vertical(v, cond_v[:, :, lo:r, :])
                    v_above.append(v_pre[:, :, -1:, :])
            for col in range(width):
                c0 = max(0, col - cols)
                h = x[:, :, r : r + 1, c0 : col + 1]
                for layer, (_, cond_h), va in zip(self.layers, conds, v_above):
                    h = layer.horizontal(h, va[..., c0 : col + 1], cond_h[:, :, r : r + 1, c0 : col + 1])
                params = self.head(h[..., -1:])
                x[:, :, r, col] = draw(params)[:, :, 0, 0]
        return x
