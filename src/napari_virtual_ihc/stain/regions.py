"""Tumour regions (napari-free): which cells an estimate counts.

ASCO/CAP and the Ki-67 Working Group score invasive tumour cells, not every cell of a tile. A region is
polygons (napari Shapes, QuPath's GeoJSON annotation export; holes and multipolygons kept) or a mask (a
napari Labels layer, a mask image of the image's size); either way it answers one question: is this cell
centroid (level-0 pixels of the image) inside the tumour? Coordinates from another image (outside this
image's bounds) are refused with a message rather than counting nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: a region may reach this far past the image edge (share of its size) before it is called another image's
EDGE_TOLERANCE = 0.02
GEOJSON_SUFFIXES = (".geojson", ".json")


class RegionError(ValueError):
    """A region that cannot be used for this image (empty, outside it, of another size, unreadable)."""


@dataclass(frozen=True)
class Polygon:
    """One polygon: the outer ring and its holes, (n, 2) arrays of (row, col) level-0 pixels."""

    outer: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


#: maps level-0 (row, col) points of the analysed image into the frame a region was drawn in
PointMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TumourRegion:
    """Polygons or a mask (with its placement: mask index = (level-0 px - origin) / scale).

    A region made on another image (a tumour map of the H&E the IHC came from) carries ``point_map``: the
    analysed image's level-0 (row, col) -> that image's, applied before the lookup; ``description`` then
    says where the region came from and ``record`` holds its figures for summary.json.
    """

    source: str
    polygons: tuple[Polygon, ...] = ()
    mask: np.ndarray | None = None
    mask_scale: tuple[float, float] = (1.0, 1.0)
    mask_origin: tuple[float, float] = (0.0, 0.0)
    notes: tuple[str, ...] = field(default=())
    point_map: PointMap | None = None
    description: str = ""
    record: dict[str, Any] | None = None

    def contains(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Bool per point (level-0 row, col of the analysed image): inside the tumour region."""
        y = np.asarray(y, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if self.point_map is not None and y.size:
            y, x = self.point_map(y, x)
        if self.mask is not None:
            r = np.floor((y - self.mask_origin[0]) / self.mask_scale[0]).astype(np.int64)
            c = np.floor((x - self.mask_origin[1]) / self.mask_scale[1]).astype(np.int64)
            h, w = self.mask.shape
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            out = np.zeros(y.shape, dtype=bool)
            out[ok] = self.mask[r[ok], c[ok]]
            return out
        from skimage.measure import points_in_poly

        out = np.zeros(y.shape, dtype=bool)
        if y.size == 0:
            return out
        pts = np.stack([y, x], axis=1)
        for p in self.polygons:
            inside = points_in_poly(pts, p.outer)
            for hole in p.holes:
                inside &= ~points_in_poly(pts, hole)
            out |= inside
        return out

    def raster(
        self, bounds: tuple[int, int, int, int], downsample: int = 1, rows_per_chunk: int = 256
    ) -> np.ndarray:
        """Bool map of the region over ``bounds`` (level-0 x, y, w, h of the analysed image), one value per
        ``downsample`` px (the analysis maps' grid: level-0 pixel ``bounds origin + i * downsample``), read in
        row chunks so a large map never holds all its points at once."""
        bx, by, bw, bh = bounds
        ys = by + np.arange(0, bh, downsample, dtype=np.float64)
        xs = bx + np.arange(0, bw, downsample, dtype=np.float64)
        out = np.zeros((len(ys), len(xs)), dtype=bool)
        for r0 in range(0, len(ys), rows_per_chunk):
            gy, gx = np.meshgrid(ys[r0 : r0 + rows_per_chunk], xs, indexing="ij")
            out[r0 : r0 + gy.shape[0]] = self.contains(gy.ravel(), gx.ravel()).reshape(gy.shape)
        return out

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.mask is not None:
            return f"tumour region: mask ({self.source}, {int(self.mask.sum())} px)"
        holes = sum(len(p.holes) for p in self.polygons)
        return (
            f"tumour region: {len(self.polygons)} polygon(s)"
            + (f", {holes} hole(s)" if holes else "")
            + (f" ({self.source})")
        )

    def check_bounds(self, width: int, height: int) -> None:
        """Refuse a region that does not lie on a ``width`` x ``height`` image (another image's coordinates)."""
        tol_y, tol_x = EDGE_TOLERANCE * height, EDGE_TOLERANCE * width
        if self.mask is not None:
            h, w = self.mask.shape
            y0, x0 = self.mask_origin
            y1, x1 = y0 + h * self.mask_scale[0], x0 + w * self.mask_scale[1]
            boxes = [(y0, x0, y1, x1)]
        else:
            boxes = [
                (
                    float(p.outer[:, 0].min()),
                    float(p.outer[:, 1].min()),
                    float(p.outer[:, 0].max()),
                    float(p.outer[:, 1].max()),
                )
                for p in self.polygons
            ]
        for y0, x0, y1, x1 in boxes:
            if y0 < -tol_y or x0 < -tol_x or y1 > height + tol_y or x1 > width + tol_x:
                raise RegionError(
                    f"the {self.source} region reaches (x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}) outside the "
                    f"image ({width} x {height} px): its coordinates belong to another image or level "
                    "(GeoJSON must be in level-0 pixels of this image)"
                )


def _ring(coords: Any, what: str) -> np.ndarray:
    """GeoJSON ring [[x, y], ...] -> (n, 2) (row, col)."""
    a = np.asarray(coords, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or len(a) < 3:
        raise RegionError(f"{what}: a ring needs >= 3 [x, y] positions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RegionError(f"{what}: a ring has non-finite coordinates")
    return a[:, [1, 0]]


def _polygon(rings: Any, what: str) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise RegionError(f"{what}: a Polygon needs at least its outer ring")
    outer = _ring(rings[0], what)
    return Polygon(outer, tuple(_ring(r, what) for r in rings[1:]))


def _geometry_polygons(geom: Any, what: str) -> list[Polygon]:
    if not isinstance(geom, dict):
        raise RegionError(f"{what}: no geometry")
    kind = geom.get("type")
    if kind == "Polygon":
        return [_polygon(geom.get("coordinates"), what)]
    if kind == "MultiPolygon":
        return [_polygon(p, what) for p in geom.get("coordinates") or []]
    if kind == "GeometryCollection":
        return [p for g in geom.get("geometries") or [] for p in _geometry_polygons(g, what)]
    return []  # points, lines: not areas


def polygons_from_geojson(doc: Any, name: str = "GeoJSON") -> list[Polygon]:
    """Polygons of a GeoJSON FeatureCollection / Feature / geometry (QuPath's annotation export, a list of
    features is accepted too); coordinates are [x, y] level-0 pixels."""
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, dict) and "type" in doc:
        features = [{"type": "Feature", "geometry": doc}]
    else:
        raise RegionError(f"{name} is not GeoJSON (no FeatureCollection, Feature or geometry)")
    out: list[Polygon] = []
    for i, f in enumerate(features):
        if not isinstance(f, dict):
            raise RegionError(f"{name}: feature {i} is not an object")
        out += _geometry_polygons(f.get("geometry"), f"{name} feature {i}")
    if not out:
        raise RegionError(f"{name} holds no Polygon or MultiPolygon: nothing to restrict the estimate to")
    return out


def read_geojson(path: str | Path, width: int, height: int) -> TumourRegion:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegionError(f"cannot read the region {p}: {e}") from e
    region = TumourRegion(p.name, tuple(polygons_from_geojson(doc, p.name)))
    region.check_bounds(width, height)
    return region


def read_mask(path: str | Path, width: int, height: int) -> TumourRegion:
    """A mask image of exactly the image's size; non-zero pixels are tumour."""
    from skimage.io import imread

    p = Path(path)
    try:
        a = np.asarray(imread(p))
    except (OSError, ValueError) as e:
        raise RegionError(f"cannot read the mask {p}: {e}") from e
    if a.ndim == 3:
        a = a[..., :3].max(axis=-1) if a.shape[-1] in (3, 4) else a.max(axis=0)
    if a.shape != (height, width):
        raise RegionError(
            f"the mask {p.name} is {a.shape[1] if a.ndim > 1 else '?'} x {a.shape[0]} px but the image is "
            f"{width} x {height}: a mask must have the image's size"
        )
    return mask_region(a > 0, p.name, width, height)


def mask_region(
    mask: np.ndarray,
    source: str,
    width: int,
    height: int,
    scale: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float] = (0.0, 0.0),
) -> TumourRegion:
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise RegionError(f"the {source} mask must be 2-D, got shape {m.shape}")
    if not m.any():
        raise RegionError(f"the {source} region is empty: draw or paint the tumour first")
    region = TumourRegion(source, mask=m, mask_scale=scale, mask_origin=origin)
    region.check_bounds(width, height)
    return region


def polygon_region(polygons: list[np.ndarray], source: str, width: int, height: int) -> TumourRegion:
    """From napari-style (n, 2) (row, col) polygons in level-0 pixels."""
    polys = []
    for p in polygons:
        a = np.asarray(p, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2 or len(a) < 3:
            raise RegionError(f"a {source} polygon needs >= 3 (row, col) vertices, got shape {a.shape}")
        polys.append(Polygon(a))
    if not polys:
        raise RegionError(f"the {source} layer holds no polygon: draw the tumour first")
    region = TumourRegion(source, tuple(polys))
    region.check_bounds(width, height)
    return region


def read_region(path: str | Path, width: int, height: int) -> TumourRegion:
    """GeoJSON (.geojson/.json) or a mask image, for an image of ``width`` x ``height`` level-0 px."""
    p = Path(path)
    if not p.is_file():
        raise RegionError(f"the region {p} does not exist")
    if p.suffix.lower() in GEOJSON_SUFFIXES:
        return read_geojson(p, width, height)
    return read_mask(p, width, height)
