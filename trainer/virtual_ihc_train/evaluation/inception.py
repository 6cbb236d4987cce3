"""Inception-v3 pool features for FID/KID, loaded from a local weights file (no download, no torchvision).

The module tree and parameter names are those of torchvision's ``Inception3`` / pytorch-fid's
``FIDInceptionA/C/E``, so either file loads as is:

- ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid; the TensorFlow FID graph's weights; the FID
  convention: average pools exclude padding, the last block max-pools);
- ``inception_v3_google-0cc3c7bd.pth`` (torchvision; its own pooling; close to, not identical with, FID).

Input: uint8 RGB images; they are resized to 299x299 (bilinear) and scaled to [-1, 1] as pytorch-fid does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCHVISION_FILE = "inception_v3_google-0cc3c7bd.pth"


class MissingWeightsError(FileNotFoundError):
    """A metric needs pretrained weights that are not on this machine; the message says which file and where."""


def weights_dirs() -> list[Path]:
    """Where weight files are looked for, in order."""
    dirs = []
    if os.environ.get("VIRTUAL_IHC_WEIGHTS"):
        dirs.append(Path(os.environ["VIRTUAL_IHC_WEIGHTS"]))
    dirs.append(Path.home() / ".cache" / "virtual_ihc" / "weights")
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    dirs.append(torch_home / "hub" / "checkpoints")
    return dirs


def find_weights(
    explicit: str | Path | None, filenames: list[str], what: str, flag: str, url_hint: str
) -> Path:
    """The explicit path if given (must exist), else the first of ``filenames`` in ``weights_dirs()``."""
    if explicit:
        p = Path(explicit)
        if p.is_file():
            return p
        raise MissingWeightsError(f"{what}: {p} does not exist")
    for d in weights_dirs():
        for name in filenames:
            if (d / name).is_file():
                return d / name
    default = Path.home() / ".cache" / "virtual_ihc" / "weights"
    raise MissingWeightsError(
        f"{what} needs the weights file {' or '.join(filenames)}, which is not on this machine. "
        f"Download it ({url_hint}) and put it in {default} (or in $VIRTUAL_IHC_WEIGHTS, or in "
        f"~/.cache/torch/hub/checkpoints), or pass {flag} PATH. To skip this metric, leave it out of --metrics."
    )


def describe_weights(files: list[Path]) -> str:
    """The weights files a figure came from, as the report names them: path and SHA-256 of each."""
    parts = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        parts.append(f"{f} (sha256 {h.hexdigest()})")
    return ", ".join(parts)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg(x: torch.Tensor, fid: bool) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not fid)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg(x, self.fid))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg(x, self.fid))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool  # "avg_fid" (FID Mixed_7b), "max" (FID Mixed_7c), "avg" (torchvision)
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            bp = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            bp = _avg(x, self.pool == "avg_fid")
        return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)


class InceptionPool3(nn.Module):
    """Inception-v3 up to the 2048-d average pool (the FID/KID feature)."""

    def __init__(self, fid_variant: bool = True) -> None:
        super().__init__()
        f = fid_variant
        self.fid_variant = fid_variant
        self.weights_files: list[Path] = []  # what the loader read (the report names them)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32, f)
        self.Mixed_5c = InceptionA(256, 64, f)
        self.Mixed_5d = InceptionA(288, 64, f)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, f)
        self.Mixed_6c = InceptionC(768, 160, f)
        self.Mixed_6d = InceptionC(768, 160, f)
        self.Mixed_6e = InceptionC(768, 192, f)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_fid" if f else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if f else "avg")

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 2048) float features."""
        x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionPool3:
    """Inception pool features from the pytorch-fid or torchvision file (``weights_only`` load, strict on
    every feature layer; the classifier and auxiliary head in the file are ignored)."""
    p = find_weights(
        path,
        [PYTORCH_FID_FILE, TORCHVISION_FILE],
        "FID/KID (Inception-v3)",
        "--inception",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE,
    )
    sd = torch.load(p, map_location="cpu", weights_only=True)
    fid_variant = "fc.weight" in sd and sd["fc.weight"].shape[0] == 1008
    net = InceptionPool3(fid_variant=fid_variant)
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise MissingWeightsError(f"{p} is not an Inception-v3 state dict (missing {missing[:3]}...)")
    net.load_state_dict({k: sd[k] for k in wanted}, strict=True)
    net.weights_files = [p]
    return net.eval().to(device)
