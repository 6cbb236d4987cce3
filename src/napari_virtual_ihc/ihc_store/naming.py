"""Where a slide's result lives: one stem rule for the CLI, the widget and the slide reader."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

STORE_SUFFIX = ".ome.zarr"
# The store's own attribute (and the key of ``layer.metadata``) holding the run key and provenance.
PROVENANCE_KEY = "virtual_ihc"
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")
# A file name is at most 255 bytes (NAME_MAX); the longest name made from a stem is the confidence map's
# temporary ``.<stem>-<hash>.confidence.ome.zarr.creating-<pid>-<8 hex>`` (about 60 bytes more).
MAX_STEM_BYTES = 180


def display_stem(name: str | Path) -> str:
    """The name without its format suffix: ``CMU-1.svs`` -> ``CMU-1``, ``x.ome.tiff`` -> ``x`` (layer names)."""
    stem = Path(name).name
    for suffix in _MULTI_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return Path(stem).stem if Path(stem).suffix else stem


def slide_stem(name: str | Path) -> str:
    """``display_stem`` made a safe file name: letters and digits of every script, ``.``, ``-`` and ``_``
    kept, anything else ``_``. A name that changed (``a b`` -> ``a_b-1c2d3e4f``) or had to be shortened
    to fit ``MAX_STEM_BYTES`` gets a short hash of the original, so distinct names stay distinct stores
    (``a b.png`` and ``a_b.png``, issue 29)."""
    shown = unicodedata.normalize("NFC", display_stem(name))
    stem = re.sub(r"[^\w.-]+", "_", shown).strip("._") or "slide"
    changed = stem != shown
    limit = MAX_STEM_BYTES - len(_tag(shown))
    if len(stem.encode()) > MAX_STEM_BYTES:
        stem = stem.encode()[:limit].decode(errors="ignore").rstrip("._") or "slide"
        changed = True
    return f"{stem}{_tag(shown)}" if changed else stem


def _tag(name: str) -> str:
    """``-`` and 8 hex digits of a name's hash: what tells apart two names that sanitise alike."""
    return "-" + hashlib.sha256(name.encode(errors="surrogatepass")).hexdigest()[:8]


def store_path_for(output_dir: str | Path, source_name: str | Path) -> Path:
    """``<output_dir>/<slide stem>.ome.zarr``: what ``virtual-ihc stain`` and the widget write."""
    return Path(output_dir) / f"{slide_stem(source_name)}{STORE_SUFFIX}"


def store_paths_for(output_dir: str | Path, sources: list[str | Path]) -> list[Path]:
    """``store_path_for`` of each source, with a hash of the file's location added to the second and later
    of different files whose names map to one store, so one command never stains two slides into one
    store. The first keeps the plain name; the same command again names every store the same."""
    stores: list[Path] = []
    taken: dict[Path, str] = {}
    for source in sources:
        store = store_path_for(output_dir, source)
        where = os.path.abspath(source)
        if taken.setdefault(store, where) != where:
            store = store.with_name(f"{slide_stem(source)}{_tag(where)}{STORE_SUFFIX}")
            taken.setdefault(store, where)
        stores.append(store)
    return stores


def replace_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: a symbolic link at ``path`` is replaced, never
    followed, so a record can't be written outside its folder (issue 29: lock files and records alike)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
