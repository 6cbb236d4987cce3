"""The "Virtual IHC" stain widget: its form, its runs (the tile engine as a ``WidgetTask``), the IHC layer.

``form`` (Qt controls and saved settings), ``widget`` (the dock: layers, runs, existing results), ``run``
(one run shown as it goes), ``worker`` (what the run does on the worker thread), ``scope`` (GUI-friendly
thread settings), ``preload`` (the chosen model loaded before Run), ``layer`` / ``confidence`` (the store
as napari layers), ``messages`` (errors a pathologist can act on), ``devices``, ``settings``.
"""

from .widget import VirtualIHCWidget

__all__ = ["VirtualIHCWidget"]
