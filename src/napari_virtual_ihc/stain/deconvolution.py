"""Colour deconvolution (Ruifrok & Johnston 2001): RGB -> optical density -> stain concentrations.

Optical density is in log10 units, OD = -log10(I / background), as QuPath reports it, so the DAB cut-offs
(0.2 / 0.4 / 0.6) mean the same thing here and in QuPath. ``skimage.color.rgb2hed`` uses natural logs
divided by ln(1e-6); its values equal ours divided by 6 (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# skimage.color.rgb_from_hed: haematoxylin, eosin, DAB (Ruifrok & Johnston).
HED_VECTORS: tuple[tuple[float, float, float], ...] = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)
# QuPath's "H-DAB" defaults.
QUPATH_HEMATOXYLIN = (0.651, 0.701, 0.290)
QUPATH_DAB = (0.269, 0.568, 0.778)


class StainVectorError(ValueError):
    """Stain vectors that cannot be inverted (zero, parallel or not RGB triples)."""


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n <= 0:
        raise StainVectorError(f"stain vector {v.tolist()} has no length")
    return v / n


@dataclass(frozen=True)
class StainMatrix:
    """Two or three stain OD vectors (RGB) plus the background intensity; rows normalised to unit length.

    With two stains the third is their normalised cross product (QuPath's residual), so any RGB pixel
    decomposes exactly.
    """

    names: tuple[str, ...]
    vectors: tuple[tuple[float, float, float], ...]
    background: tuple[float, float, float] = (255.0, 255.0, 255.0)
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.vectors) or len(self.vectors) not in (2, 3):
            raise StainVectorError("give 2 or 3 stain vectors, one name each")
        rows = []
        for v in self.vectors:
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (3,) or np.any(a < 0):
                raise StainVectorError(f"stain vector {v} must be 3 non-negative numbers (R, G, B OD)")
            rows.append(_unit(a))
        if len(rows) == 2:
            rows.append(_unit(np.cross(rows[0], rows[1])))
        m = np.stack(rows)
        if abs(np.linalg.det(m)) < 1e-6:
            raise StainVectorError("stain vectors are parallel: they cannot be separated")
        if any(b <= 0 for b in self.background):
            raise StainVectorError(f"background {self.background} must be positive")
        object.__setattr__(self, "_matrix", m)

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) unit stain vectors as rows (OD of one unit of each stain)."""
        return self._matrix.copy()

    @property
    def inverse(self) -> np.ndarray:
        return np.linalg.inv(self._matrix)


def hed_matrix() -> StainMatrix:
    return StainMatrix(("hematoxylin", "eosin", "dab"), HED_VECTORS)


def hdab_matrix(
    hematoxylin: tuple[float, float, float] = QUPATH_HEMATOXYLIN,
    dab: tuple[float, float, float] = QUPATH_DAB,
    background: tuple[float, float, float] = (255.0, 255.0, 255.0),
) -> StainMatrix:
    """QuPath-style H-DAB matrix; edit the vectors to match a lab's stains."""
    return StainMatrix(("hematoxylin", "dab"), (hematoxylin, dab), background)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image (h, w, 3), got shape {a.shape}")
    return a[..., :3]


def optical_density(
    rgb: np.ndarray, background: tuple[float, float, float] = (255.0, 255.0, 255.0)
) -> np.ndarray:
    """(h, w, 3) float32 OD = -log10(I / background), I clipped to >= 1 so black pixels stay finite."""
    a = _check_rgb(rgb).astype(np.float32)
    bg = np.asarray(background, dtype=np.float32)
    return np.maximum(-np.log10(np.maximum(a, 1.0) / bg), 0.0).astype(np.float32)


def deconvolve(rgb: np.ndarray, stains: StainMatrix | None = None) -> dict[str, np.ndarray]:
    """Per-stain OD maps (h, w) float32, clipped at 0; keys are the stain names (+ "residual" for 2 stains)."""
    s = stains if stains is not None else hdab_matrix()
    od = optical_density(rgb, s.background)
    conc = od.reshape(-1, 3) @ s.inverse.astype(np.float32)
    conc = np.maximum(conc, 0.0).reshape(od.shape)
    names = list(s.names) + (["residual"] if len(s.names) == 2 else [])
    return {n: np.ascontiguousarray(conc[..., i]) for i, n in enumerate(names)}


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) H, E, DAB OD (log10), like ``skimage.color.rgb2hed`` times 6."""
    d = deconvolve(rgb, hed_matrix())
    return np.stack([d["hematoxylin"], d["eosin"], d["dab"]], axis=-1)


def stain_only_rgb(
    conc: np.ndarray, vector: tuple[float, float, float], background: float = 255.0
) -> np.ndarray:
    """Re-colour one stain's OD map as RGB uint8 (what the slide would look like with that stain alone)."""
    v = _unit(np.asarray(vector, dtype=np.float64)).astype(np.float32)
    od = conc[..., None].astype(np.float32) * v
    return np.clip(background * np.power(10.0, -od), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- TDKstain's convention (scikit-image's scale)
# TDKstain (Peng et al. 2024, ``preprocess/get_dab_mask.py``) deconvolves with ``skimage.color.rgb2hed`` and
# re-colours one channel with ``skimage.color.hed2rgb``. Both use natural logs divided by ln(1e-6), so an
# OD from :func:`rgb_to_hed` (log10) is ~6x larger than what ``hed2rgb`` expects: feeding one to the other
# renders a far too dark image. Everything TDKstain-shaped in the project goes through these two functions.


def skimage_hed(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float64 H, E, DAB in scikit-image's scale (``rgb2hed``; equals :func:`rgb_to_hed` / 6)."""
    from skimage.color import rgb2hed

    return rgb2hed(_check_rgb(rgb))


def dab_only_rendering(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float64 in [0, 1]: the image with its DAB stain alone (TDKstain's DAB channel K_M)."""
    from skimage.color import hed2rgb

    hed = skimage_hed(rgb)
    only_dab = np.zeros_like(hed)
    only_dab[..., 2] = hed[..., 2]
    return hed2rgb(only_dab)
