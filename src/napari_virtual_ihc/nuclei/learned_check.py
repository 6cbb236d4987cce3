"""A small learned per-candidate check for the blob detector: is this candidate a nucleus?

The hand rules of :func:`blobs.not_a_nucleus` read one number per signal (mean OD, area, solidity, colour).
This check sees a patch around each candidate instead: the stain's optical densities and the candidate's mask,
resampled to a fixed grid in units of the expected nucleus diameter (so it reads every µm/px alike), and
normalised by the slide's nuclear-class OD (so it reads every white point and stain strength alike). A
convolutional network of a few thousand weights scores it; candidates below the saved threshold are dropped.

The weights ship in the package (``nucleus_check.pt``, a plain state dict read with
``torch.load(weights_only=True)``, no code executed); they were trained on the TUNE half of the validation set
only, by ``benchmarks/learned_nucleus_check.py`` (fixed seed, reproducible). Inference is deterministic.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    import torch

WEIGHTS = Path(__file__).with_name("nucleus_check.pt")
PATCH = 20  # grid points across a patch
SPAN = 2.0  # a patch spans this many expected nucleus diameters (the candidate and its neighbours)
# input channels: signal, hematoxylin, second stain (nuclear DAB, or eosin on H&E; 0 if neither), each / the
# nuclear-class OD; the candidate's mask; the other candidates' masks; the candidate's area / the expected
# nucleus area; 1 on nuclear-DAB IHC, else 0
CHANNELS = 7
WIDTH = (8, 16, 16)  # convolution widths


class NucleusCheckUnavailable(RuntimeError):
    """The learned check's weights are missing or unreadable."""


def network() -> torch.nn.Sequential:
    """The check's network: three 3x3 convolutions (two 2x2 poolings), global mean, two linear layers."""
    from torch import nn

    a, b, c = WIDTH
    return nn.Sequential(
        nn.Conv2d(CHANNELS, a, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(a, b, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(b, c, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, 16),
        nn.ReLU(),
        nn.Linear(16, 1),
    )


def candidate_patches(
    labels: np.ndarray,
    signal: np.ndarray,
    hematoxylin_od: np.ndarray,
    second_od: np.ndarray | None,
    nuclear_class_od: float,
    diameter_px: float,
    nuclear_dab: bool,
) -> np.ndarray:
    """(n, CHANNELS, PATCH, PATCH) float32 inputs of labels 1..n, centred on each candidate's centre of mass.
    ``second_od``: the DAB OD where DAB is nuclear, the eosin OD (the deconvolution's second channel) on H&E,
    None otherwise (zeros)."""
    n = int(labels.max())
    out = np.zeros((n, CHANNELS, PATCH, PATCH), np.float32)
    if n == 0:
        return out
    ids = np.arange(1, n + 1)
    centres = np.asarray(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2)
    step = SPAN * diameter_px / PATCH
    offsets = (np.arange(PATCH) + 0.5 - PATCH / 2) * step
    ys = centres[:, 0, None, None] + offsets[None, :, None] + 0 * offsets[None, None, :]
    xs = centres[:, 1, None, None] + 0 * offsets[None, :, None] + offsets[None, None, :]
    coords = np.stack([ys.ravel(), xs.ravel()])
    scale = 1.0 / max(nuclear_class_od, 1e-3)
    for k, channel in enumerate((signal, hematoxylin_od, second_od)):
        if channel is not None:
            sampled = ndi.map_coordinates(channel.astype(np.float32), coords, order=1, mode="nearest")
            out[:, k] = sampled.reshape(n, PATCH, PATCH) * scale
    owner = ndi.map_coordinates(labels, coords, order=0, mode="constant", cval=0).reshape(n, PATCH, PATCH)
    out[:, 3] = owner == ids[:, None, None]
    out[:, 4] = (owner > 0) & (owner != ids[:, None, None])
    area = ndi.sum_labels(np.ones(labels.shape, np.float32), labels, ids)
    out[:, 5] = (area / (np.pi * (diameter_px / 2) ** 2))[:, None, None]
    out[:, 6] = float(nuclear_dab)
    return out


@cache
def load_check(path: Path = WEIGHTS) -> tuple[torch.nn.Sequential, float]:
    """The trained network (eval mode) and its threshold, from ``path`` (the package's weights by default)."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = network()
        net.load_state_dict(saved["state"])
        threshold = float(saved["threshold"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise NucleusCheckUnavailable(
            f"the learned nucleus check's weights at {path} are missing or unreadable ({e}); reinstall "
            "napari-virtual-ihc, or use the hand rules (check='rules')"
        ) from e
    return net.eval(), threshold


def nucleus_probability(patches: np.ndarray, path: Path = WEIGHTS) -> np.ndarray:
    """(n,) probability that each candidate (:func:`candidate_patches`) is a nucleus."""
    import torch

    net, _ = load_check(path)
    if not len(patches):
        return np.zeros(0, np.float32)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(patches)))
    return torch.sigmoid(logits[:, 0]).numpy()


def learned_not_a_nucleus(patches: np.ndarray, path: Path = WEIGHTS) -> np.ndarray:
    """(n,) bool: candidates the learned check scores below its threshold."""
    _, threshold = load_check(path)
    return nucleus_probability(patches, path) < threshold
