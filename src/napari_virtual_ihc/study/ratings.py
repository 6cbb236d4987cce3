"""Turn reader stores + the unblinding key into one tidy table of ratings (one row per reader x image)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import StudyError
from .store import ALGORITHM_READER, AnswerStore

COLUMNS = [
    "reader_id",
    "case_id",
    "modality",
    "image_id",
    "score",
    "confidence",
    "seconds",
    "comment",
    "source",
]


def store_paths(answers: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the ``*.sqlite`` stores they hold."""
    out: list[Path] = []
    for a in answers:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(p.glob("*.sqlite")))
        elif p.is_file():
            out.append(p)
        else:
            raise StudyError(f"{p} is neither an answer store nor a folder of them")
    if not out:
        raise StudyError("no answer stores (*.sqlite) found")
    return out


def key_modalities(key: dict[str, Any] | None) -> list[str]:
    """Every modality a study's key has images of (so one nobody scored still appears in the report)."""
    images = (key or {}).get("images", {})
    return sorted({v["modality"] for v in images.values() if v.get("role") == "score"})


def collect_ratings(
    key: dict[str, Any] | None, stores: Iterable[str | Path], include_algorithm: bool = False
) -> pd.DataFrame:
    """Latest answer of every reader to every scored image, unblinded with the key.

    The reader ``algorithm`` (the overlays' HER2 estimate, ``study.algorithm``) is left out unless
    ``include_algorithm``: it is a comparison the coordinator asks for, not one of the study's readers.
    """
    images = (key or {}).get("images", {})
    rows: list[dict[str, Any]] = []
    for path in store_paths(stores):
        with AnswerStore.open_existing(path) as store:
            if store.reader_id == ALGORITHM_READER and not include_algorithm:
                continue
            if key is not None and store.study_id not in (key["study_id"], "imported"):
                raise StudyError(f"{path.name} belongs to another study ({store.study_id})")
            seconds = store.active_seconds()
            for answer in store.current_answers().values():
                if answer.image_id is not None:
                    info = images.get(answer.image_id)
                    if info is None:
                        raise StudyError(f"{path.name}: image {answer.image_id} is not in the study key")
                    if info.get("role") != "score":
                        continue
                    case_id, modality = info["case_id"], info["modality"]
                else:
                    case_id, modality = answer.case_id, answer.modality
                rows.append(
                    {
                        "reader_id": store.reader_id,
                        "case_id": case_id,
                        "modality": modality,
                        "image_id": answer.image_id,
                        "score": answer.score,
                        "confidence": answer.confidence,
                        "seconds": answer.seconds
                        if answer.seconds is not None
                        else seconds.get(answer.image_id or "", float("nan")),
                        "comment": answer.comment,
                        "source": answer.source,
                    }
                )
    df = pd.DataFrame(rows, columns=COLUMNS)
    dupes = df.duplicated(["reader_id", "case_id", "modality"], keep="last")
    return df[~dupes].sort_values(["reader_id", "case_id", "modality"]).reset_index(drop=True)
