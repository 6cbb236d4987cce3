"""Qt widgets: collect parameters, run the core's work as ``_tasks.WidgetTask`` s, show results.

No logic of their own (decisions live in the core packages). ``stain/``, ``reader/``, ``registration/`` and
``overlay_widget`` are the dock widgets; ``_napari_private`` is the only place that touches napari internals.
"""
