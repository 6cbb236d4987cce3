"""Cells and masks as GeoJSON in QuPath's feature layout; label maps as a TIFF (QuPath/Fiji open both).

QuPath's layout (File > Object data > Import): a ``FeatureCollection`` of ``Feature``s whose ``properties``
hold ``objectType`` ("detection" for cells, "annotation" for regions), ``classification``
(``{"name", "color": [r, g, b]}``) and ``measurements`` (name -> number, QuPath >= 0.4). Coordinates are
level-0 pixels of the analysed slide, origin at its top-left corner, as QuPath's own.

Cells go out as Point detections at their centroids (the cell table holds no outline); a mask (membrane,
a DAB bin, the nuclei) goes out as Polygon features, holes kept (OpenCV's two-level contour hierarchy).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from ..stain.analysis import AnalysisResult
from ..stain.her2 import CELL_CLASSES, CellTable
from ..stain.markers import COMPARTMENT, marker_calls
from .errors import ExportError

#: QuPath display colours of the HER2 cell classes (none, incomplete, complete weak/moderate, strong).
CELL_CLASS_COLORS = ((112, 112, 225), (250, 200, 60), (240, 130, 30), (200, 20, 20))
#: QuPath's own colours of its "Positive" / "Negative" classes (nuclear markers' calls)
CALL_COLORS = {"positive": (200, 50, 50), "negative": (112, 112, 225)}

Feature = dict[str, Any]


def cell_features(cells: CellTable, mpp: float, calls: list[str] | None = None) -> list[Feature]:
    """One Point detection per cell with its measurements (µm units from ``mpp``), classified by ``calls``
    (the marker's call per cell, e.g. "positive"/"negative" for Ki-67) or, without them, the HER2 class."""
    if calls is not None and len(calls) != len(cells):
        raise ExportError(f"{len(calls)} calls for {len(cells)} cells")
    features = []
    for i in range(len(cells)):
        cls = int(cells.cell_class[i])
        name, color = CELL_CLASSES[cls], CELL_CLASS_COLORS[cls]
        if calls is not None and calls[i] in CALL_COLORS:
            name, color = calls[i], CALL_COLORS[calls[i]]
        measurements = {
            "Area µm^2": float(cells.area_px[i]) * mpp * mpp,
            "Membrane DAB OD": float(cells.ring_dab_od[i]),
            "Membrane completeness": float(cells.completeness[i]),
            "DAB intensity bin": int(cells.intensity_bin[i]),
            "Nucleus DAB OD": float(cells.nuclear_dab_od[i]),
        }
        features.append(
            _feature(
                {"type": "Point", "coordinates": [float(cells.x[i]), float(cells.y[i])]},
                "detection",
                name,
                color,
                measurements,
            )
        )
    return features


def result_cell_features(result: AnalysisResult) -> list[Feature]:
    """The cells of an analysis, each classified by the marker's call (HER2 class, nuclear positive/negative)."""
    calls = marker_calls(result.marker, result.cells, result.bins) if result.marker in COMPARTMENT else None
    return cell_features(result.cells, result.mpp, calls)


def mask_features(
    mask: np.ndarray,
    name: str,
    color: tuple[int, int, int],
    *,
    downsample: float = 1.0,
    origin: tuple[float, float] = (0.0, 0.0),
    object_type: str = "annotation",
) -> list[Feature]:
    """The mask's connected parts as Polygons (outer ring + holes), in level-0 pixels.

    ``mask`` is at ``downsample`` from level 0 with its (0, 0) at level-0 ``origin`` (x, y), as the
    analysis maps are. Pixel edges, not centres, bound the polygon (a one-pixel part is a square).
    """
    m = np.ascontiguousarray(mask.astype(np.uint8))
    if m.ndim != 2:
        raise ExportError(f"a mask must be 2-D, got shape {mask.shape}")
    # contours of the 2x upsampled mask run along pixel edges once halved
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    rings: dict[int, list[list[list[float]]]] = {}
    for i, (_next, _prev, _child, parent) in enumerate(hierarchy[0]):
        ring = _ring(contours[i], downsample, origin)
        if ring is None:
            continue
        if parent < 0:
            rings.setdefault(i, []).insert(0, ring)
        else:
            rings.setdefault(int(parent), []).append(ring)
    return [
        _feature({"type": "Polygon", "coordinates": rs}, object_type, name, color, {})
        for rs in rings.values()
        if rs and len(rs[0]) >= 4
    ]


def _ring(contour: np.ndarray, downsample: float, origin: tuple[float, float]) -> list[list[float]] | None:
    pts = contour.reshape(-1, 2).astype(float)
    if len(pts) < 3:
        return None
    pts = (np.floor((pts + 1) / 2)) * downsample + np.asarray(origin)  # back to pixel-edge coordinates
    pts = pts[np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]]
    if len(pts) < 3:
        return None
    closed = [*pts.tolist(), pts[0].tolist()]
    return closed


def _feature(
    geometry: dict[str, Any],
    object_type: str,
    name: str,
    color: tuple[int, int, int],
    measurements: dict[str, float | int],
) -> Feature:
    props: dict[str, Any] = {
        "objectType": object_type,
        "classification": {"name": name, "color": list(color)},
    }
    if measurements:
        props["measurements"] = measurements
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": props}


def write_geojson(features: list[Feature], path: str | os.PathLike[str]) -> Path:
    """A FeatureCollection file (QuPath: File > Object data > Import objects)."""
    path = Path(path)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def write_label_tiff(
    labels: np.ndarray, path: str | os.PathLike[str], *, mpp: float | None = None, downsample: float = 1.0
) -> Path:
    """A label map (0 = background, one id per object) as a tiled, deflated uint32 TIFF with its µm/px."""
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ExportError(f"a label map must be 2-D integers, got {labels.dtype} {labels.shape}")
    path = Path(path)
    extra: dict[str, Any] = {}
    if mpp is not None:
        um = mpp * downsample
        extra = {"resolution": (1e4 / um, 1e4 / um), "resolutionunit": "CENTIMETER"}
    tile = (256, 256) if min(labels.shape) >= 256 else None
    tifffile.imwrite(
        path, labels.astype(np.uint32), tile=tile, compression="zlib", photometric="minisblack", **extra
    )
    return path
