"""Register a moving slide (real IHC) to a fixed slide (H&E) of consecutive sections.

Stages, each on SimpleITK (Mattes mutual information on hematoxylin optical density, multi-resolution):
1. coarse: every rotation and its mirror image, with FFT shifts (``coarse.search``), on ~192 px views, plus
   one start from SIFT keypoint matches and RANSAC (``matching.feature_start``: finds torn sections);
2. rigid: the best few coarse starts refined (Euler 2-D), the lowest metric wins;
3. affine: the rigid result refined with shear and anisotropic scale;
4. non-rigid (on by default): dense optical flow between the hematoxylin views (``flow``), smoothed, stored
   as a displacement grid; its affine part is moved into the affine and the flow rerun (``flow_refits``);
   kept only when the tissue outlines agree no worse than under the affine.
Quality (``quality.agreement_figures``: the alignment must be a peak of hematoxylin agreement among its
shifted and rotated perturbations) decides whether the result counts as converged; when the first start fails
it, further distinct starts are tried and the best kept. A poor result is returned with ``converged=False``
and its figures, never applied silently (callers refuse it unless told otherwise).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..inference.resample import view_downsample
from ..slides.base import Slide
from . import coarse, flow, matching, quality
from .errors import RegistrationCancelled, RegistrationError, SwappedInputError
from .features import Overview, density, overview, stain_kind, structure, tissue
from .transform import Displacement, SlideRecord, SlideTransform

Progress = Callable[[int, int, str], None]
STAGES = ("overviews", "coarse search", "rigid", "affine", "non-rigid", "quality")


@dataclass
class RegistrationSettings:
    coarse_side: int = 192  # px of the rotation/flip search views
    angle_step: float = 4.0  # degrees between tried rotations
    allow_flip: bool = True  # also try the mirror image (a section laid upside down)
    candidates: int = 3  # coarse starts refined by the rigid stage
    feature_start: bool = True  # one more start from SIFT matches + RANSAC (finds partial/torn sections)
    working_side: int = 1024  # px (longest side) of the rigid/affine views
    nonrigid: bool = True  # optical-flow refinement after the affine (flow.py; measured gains in the docs)
    nonrigid_side: int = 1024  # px (longest side) of the flow's views
    flow_refits: int = 1  # times the flow's affine part is moved into the affine and the flow rerun
    iterations: int = 150  # optimiser iterations per resolution level
    sampling: float = 0.25  # share of the fixed view's pixels the metric samples (random)
    gate_side: int = 512  # px of the views the quality gate compares (hematoxylin, sigma 1 px)
    min_peak_contrast: float = quality.MIN_CONTRAST  # gate: correlation above the perturbations' median
    min_peak_margin: float = quality.MIN_MARGIN  # gate: correlation above the best perturbation
    allow_swapped: bool = False  # accept an H&E-looking moving and IHC-looking fixed slide
    fallbacks: int = 2  # further distinct starts taken to the end when the first fails the gate
    seed: int = 1  # metric sampling seed; SimpleITK reads 0 as 'wall clock' (a different run each time)

    def __post_init__(self) -> None:
        if min(self.working_side, self.nonrigid_side, self.gate_side) < 64 or self.coarse_side < 32:
            raise ValueError("coarse_side >= 32, working_side, nonrigid_side and gate_side >= 64 px")
        if not 0 < self.angle_step <= 90:
            raise ValueError(f"angle_step must be in (0, 90] degrees, not {self.angle_step}")
        if self.seed <= 0:
            raise ValueError("seed must be >= 1 (SimpleITK takes 0 as 'seed from the clock')")
        if self.iterations < 1 or self.candidates < 1:
            raise ValueError("iterations and candidates must be >= 1")
        if self.flow_refits < 0:
            raise ValueError(f"flow_refits must be >= 0, not {self.flow_refits}")


@dataclass
class _View:
    """One slide's overview, hematoxylin OD image and tissue mask at one resolution."""

    ov: Overview
    structure: sitk.Image
    mask: np.ndarray
    mask_image: sitk.Image

    @classmethod
    def of(cls, slide: Slide, side: int, unit: tuple[float, float]) -> _View:
        ov = overview(slide, side, unit)
        struct = structure(ov.rgb)
        mask = tissue(density(ov.rgb))
        m = ov.image(mask.astype(np.float32))
        return cls(ov, ov.image(struct), mask, sitk.Cast(m, sitk.sitkUInt8))


@dataclass
class _Run:
    settings: RegistrationSettings
    cancel: threading.Event | None
    notes: list[str] = field(default_factory=list)

    def method(self, iterations: int, shrink: list[int]) -> sitk.ImageRegistrationMethod:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(self.settings.sampling, self.settings.seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetShrinkFactorsPerLevel(shrink)
        r.SetSmoothingSigmasPerLevel([max(s / 2.0, 0.0) for s in shrink])
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        if self.cancel is not None:
            cancel = self.cancel
            r.AddCommand(sitk.sitkIterationEvent, lambda: r.StopRegistration() if cancel.is_set() else None)
        return r

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise RegistrationCancelled("registration cancelled")


def _matched_side(fixed: _View, moving: Slide, unit: tuple[float, float], side: int) -> int:
    """Longest side (px) of the moving view whose pixels are as large as the fixed view's (up to ``2 * side``).

    Views are read at whole-number downsamples of their longest side, so a moving image on a larger canvas
    (the proSPC lesion rotated 37 degrees: 1154 px against the fixed 890) came at half the fixed view's
    resolution: the affine, the flow and the outline check all saw a coarser image than as scanned (flow
    dropped, median rTRE 0.0051 against 0.0047). Matching the spacing reads every orientation alike."""
    extent = max(moving.dimensions[0] * unit[0], moving.dimensions[1] * unit[1])
    return int(min(max(math.ceil(extent / min(fixed.ov.spacing)), 64), 2 * side))


def _affine(m: np.ndarray) -> sitk.AffineTransform:
    t = sitk.AffineTransform(2)
    t.SetMatrix(tuple(float(v) for v in m[:2, :2].ravel()))
    t.SetTranslation(tuple(float(v) for v in m[:2, 2]))
    return t


def _matrix(t: sitk.Transform) -> np.ndarray:
    """A linear SimpleITK transform (Euler, affine) as a 3 x 3 homogeneous matrix."""
    a = sitk.AffineTransform(2)
    if t.GetName() == "Euler2DTransform":
        e = sitk.Euler2DTransform(t)
        a.SetMatrix(e.GetMatrix())
        a.SetTranslation(e.GetTranslation())
        a.SetCenter(e.GetCenter())
    else:
        a = sitk.AffineTransform(t)
    m = np.eye(3)
    m[:2, :2] = np.asarray(a.GetMatrix()).reshape(2, 2)
    c = np.asarray(a.GetCenter())
    m[:2, 2] = np.asarray(a.GetTranslation()) + c - m[:2, :2] @ c
    return m


def _centroid(view: _View) -> tuple[float, float]:
    ys, xs = np.nonzero(view.mask)
    if xs.size == 0:
        raise RegistrationError("no tissue found in the fixed slide's overview")
    ox, oy = view.ov.origin
    sx, sy = view.ov.spacing
    return (ox + float(xs.mean()) * sx, oy + float(ys.mean()) * sy)


def _dilated_mask(view: _View, px: int = 4) -> sitk.Image:
    return sitk.BinaryDilate(view.mask_image, [px, px])


def _linear_stage(
    run: _Run,
    fixed: _View,
    moving: _View,
    start: np.ndarray,
    kind: str,
    shrink: list[int],
) -> tuple[np.ndarray, float]:
    """Refine ``start`` (3 x 3 fixed -> moving) with an Euler or affine transform; (matrix, metric)."""
    r = run.method(run.settings.iterations, shrink)
    r.SetMetricFixedMask(_dilated_mask(fixed))
    centre = _centroid(fixed)
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=run.settings.iterations, relaxationFactor=0.5
    )
    r.SetMovingInitialTransform(_affine(start))
    init: sitk.Euler2DTransform | sitk.AffineTransform
    init = sitk.Euler2DTransform() if kind == "rigid" else sitk.AffineTransform(2)
    init.SetCenter(centre)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(init, inPlace=True)
    r.Execute(fixed.structure, moving.structure)
    run.check_cancel()
    return start @ _matrix(init), float(r.GetMetricValue())


