"""One entry point for nuclei: Cellpose when its weights can be had, an offline method otherwise.

Offline methods: "blobs" (multi-scale LoG seeds + watershed on the stain's nuclear optical density, see
``blobs``), "classical" (Otsu + distance-transform watershed) and "offline", the fallback: blobs on H&E and
where DAB is nuclear, classical where DAB is on membranes (what scored higher on the validation set's tune half
for each kind of stain).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from ..geometry import central_crop
from . import blobs
from .blobs import (
    CHECKS,
    LARGE_NUCLEI_AREA_SHARE,
    LARGE_NUCLEI_FACTOR,
    LARGE_NUCLEI_LOG_RATIO,
    LARGE_NUCLEI_PROBE_PX,
    MIN_CONTRAST_OD,
    RESOLVED_DIAMETER_PX,
    blob_scale_ratio,
    contrast_cut,
    median_area_share,
    nuclear_class_h_share,
    nuclear_class_level,
    segment_blobs,
)
from .cellpose_adapter import CellposeNuclei, CellposeUnavailable, load_cellpose
from .classical import check_compartment, nuclear_od, nuclear_signal, otsu_threshold, segment_classical

log = logging.getLogger(__name__)

OFFLINE_METHODS = ("offline", "blobs", "classical")
NUCLEI_METHODS = ("auto", "cellpose", *OFFLINE_METHODS)  # what make_segmenter takes: CLIs offer these


def offline_method_for(dab_od: np.ndarray | None, dab_compartment: str) -> str:
    """What "offline" runs: the blob detector on H&E and where DAB is nuclear (the classical path loses
    DAB-positive nuclei there), so an H&E and a Ki-67 IHC of the same cells are counted by one method; the
    classical path where DAB is on membranes or in cytoplasm (its DAB-ridge watershed separates stained cells).
    Each chosen on the tune half of the validation set, docs/analysis.md "Nuclei on any stain"."""
    return "classical" if dab_od is not None and dab_compartment != "nuclear" else "blobs"


@dataclass
class NucleiSegmenter:
    """Segments a hematoxylin OD map; ``method`` names what runs ("cellpose:<model>", "blobs", "classical" or
    "offline": blobs on H&E and nuclear DAB, classical on membrane DAB, see :func:`offline_method_for`)."""

    cellpose: CellposeNuclei | None
    fallback_reason: str = ""
    threshold: float | None = None  # classical: one Otsu cut for every tile (see calibrate)
    contrast_od: float | None = None  # blobs: one contrast cut for every tile (see calibrate)
    nuclear_class_od: float | None = None  # blobs: the overview's nuclear hematoxylin OD (see calibrate)
    nuclear_h_share: float | None = None  # blobs on H&E: the nuclear class's H / (H + eosin) (calibrate)
    offline: str = "offline"  # the method used when there is no Cellpose model
    check: str = "rules"  # blobs: the per-candidate check, the hand "rules" or "learned" (blobs.CHECKS)
    diameter_scale: float = 1.0  # blobs on H&E: LARGE_NUCLEI_FACTOR where the overview's nuclei are large
    large_nuclei_share: float | None = (
        None  # blobs.median_area_share of the overview (only where the LoG cue holds)
    )
    large_nuclei_log_ratio: float | None = None  # blobs.blob_scale_ratio of the overview, if measured

    def __post_init__(self) -> None:
        if self.offline not in OFFLINE_METHODS:
            raise ValueError(f"offline nuclei method must be one of {OFFLINE_METHODS}, not {self.offline!r}")
        if self.check not in CHECKS:
            raise ValueError(f"the nucleus check must be one of {CHECKS}, not {self.check!r}")

    @property
    def method(self) -> str:
        return self.cellpose.method if self.cellpose is not None else self.offline

    def __call__(
        self,
        hematoxylin_od: np.ndarray,
        diameter_px: float,
        dab_od: np.ndarray | None = None,
        dab_compartment: str = "membrane",
        eosin_od: np.ndarray | None = None,
    ) -> np.ndarray:
        """Labels. On IHC pass ``dab_od`` and where the marker's DAB sits: "membrane"/"cytoplasm" (DAB
        separates touching stained cells) or "nuclear" (Ki-67, ER, PR: nuclei are found on H + DAB). On H&E
        pass ``eosin_od`` (the deconvolution's second channel): the blob detector drops pale candidates that
        lean to eosin (cytoplasm and stroma texture)."""
        check_compartment(dab_compartment)
        if self.cellpose is not None:
            if dab_od is None:
                signal = hematoxylin_od
            elif dab_compartment == "nuclear":
                signal = nuclear_od(hematoxylin_od, dab_od, dab_compartment)
            else:
                signal = nuclear_signal(hematoxylin_od, dab_od)
            return self.cellpose.segment(signal, diameter_px)
        if self._offline_method(dab_od, dab_compartment) == "blobs":
            return segment_blobs(
                hematoxylin_od,
                diameter_px * self.diameter_scale,
                dab_od,
                dab_compartment,
                min_contrast_od=self.contrast_od,
                nuclear_class_od=self.nuclear_class_od,
                eosin_od=eosin_od,
                nuclear_h_share=self.nuclear_h_share,
                check=self.check,
            )
        return segment_classical(
            hematoxylin_od, diameter_px, self.threshold, dab_od=dab_od, dab_compartment=dab_compartment
        )

    def _offline_method(self, dab_od: np.ndarray | None, dab_compartment: str) -> str:
        """What runs without Cellpose on this stain (``offline``: see :func:`offline_method_for`)."""
        return offline_method_for(dab_od, dab_compartment) if self.offline == "offline" else self.offline

    @property
    def needs_calibration(self) -> bool:
        return self.cellpose is None and self.threshold is None and self.contrast_od is None

    def calibrate(
        self,
        hematoxylin_overview: np.ndarray,
        dab_overview: np.ndarray | None = None,
        dab_compartment: str = "membrane",
        diameter_px: float | None = None,
        eosin_overview: np.ndarray | None = None,
        large_nuclei: bool = True,
    ) -> None:
        """Fix the cuts from an overview of the whole area, so tiles cut the same way. Classical: Otsu on the
        signal the tiles are segmented on (H + DAB for a nuclear marker). Blobs: the contrast a nucleus
        needs, from the hematoxylin (every nucleus' counterstain) when the overview resolves nuclei
        (``diameter_px``: their size in overview pixels, >= 4), else the fixed default; and the mean hematoxylin
        OD of the overview's nuclear (upper Otsu) class, a share of which a nucleus' signal must reach; on H&E
        (``eosin_overview``) also that class's hematoxylin share, against which pale candidates' colour is read, and
        whether the area's nuclei are large (``blobs.LARGE_NUCLEI_FACTOR``; ``large_nuclei=False``: never, nor where
        the stains did not separate, :attr:`stains_not_separated`): then
        every tile reads at the larger diameter, with the cuts calibrated at it."""
        if self.cellpose is not None:
            return
        self.threshold = otsu_threshold(nuclear_od(hematoxylin_overview, dab_overview, dab_compartment))
        self._calibrate_blobs(
            hematoxylin_overview, dab_overview, dab_compartment, diameter_px, eosin_overview
        )
        self.diameter_scale, self.large_nuclei_share, self.large_nuclei_log_ratio = 1.0, None, None
        runs_blobs = self._offline_method(dab_overview, dab_compartment) == "blobs"
        if not large_nuclei or eosin_overview is None or dab_overview is not None or not runs_blobs:
            return
        if diameter_px is None or diameter_px < RESOLVED_DIAMETER_PX:  # the overview does not resolve nuclei
            return
        # where the stains did not separate, the hematoxylin's blobs are partly cytoplasm: its LoG scale cue misreads
        if self.stains_not_separated:
            return
        # H&E: are this area's nuclei large? (blobs.LARGE_NUCLEI_FACTOR; one answer for every tile)
        crop = central_crop(hematoxylin_overview.shape, LARGE_NUCLEI_PROBE_PX)  # bounds the probe's cost
        self.large_nuclei_log_ratio = blob_scale_ratio(hematoxylin_overview[crop], diameter_px)
        if self.large_nuclei_log_ratio < LARGE_NUCLEI_LOG_RATIO:
            return  # the scale cue fails, so no area share can switch: the costlier probe is not run
        large_px = diameter_px * LARGE_NUCLEI_FACTOR
        large = NucleiSegmenter(None, offline="blobs", check=self.check)
        large._calibrate_blobs(hematoxylin_overview, None, "membrane", large_px, eosin_overview)
        probe = large(hematoxylin_overview[crop], large_px, eosin_od=eosin_overview[crop])
        self.large_nuclei_share = median_area_share(probe, large_px)
        if self.large_nuclei_share > LARGE_NUCLEI_AREA_SHARE:
            self.contrast_od = large.contrast_od
            self.nuclear_class_od = large.nuclear_class_od
            self.nuclear_h_share = large.nuclear_h_share
            self.diameter_scale = LARGE_NUCLEI_FACTOR

    def _calibrate_blobs(
        self,
        hematoxylin_overview: np.ndarray,
        dab_overview: np.ndarray | None,
        dab_compartment: str,
        diameter_px: float | None,
        eosin_overview: np.ndarray | None,
    ) -> None:
        """The blob detector's cuts at ``diameter_px`` (see :meth:`calibrate`)."""
        nuclear_dab = dab_overview if dab_compartment == "nuclear" else None
        self.nuclear_class_od = nuclear_class_level(
            hematoxylin_overview, diameter_px or RESOLVED_DIAMETER_PX, nuclear_dab
        )
        if eosin_overview is not None:
            self.nuclear_h_share = nuclear_class_h_share(
                hematoxylin_overview, eosin_overview, diameter_px or RESOLVED_DIAMETER_PX
            )
        if diameter_px is not None and diameter_px >= RESOLVED_DIAMETER_PX:
            self.contrast_od = contrast_cut(hematoxylin_overview, diameter_px)
        else:
            self.contrast_od = MIN_CONTRAST_OD

    @property
    def stains_not_separated(self) -> bool:
        """The blob detector's seeds need the higher floor of an H&E slide whose stains deconvolution did not
        separate (``blobs.seed_floor_share``). Such a slide also keeps the expected diameter: its hematoxylin holds
        cytoplasm, whose smears answer the large-nucleus rule's LoG cue (``blobs.LARGE_NUCLEI_LOG_RATIO``), and on
        every frozen-section field of the validation set reading at 12 µm scored lower (docs/analysis.md "Session
        39")."""
        if self.cellpose is not None or self.check == "learned" or self.nuclear_class_od is None:
            return False  # Cellpose has no floor; the learned check seeds at its own (blobs.segment_blobs)
        share = blobs.seed_floor_share(self.nuclear_h_share, self.nuclear_class_od)
        return share != blobs.NUCLEAR_CLASS_SHARE

    @property
    def floor_note(self) -> str:
        """What the report says when the blob detector's seeds needed more than the usual share of the nuclear class
        (an H&E slide whose stains deconvolution did not separate, ``blobs.seed_floor_share``)."""
        if not self.stains_not_separated or self.nuclear_class_od is None:
            return ""
        share = blobs.seed_floor_share(self.nuclear_h_share, self.nuclear_class_od)
        return (
            f"poor stain separation: the nuclear class is pale ({self.nuclear_class_od:.2f} OD < "
            f"{blobs.EOSIN_LEANING_CLASS_OD}) and leans to eosin (hematoxylin share {self.nuclear_h_share:.2f} < "
            f"{blobs.EOSIN_LEANING_CLASS_H_SHARE}), so nuclei must reach {share} x its OD (not "
            f"{blobs.NUCLEAR_CLASS_SHARE}): cytoplasm texture would seed nuclei; read at the expected diameter "
            "(the large-nucleus rule does not run)"
        )

    @property
    def diameter_note(self) -> str:
        """What the report says about the nucleus size the offline detector used."""
        if self.diameter_scale == 1.0:
            return ""
        return (
            f"large nuclei: read at {self.diameter_scale:.2f} x the expected diameter "
            f"(median mask share {self.large_nuclei_share:.2f} > {LARGE_NUCLEI_AREA_SHARE}, "
            f"LoG ratio {self.large_nuclei_log_ratio:.2f} >= {LARGE_NUCLEI_LOG_RATIO})"
        )


def make_segmenter(
    method: str = "auto",
    cellpose_model: str | os.PathLike[str] = "nuclei",
    gpu: bool = False,
    check: str = "rules",
) -> NucleiSegmenter:
    """``method``: "auto" (Cellpose, "offline" when weights cannot be had), "cellpose" (error if
    unavailable), "offline", "blobs" or "classical". ``check``: the blob detector's per-candidate check,
    the hand "rules" (default) or "learned" (``nuclei.learned_check``)."""
    if method not in NUCLEI_METHODS:
        raise ValueError(f"unknown nuclei method {method!r} (auto, cellpose, offline, blobs, classical)")
    if method in OFFLINE_METHODS:
        return NucleiSegmenter(None, f"{method} chosen", offline=method, check=check)
    try:
        return NucleiSegmenter(load_cellpose(cellpose_model, gpu=gpu), check=check)
    except CellposeUnavailable as e:
        if method == "cellpose":
            raise
        log.warning("Cellpose unavailable, using the offline methods: %s", e)
        return NucleiSegmenter(None, str(e), check=check)
