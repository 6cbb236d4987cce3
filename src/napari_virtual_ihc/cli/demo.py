"""``virtual-ihc demo``: napari with the plugin's widget docked and the embedded H&E sample open."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari with the embedded H&E sample and the Virtual IHC widget")
    p.add_argument("--no-widget", action="store_true", help="only open the sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-virtual-ihc demo")
    viewer.open_sample("napari-virtual-ihc", "cmu1_region")
    if not args.no_widget:
        viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    napari.run()
    return 0
