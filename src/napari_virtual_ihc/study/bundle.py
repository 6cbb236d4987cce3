"""Study bundles: build one from a case table, and load one back with every path checked.

A bundle is a folder a reader receives: ``manifest.json`` plus ``images/<random id>.png``. It names
images by random IDs only; which image is which case and modality lives in the unblinding key, a separate
JSON file written outside the bundle folder for the coordinator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .cases import REAL, CaseSpec, read_case_table
from .encode import (
    FIXED_MTIME,
    MAX_PIXELS_WITHOUT_REGION,
    decode_png,
    encode_png,
    fit_to_size,
    read_source,
    write_fixed_time,
)
from .errors import BundleError, StudyError
from .ordering import gapped_order, reader_rng, session_split
from .store import ALGORITHM_READER
from .tiled import read_levels, source_size, write_tiled

TILED_EXT = ".tif"

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "reader-study-bundle"  # no product name: the manifest must not say "virtual"
KEY_FORMAT = "napari-virtual-ihc/study-key"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StudyItem:
    """One thing a reader scores: an image, optionally with an H&E context image beside it."""

    image: str
    context: str | None = None


@dataclass(frozen=True)
class SessionPlan:
    number: int
    items: tuple[StudyItem, ...]
    opens_on: dt.date | None = None
    washout_days: int | None = None  # days after the previous session was completed


@dataclass(frozen=True)
class BuildOptions:
    readers: tuple[str, ...]
    seed: int = 0
    min_gap: int = 10
    sessions: bool = False
    washout_days: int | None = None
    second_session_opens: dt.date | None = None
    size: tuple[int, int] | None = None  # (width, height) for every image; default: each real image's size
    ultralow: bool = False
    title: str = "HER2 reader study"
    whole_slide: bool = False  # every case as a tiled pyramid (cases too large for a PNG always are)


@dataclass
class Bundle:
    """A loaded, validated bundle (what the reader side sees: no sources, no modalities)."""

    root: Path
    study_id: str
    title: str
    ultralow: bool
    images: dict[str, dict[str, Any]]
    readers: dict[str, list[SessionPlan]]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def image_path(self, image_id: str) -> Path:
        if image_id not in self.images:
            raise BundleError(f"image {image_id!r} is not in this bundle")
        return self.root / self.images[image_id]["file"]

    def is_tiled(self, image_id: str) -> bool:
        return str(self.images[image_id]["file"]).endswith(TILED_EXT)

    def _existing(self, image_id: str) -> Path:
        path = self.image_path(image_id)
        if not path.is_file():
            raise BundleError(f"the image file of this case is missing from the study folder ({path.name})")
        return path

    def load_pixels(self, image_id: str) -> np.ndarray:
        """Full-resolution pixels in memory (a tiled image only when small enough: else ``load_levels``)."""
        path = self._existing(image_id)
        if self.is_tiled(image_id):
            level0 = self.load_levels(image_id)[0]
            if level0.shape[0] * level0.shape[1] > MAX_PIXELS_WITHOUT_REGION:
                raise BundleError(f"{path.name} is a whole slide: read it with load_levels()")
            return np.asarray(level0[:])
        try:
            return decode_png(path)
        except Exception as exc:
            raise BundleError(f"bundle image {self.images[image_id]['file']} is unreadable: {exc}") from exc

    def load_levels(self, image_id: str) -> list[Any]:
        """The image as pyramid levels, full resolution first: lazy zarr arrays for a whole slide, one
        in-memory array for a PNG."""
        path = self._existing(image_id)
        if self.is_tiled(image_id):
            return read_levels(path)
        return [self.load_pixels(image_id)]

    def sessions_for(self, reader_id: str) -> list[SessionPlan]:
        if reader_id not in self.readers:
            from .errors import ReaderError

            raise ReaderError(f"reader ID {reader_id!r} is not part of this study")
        return self.readers[reader_id]


def _new_id(taken: set[str]) -> str:
    while True:
        token = secrets.token_hex(6)
        if token not in taken:
            taken.add(token)
            return token


def build_study(
    cases: Sequence[CaseSpec] | str | Path,
    out_dir: str | Path,
    options: BuildOptions,
    key_path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path]:
    """Write a bundle folder and its unblinding key; returns (bundle_dir, key_path)."""
    if not isinstance(cases, Sequence) or isinstance(cases, str):
        cases = read_case_table(cases)
    cases = list(cases)
    if not options.readers or len(set(options.readers)) != len(options.readers):
        raise StudyError("give at least one reader ID, each once")
    if ALGORITHM_READER in options.readers:
        raise StudyError(f"the reader ID {ALGORITHM_READER!r} is reserved for the HER2 estimate")
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {out} is a file; give a new folder for the bundle")
    if out.exists() and any(out.iterdir()):
        raise StudyError(f"{out} exists and is not empty; choose a new bundle folder")
    key = Path(key_path).resolve() if key_path else out.parent / f"{out.name}_key.json"
    if key.is_relative_to(out):
        raise StudyError("the unblinding key must be written outside the bundle folder")
    if key.exists():
        # another study's key: overwriting it would make that study's answers impossible to unblind
        raise StudyError(f"the key {key} already exists (another study's key?); it is never overwritten")
    created = not out.exists()
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only, or a parent that is a file
        raise StudyError(f"cannot create the bundle folder {out} ({exc.strerror or exc})") from exc
    try:
        return _build_into(cases, out, key, options, progress)
    except BaseException:
        # a half-written bundle must not be handed out (nor block a corrected re-run)
        shutil.rmtree(out / "images", ignore_errors=True)
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build_into(
    cases: list[CaseSpec],
    out: Path,
    key: Path,
    options: BuildOptions,
    progress: Callable[[int, int], None] | None,
) -> tuple[Path, Path]:

    taken: set[str] = set()
    # image id -> (case id, modality or "he", source)
    plan: dict[str, tuple[CaseSpec, str]] = {}
    groups: list[list[StudyItem]] = []
    for case in cases:
        group = []
        for modality in case.versions:
            image_id = _new_id(taken)
            plan[image_id] = (case, modality)
            context_id = None
            if case.context is not None:
                context_id = _new_id(taken)  # a separate copy per item: no shared file links two versions
                plan[context_id] = (case, "he")
            group.append(StudyItem(image_id, context_id))
        groups.append(group)

    images = _write_images(plan, out, options, progress)
    readers = {r: _plan_sessions(groups, options, r) for r in options.readers}
    study_id = secrets.token_hex(8)
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": FORMAT_VERSION,
        "study_id": study_id,
        "title": options.title,
        "scores": {"ultralow": options.ultralow},
        "min_gap": None if options.sessions else options.min_gap,
        "images": {i: images[i] for i in sorted(images)},
        "readers": {r: [_session_json(s) for s in sessions] for r, sessions in readers.items()},
    }
    write_fixed_time(out / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())
    key_doc = {
        "format": KEY_FORMAT,
        "version": FORMAT_VERSION,
        "study_id": study_id,
        "seed": options.seed,
        "ultralow": options.ultralow,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bundle": str(out),
        "images": {
            i: {
                "case_id": case.case_id,
                "modality": modality,
                "role": "context" if modality == "he" else "score",
                "source": str((case.context if modality == "he" else case.versions[modality]).path),  # type: ignore[union-attr]
                "region": _region_list(case),
            }
            for i, (case, modality) in sorted(plan.items())
        },
    }
    if any(c.reference for c in cases):
        key_doc["cases"] = {c.case_id: {"reference": c.reference} for c in cases}
    key.parent.mkdir(parents=True, exist_ok=True)
    try:
        with key.open("x") as f:  # exclusive: a key that appeared meanwhile is not overwritten either
            f.write(json.dumps(key_doc, indent=1, sort_keys=True))
    except FileExistsError as exc:
        raise StudyError(f"the key {key} already exists; it is never overwritten") from exc
    for d in (out / "images", out):
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    return out, key


def _region_list(case: CaseSpec) -> list[int] | None:
    region = case.versions[REAL].region
    return None if region is None else list(region)


def _write_images(
    plan: dict[str, tuple[CaseSpec, str]],
    out: Path,
    options: BuildOptions,
    progress: Callable[[int, int], None] | None,
) -> dict[str, dict[str, Any]]:
    # Case target sizes come from the real image; files are written in a random order so that creation
    # order / inode numbers do not pair versions of a case. A case is encoded one way for all its images
    # (PNG, or the tiled pyramid for whole slides), so the format never tells versions apart.
    targets: dict[str, tuple[int, int]] = {}
    tiled: dict[str, bool] = {}
    write_order = list(plan)
    random.Random(secrets.randbits(64)).shuffle(write_order)
    info: dict[str, dict[str, Any]] = {}
    for done, image_id in enumerate(write_order):
        case, modality = plan[image_id]
        if case.case_id not in targets:
            target = options.size or source_size(case.versions[REAL])
            # by the size written (--size may enlarge a small image): a PNG is decoded whole into memory
            tiled[case.case_id] = options.whole_slide or target[0] * target[1] > MAX_PIXELS_WITHOUT_REGION
            targets[case.case_id] = target
        src = case.context if modality == "he" else case.versions[modality]
        assert src is not None
        target = targets[case.case_id]
        # A random salt per image: the two H&E copies of a case (the same pixels) get unrelated digests,
        # so the manifest does not pair a case's versions; integrity is checked with the salt.
        salt = secrets.token_hex(16)
        if tiled[case.case_id]:
            rel = f"images/{image_id}{TILED_EXT}"
            sizes = write_tiled(out / rel, src, target)
            os.utime(out / rel, (FIXED_MTIME, FIXED_MTIME))
            digest = _sha256_file(out / rel, salt)
            extra: dict[str, Any] = {"levels": [list(s) for s in sizes]}
        else:
            rgb = fit_to_size(read_source(src), target)
            data = encode_png(rgb)
            rel = f"images/{image_id}.png"
            write_fixed_time(out / rel, data)
            digest = hashlib.sha256(bytes.fromhex(salt) + data).hexdigest()
            extra = {}
        info[image_id] = {
            "file": rel,
            "salt": salt,
            "sha256": digest,
            "width": int(target[0]),
            "height": int(target[1]),
        }
        info[image_id].update(extra)
        if progress is not None:
            progress(done + 1, len(write_order))
    return info


def _sha256_file(path: Path, salt: str = "") -> str:
    """sha256 of ``salt`` (hex; empty in bundles made before salting) followed by the file's bytes."""
    h = hashlib.sha256(bytes.fromhex(salt))
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _plan_sessions(groups: list[list[StudyItem]], options: BuildOptions, reader: str) -> list[SessionPlan]:
    rng = reader_rng(options.seed, reader)
    if not options.sessions:
        return [SessionPlan(1, tuple(gapped_order(groups, options.min_gap, rng)))]
    plans = []
    for n, items in enumerate(session_split(groups, rng), start=1):
        plans.append(
            SessionPlan(
                n,
                tuple(items),
                opens_on=options.second_session_opens if n > 1 else None,
                washout_days=options.washout_days if n > 1 else None,
            )
        )
    return plans


