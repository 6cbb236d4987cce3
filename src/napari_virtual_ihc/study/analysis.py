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


@dataclass
class InterReader:
    modality: str
    n_cases: int
    readers: list[str]
    fleiss: float
    pairwise: list[dict[str, Any]]


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


def wilson(k: int, n: int, alpha: float = 0.05) -> Proportion:
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"), float("nan"))
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return Proportion(int(k), int(n), k / n, float(low), float(high))


def kappa(a: np.ndarray, b: np.ndarray, weights: str | None, n_labels: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b, weights=weights, labels=list(range(n_labels))))


def kappa_with_ci(
    a: np.ndarray, b: np.ndarray, weights: str | None, n_labels: int, n_boot: int, seed: int
) -> Estimate:
    """Kappa and its percentile bootstrap CI, resampling cases (pairs stay together)."""
    if len(a) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    value = kappa(a, b, weights, n_labels)
    if len(a) < 2 or n_boot <= 0:
        return Estimate(value, float("nan"), float("nan"))
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
    mine = ratings[ratings.reader_id == reader]
    real = mine[mine.modality == REAL].set_index("case_id").score
    virt = mine[mine.modality == modality].set_index("case_id").score
    both = pd.concat([real.rename("real"), virt.rename("virtual")], axis=1, join="inner")
    na = (both == NOT_ASSESSABLE).any(axis=1)
    both = both[~na]
    a = np.array([categories.index(s) for s in both.real], dtype=int)
    b = np.array([categories.index(s) for s in both.virtual], dtype=int)
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
    )


def inter_reader(ratings: pd.DataFrame, categories: list[str], modality: str) -> InterReader | None:
    sub = ratings[(ratings.modality == modality) & (ratings.score != NOT_ASSESSABLE)]
    wide = sub.pivot_table(index="case_id", columns="reader_id", values="score", aggfunc="last").dropna()
    readers = [str(r) for r in wide.columns]
    if len(readers) < 2 or len(wide) < 2:
        return None
    idx = wide.map(categories.index).to_numpy(dtype=int)
    table, _ = aggregate_raters(idx, n_cat=len(categories))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fk = float(fleiss_kappa(table, method="fleiss"))
    pairs = []
    for i, j in itertools.combinations(range(len(readers)), 2):
        pairs.append(
            {
                "reader_a": readers[i],
                "reader_b": readers[j],
                "n": len(idx),
                "kappa_unweighted": kappa(idx[:, i], idx[:, j], None, len(categories)),
                "kappa_linear": kappa(idx[:, i], idx[:, j], "linear", len(categories)),
                "kappa_quadratic": kappa(idx[:, i], idx[:, j], "quadratic", len(categories)),
            }
        )
    return InterReader(modality, len(idx), readers, fk, pairs)


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
) -> StudyResults:
    """All statistics of a study from its tidy ratings table (see ``ratings.collect_ratings``)."""
    if ultralow is None:
        ultralow = bool((ratings.score == ULTRALOW).any())
    categories = ordinal_categories(ultralow)
    bad = set(ratings.score) - set(categories) - {NOT_ASSESSABLE}
    if bad:
        from .errors import StudyError

        raise StudyError(f"scores {sorted(bad)} are not categories of this study ({categories})")
    readers = sorted(ratings.reader_id.unique())
    virtual = sorted(m for m in ratings.modality.unique() if m != REAL)
    comparisons = [compare(ratings, categories, r, m, n_boot, seed) for r in readers for m in virtual]
    inter = [x for m in [REAL, *virtual] if (x := inter_reader(ratings, categories, m)) is not None]
    progress = ratings.groupby("reader_id").size().rename("answered").reset_index()
    if expected_per_reader:
        progress["of"] = expected_per_reader
    return StudyResults(
        categories, comparisons, inter, timing_table(ratings), ratings, seed, n_boot, progress
    )


def imrmc_table(ratings: pd.DataFrame) -> pd.DataFrame:
    """iMRMC-style long table: readerID, caseID, modalityID, score (numeric; not-assessable rows left out)."""
    t = ratings[ratings.score != NOT_ASSESSABLE]
    return pd.DataFrame(
        {
            "readerID": t.reader_id.to_numpy(),
            "caseID": t.case_id.to_numpy(),
            "modalityID": t.modality.to_numpy(),
            "score": [NUMERIC[s] for s in t.score],
        }
    )
