"""Keep napari's animated "in progress" spinner from eating a CPU core on software OpenGL.

While any napari progress bar runs, the status bar shows an animated GIF. With a canvas in the window,
Qt composes the whole window through OpenGL for every frame of it; on software OpenGL (Mesa llvmpipe:
remote desktops, VMs, headless servers) that cost ~0.5 of a CPU core here, taken from the model, for
as long as a run lasts. On such machines the spinner is paused (its frame stays visible) while a run
of ours is active; with a GPU driver nothing changes.
"""

from __future__ import annotations

import logging
from typing import Any

from ._napari_private import activity_indicator, scene_canvas

log = logging.getLogger(__name__)

SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swiftshader", "software rasterizer", "swrast")
_renderer: str | None = None  # the process's OpenGL driver, once a canvas has told it
PAUSES = "napari_virtual_ihc_pauses"  # Qt property on the spinner's QMovie: runs of ours holding it paused


def opengl_renderer(viewer: Any) -> str:
    """The ``GL_RENDERER`` string of the viewer's canvas ('' when it cannot be read); one driver serves the
    whole process, so the first answer is kept (a failed query is asked again next time)."""
    global _renderer
    if _renderer is None:
        try:
            from vispy.gloo import gl

            canvas = scene_canvas(viewer)
            if canvas is None:
                return ""
            canvas.set_current()
            _renderer = str(gl.glGetParameter(gl.GL_RENDERER) or "") or None
        except Exception as exc:  # a headless viewer has no OpenGL context
            log.debug("OpenGL renderer unknown: %s", exc)
    return _renderer or ""


def software_opengl(viewer: Any) -> bool:
    renderer = opengl_renderer(viewer).lower()
    return any(name in renderer for name in SOFTWARE_RENDERERS)


def _spinner_movie(viewer: Any) -> Any | None:
    indicator = activity_indicator(viewer)
    return indicator.movie() if indicator is not None else None


def pause_spinner(viewer: Any) -> bool:
    """Pause the spinner on software OpenGL; True if it was paused (call ``resume_spinner`` later)."""
    if not software_opengl(viewer):
        return False
    movie = _spinner_movie(viewer)
    if movie is None:
        return False
    movie.setPaused(True)
    movie.setProperty(PAUSES, int(movie.property(PAUSES) or 0) + 1)
    return True


def resume_spinner(viewer: Any) -> None:
    """Undo ``pause_spinner``: once no run of ours holds it, let it turn again if other progress bars still
    show it (napari stops it when none do)."""
    movie = _spinner_movie(viewer)
    if movie is None:
        return
    left = max(0, int(movie.property(PAUSES) or 0) - 1)
    movie.setProperty(PAUSES, left)
    if left:
        return
    indicator = activity_indicator(viewer)
    if indicator is not None and indicator.isVisible():
        movie.setPaused(False)
