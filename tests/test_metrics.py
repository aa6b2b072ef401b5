"""metrics: the ROC helpers the Table V protocol needs (AUROC, threshold at a false-alarm rate)."""
import numpy as np
from sklearn.metrics import roc_auc_score

from iqalib import metrics


def test_auroc_is_scikit_learns_with_unusable_scores_ranked_highest():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 200), rng.normal(1, 1, 150)
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[neg, pos])
    assert metrics.auroc(neg, pos) == expected
    assert metrics.auroc(neg, np.r_[pos[:-1], np.inf]) >= metrics.auroc(neg, np.r_[pos[:-1], -np.inf])
    assert metrics.auroc(np.zeros(3), np.r_[np.nan, np.nan]) == 1.0  # unusable = surely not fit
    assert np.isnan(metrics.auroc(neg, []))


def test_threshold_at_fpr_flags_at_most_the_target_share_of_negatives():
    neg = np.random.default_rng(1).normal(size=1000)
    for target in (0.0857, 0.05, 0.01):
        t = metrics.threshold_at_fpr(neg, target)
        assert np.mean(neg > t) <= target
        assert t in neg  # a sample threshold, reproducible from the scores alone
    assert metrics.threshold_at_fpr(np.arange(10.0), 0.0) == 9.0
