"""Every reach into napari's (and npe2's) private objects, in one place, each with why it is needed.

Checked against napari 0.9 (``TESTED_NAPARI``). Each function degrades to doing nothing (or answering
"unknown") when napari has moved the attribute, so a napari release can cost a nicety, never a run. The
rest of the package must use public API only (ruff ``SLF001`` enforces it outside this file).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

TESTED_NAPARI = "0.9"


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer behind npe2's ``PublicOnlyProxy``.

    Why: the proxy wraps every object it hands out, so layers read through it are new proxy objects each
    time, while layer events carry the real layers. A run must know *which* layer it stains (identity:
    a result belongs to its slide), which only works on the real objects. No public accessor exists.
    """
    return getattr(viewer, "__wrapped__", viewer)


def forget_lowest_level(layer: Any) -> None:
    """Drop napari's cached copy of a multiscale layer's smallest level before a refresh.

    Why: napari 0.9 keeps the smallest level of a 2D multiscale layer materialised in an ``lru_cache``
    (``_level_materializer``) that ``Layer.refresh`` does not clear, so a zoomed-out view and the
    thumbnail would show the store as it was before the new tiles. The public alternative (re-assigning
    ``layer.data``) rebuilds the layer's slicing state on every refresh.
    """
    clear = getattr(getattr(layer, "_level_materializer", None), "cache_clear", None)
    if callable(clear):
        clear()


def scene_canvas(viewer: Any) -> Any | None:
    """The viewer's vispy ``SceneCanvas`` (to ask its OpenGL driver), or None.

    Why: only the canvas knows the ``GL_RENDERER``; napari exposes no public accessor for it.
    """
    try:
        return viewer.window._qt_viewer.canvas._scene_canvas
    except AttributeError as exc:
        log.debug("no scene canvas: %s", exc)
        return None


def activity_indicator(viewer: Any) -> Any | None:
    """The status bar's animated "in progress" label (its ``movie()`` is the spinner), or None.

    Why: on software OpenGL each spinner frame composes the whole window on the CPU (~0.5 core measured);
    napari offers no setting to pause it while our own progress bar already shows the run.
    """
    try:
        return viewer.window._status_bar._activity_item._inProgressIndicator
    except AttributeError:
        return None


def layer_chrome(viewer: Any) -> list[Any]:
    """The layer list, layer controls and layer buttons (Qt widgets), [] when napari moved them.

    Why: a blinded reader must not rename, edit or add layers (names would unblind); napari has no public
    "read-only layers" mode.
    """
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    if qt_viewer is None:
        return []
    found = (
        getattr(qt_viewer, name, None) for name in ("dockLayerList", "dockLayerControls", "layerButtons")
    )
    return [w for w in found if w is not None]


def main_window(viewer: Any) -> Any | None:
    """The viewer's ``QMainWindow``, or None.

    Why: the reader mode takes its keys only from widgets of the viewer's own window (not from dialogs or
    other windows); ``viewer.window`` has no public accessor for its Qt window.
    """
    return getattr(getattr(viewer, "window", None), "_qt_window", None)


def main_menubar(viewer: Any) -> Any | None:
    """The menu bar of the viewer's main window, or None.

    Why: the menus (plugin names, File > Open) are not for blinded readers, so the reader widget hides
    them during a session; ``viewer.window`` has no public accessor for its ``QMainWindow``.
    """
    menubar = getattr(main_window(viewer), "menuBar", None)
    return menubar() if callable(menubar) else None
