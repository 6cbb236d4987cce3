"""stain (core, napari-free)."""
