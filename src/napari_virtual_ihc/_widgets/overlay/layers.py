"""Turn an AnalysisResult into napari layer data (napari-free tuples, so they are easy to test)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...stain.analysis import AnalysisResult

DAB_COLORS = {0: (0, 0, 0, 0), 1: (1.0, 0.9, 0.2, 0.6), 2: (1.0, 0.55, 0.0, 0.7), 3: (0.85, 0.0, 0.0, 0.8)}
HER2_COLORS = {
    0: (0, 0, 0, 0),  # tile without cells
    1: (0.3, 0.5, 1.0, 0.35),  # 0
    2: (1.0, 0.9, 0.2, 0.45),  # 1+
    3: (1.0, 0.55, 0.0, 0.5),  # 2+
    4: (0.85, 0.0, 0.0, 0.55),  # 3+
}
# the tile map: HER2 categories, or a nuclear marker's positive share binned at < 1 / 1-10 / 10-30 / > 30 %
TILE_NAMES = {"her2": "HER2", "ki67": "Ki-67", "er": "ER", "pr": "PR"}
DAB_LEGEND = (("weak", "#ffe633"), ("moderate", "#ff8c00"), ("strong", "#d90000"))
HER2_LEGEND = (("0", "#4d80ff"), ("1+", "#ffe633"), ("2+", "#ff8c00"), ("3+", "#d90000"))


def placement(
    source_scale: tuple[float, float],
    source_translate: tuple[float, float],
    result: AnalysisResult,
    step: int,
) -> dict[str, tuple[float, float]]:
    """scale/translate so a map sampled every ``step`` source pixels from the region origin lands exactly."""
    sy, sx = source_scale
    ty, tx = source_translate
    x0, y0 = result.region[0], result.region[1]
    return {"scale": (sy * step, sx * step), "translate": (ty + y0 * sy, tx + x0 * sx)}


def result_layers(
    result: AnalysisResult,
    source_name: str,
    source_scale: tuple[float, float],
    source_translate: tuple[float, float],
) -> list[tuple[Any, dict[str, Any], str]]:
    """(data, kwargs, layer_type) for each overlay, in the order they should be added."""
    ds = result.map_downsample
    at = placement(source_scale, source_translate, result, ds)
    meta = {"nuclei_method": result.nuclei_method, "mpp": result.mpp, "mpp_assumed": result.mpp_assumed}
    method = "classical fallback" if result.nuclei_method == "classical" else result.nuclei_method
    layers: list[tuple[Any, dict[str, Any], str]] = []
    if result.her2_tiles is not None:
        tiles = (result.her2_tiles.astype(np.int16) + 1).astype(np.uint8)
        tp = placement(source_scale, source_translate, result, result.tile_size)
        layers.append(
            (
                tiles,
                {
                    "name": f"{source_name} {TILE_NAMES.get(result.marker, 'HER2')} tiles (estimate)",
                    **tp,
                    "opacity": 0.6,
                    "colormap": _direct(HER2_COLORS),
                    "metadata": meta,
                },
                "labels",
            )
        )
        layers.append(
            (
                result.dab_classes,
                {
                    "name": f"{source_name} DAB bins",
                    **at,
                    "opacity": 0.55,
                    "colormap": _direct(DAB_COLORS),
                    "metadata": meta,
                },
                "labels",
            )
        )
    layers.append(
        (
            result.density,
            {
                "name": f"{source_name} nuclei density (/mm²)",
                **at,
                "colormap": "inferno",
                "opacity": 0.45,
                "blending": "additive",
                "metadata": meta,
            },
            "image",
        )
    )
    layers.append(
        (
            result.labels,
            {"name": f"{source_name} nuclei ({method})", **at, "opacity": 0.9, "metadata": meta},
            "labels",
        )
    )
    if result.nuclei_calibration_windows:  # a whole slide: where its nuclei were calibrated (level-0 windows)
        x0, y0 = result.region[0], result.region[1]
        boxes = [
            np.array([[y - y0, x - x0], [y - y0, x - x0 + w], [y - y0 + h, x - x0 + w], [y - y0 + h, x - x0]])
            for x, y, w, h in result.nuclei_calibration_windows
        ]
        layers.append(
            (
                boxes,
                {
                    "name": f"{source_name} nuclei calibration windows",
                    **placement(source_scale, source_translate, result, 1),
                    "shape_type": "rectangle",
                    "edge_color": "cyan",
                    "face_color": "transparent",
                    "edge_width": 8,
                    "metadata": {**meta, "note": result.nuclei_calibration_note},
                },
                "shapes",
            )
        )
    return layers


def _direct(colors: Mapping[int, tuple[float, ...]]) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[int | None, tuple[float, ...]] = {None: (0, 0, 0, 0)}
    for label, color in colors.items():
        color_dict[label] = color
    return DirectLabelColormap(color_dict=color_dict)


def _or_dash(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the small numbers table."""
    rows = [
        ("nuclei", f"{summary['nuclei_count']} ({summary['nuclei_method']})"),
        ("nuclei / mm²", f"{summary['nuclei_per_mm2']:.0f}"),
        ("nuclei / mm² of tissue", _or_dash(summary.get("nuclei_per_mm2_tissue"), "{:.0f}")),
        ("nucleus diameter", f"{summary['nuclei_diameter_um']:.1f} µm"),
        ("µm / px", f"{summary['mpp']:.3f}" + (" (assumed)" if summary["mpp_assumed"] else "")),
    ]
    if "dab_fractions" in summary:
        f = summary["dab_fractions"]
        rows.append(("DAB weak/mod/strong", f"{f['weak']:.1%} / {f['moderate']:.1%} / {f['strong']:.1%}"))
        if summary.get("dab_fractions_tissue"):  # the same over tissue pixels, without the glass
            f = summary["dab_fractions_tissue"]
            rows.append(("… of tissue", f"{f['weak']:.1%} / {f['moderate']:.1%} / {f['strong']:.1%}"))
        c = summary["dab_cutoffs_od"]
        rows.append(
            (
                "DAB OD cuts used",
                f"{c['weak']:g} / {c['moderate']:g} / {c['strong']:g}"
                + (
                    f" ({summary['calibration_name']})"
                    if summary.get("calibration_name")
                    else " (not calibrated)"
                ),
            )
        )
        rows += marker_rows(summary)
    cal = summary.get("stain_calibration")
    if cal:
        rows.append(
            (
                "white point",
                " ".join(f"{b:.0f}" for b in cal["background"]) + f" ({cal['background_source']})",
            )
        )
        rows.append(("stain vectors", cal["vectors_source"]))
    return rows


