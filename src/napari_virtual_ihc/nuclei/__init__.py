"""nuclei (core, napari-free)."""
