"""The virtual IHC result store, in one place: its name, layout, writing, reading and provenance.

The engine writes it, ``virtual-ihc stain`` names it, ``slides`` opens it as a slide and the widget shows
it; all of them go through this package, so they agree on every rule (one stem rule, one run key, one
provenance). No napari, no torch at import.
"""

from .errors import (
    ForeignPathError,
    OtherSourceError,
    OutputNotWritableError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreWriteError,
)
from .identity import same_source, source_identity
from .layout import DONE_FILE, NORM_STATS_FILE
from .naming import (
    PROVENANCE_KEY,
    STORE_SUFFIX,
    replace_text,
    run_json_path,
    slide_stem,
    store_path_for,
    store_paths_for,
)
from .provenance import build_provenance, layer_provenance, model_name
from .reader import (
    CachedStoreLevel,
    StoreNotReadyError,
    StoreView,
    bind_levels,
    blank_levels,
    open_store,
    read_store_provenance,
)
from .writer import TileStore, check_output_outside, check_writable_folder

__all__ = [
    "DONE_FILE",
    "NORM_STATS_FILE",
    "PROVENANCE_KEY",
    "STORE_SUFFIX",
    "CachedStoreLevel",
    "ForeignPathError",
    "OtherSourceError",
    "OutputNotWritableError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreNotReadyError",
    "StoreView",
    "StoreWriteError",
    "TileStore",
    "bind_levels",
    "blank_levels",
    "build_provenance",
    "check_output_outside",
    "check_writable_folder",
    "layer_provenance",
    "model_name",
    "open_store",
    "read_store_provenance",
    "replace_text",
    "run_json_path",
    "same_source",
    "slide_stem",
    "source_identity",
    "store_path_for",
    "store_paths_for",
]
