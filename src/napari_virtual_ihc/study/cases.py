"""The coordinator's table of cases: one row per case, a real IHC and one or more virtual versions.

Columns (header required, CSV or TSV): ``case_id``, ``real``, one or more ``virtual`` / ``virtual_<name>``
columns, optional ``he`` (H&E shown beside the IHC as context) and an optional slide region ``x, y, w, h``
(level-0 pixels, applied to every image of the row) and an optional ``reference`` (the reference
standard: a HER2 score such as the clinical one, or positive/negative e.g. from FISH). Relative paths are resolved against the table's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CaseTableError, StudyError
from .reference import parse_reference

REAL = "real"


@dataclass(frozen=True)
class ImageSource:
    """Where one image of a case comes from (never written into a reader bundle)."""

    path: Path
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class CaseSpec:
    case_id: str
    versions: dict[str, ImageSource]  # modality id ("real", "virtual", "virtual_<name>") -> source
    context: ImageSource | None = None  # H&E
    extra: dict[str, str] = field(default_factory=dict)
    reference: str = ""  # reference standard (clinical HER2 score or FISH class); key only, never shown

    @property
    def modalities(self) -> list[str]:
        return list(self.versions)


def _is_virtual_column(name: str) -> bool:
    return name == "virtual" or name.startswith("virtual_")


def read_case_table(path: str | Path) -> list[CaseSpec]:
    """Parse and validate the case table; every referenced file must exist."""
    path = Path(path)
    if not path.is_file():
        raise CaseTableError(f"case table {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise CaseTableError(f"case table {path} is empty")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") or "\t" in text.splitlines()[0] else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    header = [h.strip() for h in (rows[0].keys() if rows else [])]
    if "case_id" not in header or REAL not in header:
        raise CaseTableError(f"{path}: the header needs 'case_id' and 'real' columns, got {header}")
    virtual_cols = [h for h in header if _is_virtual_column(h)]
    if not virtual_cols:
        raise CaseTableError(f"{path}: no 'virtual' (or 'virtual_<name>') column in {header}")
    region_cols = [c for c in ("x", "y", "w", "h") if c in header]
    if region_cols and len(region_cols) != 4:
        raise CaseTableError(f"{path}: a region needs all of x, y, w, h (got {region_cols})")
    base = path.parent
    cases: list[CaseSpec] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        case_id = row.get("case_id", "")
        if not case_id:
            raise CaseTableError(f"{path}:{lineno}: empty case_id")
        if case_id in seen:
            raise CaseTableError(f"{path}:{lineno}: duplicate case_id {case_id!r}")
        seen.add(case_id)
        region = _parse_region(row, path, lineno) if region_cols else None
        versions: dict[str, ImageSource] = {}
        for col in [REAL, *virtual_cols]:
            if row.get(col):
                versions[col] = ImageSource(_resolve(base, row[col], path, lineno), region)
        if REAL not in versions:
            raise CaseTableError(f"{path}:{lineno}: case {case_id!r} has no real IHC image")
        if len(versions) < 2:
            raise CaseTableError(f"{path}:{lineno}: case {case_id!r} has no virtual IHC image")
        context = ImageSource(_resolve(base, row["he"], path, lineno), region) if row.get("he") else None
        cases.append(CaseSpec(case_id, versions, context, reference=row.get("reference", "")))
    if not cases:
        raise CaseTableError(f"{path}: no cases")
    try:
        parse_reference({c.case_id: c.reference for c in cases})
    except StudyError as exc:
        raise CaseTableError(f"{path}: {exc}") from exc
    return cases


def _resolve(base: Path, value: str, table: Path, lineno: int) -> Path:
    p = Path(value).expanduser()
    p = p if p.is_absolute() else (base / p)
    if not p.exists():
        raise CaseTableError(f"{table}:{lineno}: file {value!r} does not exist")
    return p.resolve()


def _parse_region(row: dict[str, str], table: Path, lineno: int) -> tuple[int, int, int, int] | None:
    values = [row.get(c, "") for c in ("x", "y", "w", "h")]
    if not any(values):
        return None
    try:
        x, y, w, h = (int(float(v)) for v in values)
    except ValueError as exc:
        raise CaseTableError(f"{table}:{lineno}: region x,y,w,h must be integers, got {values}") from exc
    if w <= 0 or h <= 0:
        raise CaseTableError(f"{table}:{lineno}: region width and height must be positive")
    return (x, y, w, h)
