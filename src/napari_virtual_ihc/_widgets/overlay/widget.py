"""Stain overlays dock widget: DAB bins, membrane, nuclei, density and a marker estimate for one layer.

Parameters are collected here; the work is ``stain.analysis.iter_analysis`` as a ``WidgetTask`` (the
plugin's progress bar with cancel). The marker (HER2, Ki-67, ER, PR or auto) is chosen in a combo; the estimate
counts the cells inside the tumour region chosen in another (a Shapes or Labels layer: draw the tumour,
press Analyze). A calibration (white point, vectors, cut-offs) can be saved from one slide and loaded for
the next. QuPath: the cells go out as GeoJSON detections, an annotation GeoJSON comes in as the region.
Keys D / C / M toggle the nuclei, density and membrane (DAB bins) layers.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QFileDialog,
)

from ...export.errors import ExportError
from ...export.geojson import result_cell_features, write_geojson
from ...ihc_store import PROVENANCE_KEY
from ...registration import transform_path_for
from ...slides.base import Slide
from ...stain.analysis import AnalysisCancelled, AnalysisResult, AnalysisSettings, iter_analysis, tile_count
from ...stain.calibration import StainCalibration
from ...stain.calibration_file import load_calibration, save_calibration
from ...stain.deconvolution import hdab_matrix
from ...stain.her2 import Her2Rules
from ...stain.markers import NO_REGION
from ...stain.membrane import DabBins
from ...stain.regions import TumourRegion, mask_region, polygon_region, read_geojson
from ...stain.tumour_map import mil_region
from .._layer_source import combo_layer, fill_layer_combo, layer_mpp, layer_source_path, slide_for_layer
from .._tasks import WidgetTask
from .._viewport import shapes_polygons, visible_region
from .form import (
    BACKGROUNDS,
    KEYS,
    MIL_HE_OWN_SOURCE,
    MIL_LABEL,
    MIL_REGION,
    MODES,
    NO_REGION_LABEL,
    VECTORS,
    OverlayForm,
)
from .layers import result_layers, summary_rows


class StainOverlayWidget(OverlayForm):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result: AnalysisResult | None = None
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self.overlay_layers: dict[str, Any] = {}
        self.task: WidgetTask | None = None
        self._source_name = ""
        self._mil_he_files: list[Path] = []  # H&E files chosen with "File…", kept in the H&E combo

        self._loaded_calibration: tuple[str, StainCalibration, DabBins] | None = None

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.load_calibration_button.clicked.connect(self._ask_load_calibration)
        self.save_calibration_button.clicked.connect(self._ask_save_calibration)
        self.export_cells_button.clicked.connect(self._ask_export_cells)
        self.import_region_button.clicked.connect(self._ask_import_region)
        self.region_shapes.currentIndexChanged.connect(self._show_mil_controls)
        self.source.currentIndexChanged.connect(self._show_mil_controls)
        self.mil_classifier_button.clicked.connect(self._ask_mil_classifier)
        self.mil_he_button.clicked.connect(self._ask_mil_he)
        self.mil_transform_button.clicked.connect(self._ask_mil_transform)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        for key, which in KEYS.items():
            try:  # never replace a binding the user (or another plugin) made
                self.viewer.bind_key(key, self._toggler(which))
            except ValueError:
                show_info(f"Stain overlays: key {key!r} is already bound, so it does not toggle {which} here")

    # --- layers ---------------------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        own = set(map(id, self.overlay_layers.values()))
        layers = list(self.viewer.layers)
        images = [x for x in layers if isinstance(x, napari.layers.Image) and x.rgb and id(x) not in own]
        fill_layer_combo(self.source, images)
        regions = [
            x
            for x in layers
            if isinstance(x, napari.layers.Shapes | napari.layers.Labels) and id(x) not in own
        ]
        mil_chosen = self.region_shapes.currentData() == MIL_REGION
        fill_layer_combo(self.region_shapes, regions, none_label=NO_REGION_LABEL)
        self.region_shapes.blockSignals(True)
        self.region_shapes.addItem(MIL_LABEL, MIL_REGION)
        if mil_chosen:
            self.region_shapes.setCurrentIndex(self.region_shapes.count() - 1)
        self.region_shapes.blockSignals(False)
        self._fill_mil_he([x for x in images if layer_source_path(x) is not None])
        self._show_mil_controls()

    # --- the MIL tumour map as the region -------------------------------------------------------------
    def _fill_mil_he(self, layers: list[Any]) -> None:
        """H&E choices: image layers opened from a file, then the files chosen with "File…"."""
        before = self.mil_he.currentData()
        self.mil_he.blockSignals(True)
        self.mil_he.clear()
        self.mil_he.addItem(MIL_HE_OWN_SOURCE, None)
        for layer in layers:
            self.mil_he.addItem(layer.name, layer)
        for path in self._mil_he_files:
            self.mil_he.addItem(str(path), path)
        index = next(
            (
                i
                for i in range(self.mil_he.count())
                if before is not None
                and (
                    self.mil_he.itemData(i) is before
                    or (isinstance(before, Path) and self.mil_he.itemData(i) == before)
                )
            ),
            0,
        )
        self.mil_he.setCurrentIndex(index)
        self.mil_he.blockSignals(False)

    def choose_mil_he(self, path: str | Path) -> None:
        """An H&E file (not open in the viewer) as the MIL map's H&E."""
        p = Path(path)
        if p not in self._mil_he_files:
            self._mil_he_files.append(p)
            self.mil_he.addItem(str(p), p)
        self.mil_he.setCurrentIndex(self.mil_he.findText(str(p)))

    def _show_mil_controls(self, *_: Any) -> None:
        mil = self.region_shapes.currentData() == MIL_REGION
        self.mil_box.setVisible(mil)
        layer = combo_layer(self.source)
        real = layer is None or _virtual_ihc_store(layer) is None
        for w in (self.mil_he, self.mil_he_button, self.mil_transform, self.mil_transform_button):
            w.setEnabled(real)  # a virtual IHC's store says which slide it came from

    def mil_request(self, layer: Any, dimensions: tuple[int, int]) -> MilRequest:
        """What the worker needs to make the MIL tumour map of ``layer`` (checked here, on the GUI thread)."""
        text = self.mil_classifier.text().strip()
        if not text:
            raise ValueError("choose the MIL tumour classifier file (.safetensors) for the MIL tumour map")
        classifier = Path(text)
        if not classifier.is_file():
            raise ValueError(f"the MIL classifier {classifier} is not there")
        threshold = float(self.mil_threshold.value())
        store = _virtual_ihc_store(layer)
        if store is not None:
            return MilRequest(store, dimensions, classifier, threshold)
        ihc = layer_source_path(layer)
        if ihc is None:
            raise ValueError(
                f"the layer {layer.name!r} was not opened from a file: the MIL map needs the IHC's file "
                "(to check it against the H&E and the transform)"
            )
        chosen = self.mil_he.currentData()
        he = layer_source_path(chosen) if chosen is not None and not isinstance(chosen, Path) else chosen
        if he is None:
            raise ValueError(
                f"{layer.name!r} is a real IHC: choose the H&E it was cut next to (a layer or a file) "
                "for the MIL tumour map"
            )
        typed = self.mil_transform.text().strip()
        transform: Path | None = Path(typed) if typed else transform_path_for(he, ihc)
        if typed and not transform.is_file():  # type: ignore[union-attr]
            raise ValueError(f"the transform file {typed} is not there")
        if not typed and not transform.is_file():  # type: ignore[union-attr]
            transform = None  # no registration saved: find_he takes them as the same pixels, or says why not
        return MilRequest(ihc, dimensions, classifier, threshold, he=Path(he), transform=transform)

    def _ask_mil_classifier(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MIL tumour classifier", "", "Classifier (*.safetensors)")
        if path:
            self.mil_classifier.setText(path)

    def _ask_mil_he(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The H&E of this IHC", "", "Slides (*)")
        if path:
            self.choose_mil_he(path)

    def _ask_mil_transform(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Registration transform", "", "Transform (*.json)")
        if path:
            self.mil_transform.setText(path)

    def _toggler(self, which: str) -> Any:
        def toggle(viewer: Any = None) -> None:
            layer = self.overlay_layers.get(which)
            if layer is not None and layer in self.viewer.layers:
                layer.visible = not layer.visible

        toggle.__name__ = f"toggle_{which}"
        return toggle

    def toggle(self, which: str) -> None:
        self._toggler(which)()

    # --- run ------------------------------------------------------------------------------------------
    def _bins(self) -> DabBins:
        weak, moderate, strong = (float(c.value()) for c in self.cuts)
        calibrated = self._loaded_calibration is not None and self._loaded_calibration[2].cutoffs == (
            weak,
            moderate,
            strong,
        )
        return DabBins(weak, moderate, strong, calibrated=calibrated)

    # --- calibration files ----------------------------------------------------------------------------
    def load_calibration(self, path: str) -> None:
        """Use a saved calibration: its cut-offs in the fields, its white point and vectors as given."""
        try:
            name, cal, bins = load_calibration(path)
        except ValueError as e:
            self._fail(str(e))
            return
        self._loaded_calibration = (name, cal, bins)
        for spin, v in zip(self.cuts, bins.cutoffs, strict=True):
            spin.setValue(v)
        self.show_calibration(cal)
        wp = " ".join(f"{b:.0f}" for b in cal.stains.background)
        self.calibration_label.setText(
            f"{name!r}: white point {wp}, cut-offs {bins.weak:g}/{bins.moderate:g}/{bins.strong:g}"
        )
        self.status.setText(f"loaded the calibration {name!r}")

    def save_calibration(self, path: str) -> None:
        """Save the last run's white point and vectors and the cut-offs in the fields, named after the file."""
        if self.result is None:
            self._fail("analyze an image first: a calibration is what a run used")
            return
        try:
            p = save_calibration(
                path, Path(path).stem, self.result.calibration, self._bins(), self._source_name
            )
        except (OSError, ValueError) as e:
            self._fail(f"cannot save the calibration: {e}")
            return
        self.status.setText(f"saved the calibration {p.stem!r} to {p}")

    def _ask_load_calibration(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a calibration", "", "Calibration (*.json)")
        if path:
            self.load_calibration(path)

    def _ask_save_calibration(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the calibration", "calibration.json", "Calibration (*.json)"
        )
        if path:
            self.save_calibration(path)

    # --- QuPath: cells out, regions in ---------------------------------------------------------------
    def export_cells(self, path: str) -> None:
        """The last run's cells as QuPath Point detections (level-0 px), classified by the marker's call."""
        if self.result is None:
            self._fail("analyze an image first: the export writes the cells a run found")
            return
        try:
            p = write_geojson(result_cell_features(self.result), path)
        except (OSError, ExportError) as e:
            self._fail(f"cannot export the cells: {e}")
            return
        self.status.setText(f"exported {self.result.n_nuclei} cells to {p} (QuPath: File > Import objects)")

    def import_region(self, path: str) -> Any:
        """A QuPath annotation GeoJSON as a Shapes layer on the chosen image, chosen as the tumour region.

        napari Shapes have no holes: each polygon's outer ring is drawn; Analyze uses the file's polygons, holes
        included, while the drawn shapes are as imported, and the drawn outer rings once they are edited.
        """
        layer = combo_layer(self.source)
        if layer is None or layer not in self.viewer.layers:
            self._fail(
                "add the RGB image the GeoJSON belongs to first (its coordinates are its level-0 pixels)"
            )
            return None
        try:
            region = read_geojson(path, *slide_for_layer(layer).dimensions)
        except (ValueError, KeyError) as e:  # RegionError is a ValueError
            self._fail(str(e))
            return None
        holes = sum(len(p.holes) for p in region.polygons)
        note = (
            f"; {holes} hole(s) not drawn (napari Shapes have none) but excluded by Analyze until the shapes "
            "are edited"
            if holes
            else ""
        )
        shapes = self.viewer.add_shapes(
            # (row, col) level-0 px placed on the image by its scale; napari closes a ring itself
            [_open_ring(p.outer) for p in region.polygons],
            shape_type="polygon",
            name=Path(path).stem,
            scale=tuple(layer.scale[-2:]),
            translate=tuple(layer.translate[-2:]),
            units=tuple(layer.units)[-2:],
            edge_color="lime",
            face_color="transparent",
            metadata={"geojson": str(path), "tumour_region": region},
        )
        self.region_shapes.setCurrentText(shapes.name)
        self.status.setText(f"imported {region.describe()} as the tumour region {shapes.name!r}{note}")
        return shapes

    def _ask_export_cells(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the cells", "cells.geojson", "GeoJSON (*.geojson)"
        )
        if path:
            self.export_cells(path)

    def _ask_import_region(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a region", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_region(path)

    def settings(self, layer: Any) -> AnalysisSettings:
        bins = self._bins()
        mpp_xy = layer_mpp(layer)
        mpp = self.mpp.value() or (sum(mpp_xy) / 2 if mpp_xy else None)
        vectors = VECTORS[self.vectors.currentText()]
        stains = hdab_matrix()
        background = BACKGROUNDS[self.background.currentText()]
        cal_name = ""
        if self._loaded_calibration is not None:  # the saved white point and vectors, as saved
            cal_name, cal, _ = self._loaded_calibration
            stains, background, vectors = cal.stains, "default", "default"
        elif vectors == "user":
            stains = hdab_matrix(self._typed_vector("hematoxylin"), self._typed_vector("dab"))
        return AnalysisSettings(
            stains=stains,
            background=background,
            stain_vectors="estimate" if vectors == "estimate" else "default",
            marker=str(self.marker.currentData()),
            calibration_name=cal_name,
            mode=MODES[self.mode.currentText()],
            nuclei_method=self.nuclei.currentText(),
            cellpose_model=self.model.text().strip() or "nuclei",
            gpu=self.gpu.isChecked(),
            diameter_um=self.diameter.value(),
            large_nuclei=self.large_nuclei.isChecked(),
            density_sigma_um=self.sigma.value(),
            bins=bins,
            rules=Her2Rules(bins=bins),
            mpp=mpp,
            tile=1024,
        )

    def start(self) -> None:
        self.error = None
        self.result = None
        layer = combo_layer(self.source)
        if layer is None or layer not in self.viewer.layers:
            self._fail("add an RGB image layer first")
            return
        try:
            slide = slide_for_layer(layer)
            settings = self.settings(layer)
            region = visible_region(self.viewer, layer, slide) if self.scope.currentIndex() == 0 else None
            mil = None
            if self.region_shapes.currentData() == MIL_REGION:
                mil, tumour = self.mil_request(layer, slide.dimensions), None
            else:
                tumour = self.tumour_region(layer, slide.dimensions)
        except (ValueError, KeyError) as e:  # StainVectorError and RegionError are ValueErrors
            self._fail(str(e))
            return
        w, h = region[2:] if region else slide.dimensions
        big = w * h > 8192 * 8192
        settings.map_downsample = 4 if big else 1
        total = tile_count(slide, settings, region)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"computing {total} tile(s)…")
        self._source_name = layer.name
        meta = (layer.name, tuple(layer.scale[-2:]), tuple(layer.translate[-2:]))

        cancel = threading.Event()  # iter_analysis stops between tiles once it is set
        self.task = WidgetTask(
            self.viewer,
            _analysis,
            slide,
            settings,
            region,
            cancel,
            tumour,
            mil,
            desc=f"Stain overlays: {layer.name}",
            total=total,
            cancel_event=cancel,
            cancelled_errors=(AnalysisCancelled, MilCancelled),
            on_yield=self._on_report,
            on_end=lambda task: self._on_end(task, meta),
        ).start()

    def tumour_region(self, layer: Any, dimensions: tuple[int, int]) -> TumourRegion | None:
        """The chosen Shapes/Labels layer as a region in the source's level-0 pixels (None: all cells)."""
        chosen = combo_layer(self.region_shapes)
        if chosen is None or chosen == MIL_REGION:
            return None
        if chosen not in self.viewer.layers:
            raise ValueError(f"the region layer {chosen.name!r} was removed: choose another")
        w, h = dimensions
        if isinstance(chosen, napari.layers.Labels):
            src_scale, src_trans = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
            lab_scale, lab_trans = np.asarray(chosen.scale[-2:]), np.asarray(chosen.translate[-2:])
            data = np.asarray(chosen.data)
            if data.ndim != 2:
                raise ValueError(f"the Labels layer {chosen.name!r} must be 2-D, not {data.ndim}-D")
            scale = lab_scale / src_scale
            origin = (lab_trans - src_trans) / src_scale
            return mask_region(
                data > 0,
                f"Labels {chosen.name!r}",
                w,
                h,
                (float(scale[0]), float(scale[1])),
                (float(origin[0]), float(origin[1])),
            )
        polygons = shapes_polygons(chosen, layer)
        imported = chosen.metadata.get("tumour_region")
        if isinstance(imported, TumourRegion) and _drawn_as_imported(polygons, imported):
            imported.check_bounds(w, h)
            return imported  # the GeoJSON's polygons, holes kept
        return polygon_region(polygons, f"Shapes {chosen.name!r}", w, h)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.status.setText("cancelling after the current tile…")

    def _on_report(self, value: Any) -> None:
        if isinstance(value, tuple) and len(value) > 2 and self.task is not None:
            self.status.setText(str(value[2]))

    def _on_end(self, task: WidgetTask, meta: tuple[Any, ...]) -> None:
        if task is self.task:
            self.task = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.state == "done":
            self._show(*task.result, *meta)
        elif task.state == "cancelled":
            self.status.setText("cancelled")
        else:
            self._fail(f"{type(task.error).__name__}: {task.error}")

    def _show(
        self, result: AnalysisResult, tumour: TumourRegion | None, name: str, scale: Any, translate: Any
    ) -> None:
        for old in list(self.overlay_layers.values()):
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        self.overlay_layers = {}
        for data, kwargs, kind in result_layers(result, name, scale, translate):
            src = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
            if src is not None:
                kwargs["units"] = tuple(src.units)[-2:]
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if kind == "labels" and "nuclei" in kwargs["name"]:
                layer.contour = 1
                self.overlay_layers["nuclei"] = layer
            elif kind == "image":
                self.overlay_layers["density"] = layer
            elif kind == "shapes":
                self.overlay_layers["calibration windows"] = layer
            elif "DAB" in kwargs["name"]:
                self.overlay_layers["membrane"] = layer
            else:
                self.overlay_layers["her2"] = layer
        self._refresh_layers()  # the overlays are not offered as a source or a tumour region
        self.summary = result.summary(tumour, Her2Rules(bins=result.bins))
        rows = summary_rows(self.summary)
        self.table.show_rows(rows)
        self.result = result
        self.save_calibration_button.setEnabled(True)
        self.export_cells_button.setEnabled(True)
        self.show_calibration(result.calibration)
        notes = list(result.calibration.notes)
        est = self.summary.get(result.marker, {})
        if est.get("note") and not est.get("assessable", True):
            notes.append(est["note"])
        if result.marker_reason != "chosen":
            notes.append(result.marker_reason)
        if result.nuclei_diameter_note:  # a field of large nuclei, read at a larger diameter
            notes.append(result.nuclei_diameter_note)
        if result.nuclei_floor_note:  # stains not separated: a higher floor for nuclei
            notes.append(result.nuclei_floor_note)
        # a whole slide: nuclei calibrated on level-0 windows of its tissue (drawn as a Shapes layer)
        if result.nuclei_calibration_note:
            notes.append(result.nuclei_calibration_note)
        if tumour is not None and tumour.record is not None:  # the MIL map's: read at which scale, empty...
            notes.extend(str(n) for n in tumour.record.get("notes", ()))
        self.status.setText(
            f"done: {result.n_nuclei} nuclei ({result.nuclei_method}); "
            + (f"{self.summary.get('cells_counted', NO_REGION)}" if est else "")
            + ("; " + "; ".join(notes) if notes else "")
        )

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.setText(f"error: {message}")


class MilCancelled(RuntimeError):
    """Cancel pressed while the MIL tumour map was being scored (before any tile was analysed)."""


@dataclass(frozen=True)
class MilRequest:
    """The inputs of ``stain.tumour_map.mil_region`` as the form gives them (see ``mil_request``)."""

    ihc: Path  # the IHC's file, or a virtual IHC's store
    dimensions: tuple[int, int]
    classifier: Path
    threshold: float
    he: Path | None = None  # None: a virtual IHC's own source slide
    transform: Path | None = None

    def region(self, bounds: tuple[int, int, int, int] | None, cancel: threading.Event) -> TumourRegion:
        def stop_if_cancelled(done: int, total: int) -> None:
            if cancel.is_set():
                raise MilCancelled("cancelled while scoring the MIL tumour map")

        return mil_region(
            self.ihc,
            self.dimensions,
            self.classifier,
            he=self.he,
            transform=self.transform,
            threshold=self.threshold,
            ihc_bounds=bounds,
            progress=stop_if_cancelled,
        )


def _virtual_ihc_store(layer: Any) -> Path | None:
    """The store a virtual IHC layer shows (None: a real image)."""
    prov = layer.metadata.get(PROVENANCE_KEY) if isinstance(layer.metadata, dict) else None
    store = prov.get("store") if isinstance(prov, dict) else None
    return Path(store) if store else None


def _analysis(
    slide: Slide,
    settings: AnalysisSettings,
    region: tuple[int, int, int, int] | None,
    cancel: threading.Event,
    tumour: TumourRegion | None,
    mil: MilRequest | None,
) -> Generator[tuple[Any, ...], None, tuple[AnalysisResult, TumourRegion | None]]:
    """Worker thread: the MIL tumour map when asked for, then the analysis, yielding (done, total) per tile
    (AnalysisCancelled once cancelled); returns the result and the tumour region it is summarised in."""
    if mil is not None:
        yield (0, 0, f"scoring the MIL tumour map ({mil.classifier.name}) on the H&E…")
        tumour = mil.region(region, cancel)
        yield (0, 0, f"computing the tiles; tumour region: {tumour.describe()}")
    result = yield from iter_analysis(slide, settings, region=region, cancel=cancel)
    return result, tumour


def _open_ring(ring: np.ndarray) -> np.ndarray:
    """A GeoJSON ring repeats its first vertex at the end; napari closes a polygon itself."""
    return ring[:-1] if len(ring) > 3 and np.array_equal(ring[0], ring[-1]) else ring


def _drawn_as_imported(polygons: list[np.ndarray], region: TumourRegion) -> bool:
    """Whether a Shapes layer's polygons (level-0 px) are still the imported region's outer rings."""
    rings = [_open_ring(p.outer) for p in region.polygons]
    return len(polygons) == len(rings) and all(
        a.shape == b.shape and np.allclose(a, b, atol=1e-3) for a, b in zip(polygons, rings, strict=True)
    )
