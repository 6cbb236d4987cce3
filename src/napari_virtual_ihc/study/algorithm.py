"""The algorithm as a reader: the overlays' HER2 estimate of every study image, stored as reader ``algorithm``.

Each scored image of the key (real and virtual) is analysed from its source (the same slide region the
bundle shows, at the source's own resolution and µm/px, so ring widths in µm mean what they mean in the
overlay widget) by ``stain.analyze_slide``; its ``her2()`` category becomes the answer, "not assessable"
when no cell was found. Answers go into ``<folder>/algorithm.sqlite`` like any reader's, one durable
transaction each; a re-run skips images already scored, so an interrupted run continues. The folder is the
coordinator's (default: ``algorithm/`` beside the key), never inside the readers' bundle: per-image HER2
estimates next to the readers' answers would be a hint to every reader.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bundle import MANIFEST_NAME
from .cases import ImageSource
from .errors import StudyError
from .scores import NOT_ASSESSABLE, ULTRALOW
from .session import store_filename
from .store import ALGORITHM_READER, AnswerStore

ALGORITHM_SOURCE = "algorithm:stain.her2"


def _check_marker(marker: str) -> None:
    if marker != "her2":
        raise StudyError(
            f"the study scores HER2 categories (0/1+/2+/3+); the marker {marker!r} is not read on that scale"
        )


def her2_estimate(
    source: ImageSource,
    *,
    nuclei: str = "auto",
    mpp: float | None = None,
    ultralow: bool = False,
    marker: str = "her2",
) -> tuple[str, dict[str, Any]]:
    """(score, summary) of one image or slide region by the overlays' HER2 estimate. The study's scale is
    HER2's (0 / 1+ / 2+ / 3+), so ``marker`` must be "her2" (a nuclear marker has no place on it)."""
    from napari_virtual_ihc.slides import SlideError, open_slide
    from napari_virtual_ihc.stain import AnalysisSettings, analyze_slide

    _check_marker(marker)
    settings = AnalysisSettings(mode="ihc", nuclei_method=nuclei, mpp=mpp, marker=marker)
    try:
        with open_slide(source.path) as slide:
            result = analyze_slide(slide, settings, region=source.region)
    except (SlideError, OSError, ValueError) as exc:
        raise StudyError(f"the HER2 estimate of {source.path} failed: {exc}") from exc
    est = result.her2()
    if est.n_cells == 0:
        score = NOT_ASSESSABLE
    elif est.category == "0" and est.subcategory == "ultralow" and ultralow:
        score = ULTRALOW
    else:
        score = est.category
    summary = {
        "n_cells": est.n_cells,
        "h_score": round(est.h_score, 2),
        "label": est.label,
        "nuclei": result.nuclei_method,
        "marker": result.marker,
        "mpp": result.mpp,
        "mpp_assumed": result.mpp_assumed,
    }
    return score, summary


def default_algorithm_dir(key_path: str | Path) -> Path:
    """Where ``study algorithm`` writes by default: ``algorithm/`` beside the key (the coordinator's)."""
    return Path(key_path).parent / "algorithm"


def _refuse_inside_bundle(folder: Path) -> None:
    for d in (folder, *folder.parents):
        if (d / MANIFEST_NAME).is_file():
            raise StudyError(
                f"{folder} is inside the reader bundle {d}: the algorithm's per-image HER2 estimates would "
                "sit where the readers' app reads; write them beside the key (the default) and give both "
                "folders to `study analyze --answers`"
            )


def score_study_images(
    key: dict[str, Any],
    answers_dir: str | Path,
    *,
    nuclei: str = "auto",
    mpp: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    marker: str = "her2",
) -> int:
    """Record the HER2 estimate of every scored image of the study; returns how many were newly scored."""
    _check_marker(marker)
    _refuse_inside_bundle(Path(answers_dir).resolve())
    images = {i: v for i, v in key.get("images", {}).items() if v.get("role") == "score"}
    if not images:
        raise StudyError("the key lists no scored images")
    ultralow = bool(key.get("ultralow", False))
    store = AnswerStore(
        Path(answers_dir) / store_filename(ALGORITHM_READER), key["study_id"], ALGORITHM_READER
    )
    try:
        done = set(store.current_answers())
        todo = [i for i in sorted(images) if i not in done]
        for k, image_id in enumerate(todo):
            if cancel is not None and cancel.is_set():
                return k
            info = images[image_id]
            r = info.get("region")
            region = (int(r[0]), int(r[1]), int(r[2]), int(r[3])) if r else None
            source = ImageSource(Path(info["source"]), region)
            score, summary = her2_estimate(source, nuclei=nuclei, mpp=mpp, ultralow=ultralow, marker=marker)
            store.record_answer(
                image_id=image_id,
                score=score,
                confidence=None,
                comment=json.dumps(summary, sort_keys=True),
                source=ALGORITHM_SOURCE,
            )
            if progress is not None:
                progress(k + 1, len(todo))
        return len(todo)
    finally:
        store.close()
