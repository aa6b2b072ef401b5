"""Numbers computed from arrays, on the ground floor: correlations (SROCC/PLCC), mean/sample std
over splits, finite-value helpers, percentile-bootstrap intervals, the robustness score R, the
ROC helpers (AUROC, threshold at a false-alarm rate, false alarms at a detection rate) and
selective classification's risk–coverage curve and AURC. numpy/scipy/scikit-learn only; no
iqalib imports, so every room that reports a number can use them.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats


def correlations(pred: np.ndarray, mos: np.ndarray) -> tuple[float, float]:
    """(SROCC, PLCC) over rows where both are finite; NaN when fewer than 3 rows or no spread."""
    pred, mos = np.asarray(pred, float), np.asarray(mos, float)
    ok = ~np.isnan(pred) & ~np.isnan(mos)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(mos[ok]) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(pred[ok], mos[ok])[0]), float(stats.pearsonr(pred[ok], mos[ok])[0])


def mean_std(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """``{c: mean, c_std: sample std (ddof=1)}`` of each column over the rows (e.g. SROCC over
    splits), NaN ignored; the std is NaN with fewer than two values."""
    out: dict[str, float] = {}
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce")
        out[c] = float(v.mean())
        out[f"{c}_std"] = sample_std(v)
    return out


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_ci(samples: tuple[np.ndarray, ...], statistic: Callable[..., Any] = _mean, *, paired: bool = True,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval at level 1 − ``alpha`` (``scipy.stats.bootstrap``, seeded).

    ``samples``: a tuple of 1-d arrays passed to ``statistic(*samples, axis=-1)``, which must be
    vectorised over ``axis`` (the default is the mean of one sample). With ``paired`` one index
    resample is shared by all samples (e.g. an image's fit weight and its correctness), else each is
    resampled on its own. Resamples whose statistic is NaN (e.g. no image judged fit) are left out
    before taking percentiles. Returns (low, high); (NaN, NaN) with fewer than two observations.
    """
    samples = tuple(np.asarray(s, float) for s in samples)
    sizes = [len(s) for s in samples]
    if paired and len(set(sizes)) > 1:
        raise ValueError(f"paired samples must have one length; got {sizes}")
    if min(sizes) < 2 or n_boot < 1:
        return float("nan"), float("nan")
    # resamples per vectorised call: bounds memory at ~10^7 values for large groups
    batch = max(1, min(n_boot, 10_000_000 // max(sizes)))
    # A degenerate distribution (e.g. no image flagged) has a well-defined percentile interval, a
    # point; scipy warns about it anyway. NaN resamples are dropped below.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(samples, statistic, n_resamples=n_boot, batch=batch, vectorized=True, paired=paired,
                              confidence_level=1 - alpha, method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    dist = dist[~np.isnan(dist)]
    if not len(dist):
        return float("nan"), float("nan")
    low, high = np.percentile(dist, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def sample_std(values: Sequence[float]) -> float:
    """Sample std (ddof=1) over splits, ignoring NaN; NaN with fewer than two values."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def finite(scores: np.ndarray) -> np.ndarray:
    """+inf / NaN (unusable -> surely not fit) become one above the largest finite score."""
    s = np.asarray(scores, float)
    bad = ~np.isfinite(s)
    if bad.any():
        top = np.max(s[~bad]) if (~bad).any() else 0.0
        s = np.where(bad, top + 1.0, s)
    return s


def robustness_score(clean: np.ndarray, attacked: np.ndarray) -> float:
    """The MSU metrics-robustness benchmark's R (Antsiferova et al., arXiv 2310.06958) on scores in
    [0, 1]: mean of log10(max(1 − s, s) / (|s − s′| + 1e-6)); higher = more robust."""
    s, t = np.asarray(clean, float), np.asarray(attacked, float)
    return float(np.mean(np.log10(np.maximum(1.0 - s, s) / (np.abs(s - t) + 1e-6))))


def relative_gain(clean: np.ndarray, attacked: np.ndarray) -> float:
    """The "Guardians of Image Quality" benchmark's relative gain (msu-video-group/adversarial-
    defenses-for-iqa, ``rel_gain``): mean |s − s′| / (s + 1e-6) on raw scores; lower = more robust."""
    s, t = np.asarray(clean, float), np.asarray(attacked, float)
    return float(np.mean(np.abs(s - t) / (s + 1e-6)))


def threshold_at_fpr(negatives: np.ndarray, target_fpr: float) -> float:
    """Smallest sample threshold t with share(negatives > t) <= target_fpr."""
    return float(np.quantile(negatives, 1.0 - target_fpr, method="higher"))


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC of a score that is higher on ``positives`` (scikit-learn), +inf/NaN treated as the
    highest score (``finite``); NaN when either side is empty."""
    from sklearn.metrics import roc_auc_score

    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not len(neg) or not len(pos):
        return float("nan")
    s = finite(np.r_[neg, pos])
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], s))


def fpr_at_tpr(negatives: np.ndarray, positives: np.ndarray, tpr: float = 0.95) -> float:
    """Share of ``negatives`` flagged at the lowest threshold that flags at least ``tpr`` of
    ``positives`` (higher score = flagged; +inf/NaN count as flagged): FPR at 95 % TPR, the OOD
    literature's companion to AUROC. NaN when either side is empty."""
    from sklearn.metrics import roc_curve

    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not len(neg) or not len(pos):
        return float("nan")
    fpr, tp, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], finite(np.r_[neg, pos]))
    return float(fpr[np.searchsorted(tp, tpr - 1e-12, side="left")])


def risk_coverage(correct: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selective classification (Geifman & El-Yaniv, NeurIPS 2017): accept images in order of
    rising ``score`` (higher = less fit) and, after each of the N acceptances, the coverage k/N and
    the risk (share of accepted images misclassified). Ties are broken at random in expectation:
    within a block of equal scores the errors are spread evenly, so a constant score has the same
    risk, 1 − accuracy, at every coverage. Written by hand: scikit-learn has no risk–coverage curve,
    and FD-Shifts, which defines it, is not a pip package."""
    correct, score = np.asarray(correct, bool), finite(np.asarray(score, float))
    n = len(correct)
    if not n:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(score, kind="stable")
    s, err = score[order], (~correct[order]).astype(float)
    # expected errors among the first k: errors of whole blocks before, plus the block's error rate
    # times how far into the block k reaches
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    block_err = np.add.reduceat(err, start)
    before = np.r_[0.0, np.cumsum(block_err)[:-1]]
    k = np.arange(1, n + 1)
    block = np.searchsorted(start, k - 1, side="right") - 1
    errors = before[block] + block_err[block] * (k - start[block]) / counts[block]
    return k / n, errors / k


def aurc(correct: np.ndarray, score: np.ndarray) -> float:
    """Area under the risk–coverage curve: the mean risk over the N coverages of ``risk_coverage``
    (lower = better; a constant score gives 1 − accuracy). NaN for no images."""
    _, risk = risk_coverage(correct, score)
    return float(risk.mean()) if len(risk) else float("nan")
