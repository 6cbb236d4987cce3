"""A small learned per-candidate check for the blob detector: is this candidate a nucleus?

The hand rules of :func:`blobs.not_a_nucleus` read one number per signal (mean OD, area, solidity, colour).
This check sees a patch around each candidate instead: the stain's optical densities and the candidate's mask,
resampled to a fixed grid in units of the expected nucleus diameter (so it reads every µm/px alike), and
normalised by the slide's nuclear-class OD (so it reads every white point and stain strength alike). A
convolutional network of a few thousand weights scores it; candidates below the saved threshold are dropped.

The weights ship in the package (``nucleus_check.pt``, a plain state dict read with
``torch.load(weights_only=True)``, no code executed); they were trained on the TUNE half of the validation set
only, by ``benchmarks/learned_nucleus_check.py`` (fixed seed, reproducible). Inference is deterministic.
It is not the default check (``segment_blobs(check="learned")`` asks for it): it beat the hand rules on the
tune half image-out, but lowered precision on the held half (docs/analysis.md "Nuclei on any stain").
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
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
    ids: np.ndarray | None = None,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """(n, CHANNELS, PATCH, PATCH) float32 inputs of labels ``ids`` (default 1..max), centred on each
    candidate's centre of mass (``centres``, (n, 2) y, x, if known). ``second_od``: the DAB OD where DAB is
    nuclear, the eosin OD (the deconvolution's second channel) on H&E, None otherwise (zeros)."""
    if ids is None:
        ids = np.arange(1, int(labels.max()) + 1)
    n = len(ids)
    out = np.zeros((n, CHANNELS, PATCH, PATCH), np.float32)
    if n == 0:
        return out
    if centres is None:
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


def judged(centres_yx: np.ndarray, shape: tuple[int, ...], diameter_px: float) -> np.ndarray:
    """(n,) bool: candidates whose patch lies inside the image (centre at least SPAN / 2 diameters from every
    edge). Outside it the patch is padded, unlike anything the network was trained to judge; a tile's halo
    keeps its core's candidates inside, so tiles and one pass agree."""
    reach = SPAN / 2 * diameter_px
    y, x = centres_yx[:, 0], centres_yx[:, 1]
    return (y >= reach) & (x >= reach) & (y <= shape[0] - 1 - reach) & (x <= shape[1] - 1 - reach)


@dataclass(frozen=True)
class LearnedCheck:
    """The trained networks (averaged) and how their probability decides, as chosen on the tune half:
    candidates are seeded down to ``floor`` x the nuclear-class OD and ``spacing`` radii apart (lower than the
    hand rules' floor and spacing, so faint nuclei of dense fields get a seed); every candidate must pass the
    hand rules and reach ``veto``; one seeded below the hand rules' floor must also reach ``gate``."""

    nets: tuple[torch.nn.Sequential, ...]
    floor: float
    spacing: float
    veto: float
    gate: float

    def probability(self, patches: np.ndarray) -> np.ndarray:
        """(n,) probability that each candidate (:func:`candidate_patches`) is a nucleus."""
        import torch

        if not len(patches):
            return np.zeros(0, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(patches, np.float32))
        with torch.inference_mode():
            p = torch.stack([torch.sigmoid(net(x)[:, 0]) for net in self.nets]).mean(0)
        return p.numpy()

    def keep(
        self, patches: np.ndarray, rules_keep: np.ndarray, above_floor: np.ndarray, inner: np.ndarray
    ) -> np.ndarray:
        """(n,) bool: candidates kept (``rules_keep``: the hand rules keep it; ``above_floor``: its seed
        reaches the hand rules' floor; ``inner``: its patch lies inside the image, :func:`judged`; the others
        are judged as without the network: hand rules and their floor)."""
        prob = self.probability(patches)
        learned = rules_keep & (prob >= self.veto) & (above_floor | (prob >= self.gate))
        return np.where(inner, learned, rules_keep & above_floor)

    def asked(self, rules_keep: np.ndarray, inner: np.ndarray) -> np.ndarray:
        """(n,) bool: the candidates whose decision reads the network (:meth:`keep`): the others are dropped by
        the hand rules or judged without it, so their patches need not be made."""
        return rules_keep & inner


@cache
def load_check(path: Path = WEIGHTS) -> LearnedCheck:
    """The trained check from ``path`` (the package's weights by default), networks in eval mode."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        nets = []
        for state in saved["nets"]:
            net = network()
            net.load_state_dict(state)
            nets.append(net.eval())
        check = LearnedCheck(
            tuple(nets),
            float(saved["floor"]),
            float(saved["spacing"]),
            float(saved["veto"]),
            float(saved["gate"]),
        )
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise NucleusCheckUnavailable(
            f"the learned nucleus check's weights at {path} are missing or unreadable ({e}); reinstall "
            "napari-virtual-ihc, or use the hand rules (check='rules')"
        ) from e
    if not nets:
        raise NucleusCheckUnavailable(f"the learned nucleus check's weights at {path} hold no network")
    return check
