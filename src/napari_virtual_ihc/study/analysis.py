"""Study statistics, every one computed by scikit-learn, statsmodels or scipy (none written by hand).

Per reader and virtual modality (virtual scored against the same reader's score of the real image):
BCI accuracy (same category) and within-one agreement with Wilson 95 % CIs
(``statsmodels.stats.proportion.proportion_confint(method="wilson")``); Cohen's kappa with linear and
quadratic weights (``sklearn.metrics.cohen_kappa_score``) with a seeded case-resampling bootstrap CI
(``scipy.stats.bootstrap(paired=True)``); the confusion matrix (``sklearn.metrics.confusion_matrix``);
McNemar at 3+ vs rest and 0 vs >= 1+ (``statsmodels...mcnemar``, exact binomial); Stuart-Maxwell
marginal homogeneity (``statsmodels SquareTable.homogeneity``). Across readers, per modality: Fleiss'
kappa (``statsmodels.stats.inter_rater.fleiss_kappa``) and pairwise weighted Cohen's kappa.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy.stats import bootstrap
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.contingency_tables import SquareTable, mcnemar
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from .cases import REAL
from .errors import StudyError
from .reference import SCORE_REFERENCE, Reference
from .scores import NOT_ASSESSABLE, NUMERIC, ONE, THREE, ULTRALOW, ordinal_categories

DEFAULT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Proportion:
    k: int
    n: int
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    note: str = ""  # why the value is undefined (nan), e.g. "every score was the same"


@dataclass(frozen=True)
class TestResult:
    statistic: float
    pvalue: float
    df: float | None = None
    table: list[list[int]] | None = None


@dataclass
class Comparison:
    """One reader's scores of one virtual modality against their scores of the real images."""

    reader_id: str
    modality: str
    n_pairs: int
    n_not_assessable: int
    accuracy: Proportion
    within_one: Proportion
    kappa_linear: Estimate
    kappa_quadratic: Estimate
    confusion: np.ndarray  # rows: real, columns: virtual
    mcnemar_3plus: TestResult | None
    mcnemar_0: TestResult | None
    stuart_maxwell: TestResult | None
    against: str = REAL  # what the scores are compared with: the real IHC, or "reference"


@dataclass
class InterReader:
    modality: str
    n_cases: int  # cases every reader scored (Fleiss); pairwise entries carry their own n
    readers: list[str]
    fleiss: float
    pairwise: list[dict[str, Any]]
    note: str = ""  # why Fleiss' kappa is undefined


@dataclass
class BinaryAccuracy:
    """A reader's scores, positive from ``threshold`` up, against a binary reference (e.g. FISH)."""

    reader_id: str
    modality: str
    threshold: str
    n: int
    n_not_assessable: int
    accuracy: Proportion
    sensitivity: Proportion
    specificity: Proportion
    kappa: Estimate


@dataclass
class StudyResults:
    categories: list[str]
    comparisons: list[Comparison]
    inter_reader: list[InterReader]
    timing: pd.DataFrame
    ratings: pd.DataFrame
    seed: int
    n_boot: int
    progress: pd.DataFrame = field(default_factory=pd.DataFrame)
    reference: Reference | None = None
    vs_reference: list[Comparison] = field(default_factory=list)  # HER2-score reference
    vs_truth: list[BinaryAccuracy] = field(default_factory=list)  # binary reference


def wilson(k: int, n: int, alpha: float = 0.05) -> Proportion:
    """Wilson interval from statsmodels, clamped so that low <= k/n <= high.

    At 0 % and 100 % statsmodels returns bounds a rounding error off the estimate (0.9999999999999999 for
    12/12), which made error bars negative by 1e-16; the Wilson interval always contains k/n, so the
    clamp only removes that rounding.
    """
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"), float("nan"))
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    est = k / n
    return Proportion(int(k), int(n), est, min(float(low), est), max(float(high), est))


def kappa(a: np.ndarray, b: np.ndarray, weights: str | None, n_labels: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b, weights=weights, labels=list(range(n_labels))))


def kappa_with_ci(
    a: np.ndarray, b: np.ndarray, weights: str | None, n_labels: int, n_boot: int, seed: int
) -> Estimate:
    """Kappa and its percentile bootstrap CI, resampling cases (pairs stay together)."""
    if len(a) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), "no case scored")
    value = kappa(a, b, weights, n_labels)
    note = undefined_kappa_note(a, b) if not np.isfinite(value) else ""
    if len(a) < 2 or n_boot <= 0 or note:
        return Estimate(value, float("nan"), float("nan"), note or ("one case: no CI" if len(a) < 2 else ""))
    with warnings.catch_warnings(), sklearn.config_context(skip_parameter_validation=True):
        warnings.simplefilter("ignore")
        res = bootstrap(
            (a, b),
            lambda x, y: kappa(x, y, weights, n_labels),
            paired=True,
            vectorized=False,
            n_resamples=n_boot,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high))


def undefined_kappa_note(*ratings: np.ndarray) -> str:
    """Why a kappa is nan: chance agreement is 1 when every rating is one and the same category."""
    values = np.unique(np.concatenate([np.asarray(r).ravel() for r in ratings]))
    if len(values) <= 1:
        return "undefined: every score was the same"
    return "undefined"


def mcnemar_at(a: np.ndarray, b: np.ndarray, threshold: int) -> TestResult | None:
    """McNemar's exact test on 'index >= threshold' for the two ratings of each case."""
    table = confusion_matrix(a >= threshold, b >= threshold, labels=[False, True])
    res = mcnemar(table, exact=True)
    return TestResult(float(res.statistic), float(res.pvalue), None, table.tolist())


def stuart_maxwell(table: np.ndarray) -> TestResult | None:
    """Marginal homogeneity over the categories actually used (None when undefined, e.g. no disagreement)."""
    used = (table.sum(axis=0) + table.sum(axis=1)) > 0
    sub = table[np.ix_(used, used)]
    if sub.shape[0] < 2 or np.trace(sub) == sub.sum():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = SquareTable(sub, shift_zeros=False).homogeneity(method="stuart_maxwell")
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(res.statistic):
        return None
    return TestResult(float(res.statistic), float(res.pvalue), float(res.df), sub.astype(int).tolist())


def compare(
    ratings: pd.DataFrame, categories: list[str], reader: str, modality: str, n_boot: int, seed: int
) -> Comparison:
    """One reader's virtual scores of ``modality`` against the same reader's scores of the real images."""
    mine = ratings[ratings.reader_id == reader]
    real = mine[mine.modality == REAL].set_index("case_id").score
    virt = mine[mine.modality == modality].set_index("case_id").score
    return compare_scores(real, virt, categories, reader, modality, n_boot, seed)


def compare_scores(
    first: pd.Series,
    second: pd.Series,
    categories: list[str],
    reader: str,
    modality: str,
    n_boot: int,
    seed: int,
    against: str = REAL,
) -> Comparison:
    """Agreement of two score series indexed by case (cases in both; not-assessable left out, counted)."""
    both = pd.concat([first.rename("a"), second.rename("b")], axis=1, join="inner")
    na = (both == NOT_ASSESSABLE).any(axis=1)
    both = both[~na]
    a = np.array([categories.index(s) for s in both.a], dtype=int)
    b = np.array([categories.index(s) for s in both.b], dtype=int)
    n = len(a)
    one = categories.index(ONE)
    # within one category: with ultralow, 0 and ultralow are the IHC-0 family, so distances use 0,0.5,1,2,3
    num = np.array([NUMERIC[c] for c in categories])
    within = int(np.sum(np.abs(num[a] - num[b]) <= 1.0)) if n else 0
    cm = (
        confusion_matrix(a, b, labels=list(range(len(categories)))) if n else np.zeros((len(categories),) * 2)
    )
    return Comparison(
        reader_id=reader,
        modality=modality,
        n_pairs=n,
        n_not_assessable=int(na.sum()),
        accuracy=wilson(int(np.sum(a == b)), n),
        within_one=wilson(within, n),
        kappa_linear=kappa_with_ci(a, b, "linear", len(categories), n_boot, seed),
        kappa_quadratic=kappa_with_ci(a, b, "quadratic", len(categories), n_boot, seed),
        confusion=cm.astype(int),
        mcnemar_3plus=mcnemar_at(a, b, categories.index(THREE)) if n else None,
        mcnemar_0=mcnemar_at(a, b, one) if n else None,
        stuart_maxwell=stuart_maxwell(cm) if n else None,
        against=against,
    )


def binary_against_reference(
    scores: pd.Series, truth: pd.Series, categories: list[str], threshold: str, reader: str, modality: str
) -> BinaryAccuracy:
    """Reader scores dichotomised at ``threshold`` (positive: score >= threshold) against a binary truth."""
    both = pd.concat([scores.rename("s"), truth.rename("t")], axis=1, join="inner")
    na = both.s == NOT_ASSESSABLE
    both = both[~na]
    cut = categories.index(threshold)
    called = np.array([categories.index(s) >= cut for s in both.s], dtype=bool)
    true = both.t.to_numpy(dtype=int).astype(bool)
    (tn, fp), (fn, tp) = (
        confusion_matrix(true, called, labels=[False, True]) if len(true) else ((0, 0), (0, 0))
    )
    n = len(true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(true, called, labels=[False, True])) if n else float("nan")
    return BinaryAccuracy(
        reader_id=reader,
        modality=modality,
        threshold=threshold,
        n=n,
        n_not_assessable=int(na.sum()),
        accuracy=wilson(int(tp + tn), n),
        sensitivity=wilson(int(tp), int(tp + fn)),
        specificity=wilson(int(tn), int(tn + fp)),
        kappa=Estimate(
            k, float("nan"), float("nan"), undefined_kappa_note(true, called) if np.isnan(k) else ""
        ),
    )


def inter_reader(ratings: pd.DataFrame, categories: list[str], modality: str) -> InterReader | None:
    """Fleiss' kappa on the cases every reader scored; pairwise kappas on the cases each pair scored."""
    sub = ratings[(ratings.modality == modality) & (ratings.score != NOT_ASSESSABLE)]
    wide = sub.pivot_table(index="case_id", columns="reader_id", values="score", aggfunc="last")
    readers = [str(r) for r in wide.columns]
    if len(readers) < 2:
        return None
    complete = wide.dropna()
    fk, note = float("nan"), "fewer than two cases scored by every reader"
    if len(complete) >= 2:
        idx = complete.map(categories.index).to_numpy(dtype=int)
        table, _ = aggregate_raters(idx, n_cat=len(categories))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fk = float(fleiss_kappa(table, method="fleiss"))
        note = undefined_kappa_note(idx) if not np.isfinite(fk) else ""
    pairs = []
    for i, j in itertools.combinations(range(len(readers)), 2):
        pair = wide.iloc[:, [i, j]].dropna()
        if pair.empty:
            continue
        x = np.array([categories.index(s) for s in pair.iloc[:, 0]])
        y = np.array([categories.index(s) for s in pair.iloc[:, 1]])
        entry: dict[str, Any] = {"reader_a": readers[i], "reader_b": readers[j], "n": len(x)}
        for name, w in (
            ("kappa_unweighted", None),
            ("kappa_linear", "linear"),
            ("kappa_quadratic", "quadratic"),
        ):
            entry[name] = kappa(x, y, w, len(categories))
        entry["note"] = undefined_kappa_note(x, y) if not np.isfinite(entry["kappa_unweighted"]) else ""
        pairs.append(entry)
    if not pairs:
        return None
    return InterReader(modality, len(complete), readers, fk, pairs, note)


def timing_table(ratings: pd.DataFrame) -> pd.DataFrame:
    """Active seconds per case, by reader and modality."""
    t = ratings.dropna(subset=["seconds"])
    if t.empty:
        return pd.DataFrame(columns=["reader_id", "modality", "n", "median_s", "mean_s", "total_s"])
    g = t.groupby(["reader_id", "modality"]).seconds
    return pd.DataFrame(
        {"n": g.count(), "median_s": g.median(), "mean_s": g.mean(), "total_s": g.sum()}
    ).reset_index()


def analyze(
    ratings: pd.DataFrame,
    *,
    ultralow: bool | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    expected_per_reader: int | None = None,
    modalities: list[str] | None = None,
    reference: Reference | None = None,
) -> StudyResults:
    """All statistics of a study from its tidy ratings table (see ``ratings.collect_ratings``).

    ``modalities`` (e.g. from the key) lists virtual modalities to report even when nobody scored them;
    ``reference`` adds each reader's accuracy per modality (real included) against the reference standard.
    Incomplete designs are analysed with what there is: every statistic uses the cases it can.
    """
    if ultralow is None:
        ultralow = bool((ratings.score == ULTRALOW).any()) or (
            reference is not None and ULTRALOW in reference.values.to_numpy()
        )
    categories = ordinal_categories(ultralow)
    bad = set(ratings.score) - set(categories) - {NOT_ASSESSABLE}
    if bad:
        raise StudyError(f"scores {sorted(bad)} are not categories of this study ({categories})")
    if reference is not None and reference.kind == SCORE_REFERENCE:
        wrong = set(reference.values) - set(categories)
        if wrong:
            raise StudyError(
                f"reference values {sorted(wrong)} are not categories of this study ({categories})"
            )
    readers = sorted(ratings.reader_id.unique())
    virtual = sorted({m for m in ratings.modality.unique() if m != REAL} | set(modalities or []) - {REAL})
    comparisons = [compare(ratings, categories, r, m, n_boot, seed) for r in readers for m in virtual]
    inter = [x for m in [REAL, *virtual] if (x := inter_reader(ratings, categories, m)) is not None]
    progress = ratings.groupby("reader_id").size().rename("answered").reset_index()
    if expected_per_reader:
        progress["of"] = expected_per_reader
    vs_reference: list[Comparison] = []
    vs_truth: list[BinaryAccuracy] = []
    if reference is not None:
        for r in readers:
            mine = ratings[ratings.reader_id == r]
            for m in [REAL, *virtual]:
                scores = mine[mine.modality == m].set_index("case_id").score
                if reference.kind == SCORE_REFERENCE:
                    vs_reference.append(
                        compare_scores(reference.values, scores, categories, r, m, n_boot, seed, "reference")
                    )
                else:
                    vs_truth.append(
                        binary_against_reference(
                            scores, reference.values, categories, reference.threshold, r, m
                        )
                    )
    return StudyResults(
        categories,
        comparisons,
        inter,
        timing_table(ratings),
        ratings,
        seed,
        n_boot,
        progress,
        reference=reference,
        vs_reference=vs_reference,
        vs_truth=vs_truth,
    )


def imrmc_table(ratings: pd.DataFrame, reference: Reference | None = None) -> pd.DataFrame:
    """iMRMC long table: readerID, caseID, modalityID, score (numeric; not-assessable rows left out).

    With a reference standard, every case it covers gets a ``truth`` row first (readerID and modalityID
    ``truth``, score 0 signal-absent or 1 signal-present, as iMRMC requires). A design where not every
    reader read every case is written as it is (iMRMC accepts missing reader x case rows).
    """
    t = ratings[ratings.score != NOT_ASSESSABLE]
    reads = pd.DataFrame(
        {
            "readerID": t.reader_id.to_numpy(),
            "caseID": t.case_id.to_numpy(),
            "modalityID": t.modality.to_numpy(),
            "score": [NUMERIC[s] for s in t.score],
        }
    )
    if reference is None:
        return reads
    truth = reference.truth()
    rows = pd.DataFrame(
        {
            "readerID": "truth",
            "caseID": truth.index.to_numpy(),
            "modalityID": "truth",
            "score": truth.to_numpy(),
        }
    )
    return pd.concat([rows, reads], ignore_index=True)
