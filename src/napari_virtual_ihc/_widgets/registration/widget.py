""" "Register real IHC to H&E": align the real IHC layer onto the H&E, check it on landmarks, compare it
with the virtual IHC.

The work is the core's ``registration.iter_registration`` / ``iter_comparison`` as ``WidgetTask`` s (the
plugin's progress bar, cancel between stages and inside the optimiser); the figures and placements are the
core's (``registration.display``). Nothing is added to the viewer until a run has finished: a cancelled or
failed run leaves no layer behind. A linear result places the real IHC with napari's ``affine`` (its own
tiles, untouched); a non-rigid one adds a lazily resampled layer.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QComboBox

from ...registration import (
    RegistrationCancelled,
    RegistrationError,
    RegistrationSettings,
    SlideTransform,
    iter_registration,
    load_transform,
    read_points,
    transform_path_for,
)
from ...registration.compare import Comparison, ComparisonSettings, iter_comparison
from ...registration.display import affine_rc, comparison_plan, screen_residuals, side_shift
from ...registration.lazy import resampled_levels
from ...registration.quality import describe as describe_quality
from ...registration.register import STAGES
from ...slides.base import Slide
from .._layer_source import combo_layer, fill_layer_combo, slide_for_layer
from .._tasks import WidgetTask
from .form import RegistrationForm


def napari_affine(transform: SlideTransform, fixed_layer: Any, shift_x: float = 0.0) -> np.ndarray:
    """(3, 3) (row, col) affine taking the moving slide's level-0 pixels to the fixed layer's world."""
    return affine_rc(transform, fixed_layer.scale, fixed_layer.translate, shift_x)


def _register(
    fixed: Slide, moving: Slide, settings: RegistrationSettings, cancel: threading.Event
) -> Generator[tuple[int, int, str], None, SlideTransform]:
    """Worker thread: the registration, yielding (done, total, stage)."""
    return (yield from iter_registration(fixed, moving, settings, cancel))


def _compare(
    virtual: Slide,
    real: Slide,
    transform: SlideTransform,
    settings: ComparisonSettings,
    cancel: threading.Event,
) -> Generator[tuple[int, int], None, Comparison]:
    """Worker thread: the virtual vs real comparison, yielding (done, total)."""
    return (yield from iter_comparison(virtual, real, transform, settings, cancel=cancel))


class RegistrationWidget(RegistrationForm):
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
        self.task: WidgetTask | None = None
        self._names: tuple[str, str] = ("", "")

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
        total = len(STAGES) - (0 if settings.nonrigid else 1)
        cancel = threading.Event()  # also stops the optimiser inside a stage
        self.task = WidgetTask(
            self.viewer,
            _register,
            fixed,
            moving,
            settings,
            cancel,
            desc="Register IHC to H&E",
            total=total,
            cancel_event=cancel,
            cancelled_errors=(RegistrationCancelled,),
            on_yield=lambda v: self.status.setText(f"registering: {v[2]} done ({v[0]}/{v[1]})"),
            on_end=self._on_registered,
        )
        self.set_busy(True, "registering…")
        self.task.start()

    def _saved_path(self, fixed: Any, moving: Any) -> Path | None:
        if fixed.path is None or moving.path is None:
            return None
        return transform_path_for(fixed.path, moving.path)

    def _on_registered(self, task: WidgetTask) -> None:
        """Shown only when the task is done: cancelled just as it finished, the user asked for nothing."""
        if self._task_ended(task):
            self._on_done(task.result)

    def _on_done(self, transform: SlideTransform) -> None:
        q = transform.quality
        figures = _summary(transform)
        self.table.show_rows([(k, f"{v:.4g}") for k, v in q.items()] + [("note", n) for n in transform.notes])
        if not transform.converged and not self.accept_poor.isChecked():
            self.transform = None
            self._fail(
                f"poor alignment, not applied {figures}; tick 'show a poor alignment anyway' to see it"
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
        self.status.setText(f"{'registered' if transform.converged else 'POOR alignment shown'} {figures}")

    def _place(self) -> None:
        """Overlay: on the H&E; side by side: one H&E width to the right (beside it or the virtual IHC)."""
        layer, t = self.registered_layer, self.transform
        if layer is None or t is None or layer not in self.viewer.layers:
            return
        fixed_layer = self.viewer.layers[self._names[0]]
        side = self.side_by_side()
        shift = side_shift(t, float(fixed_layer.scale[-1])) if side else 0.0
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
        if self.side_by_side() and n:
            mw = mw - [0.0, side_shift(self.transform, float(fixed_layer.scale[-1]))]
        diag = float(np.hypot(*self.transform.fixed.dimensions))
        dist_px, self.residuals = screen_residuals(fw, mw, fixed_layer.scale, diag)
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
        settings, total = comparison_plan(virtual.dimensions)
        cancel = threading.Event()
        self.task = WidgetTask(
            self.viewer,
            _compare,
            virtual,
            real,
            self.transform,
            settings,
            cancel,
            desc="Virtual vs real IHC",
            total=total,
            cancel_event=cancel,
            on_end=lambda task: self._on_compared(task, virtual_layer),
        )
        self.set_busy(True, "comparing…")
        self.task.start()

    def _on_compared(self, task: WidgetTask, virtual_layer: Any) -> None:
        if not self._task_ended(task):
            return
        comparison: Comparison = task.result
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

    # --- tasks --------------------------------------------------------------------------------------
    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.status.setText("cancelling…")

    def _task_ended(self, task: WidgetTask) -> bool:
        """The form is free again; True when the task is done (its result is to be shown)."""
        if task is self.task:
            self.task = None
        self.set_busy(False)
        if task.state == "cancelled":
            self.status.setText("cancelled: nothing was added")
        elif task.state == "failed":
            self._fail(f"{type(task.error).__name__}: {task.error}")
        return task.state == "done"

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.setText(f"error: {message}")


def _summary(transform: SlideTransform) -> str:
    """What ``virtual-ihc register`` prints: the stages run, then the figures the quality gate decides on."""
    stages = " + ".join(transform.stages) or ("non-rigid" if not transform.is_linear else "affine")
    return f"({stages}): {describe_quality(transform.quality)}"