def _session_json(s: SessionPlan) -> dict[str, Any]:
    return {
        "number": s.number,
        "opens_on": s.opens_on.isoformat() if s.opens_on else None,
        "washout_days": s.washout_days,
        "items": [{"image": it.image, "context": it.context} for it in s.items],
    }


def _safe_relative(root: Path, rel: Any) -> Path:
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"manifest path {rel!r} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or "\\" in rel or ".." in p.parts or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"manifest path {rel!r} points outside the bundle: refused")
    full = (root / p).resolve()
    if not full.is_relative_to(root):
        raise BundleError(f"manifest path {rel!r} resolves outside the bundle: refused")
    return full


def load_bundle(path: str | Path, verify_hashes: bool = True) -> Bundle:
    """Open a bundle folder (or its manifest) and validate every entry before anything is shown."""
    root = Path(path)
    if root.is_file() and root.name == MANIFEST_NAME:
        root = root.parent
    root = root.resolve()
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a study bundle (no {MANIFEST_NAME})")
    try:
        doc = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST_NAME} is not a study bundle manifest")
    if doc.get("version") != FORMAT_VERSION:
        raise BundleError(f"unsupported bundle version {doc.get('version')!r}")
    images = doc.get("images")
    if not isinstance(images, dict) or not images:
        raise BundleError("manifest lists no images")
    for image_id, entry in images.items():
        if not isinstance(entry, dict):
            raise BundleError(f"manifest entry {image_id!r} is malformed")
        full = _safe_relative(root, entry.get("file"))
        if not full.is_file():
            raise BundleError(f"bundle image {entry.get('file')!r} is missing")
        if verify_hashes and entry.get("sha256"):
            salt = entry.get("salt", "")
            if not isinstance(salt, str) or len(salt) % 2 or any(c not in "0123456789abcdef" for c in salt):
                raise BundleError(f"manifest entry {image_id!r} has a malformed salt")
            digest = _sha256_file(full, salt)
            if digest != entry["sha256"]:
                raise BundleError(f"bundle image {entry['file']!r} was modified (checksum mismatch)")
    readers: dict[str, list[SessionPlan]] = {}
    for reader, sessions in (doc.get("readers") or {}).items():
        plans = []
        for s in sessions:
            items = []
            for it in s.get("items", []):
                for ref in (it.get("image"), it.get("context")):
                    if ref is not None and ref not in images:
                        raise BundleError(f"session refers to unknown image {ref!r}")
                items.append(StudyItem(it["image"], it.get("context")))
            plans.append(
                SessionPlan(
                    int(s["number"]),
                    tuple(items),
                    opens_on=dt.date.fromisoformat(s["opens_on"]) if s.get("opens_on") else None,
                    washout_days=s.get("washout_days"),
                )
            )
        readers[str(reader)] = plans
    if not readers:
        raise BundleError("manifest lists no readers")
    return Bundle(
        root=root,
        study_id=str(doc.get("study_id")),
        title=str(doc.get("title", "Reader study")),
        ultralow=bool((doc.get("scores") or {}).get("ultralow", False)),
        images=images,
        readers=readers,
        manifest=doc,
    )


def load_key(path: str | Path) -> dict[str, Any]:
    """The coordinator's unblinding key."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StudyError(f"cannot read the study key {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT:
        raise StudyError(f"{path} is not a study key")
    return doc
