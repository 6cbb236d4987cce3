"""The AMMFI generator (Qu et al., "multi-magnification and attention-based" H&E -> IHC): ASP's ResNet-6 with
an attention-gated skip connection at each decoder level.

No public code exists; this follows the paper's section III-A/C and Fig. 1(b, c):

- a 3x3 first convolution (ASP: 7x7), then ASP's two anti-aliased encoder levels and 6 residual blocks
  (instance norm, spectral norm on every conv of that path, as ASP's MIST setting);
- at each decoder level the upsampled feature ``f_d`` and the encoder feature ``f_e`` of the same resolution
  meet in :class:`AMMFI` (eqs. 1-3): ``a = BN(Conv3x3(f_e))``, ``b = BN(Conv3x3(f_d))`` (C/2 channels each),
  ``f' = cat(a, b)``; CBAM channel attention then spatial attention; a one-channel gate
  ``alpha = sigmoid(Conv1x1(g))``; ``f_out = alpha * f_e``. The next decoder input is
  ``ReLU(IN(Conv3x3(cat(f_d, f_out))))``.

The encoder is one ``nn.Sequential`` laid out index for index like ASP's (``encoder.0`` pad, ``encoder.1``
conv, ... ``encoder.12..17`` residual blocks), so CUT's NCE layers ``0,4,8,12,16`` name the same places.
Channel attention pools over the whole image; it does so through :class:`GlobalPool2d`, which the tile
engine freezes to slide-level values (as it freezes InstanceNorm), so tiled staining stays seam-free.

The attention's BatchNorms are the model's only batch-norm layers. ASP's ``test.py`` (no ``--eval``) would run
them in train mode: each image normalised by its own statistics. The trainer's exports record that
(``bn_stats: slide``) and the run mode applies it to these layers (frozen per slide, as InstanceNorm);
``bn_stats: running`` runs them on their running statistics (eval mode) instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .asp import BlurDownsample, BlurUpsample, _SpectralResnetBlock, _weight_norm
from .norms import conv_bias_for, norm_factory
from .registry import register_generator

SKIP_LAYERS = (3, 7)  # encoder outputs at full and half resolution (after the first ReLU, after blur-pool 1)


class GlobalPool2d(nn.Module):
    """Per-channel mean (``"avg"``) or maximum (``"max"``) over the image: ``(B, C, H, W) -> (B, C, 1, 1)``.

    A class of its own so tiled inference can recognise and freeze it (one tile's pool is not the slide's).
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"GlobalPool2d mode must be 'avg' or 'max', not {mode!r}")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3), keepdim=True) if self.mode == "avg" else x.amax((2, 3), keepdim=True)


class ChannelAttention(nn.Module):
    """CBAM's M_c: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, shared MLP C -> C/r -> C (1x1 convs)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = GlobalPool2d("avg")
        self.max_pool = GlobalPool2d("max")
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """CBAM's M_s: ``sigmoid(Conv7x7(cat(mean_c(x), max_c(x))))``, one channel."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.conv(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)))


class AMMFI(nn.Module):
    """Attention-based multi-magnification feature interaction (eqs. 1-3): gates ``f_e`` by ``alpha``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        half = channels // 2
        self.enc_proj = nn.Sequential(
            nn.Conv2d(channels, half, 3, padding=1, bias=False), nn.BatchNorm2d(half)
        )
        self.dec_proj = nn.Sequential(
            nn.Conv2d(channels, half, 3, padding=1, bias=False), nn.BatchNorm2d(half)
        )
        self.channel = ChannelAttention(2 * half, reduction)
        self.spatial = SpatialAttention()
        self.gate = nn.Conv2d(2 * half, 1, 1)

    def gate_map(self, f_e: Tensor, f_d: Tensor) -> Tensor:
        """``alpha`` in (0, 1), one channel at the resolution of ``f_e``."""
        f = torch.cat((self.enc_proj(f_e), self.dec_proj(f_d)), 1)
        f = self.channel(f) * f
        g = self.spatial(f) * f
        return torch.sigmoid(self.gate(g))

    def forward(self, f_e: Tensor, f_d: Tensor) -> Tensor:
        return self.gate_map(f_e, f_d) * f_e


class DecoderLevel(nn.Module):
    """Upsample, fuse with the encoder feature through AMMFI, merge (children in forward order)."""

    def __init__(self, channels: int, norm: str, spectral: bool, reduction: int) -> None:
        super().__init__()
        out = channels // 2
        wn, nl, bias = _weight_norm(spectral), norm_factory(norm), conv_bias_for(norm)
        self.up = nn.Sequential(
            BlurUpsample(channels),
            wn(nn.Conv2d(channels, out, 3, padding=1, bias=bias)),
            nl(out),
            nn.ReLU(True),
        )
        self.fuse = AMMFI(out, reduction)
        self.merge = nn.Sequential(
            wn(nn.Conv2d(2 * out, out, 3, padding=1, bias=bias)), nl(out), nn.ReLU(True)
        )

    def forward(self, x: Tensor, f_e: Tensor) -> Tensor:
        f_d = self.up(x)
        return self.merge(torch.cat((f_d, self.fuse(f_e, f_d)), 1))


class AmmfiGenerator(nn.Module):
    """ASP ResNet-6 encoder/decoder with AMMFI-gated skips at 1/2 and full resolution; Tanh output."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        n_blocks: int = 6,
        spectral_norm: bool = True,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        wn, nl, bias = _weight_norm(spectral_norm), norm_factory(norm), conv_bias_for(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            wn(nn.Conv2d(input_nc, ngf, 3, padding=0, bias=bias)),
            nl(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            ch = ngf * 2**i
            layers += [
                wn(nn.Conv2d(ch, ch * 2, 3, stride=1, padding=1, bias=bias)),
                nl(ch * 2),
                nn.ReLU(True),
                BlurDownsample(ch * 2),
            ]
        layers += [
            _SpectralResnetBlock(ngf * 4, "reflect", norm, False, spectral_norm) for _ in range(n_blocks)
        ]
        self.encoder = nn.Sequential(*layers)
        self.decoder = nn.ModuleList(
            DecoderLevel(ngf * 2 ** (2 - i), norm, spectral_norm, reduction) for i in range(2)
        )
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3), wn(nn.Conv2d(ngf, output_nc, 7, padding=0)), nn.Tanh()
        )

    def encode(self, x: Tensor, layers: list[int]) -> list[Tensor]:
        """Outputs of the encoder layers ``layers`` (indices as in ASP's ``model``), stopping after the last."""
        feats, last = [], max(layers)
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in layers:
                feats.append(x)
            if i == last:
                break
        return feats

    def forward(self, x: Tensor) -> Tensor:
        skips: dict[int, Tensor] = {}
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in SKIP_LAYERS:
                skips[i] = x
        for level, skip in zip(self.decoder, (skips[SKIP_LAYERS[1]], skips[SKIP_LAYERS[0]]), strict=True):
            x = level(x, skip)
        return self.head(x)


@register_generator("ammfi_resnet")
def build_ammfi_resnet(
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "instance",
    n_blocks: int = 6,
    spectral_norm: bool = True,
    reduction: int = 16,
) -> AmmfiGenerator:
    return AmmfiGenerator(input_nc, output_nc, ngf, norm, n_blocks, spectral_norm, reduction)
