"""*File > IO utilities > Export layer as pyramidal OME-TIFF...*: ask for a file, then the npe2 writer.

A menu command (napari injects the viewer); the writing and its refusals are ``_writer``'s.
"""

from __future__ import annotations

from napari.layers import Image
from napari.viewer import Viewer
from qtpy.QtWidgets import QFileDialog

from ._writer import write_ome_tiff_layer


def export_active_layer(viewer: Viewer) -> list[str]:
    """Write the active image layer to a pyramidal OME-TIFF the user names; nothing when cancelled."""
    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        raise ValueError("select an RGB image layer to export as OME-TIFF")
    path, _ = QFileDialog.getSaveFileName(
        None, "Export as pyramidal OME-TIFF", f"{layer.name}.ome.tif", "OME-TIFF (*.ome.tif *.ome.tiff)"
    )
    if not path:
        return []
    data, attributes, _kind = layer.as_layer_data_tuple()
    return write_ome_tiff_layer(path, data, attributes)
