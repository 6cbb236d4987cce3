"""study (core, napari-free)."""
