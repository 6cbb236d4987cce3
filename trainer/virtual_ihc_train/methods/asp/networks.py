"""ASP's training-only networks: CUT's patch sampler F and the anti-aliased, spectral-norm PatchGAN.

Written from CUT's ``networks.py`` (``PatchSampleF``, ``Normalize``, ``NLayerDiscriminator``, ``init_weights``)
as ASP's MIST launcher configures them (``netF=mlp_sample``, ``netF_nc=256``, ``netD=n_layers``,
``n_layers_D=5``, ``ndf=32``, ``normD=instance``, ``weight_norm=spectral``, ``init_type=xavier``, gain 0.02).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from napari_virtual_ihc.models.asp import BlurDownsample


def l2_normalize(x: Tensor) -> Tensor:
    """CUT's ``Normalize(2)`` as ASP patched it: ``x / ((x + 1e-7) ** 2).sum(1) ** 0.5`` (no sqrt of 0)."""
    norm = (x + 1e-7).pow(2).sum(1, keepdim=True).pow(0.5)
    return x.div(norm)


class PatchSampleF(nn.Module):
    """Per NCE layer an MLP ``C -> nc -> ReLU -> nc``, applied to ``num_patches`` random positions, then L2.

    The MLPs are made by :meth:`create_mlp` from the layers' channel counts (CUT does it at the first
    forward; the method calls it right after building G so checkpoints always hold them).
    """

    def __init__(self, nc: int = 256, init_gain: float = 0.02) -> None:
        super().__init__()
        self.nc = nc
        self.init_gain = init_gain
        self.mlps = nn.ModuleList()

    def create_mlp(self, channels: list[int]) -> None:
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc)) for c in channels
        )
        xavier_init(self, self.init_gain)

    @staticmethod
    def sample_ids(feats: list[Tensor], num_patches: int, generator: torch.Generator) -> list[Tensor]:
        """Random distinct positions per layer (fewer when a layer has fewer than ``num_patches``)."""
        ids = []
        for f in feats:
            positions = f.shape[2] * f.shape[3]
            perm = torch.randperm(positions, generator=generator)
            ids.append(perm[: min(num_patches, positions)].to(f.device))
        return ids

    def forward(self, feats: list[Tensor], patch_ids: list[Tensor]) -> list[Tensor]:
        """``(B * n, nc)`` L2-normalised features at ``patch_ids`` (the same positions for every sample)."""
        if len(self.mlps) != len(feats):
            raise ValueError(f"F has {len(self.mlps)} MLPs for {len(feats)} feature layers")
        out = []
        for mlp, feat, ids in zip(self.mlps, feats, patch_ids, strict=True):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, C)
            sample = flat[:, ids, :].flatten(0, 1)
            out.append(l2_normalize(mlp(sample)))
        return out


class AspDiscriminator(nn.Module):
    """CUT's ``NLayerDiscriminator`` with blur-pool downsampling and spectral norm (unconditional: IHC only).

    ``enc``: stride-1 4x4 conv + LeakyReLU + blur-pool, ``n_layers - 1`` times conv + norm + LeakyReLU +
    blur-pool (channels ``ndf * min(2**n, 8)``), a stride-1 conv + norm + LeakyReLU; ``final_conv``: 1 channel.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 32, n_layers: int = 5, norm: str = "instance") -> None:
        super().__init__()
        from ...discriminators import norm_layer

        sn = nn.utils.spectral_norm
        use_bias = norm == "instance"
        kw, padw = 4, 1
        seq: list[nn.Module] = [
            sn(nn.Conv2d(input_nc, ndf, kw, 1, padw)),
            nn.LeakyReLU(0.2, True),
            BlurDownsample(ndf),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [
                sn(nn.Conv2d(ndf * prev, ndf * mult, kw, 1, padw, bias=use_bias)),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
                BlurDownsample(ndf * mult),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [
            sn(nn.Conv2d(ndf * prev, ndf * mult, kw, 1, padw, bias=use_bias)),
            norm_layer(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
        ]
        self.enc = nn.Sequential(*seq)
        self.final_conv = sn(nn.Conv2d(ndf * mult, 1, kw, 1, padw))

    def forward(self, x: Tensor) -> Tensor:
        return self.final_conv(self.enc(x))


def xavier_init(net: nn.Module, gain: float = 0.02) -> None:
    """CUT's ``init_weights(init_type='xavier')``: xavier-normal conv/linear weights, zero biases, BN N(1, gain).

    A spectral-norm conv's ``weight`` shares its storage with ``weight_orig`` until the first forward, so the
    reference's ``init.xavier_normal_(m.weight.data)`` initialises ``weight_orig``; so does this.
    """
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            assert isinstance(weight, torch.Tensor)
            nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.constant_(m.bias, 0.0)
