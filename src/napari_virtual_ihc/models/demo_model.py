"""The demo model shipped inside the package (docs/demo-model.md): H&E -> DAB-IHC appearance, not HER2."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointNotFoundError

DEMO_MODEL_FILE = "demo-he-to-dab.safetensors"
DEMO_MODEL_LABEL = "demo model, not HER2"


def demo_model_path() -> Path:
    """Path of the embedded demo checkpoint; a broken install (file missing) gets a message naming it."""
    path = Path(__file__).parent / "demo" / DEMO_MODEL_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"the embedded demo model is missing: {path} (a broken install: reinstall napari-virtual-ihc, "
            "or rebuild it with docs/demo-model/train.sh)"
        )
    return path
