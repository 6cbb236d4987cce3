"""Settings the Virtual IHC widget remembers between sessions (a small JSON file in the user config dir).

JSON rather than QSettings so the file is readable, portable and easy to reset by deleting it. The
directory can be redirected with ``NAPARI_VIRTUAL_IHC_CONFIG_DIR`` (tests use a temporary one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_ENV = "NAPARI_VIRTUAL_IHC_CONFIG_DIR"
SETTINGS_FILE = "stain_widget.json"
MAX_RECENT_MODELS = 8


def config_dir() -> Path:
    """Where the plugin keeps its per-user settings."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-virtual-ihc", appauthor=False))


@dataclass
class StainWidgetSettings:
    """What a user set last time; ``halo`` and ``batch`` 0 mean "automatic"."""

    model_path: str = ""
    recent_models: list[str] = field(default_factory=list)
    device: str = "auto"
    tile: int = 512
    halo: int = 0
    batch: int = 0
    output_dir: str = ""  # empty: beside the slide
    overlay_opacity: float = 0.6
    advanced_open: bool = False

    def remember_model(self, path: str) -> None:
        """Put ``path`` first in the recent-models list (no duplicates, bounded length)."""
        self.model_path = path
        self.recent_models = [path] + [p for p in self.recent_models if p != path]
        del self.recent_models[MAX_RECENT_MODELS:]

    # --- persistence ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None = None) -> StainWidgetSettings:
        """Read the saved settings; a missing or unreadable file gives the defaults (never an error)."""
        path = path or config_dir() / SETTINGS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            return cls()
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = raw.get(f.name, getattr(defaults, f.name))
            default = getattr(defaults, f.name)
            # Keep only values of the expected type, so a hand-edited file cannot break the widget.
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, list):
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                ok = isinstance(value, type(default))
            values[f.name] = value if ok else default
        return cls(**values)

    def save(self, path: Path | None = None) -> None:
        """Write the settings; failures (read-only home...) are ignored, losing only the preference."""
        path = path or config_dir() / SETTINGS_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass
