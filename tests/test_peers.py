"""Peer detectors (Feature Squeezing) on the tiny classifier and the SYNTHETIC features of test_detector."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from iqalib import evaluation, peers
from tests.test_detector import _images, features, splits, tiny_classifier  # noqa: F401  (shared module fixtures)


def test_feature_squeezing_scores(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    constant = Image.new("RGB", (64, 64), (0, 255, 0))  # exact at 5 bits, unchanged by a median
    s = peers.feature_squeezing_scores(tiny_classifier(), [constant, *_images(3), str(bad)], batch_size=2,
                                       progress=False)
    assert s.shape == (5,) and np.isnan(s[4])
    assert (s[:4] >= 0).all() and (s[:4] <= 2).all() and s[0] < 1e-6
    assert s[1:4].max() > 1e-6


def test_known_plain_probabilities_save_a_pass_and_give_the_same_scores():
    from iqalib import features as F

    clf, images = tiny_classifier(), _images(4)
    plain = F.predict(clf, images).proba
    full = peers.feature_squeezing_scores(clf, images, batch_size=2, progress=False)
    given = peers.feature_squeezing_scores(clf, images, batch_size=2, plain_proba=plain, progress=False)
    np.testing.assert_allclose(given, full, atol=1e-5)


def test_feature_squeezing_rates_compare_with_detector(features, splits):
    scores = evaluation.split_scores(features, splits, seed=0, progress=False)
    rng = np.random.default_rng(0)
    fs = features[["group", "source_id", "label", "correct"]].assign(
        score=np.where(features["group"] == "original", rng.random(len(features)) * 0.2, rng.random(len(features))))
    fs.loc[fs.index[-1], "score"] = np.nan  # unusable -> flagged
    per_split = peers.feature_squeezing_rates(fs, splits, target_fpr=0.05, n_boot=100)
    ours = evaluation.rates_at_false_alarm(features, scores=scores, target_fpr=0.05, n_boot=100)
    assert list(ours.columns) == list(per_split.columns)
    both = pd.concat([ours, per_split], ignore_index=True)
    assert set(both["method"]) == {"fit_for_task", "feature_squeezing"}
    o = per_split.set_index("group")
    assert o.loc["original", "detection_rate"] <= 0.15 and o.loc["fool_gd", "detection_rate"] > 0.5
    # the threshold comes from the training halves' originals: other held-out originals change nothing else
    moved = fs.copy()
    held = moved["group"] == "original"
    moved.loc[held & ~moved["source_id"].isin(set(splits[0][0])), "score"] = 5.0
    again = peers.feature_squeezing_rates(moved, splits[:1], target_fpr=0.05, n_boot=100)
    first = peers.feature_squeezing_rates(fs, splits[:1], target_fpr=0.05, n_boot=100)
    assert (again["threshold"] == first["threshold"]).all()
    pd.testing.assert_frame_equal(again[again["group"] != "original"], first[first["group"] != "original"])


def test_vim_fits_share_one_origin_and_score_as_a_fresh_vim_each():
    from pytorch_ood.detector import ViM

    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(50, 40)).astype(np.float32), rng.normal(size=50).astype(np.float32)
    vim = next(p for p in peers.standard_peers(W, b) if p.name == "vim")
    for n_fit in (120, 30):  # principal subspaces of 20 and 15 dimensions
        fit_on, scored = rng.normal(size=(n_fit, 40)), rng.normal(size=(25, 40))
        ours = vim.fit(None, fit_on).score(None, scored)
        fresh = ViM(None, d=peers.vim_dim(n_fit, 40), w=torch.as_tensor(W), b=torch.as_tensor(b)).fit_features(
            torch.as_tensor(fit_on, dtype=torch.float32), torch.zeros(n_fit, dtype=torch.long))
        assert vim.detector_.d == peers.vim_dim(n_fit, 40)
        assert np.array_equal(ours, fresh.predict_features(torch.as_tensor(scored, dtype=torch.float32)).numpy())
