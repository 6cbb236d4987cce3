"""models (core, napari-free)."""
