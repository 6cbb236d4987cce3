"""Where a slide's result lives: one stem rule for the CLI, the widget and the slide reader."""

from __future__ import annotations

import re
from pathlib import Path

STORE_SUFFIX = ".ome.zarr"
# The store's own attribute (and the key of ``layer.metadata``) holding the run key and provenance.
PROVENANCE_KEY = "virtual_ihc"
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")


def display_stem(name: str | Path) -> str:
    """The name without its format suffix: ``CMU-1.svs`` -> ``CMU-1``, ``x.ome.tiff`` -> ``x`` (layer names)."""
    stem = Path(name).name
    for suffix in _MULTI_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return Path(stem).stem if Path(stem).suffix else stem


def slide_stem(name: str | Path) -> str:
    """``display_stem`` made file-system-safe: ``a b&c.png`` -> ``a_b_c`` (store names)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", display_stem(name)).strip("._")
    return stem or "slide"


def store_path_for(output_dir: str | Path, source_name: str | Path) -> Path:
    """``<output_dir>/<slide stem>.ome.zarr``: what ``virtual-ihc stain`` and the widget write."""
    return Path(output_dir) / f"{slide_stem(source_name)}{STORE_SUFFIX}"


def run_json_path(store: str | Path) -> Path:
    """``DIR/<name>.run.json`` beside ``DIR/<name>.ome.zarr``."""
    p = Path(store)
    name = p.name[: -len(STORE_SUFFIX)] if p.name.endswith(STORE_SUFFIX) else p.stem
    return p.with_name(f"{name}.run.json")


def confidence_store_path(store: str | Path) -> Path:
    """``DIR/<name>.confidence.ome.zarr`` beside ``DIR/<name>.ome.zarr`` (the dropout spread map)."""
    p = Path(store)
    name = p.name[: -len(STORE_SUFFIX)] if p.name.endswith(STORE_SUFFIX) else p.stem
    return p.with_name(f"{name}.confidence{STORE_SUFFIX}")


def lock_path(store: str | Path) -> Path:
    """The hidden lock file beside the store (the store itself may not exist yet when it is taken)."""
    p = Path(store)
    return p.with_name(f".{p.name}.lock")
