"""inference (core, napari-free)."""
