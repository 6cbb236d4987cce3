"""Virtual HER2 IHC from H&E whole-slide images.

The core subpackages (``slides``, ``models``, ``inference``, ``stain``, ``nuclei``, ``study``)
never import Qt or napari, so scripts, the CLIs and the trainer can use them on a headless server.
"""

import os
import sys

__version__ = "0.1.0"

# CPU inference allocates a fresh 30-300 MB tensor per layer; with 4 KiB pages the kernel faults in and zeroes
# every page of each one, which measured here cost as much as a Winograd convolution's arithmetic. PyTorch backs
# allocations of 2 MB and more with transparent huge pages when THP_MEM_ALLOC_ENABLE is set, read once at its
# first allocation, so it only takes effect if this package is imported before torch. A user's own setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
