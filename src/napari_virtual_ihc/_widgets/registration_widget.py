""" "Register real IHC to H&E": align the real IHC layer onto the H&E, check it on landmarks, compare it
with the virtual IHC.

The work is the core's ``registration.iter_registration`` / ``iter_comparison`` in napari ``thread_worker``
generators (progress bar, cancel between stages and inside the optimiser). Nothing is added to the viewer
until a run has finished: a cancelled or failed run leaves no layer behind. A linear result places the
real IHC with napari's ``affine`` (its own tiles, untouched); a non-rigid one adds a lazily resampled layer.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..registration import (
    RegistrationCancelled,
    RegistrationError,
    RegistrationSettings,
    SlideTransform,
    iter_registration,
    load_transform,
    read_points,
    transform_path_for,
)
from ..registration.compare import Comparison, ComparisonSettings, iter_comparison
from ..registration.lazy import resampled_levels
from ..registration.quality import describe as describe_quality
from ..registration.register import STAGES
from ._activity import pause_spinner, resume_spinner
from ._layer_source import combo_layer, fill_layer_combo, slide_for_layer
from ._value_table import ValueTable

VIEWS = ("overlay", "side by side")
SIDE_GAP = 1.05  # side-by-side offset, in fixed-slide widths


def _rc(m_xy: np.ndarray) -> np.ndarray:
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    return p @ m_xy @ p


def napari_affine(transform: SlideTransform, fixed_layer: Any, shift_x: float = 0.0) -> np.ndarray:
    """(3, 3) (row, col) affine taking the moving slide's level-0 pixels to the fixed layer's world."""
    sy, sx = (float(v) for v in fixed_layer.scale[-2:])
    ty, tx = (float(v) for v in fixed_layer.translate[-2:])
    world = np.array([[sy, 0, ty], [0, sx, tx + shift_x], [0, 0, 1]], float)
    return world @ _rc(np.linalg.inv(transform.linear_px()))


class RegistrationWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.transform: SlideTransform | None = None
        self.registered_layer: Any = None
        self.landmark_layers: dict[str, Any] = {}
        self.residuals: np.ndarray | None = None
        self.comparison: Comparison | None = None
        self.error: str | None = None
        self.settings = RegistrationSettings()
        self._worker: Any = None
        self._cancel = threading.Event()
        self._spinner_paused = False
        self._names: tuple[str, str] = ("", "")

        form = QFormLayout()
        self.fixed = QComboBox()
        self.moving = QComboBox()
        self.virtual = QComboBox()
        self.view = QComboBox()
        self.view.addItems(list(VIEWS))
        self.nonrigid = QCheckBox("non-rigid (B-spline) refinement")
        self.flip = QCheckBox("try the mirror image")
        self.flip.setChecked(True)
        self.reuse = QCheckBox("reuse a saved transform of these files")
        self.reuse.setChecked(True)
        self.accept_poor = QCheckBox("show a poor (not converged) alignment anyway")
        form.addRow("H&E (fixed)", self.fixed)
        form.addRow("Real IHC (moving)", self.moving)
        form.addRow("Virtual IHC", self.virtual)
        form.addRow("View", self.view)
        for box in (self.nonrigid, self.flip, self.reuse, self.accept_poor):
            form.addRow(box)
        self.run_button = QPushButton("Register real IHC to H&E")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.landmark_button = QPushButton("Landmark check")
        self.compare_button = QPushButton("Compare virtual vs real")
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.landmark_button)
        row2.addWidget(self.compare_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = ValueTable()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addLayout(row2)
        lay.addWidget(self.status)
        lay.addWidget(self.table)

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.landmark_button.clicked.connect(self.landmark_check)
        self.compare_button.clicked.connect(self.start_compare)
        self.view.currentIndexChanged.connect(lambda *_: self._place())
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # --- layers ---------------------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        ours = {id(self.registered_layer), *map(id, self.landmark_layers.values())}
        images = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.rgb and id(layer) not in ours
        ]
        fill_layer_combo(self.fixed, images)
        fill_layer_combo(self.moving, images)
        fill_layer_combo(self.virtual, images, none_label="(none)")
        fixed = combo_layer(self.fixed)
        if len(images) >= 2 and fixed is combo_layer(self.moving):
            fill_layer_combo(self.moving, images, keep=images[1] if fixed is images[0] else images[0])

    def _layer(self, combo: QComboBox) -> Any:
        layer = combo_layer(combo)
        return layer if layer is not None and layer in self.viewer.layers else None

    # --- registration ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.error = None
        fixed_layer, moving_layer = self._layer(self.fixed), self._layer(self.moving)
        if fixed_layer is None or moving_layer is None or fixed_layer is moving_layer:
            self._fail("choose two different RGB image layers: the H&E (fixed) and the real IHC (moving)")
            return
        try:
            fixed, moving = slide_for_layer(fixed_layer), slide_for_layer(moving_layer)
        except ValueError as e:
            self._fail(str(e))
            return
        self._names = (fixed_layer.name, moving_layer.name)
        self._cancel = threading.Event()
        saved = self._saved_path(fixed, moving)
        if saved is not None and self.reuse.isChecked() and saved.is_file():
            try:
                self._on_done(load_transform(saved, fixed.path, moving.path))
                self.status.setText(f"{self.status.text()} (saved transform {saved.name} reused)")
            except RegistrationError as e:
                self._fail(f"{e} — untick 'reuse' to register again")
            return
        settings = RegistrationSettings(
            **{
                **self.settings.__dict__,
                "nonrigid": self.nonrigid.isChecked(),
                "allow_flip": self.flip.isChecked(),
            }
        )
        cancel = self._cancel
        total = len(STAGES) - (0 if settings.nonrigid else 1)

        @thread_worker(progress={"total": total, "desc": "register IHC to H&E"})
        def work() -> Generator[tuple[int, int, str], None, SlideTransform]:
            return (yield from iter_registration(fixed, moving, settings, cancel))

        worker = work()
        worker.yielded.connect(lambda v: self.status.setText(f"registering: {v[2]} done ({v[0]}/{v[1]})"))
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        worker.started.connect(self._on_started)
        self._begin("registering…")
        self._worker = worker
        worker.start()

    def _saved_path(self, fixed: Any, moving: Any) -> Path | None:
        if fixed.path is None or moving.path is None:
            return None
        return transform_path_for(fixed.path, moving.path)

    def _on_done(self, transform: SlideTransform) -> None:
        if self._cancel.is_set():  # finished just as cancel was pressed: the user asked for nothing
            self._on_aborted()
            return
        q = transform.quality
        figures = describe_quality(q)
        self.table.show_rows([(k, f"{v:.4g}") for k, v in q.items()] + [("note", n) for n in transform.notes])
        if not transform.converged and not self.accept_poor.isChecked():
            self.transform = None
            self._fail(
                f"poor alignment, not applied ({figures}); tick 'show a poor alignment anyway' to see it"
            )
            return
        self.transform = transform
        fixed_layer, moving_layer = (self.viewer.layers[n] for n in self._names)
        self._remove_registered()
        try:
            moving = slide_for_layer(moving_layer)
            fixed = slide_for_layer(fixed_layer)
            path = self._saved_path(fixed, moving)
            if path is not None and not path.is_file():
                transform.save(path)
        except OSError as e:  # a read-only folder: the run still shows, unsaved
            self.status.setText(f"transform not saved: {e}")
        name = f"{moving_layer.name} (registered)"
        if transform.is_linear:
            data = moving_layer.data
            kwargs: dict[str, Any] = {"multiscale": moving_layer.multiscale}
        else:
            data = resampled_levels(transform, moving)
            kwargs = {"multiscale": True}
        layer = self.viewer.add_image(
            data, rgb=True, name=name, opacity=0.5, blending="translucent", contrast_limits=(0, 255), **kwargs
        )
        layer.metadata["registration"] = transform
        self.registered_layer = layer
        moving_layer.visible = False
        self._place()
        self.status.setText(
            f"{'registered' if transform.converged else 'POOR alignment shown'}: {figures}"
            + (" (non-rigid)" if not transform.is_linear else "")
        )

    def _place(self) -> None:
        """Overlay: on the H&E; side by side: one H&E width to the right (beside it or the virtual IHC)."""
        layer, t = self.registered_layer, self.transform
        if layer is None or t is None or layer not in self.viewer.layers:
            return
        fixed_layer = self.viewer.layers[self._names[0]]
        side = self.view.currentText() == "side by side"
        shift = SIDE_GAP * t.fixed.dimensions[0] * float(fixed_layer.scale[-1]) if side else 0.0
        layer.opacity = 1.0 if side else 0.5
        if t.is_linear:
            layer.scale = (1.0, 1.0)
            layer.translate = (0.0, 0.0)
            layer.affine = napari_affine(t, fixed_layer, shift)
        else:
            layer.scale = tuple(fixed_layer.scale[-2:])
            ty, tx = (float(v) for v in fixed_layer.translate[-2:])
            layer.translate = (ty, tx + shift)
        moving_pts = self.landmark_layers.get("moving")
        if moving_pts is not None and moving_pts in self.viewer.layers:  # IHC points ride with the IHC
            if t.is_linear:
                moving_pts.affine = layer.affine.affine_matrix
            else:
                moving_pts.translate = tuple(layer.translate[-2:])
            self.update_residuals()

    def _remove_registered(self) -> None:
        if self.registered_layer is not None and self.registered_layer in self.viewer.layers:
            self.viewer.layers.remove(self.registered_layer)
        self.registered_layer = None

    # --- landmark check -------------------------------------------------------------------------------
    def landmark_check(self) -> None:
        """Points layers on the H&E and on the registered IHC (index-matched); residuals update as points
        are added or moved. Load ANHIR CSVs with :meth:`load_landmarks`, or click points in both layers."""
        if self.registered_layer is None or self.transform is None:
            self._fail("register first")
            return
        self._add_landmark_layers(np.zeros((0, 2)), np.zeros((0, 2)))

    def load_landmarks(self, fixed_csv: str | Path, moving_csv: str | Path) -> None:
        """ANHIR CSVs: the H&E's points in its pixels, the IHC's in the moving slide's pixels."""
        pf, _ = read_points(fixed_csv)
        pm, _ = read_points(moving_csv)
        n = min(len(pf), len(pm))
        self._add_landmark_layers(pf[:n], pm[:n])

    def _add_landmark_layers(self, fixed_xy: np.ndarray, moving_xy: np.ndarray) -> None:
        if self.transform is None or self.registered_layer is None:
            self._fail("register first")
            return
        for old in list(self.landmark_layers.values()):
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        fixed_layer = self.viewer.layers[self._names[0]]
        t = self.transform
        fixed_pts = self.viewer.add_points(
            fixed_xy[:, ::-1],
            name="landmarks H&E",
            scale=tuple(fixed_layer.scale[-2:]),
            translate=tuple(fixed_layer.translate[-2:]),
            face_color="cyan",
            size=8,
        )
        if t.is_linear:  # the IHC points ride on the registered layer's own affine
            moving_pts = self.viewer.add_points(
                moving_xy[:, ::-1],
                name="landmarks IHC",
                affine=self.registered_layer.affine.affine_matrix,
                face_color="yellow",
                size=8,
            )
        else:  # resampled display: place them where the transform sends them
            moving_pts = self.viewer.add_points(
                t.moving_to_fixed(moving_xy)[:, ::-1] if len(moving_xy) else moving_xy,
                name="landmarks IHC",
                scale=tuple(self.registered_layer.scale[-2:]),
                translate=tuple(self.registered_layer.translate[-2:]),
                face_color="yellow",
                size=8,
            )
        self.landmark_layers = {"fixed": fixed_pts, "moving": moving_pts}
        for layer in (fixed_pts, moving_pts):
            layer.events.data.connect(lambda *_: self.update_residuals())
        self.update_residuals()

    def update_residuals(self) -> np.ndarray:
        """Per matched pair: on-screen distance between the H&E and IHC points, in H&E level-0 px, over the
        H&E diagonal (rTRE as displayed); a Shapes layer draws them, the table lists median and 90th pct."""
        if not self.landmark_layers or self.transform is None:
            return np.zeros(0)
        fixed_pts, moving_pts = self.landmark_layers["fixed"], self.landmark_layers["moving"]
        n = min(len(fixed_pts.data), len(moving_pts.data))
        fw = np.array([fixed_pts.data_to_world(p) for p in fixed_pts.data[:n]]).reshape(-1, 2)
        mw = np.array([moving_pts.data_to_world(p) for p in moving_pts.data[:n]]).reshape(-1, 2)
        fixed_layer = self.viewer.layers[self._names[0]]
        if self.view.currentText() == "side by side" and n:
            mw = mw - [0.0, SIDE_GAP * self.transform.fixed.dimensions[0] * float(fixed_layer.scale[-1])]
        scale = np.asarray(fixed_layer.scale[-2:], float)
        dist_px = np.linalg.norm((fw - mw) / scale, axis=1) if n else np.zeros(0)
        diag = float(np.hypot(*self.transform.fixed.dimensions))
        self.residuals = dist_px / diag
        lines = [np.stack([a, b]) for a, b in zip(fw, mw, strict=True)]
        name = "landmark residuals"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = lines
        elif lines:
            self.landmark_layers["residuals"] = self.viewer.add_shapes(
                lines, shape_type="line", edge_color="red", edge_width=2, name=name
            )
        if n:
            self.table.show_rows(
                [
                    ("landmark pairs", str(n)),
                    ("rTRE median (on screen)", f"{np.median(self.residuals):.4f}"),
                    ("rTRE 90th pct", f"{np.percentile(self.residuals, 90):.4f}"),
                    ("residual median (H&E px)", f"{np.median(dist_px):.1f}"),
                ]
            )
        return self.residuals

    # --- virtual vs real ------------------------------------------------------------------------------
    def start_compare(self) -> None:
        virtual_layer = self._layer(self.virtual)
        if self.transform is None or virtual_layer is None:
            self._fail("register first and choose the virtual IHC layer (in the H&E's frame)")
            return
        moving_layer = self.viewer.layers[self._names[1]]
        try:
            virtual, real = slide_for_layer(virtual_layer), slide_for_layer(moving_layer)
        except ValueError as e:
            self._fail(str(e))
            return
        if tuple(virtual.dimensions) != tuple(self.transform.fixed.dimensions):
            self._fail("the virtual IHC layer is not the size of the H&E: it must be in the H&E's frame")
            return
        w, h = virtual.dimensions
        ds = float(max(1, int(np.ceil(max(w, h) / 4096))))
        settings = ComparisonSettings(tile_px=256, downsample=ds)
        transform = self.transform
        total = int(np.ceil(w / (256 * ds)) * np.ceil(h / (256 * ds)))
        self._cancel = threading.Event()
        cancel = self._cancel

        @thread_worker(progress={"total": total, "desc": "virtual vs real"})
        def work() -> Generator[tuple[int, int], None, Comparison]:
            return (yield from iter_comparison(virtual, real, transform, settings, cancel=cancel))

        worker = work()
        worker.returned.connect(lambda c: self._on_compared(c, virtual_layer))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        worker.started.connect(self._on_started)
        self._begin("comparing…")
        self._worker = worker
        worker.start()

    def _on_compared(self, comparison: Comparison, virtual_layer: Any) -> None:
        if self._cancel.is_set():
            self._on_aborted()
            return
        self.comparison = comparison
        step = comparison.settings.tile_px * comparison.settings.downsample
        name = "DAB fraction virtual - real"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        sy, sx = (float(v) for v in virtual_layer.scale[-2:])
        ty, tx = (float(v) for v in virtual_layer.translate[-2:])
        self.viewer.add_image(
            np.nan_to_num(comparison.tile_map("dab_fraction_diff"), nan=0.0),
            name=name,
            colormap="coolwarm" if "coolwarm" in napari.utils.colormaps.AVAILABLE_COLORMAPS else "twilight",
            contrast_limits=(-0.5, 0.5),
            opacity=0.5,
            scale=(sy * step, sx * step),
            translate=(ty + sy * (step - 1) / 2, tx + sx * (step - 1) / 2),
        )
        rows = [
            (k, v if isinstance(v, str) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
            for k, v in comparison.summary().items()
        ]
        self.table.show_rows(rows)
        self.status.setText(f"virtual vs real: DAB Dice {comparison.dice:.3f}, IoU {comparison.iou:.3f}")

    # --- worker plumbing ------------------------------------------------------------------------------
    def _begin(self, text: str) -> None:
        self.run_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(text)

    def _on_started(self) -> None:
        self._spinner_paused = pause_spinner(self.viewer)

    def cancel(self) -> None:
        self._cancel.set()
        if self._worker is not None:
            self._worker.quit()
        self.status.setText("cancelling…")

    def _on_aborted(self) -> None:
        self.status.setText("cancelled: nothing was added")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, RegistrationCancelled):
            self._on_aborted()
            return
        self._fail(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._spinner_paused:
            resume_spinner(self.viewer)
            self._spinner_paused = False
        self.run_button.setEnabled(True)
        self.compare_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.setText(f"error: {message}")