def _flow_stage(
    fixed: _View, moving: _View, linear: np.ndarray, refits: int = 0
) -> tuple[np.ndarray, Displacement]:
    """The moving hematoxylin view resampled through ``linear`` onto the fixed view, the dense flow between
    the two (:mod:`.flow`): (the affine, the displacement in physical units on the fixed view's grid).

    ``refits`` times, the affine part of the flow (``flow.affine_part`` over the fixed tissue) is moved into
    the affine and the flow computed again from the re-warped image: the affine stage's optimum depends on
    how the moving image lies, the flow's fit does not (Cc10 mirrored + 37 degrees: affine 0.0102 -> 0.0098,
    with the flow 0.0078 -> 0.0061, as scanned 0.0063 -> 0.0060)."""
    from scipy import ndimage as ndi

    h, w = fixed.mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    (ox, oy), (sx, sy) = fixed.ov.origin, fixed.ov.spacing
    phys = np.stack([ox + xs.ravel() * sx, oy + ys.ravel() * sy], axis=1)
    (mox, moy), (msx, msy) = moving.ov.origin, moving.ov.spacing
    plane = sitk.GetArrayViewFromImage(moving.structure)
    fixed_plane = sitk.GetArrayFromImage(fixed.structure)
    # view px -> physical: x_phys = origin + spacing * x_px
    to_phys = np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])
    for step in range(refits + 1):
        src = phys @ linear[:2, :2].T + linear[:2, 2]
        coords = [(src[:, 1] - moy) / msy, (src[:, 0] - mox) / msx]
        warped = ndi.map_coordinates(plane, coords, order=1, cval=0.0).reshape(h, w)
        d = flow.dense_flow(fixed_plane, warped)
        if step < refits:
            linear = linear @ to_phys @ flow.affine_part(d, fixed.mask) @ np.linalg.inv(to_phys)
    disp = Displacement(
        (d * np.array([sx, sy])).astype(np.float32), (float(ox), float(oy)), (float(sx), float(sy))
    )
    return linear, disp


#: Tissue-outline Dice the flow may lose and still be kept: the masks' own noise at their edges (measured
#: losses of kept flows 0.003-0.004). The proSPC lesion rotated 37 degrees once lost 0.009 here: its moving
#: mask had 19 % more "tissue" than as scanned (white padding moved the threshold, ``features.tissue``) and
#: its view was read at half resolution (``_matched_side``); with both fixed it loses 0.003-0.004.
FLOW_DICE_SLACK = 0.005


#: Share of the fixed tissue the affine-warped moving tissue must cover for the flow to run. Measured: whole
#: sections 0.96-0.99; the kidney with 40 % torn off 0.58, where the flow dragged tissue into the gap
#: (rTRE 0.0031 -> 0.0074); zeroing the flow outside the common tissue instead cost CD31 0.0036 -> 0.0046.
MIN_FLOW_COVERED = 0.9


def _flow_holds(linear: dict[str, float], nonrigid: dict[str, float]) -> bool:
    """Keep the non-rigid refinement when it raises the hematoxylin correlation and keeps the tissue outlines
    agreeing (a drifting field tears the outline)."""
    return (
        nonrigid["correlation"] > linear["correlation"]
        and nonrigid["tissue_dice"] >= linear["tissue_dice"] - FLOW_DICE_SLACK
    )


