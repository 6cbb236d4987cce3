"""Import answers scored elsewhere (glass slides, another viewer) into per-reader answer stores.

CSV columns: ``reader_id``, ``score`` and either ``image_id`` (a bundle image) or ``case_id`` + ``modality``
(``real``, ``virtual``, ``virtual_<name>``); optional ``confidence`` (1-5), ``comment``, ``seconds``.
Rows are validated all together before anything is written, so a bad file imports nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .errors import AnswerImportError, StudyError
from .scores import parse_score
from .session import store_filename
from .store import AnswerStore


def import_answers_csv(
    csv_path: str | Path, answers_dir: str | Path, key: dict[str, Any] | None = None
) -> int:
    """Append every row as an answer event in ``answers_dir/<reader>.sqlite``; returns rows imported."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:  # UnicodeDecodeError: not a text file
        raise AnswerImportError(f"cannot read {csv_path} as a CSV of answers: {exc}") from exc
    delimiter = "\t" if "\t" in (text.splitlines() or [""])[0] else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    fields = set(reader.fieldnames or [])
    if not {"reader_id", "score"} <= fields:
        raise AnswerImportError(f"{csv_path.name}: needs reader_id and score columns, got {sorted(fields)}")
    if "image_id" not in fields and not {"case_id", "modality"} <= fields:
        raise AnswerImportError(f"{csv_path.name}: needs image_id, or case_id and modality")
    images = (key or {}).get("images", {})
    parsed: list[dict[str, Any]] = []
    for lineno, row in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k}
        try:
            entry = _parse_row(row, images, key is not None)
        except (StudyError, ValueError) as exc:
            raise AnswerImportError(f"{csv_path.name}:{lineno}: {exc}") from exc
        parsed.append(entry)
    if not parsed:
        raise AnswerImportError(f"{csv_path.name}: no answers")
    study_id = key["study_id"] if key is not None else "imported"
    stores: dict[str, AnswerStore] = {}
    try:
        for e in parsed:
            reader_id = e.pop("reader_id")
            if reader_id not in stores:
                stores[reader_id] = AnswerStore(
                    Path(answers_dir) / store_filename(reader_id), study_id, reader_id
                )
            stores[reader_id].record_answer(source=f"import:{csv_path.name}", **e)
    finally:
        for s in stores.values():
            s.close()
    return len(parsed)


def _parse_row(row: dict[str, str], images: dict[str, Any], have_key: bool) -> dict[str, Any]:
    if not row.get("reader_id"):
        raise ValueError("empty reader_id")
    image_id = row.get("image_id") or None
    case_id = row.get("case_id") or None
    modality = row.get("modality") or None
    if image_id is not None:
        if have_key and image_id not in images:
            raise ValueError(f"image_id {image_id!r} is not in the study key")
    elif not (case_id and modality):
        raise ValueError("give image_id, or case_id and modality")
    conf = row.get("confidence") or None
    seconds = row.get("seconds") or None
    return {
        "reader_id": row["reader_id"],
        "image_id": image_id,
        "case_id": None if image_id else case_id,
        "modality": None if image_id else modality,
        "score": parse_score(row["score"]),
        "confidence": None if conf is None else int(conf),
        "comment": row.get("comment", ""),
        "seconds": None if seconds is None else float(seconds),
    }
