"""A MIST re-split grouped by slide: no whole-slide image has tiles on both sides (ASP issue #6).

MIST's shipped ``trainA/valA`` split was drawn over tiles at random, so tiles of one slide sit in train and
validation (the dataset author confirms it and suggests re-splitting "based on the WSI IDs present in the
filenames"). :func:`resplit_mist` pools both splits, groups the pairs by the slide id parsed from each file name
(by default the text before the first ``_``; ``pattern`` is a regular expression whose first group is the id),
assigns whole slides to validation at random (seeded) until ``val_fraction`` of the tiles are there, and writes
``OUT/{trainA,trainB,valA,valB}`` (symbolic links, or copies) plus ``OUT/split.json`` naming the slides of each
side and how many slides the shipped split shared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .data import DatasetError, Pair, mist_pairs

DEFAULT_SLIDE_PATTERN = r"^([^_]+)_"


def slide_id(name: str, pattern: str = DEFAULT_SLIDE_PATTERN) -> str:
    m = re.search(pattern, name)
    if m is None or not m.groups():
        raise DatasetError(
            f"cannot parse a slide id from {name!r} with the pattern {pattern!r} (its first group is the id); "
            "pass --slide-pattern"
        )
    return m.group(1)


def resplit_mist(
    root: Path,
    out: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    pattern: str = DEFAULT_SLIDE_PATTERN,
    copy: bool = False,
) -> dict[str, Any]:
    """Write the grouped split; returns the report also written to ``OUT/split.json``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"--slide-pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    out = Path(out)
    if out.resolve().is_relative_to(Path(root).resolve()):
        raise DatasetError(f"--out {out} is inside the MIST folder {root}; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new folder for the re-split")
    shipped = {"train": mist_pairs(Path(root), "train"), "val": mist_pairs(Path(root), "val")}
    by_slide: dict[str, list[Pair]] = {}
    shipped_slides: dict[str, set[str]] = {"train": set(), "val": set()}
    names: set[str] = set()
    for split, pairs in shipped.items():
        for p in pairs:
            if p.name in names:
                raise DatasetError(f"{p.name} is in both the shipped train and val folders")
            names.add(p.name)
            sid = slide_id(p.name, pattern)
            by_slide.setdefault(sid, []).append(p)
            shipped_slides[split].add(sid)
    if len(by_slide) < 2:
        raise DatasetError(f"only {len(by_slide)} slide id found ({', '.join(by_slide)}): nothing to split")
    order = sorted(by_slide)
    np.random.default_rng(seed).shuffle(order)
    total = sum(len(v) for v in by_slide.values())
    val_slides: list[str] = []
    n_val = 0
    for sid in order:
        if n_val >= val_fraction * total or len(val_slides) == len(order) - 1:
            break
        val_slides.append(sid)
        n_val += len(by_slide[sid])
    train_slides = [s for s in order if s not in val_slides]
    for split, slides in (("train", train_slides), ("val", val_slides)):
        for side in ("A", "B"):
            (out / f"{split}{side}").mkdir(parents=True, exist_ok=True)
        for sid in slides:
            for p in by_slide[sid]:
                assert p.target is not None
                for src, side in ((p.source, "A"), (p.target, "B")):
                    dest = out / f"{split}{side}" / src.name
                    if copy:
                        shutil.copy2(src, dest)
                    else:
                        os.symlink(src.resolve(), dest)
    report = {
        "source": str(root),
        "pattern": pattern,
        "seed": seed,
        "val_fraction": val_fraction,
        "slides": len(by_slide),
        "train": {"slides": sorted(train_slides), "tiles": total - n_val},
        "val": {"slides": sorted(val_slides), "tiles": n_val},
        "shipped_split_slides_in_both": sorted(shipped_slides["train"] & shipped_slides["val"]),
    }
    (out / "split.json").write_text(json.dumps(report, indent=2))
    return report
