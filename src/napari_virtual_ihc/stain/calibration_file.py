"""Named, saved calibrations: the stain vectors, the white point and the DAB OD cut-offs of one slide, as a
small JSON a user exports from one slide and loads for the next (as QuPath users share stain vectors).

Loading one fixes everything it holds: the white point and vectors are used as saved (not re-estimated) and
the intensity bins are its cut-offs, so two slides read with one calibration are read the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .calibration import StainCalibration
from .deconvolution import StainVectorError
from .membrane import DabBins

FORMAT = "napari-virtual-ihc stain calibration"
VERSION = 1


class CalibrationFileError(ValueError):
    """A calibration file that cannot be read or holds impossible values."""


def calibration_document(
    name: str, calibration: StainCalibration, bins: DabBins, source: str = ""
) -> dict[str, Any]:
    if not name.strip():
        raise CalibrationFileError("a calibration needs a name")
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name.strip(),
        "source": source,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "stains": calibration.as_dict(),
        "dab_cutoffs_od": {"weak": bins.weak, "moderate": bins.moderate, "strong": bins.strong},
    }


def save_calibration(
    path: str | Path, name: str, calibration: StainCalibration, bins: DabBins, source: str = ""
) -> Path:
    p = Path(path)
    doc = calibration_document(name, calibration, bins, source)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    return p


def load_calibration(path: str | Path) -> tuple[str, StainCalibration, DabBins]:
    """(name, stains with the saved white point and vectors, bins) of a saved calibration."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationFileError(f"cannot read the calibration {p}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationFileError(f'{p} is not a stain calibration (no "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise CalibrationFileError(f"{p}: calibration version {doc.get('version')!r} is not {VERSION}")
    try:
        cal = StainCalibration.from_dict(doc["stains"])
        cuts = doc["dab_cutoffs_od"]
        bins = DabBins(float(cuts["weak"]), float(cuts["moderate"]), float(cuts["strong"]), calibrated=True)
        name = str(doc["name"])
    except (KeyError, TypeError, ValueError, StainVectorError) as e:
        raise CalibrationFileError(f"{p}: {type(e).__name__}: {e}") from e
    loaded = StainCalibration(cal.stains, "calibration file", "calibration file", (f"loaded from {p.name}",))
    return name, loaded, bins