def marker_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The marker's figures, the category always next to the cells it counted."""
    marker = summary["marker"]
    est = summary[marker]
    name = {"her2": "HER2", "ki67": "Ki-67", "er": "ER", "pr": "PR"}[marker]
    rows = [
        (
            "marker",
            f"{name}" + (f" ({summary['marker_reason']})" if summary["marker_reason"] != "chosen" else ""),
        )
    ]
    rows.append((f"{name} estimate", f"{est['label']} — {est['scope']} (not a diagnosis)"))
    if not est.get("assessable", True):
        rows.append(("why not scored", est.get("note", "")))
        return rows
    rows.append(("tumour cells", str(est["n_cells"])))
    if marker == "her2":
        s = est["cell_shares"]
        rows.append(
            (
                "cells 3+/2+/1+ type",
                f"{s['complete_strong']:.1%} / {s['complete_weak_moderate']:.1%} / {s['incomplete']:.1%}",
            )
        )
        rows.append(("H-score", f"{est['h_score']:.0f}"))
    elif marker == "ki67":
        lo, hi = est["index_ci95"]
        rows.append(("Ki-67 index (95 % CI)", f"{est['index']:.1%} ({lo:.1%}-{hi:.1%})"))
        hot = est.get("hotspot_index")
        rows.append(
            ("hot spot (500 cells)", f"{hot:.1%}" if hot is not None else est.get("hotspot_note", ""))
        )
    else:
        rows.append(("% positive nuclei", f"{est['percent_positive']:.1f} %"))
        rows.append(
            (
                "Allred (P + I)",
                f"{est['allred_score']} ({est['allred_proportion']} + {est['allred_intensity']})",
            )
        )
        rows.append(("H-score", f"{est['h_score']:.0f}"))
    return rows