def measure_quality(fixed: _View, moving: _View, transform: SlideTransform) -> dict[str, float]:
    """Correlation of the hematoxylin images (inside the union of both tissue masks) and Dice of the masks, with the
    moving view resampled onto the fixed one through ``transform``."""
    h, w = fixed.mask.shape
    ds = fixed.ov.downsample
    grid = transform.fixed_grid((0, 0, round(w * ds), round(h * ds)), ds)[:h, :w]
    src = transform.fixed_to_moving(grid.reshape(-1, 2))
    mds = moving.ov.downsample
    cols = (src[:, 0] + 0.5) / mds - 0.5
    rows = (src[:, 1] + 0.5) / mds - 0.5
    from scipy import ndimage as ndi

    dens_m = sitk.GetArrayViewFromImage(moving.structure)
    warped = ndi.map_coordinates(dens_m, [rows, cols], order=1, cval=0.0).reshape(h, w)
    warped_mask = (
        ndi.map_coordinates(moving.mask.astype(np.float32), [rows, cols], order=1, cval=0.0).reshape(h, w)
        > 0.5
    )
    dens_f = sitk.GetArrayViewFromImage(fixed.structure)
    union = fixed.mask | warped_mask
    inter = fixed.mask & warped_mask
    dice = 2.0 * inter.sum() / max(int(fixed.mask.sum() + warped_mask.sum()), 1)
    covered = float(inter.sum() / max(int(fixed.mask.sum()), 1))
    return {
        "correlation": _correlation(dens_f, warped, union),
        "overlap_correlation": _correlation(dens_f, warped, inter),
        "tissue_dice": float(dice),
        "fixed_tissue_covered": covered,
    }


def _gate_plane(slide: Slide, side: int, unit: tuple[float, float]) -> quality.Plane:
    v = _View.of(slide, side, unit)
    return quality.Plane(sitk.GetArrayFromImage(v.structure), v.mask, v.ov.downsample)


def gate_planes(
    fixed: Slide, moving: Slide, transform: SlideTransform, side: int = 512
) -> tuple[quality.Plane, quality.Plane]:
    """The ``side`` px hematoxylin views the gate compares, in ``transform``'s physical units."""
    return (
        _gate_plane(fixed, side, transform.fixed.unit_per_px),
        _gate_plane(moving, side, transform.moving.unit_per_px),
    )


def _orientation(m: np.ndarray) -> tuple[bool, float]:
    """(mirrored, rotation in degrees) of a 3 x 3 map's linear part."""
    lin = m[:2, :2]
    mirrored = bool(np.linalg.det(lin) < 0)
    rot = lin @ np.diag([-1.0, 1.0]) if mirrored else lin
    return mirrored, float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))


def _distinct_starts(
    refined: list[tuple[float, np.ndarray, coarse.Candidate]], angle_step: float
) -> list[tuple[float, np.ndarray, coarse.Candidate]]:
    """Rigid results best first, without those whose orientation repeats an earlier one's."""
    out: list[tuple[float, np.ndarray, coarse.Candidate]] = []
    for r in refined:
        flip, angle = _orientation(r[1])
        if all(
            flip != o_flip or abs((angle - o_angle + 180) % 360 - 180) >= 2 * angle_step
            for o_flip, o_angle in (_orientation(o[1]) for o in out)
        ):
            out.append(r)
    return out


def _correlation(a_img: np.ndarray, b_img: np.ndarray, where: np.ndarray) -> float:
    a, b = a_img[where].astype(np.float64), b_img[where].astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if a.size > 10 and a.std() > 0 and b.std() > 0 else 0.0


def unit_per_px(
    fixed: Slide, moving: Slide
) -> tuple[tuple[float, float], tuple[float, float], str, list[str]]:
    """Physical units for both sides: µm when both slides record their pixel size, else pixels."""
    if fixed.mpp is not None and moving.mpp is not None:
        notes = []
        ratio = (sum(moving.mpp) / 2) / (sum(fixed.mpp) / 2)
        if abs(ratio - 1) > 0.02:
            notes.append(f"the slides differ in pixel size (moving/fixed µm/px = {ratio:.3g}); handled in µm")
        return tuple(fixed.mpp), tuple(moving.mpp), "um", notes  # type: ignore[return-value]
    notes = []
    if (fixed.mpp is None) != (moving.mpp is None):
        notes.append("only one slide records its pixel size: both treated in pixels (same scale assumed)")
    return (1.0, 1.0), (1.0, 1.0), "px", notes


