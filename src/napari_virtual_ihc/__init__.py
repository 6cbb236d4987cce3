"""Virtual HER2 IHC from H&E whole-slide images.

The core subpackages (``slides``, ``models``, ``inference``, ``stain``, ``nuclei``, ``study``)
never import Qt or napari, so scripts, the CLIs and the trainer can use them on a headless server.
"""

__version__ = "0.1.0"
