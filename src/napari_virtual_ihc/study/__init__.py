"""Blinded reader studies (core, napari-free): build a bundle, record answers, analyse agreement.

Light imports only here (the reader widget needs no statistics stack); the statistics live in
``study.analysis`` / ``study.ratings`` / ``study.report`` and the importer in ``study.importer``.
"""

from .bundle import BuildOptions, Bundle, build_study, load_bundle, load_key
from .cases import CaseSpec, ImageSource, read_case_table
from .errors import (
    AnswerImportError,
    BundleError,
    CaseTableError,
    OrderingError,
    ReaderError,
    StoreError,
    StudyError,
    WashoutError,
)
from .session import ReaderSession
from .store import AnswerStore
from .timing import ActiveTimer

__all__ = [
    "ActiveTimer",
    "AnswerImportError",
    "AnswerStore",
    "BuildOptions",
    "Bundle",
    "BundleError",
    "CaseSpec",
    "CaseTableError",
    "ImageSource",
    "OrderingError",
    "ReaderError",
    "ReaderSession",
    "StoreError",
    "StudyError",
    "WashoutError",
    "build_study",
    "load_bundle",
    "load_key",
    "read_case_table",
]
