"""Make docs/images/demo.png: ``virtual-ihc demo``'s window after one click on Run (the demo model).

Usage: ``xvfb-run -s "-screen 0 1600x1000x24" python docs/demo-model/screenshot.py docs/images/demo.png``
"""

from __future__ import annotations

import sys
import tempfile
import time

import napari
from qtpy.QtWidgets import QApplication

from napari_virtual_ihc.models import demo_model_path


def main(out: str) -> None:
    viewer = napari.Viewer(title="napari-virtual-ihc demo", show=True)
    viewer.window.resize(1600, 860)
    viewer.open_sample("napari-virtual-ihc", "cmu1_region")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    dock.setMaximumWidth(430)
    widget.set_model_path(str(demo_model_path()))
    widget.output_edit.setText(tempfile.mkdtemp())
    widget.set_device("cpu")
    run = widget.start_run()
    t0 = time.time()
    while run is not None and run.running and time.time() - t0 < 300:
        QApplication.processEvents()
        time.sleep(0.05)
    widget.side_by_side_button.setChecked(True)
    for _ in range(40):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.reset_view()
    QApplication.processEvents()
    viewer.screenshot(out, canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