def iter_registration(
    fixed: Slide,
    moving: Slide,
    settings: RegistrationSettings | None = None,
    cancel: threading.Event | None = None,
) -> Generator[tuple[int, int, str], None, SlideTransform]:
    """Yields ``(stage done, stages, name)`` after each stage; returns the :class:`SlideTransform`.

    Raises :class:`SwappedInputError` when the fixed slide looks like IHC and the moving one like H&E (unless
    ``settings.allow_swapped``) and :class:`RegistrationCancelled` when ``cancel`` is set.
    """
    s = settings or RegistrationSettings()
    run = _Run(s, cancel)
    total = len(STAGES) - (0 if s.nonrigid else 1)
    done = 0
    t0 = time.perf_counter()
    uf, um, units, notes = unit_per_px(fixed, moving)
    run.notes.extend(notes)
    fixed_w = _View.of(fixed, s.working_side, uf)
    moving_w = _View.of(moving, s.working_side, um)
    # what the flow and the outline check compare: the moving image at the fixed view's pixel size (a rotated
    # canvas read at working_side came coarser); the linear stages keep working_side (at the matched size the
    # affine of Cc10 mirrored + 37 degrees fell into a worse optimum: 0.0124 against 0.008)
    side_q = _matched_side(fixed_w, moving, um, s.working_side)
    same = view_downsample(moving.dimensions, side_q) == view_downsample(moving.dimensions, s.working_side)
    moving_q = moving_w if same else _View.of(moving, side_q, um)
    kinds = (stain_kind(fixed_w.ov.rgb, fixed_w.mask), stain_kind(moving_w.ov.rgb, moving_w.mask))
    if kinds == ("ihc", "he"):
        msg = "the fixed slide looks like IHC (no eosin) and the moving one like H&E: swapped?"
        if not s.allow_swapped:
            raise SwappedInputError(msg + " Give the H&E first (FIXED) and the IHC second (MOVING).")
        run.notes.append(msg + " (accepted as given)")
    done += 1
    yield done, total, STAGES[0]
    run.check_cancel()

    fixed_c = _View.of(fixed, s.coarse_side * 2, uf)
    moving_c = _View.of(moving, s.coarse_side * 2, um)
    flips = (False, True) if s.allow_flip else (False,)
    starts = coarse.search(
        fixed_c.structure, moving_c.structure, s.coarse_side, s.angle_step, flips, s.candidates
    )
    matched = matching.feature_start(fixed_w.ov, moving_w.ov, flips) if s.feature_start else None
    if matched is not None:
        starts.append(matched)
    done += 1
    yield done, total, STAGES[1]
    run.check_cancel()

    refined: list[tuple[float, np.ndarray, coarse.Candidate]] = []
    for cand in starts:
        try:
            m, metric = _linear_stage(run, fixed_c, moving_c, cand.matrix, "rigid", [2, 1])
        except RuntimeError as e:  # SimpleITK: e.g. a start under which the sections do not overlap
            run.notes.append(f"a coarse start was skipped ({str(e).strip().splitlines()[-1][:120]})")
            continue
        refined.append((metric, m, cand))
    if not refined:
        raise RegistrationError("no coarse start could be refined: the sections do not overlap under any")
    refined.sort(key=lambda r: r[0])

    def rigid_stage(start: tuple[float, np.ndarray, coarse.Candidate]) -> np.ndarray:
        return _linear_stage(run, fixed_w, moving_w, start[1], "rigid", [4, 2])[0]

    def affine_stage(rigid: np.ndarray) -> np.ndarray:
        return _linear_stage(run, fixed_w, moving_w, rigid, "affine", [4, 2, 1])[0]

    def start_note(start: tuple[float, np.ndarray, coarse.Candidate]) -> str:
        c = start[2]
        return (
            f"coarse start{' (keypoint matches)' if c is matched else ''}: "
            f"{c.angle_deg:.0f} deg{' mirrored' if c.flipped else ''} (score {c.score:.3f})"
        )

    rigid = rigid_stage(refined[0])
    run.notes.append(start_note(refined[0]))
    done += 1
    yield done, total, STAGES[2]

    linear = affine_stage(rigid)
    done += 1
    yield done, total, STAGES[3]
    stages = ["coarse", "rigid", "affine"]

    fixed_rec, moving_rec = SlideRecord.of(fixed, uf), SlideRecord.of(moving, um)
    result = SlideTransform(linear, fixed_rec, moving_rec, units=units, stages=stages, notes=run.notes)
    planes = gate_planes(fixed, moving, result, s.gate_side)
    figures = measure_quality(fixed_w, moving_q, result) | quality.agreement_figures(
        *planes, result.fixed_to_moving
    )
    if not quality.passes(figures, s.min_peak_contrast, s.min_peak_margin):
        # the rigid metric's favourite failed the gate: the next distinct starts get their turn, and the one
        # whose alignment agrees best (landmark-free: peak contrast) is kept
        for other in _distinct_starts(refined, s.angle_step)[1 : 1 + s.fallbacks]:
            run.check_cancel()
            alt = SlideTransform(
                affine_stage(rigid_stage(other)),
                fixed_rec,
                moving_rec,
                units=units,
                stages=stages,
                notes=run.notes,
            )
            alt_figures = measure_quality(fixed_w, moving_q, alt) | quality.agreement_figures(
                *planes, alt.fixed_to_moving
            )
            if alt_figures["peak_contrast"] > figures["peak_contrast"]:
                run.notes.append(f"the gate preferred another start: {start_note(other)}")
                result, figures = alt, alt_figures
    linear_passes = quality.passes(figures, s.min_peak_contrast, s.min_peak_margin)
    partial = figures["fixed_tissue_covered"] < MIN_FLOW_COVERED
    if s.nonrigid and not linear_passes:
        run.notes.append("non-rigid refinement skipped: the affine alignment did not pass the gate")
    elif s.nonrigid and partial:
        run.notes.append(
            f"non-rigid refinement skipped: the moving section covers {figures['fixed_tissue_covered']:.0%} of "
            f"the fixed tissue (a partial section; the flow would drag tissue into the gap)"
        )
    if s.nonrigid and linear_passes and not partial:  # a flow fitted to a wrong alignment would dress it up
        run.check_cancel()
        if s.nonrigid_side == s.working_side:
            fixed_n, moving_n = fixed_w, moving_q
        else:
            fixed_n = _View.of(fixed, s.nonrigid_side, uf)
            moving_n = _View.of(moving, _matched_side(fixed_n, moving, um, s.nonrigid_side), um)
        flow_linear, flow_field = _flow_stage(fixed_n, moving_n, result.matrix, s.flow_refits)
        candidate = SlideTransform(
            flow_linear,
            fixed_rec,
            moving_rec,
            flow_field,
            units,
            stages=[*result.stages, "flow"],
            notes=run.notes,
        )
        nr_figures = measure_quality(fixed_w, moving_q, candidate) | quality.agreement_figures(
            *planes, candidate.fixed_to_moving
        )
        # the flow raises the hematoxylin agreement it was fitted to whatever it does, so it is judged on what
        # it was not fitted to as well: the tissue outlines must agree no worse than under the affine alone
        if _flow_holds(figures, nr_figures) and quality.passes(
            nr_figures, s.min_peak_contrast, s.min_peak_margin
        ):
            result, figures = candidate, nr_figures
        else:
            run.notes.append(
                "non-rigid refinement dropped: it did not improve the agreement (hematoxylin correlation "
                f"{figures['correlation']:.3f} -> {nr_figures['correlation']:.3f}, tissue outline Dice "
                f"{figures['tissue_dice']:.3f} -> {nr_figures['tissue_dice']:.3f})"
            )
    if s.nonrigid:
        done += 1
        yield done, total, STAGES[4]
    figures["seconds"] = time.perf_counter() - t0
    result.quality = figures
    result.converged = quality.passes(figures, s.min_peak_contrast, s.min_peak_margin)
    if not result.converged:
        result.notes.append(
            f"poor alignment: it is not a clear peak of hematoxylin agreement (correlation "
            f"{figures['peak_correlation']:.3f}, {figures['peak_margin']:+.3f} against the best of its shifted / "
            f"rotated perturbations (needs > {s.min_peak_margin}), {figures['peak_contrast']:+.3f} against their "
            f"median (needs >= {s.min_peak_contrast}); tissue overlap {figures['tissue_dice']:.3f})"
        )
    done += 1
    yield done, total, STAGES[-1]
    return result


def register(
    fixed: Slide,
    moving: Slide,
    settings: RegistrationSettings | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> SlideTransform:
    """:func:`iter_registration` run to the end, ``progress(done, total, stage)`` after each stage."""
    steps = iter_registration(fixed, moving, settings, cancel)
    while True:
        try:
            done, total, stage = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, stage)
