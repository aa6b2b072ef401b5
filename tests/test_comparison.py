"""Notebook 04's comparison room on the SYNTHETIC features of test_detector, with random logits and
embeddings per row: the peers' scores are pytorch-ood's (and MSP is max softmax by hand), nothing
is fitted or thresholded on a held-out photo, the risk–coverage curve and AURC agree with a
hand computation, and the comparison table and verdicts have what notebook 04 reports."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from iqalib import comparison, evaluation, metrics, peers, tables, verdicts
from tests.test_detector import features, splits  # noqa: F401  (shared module fixtures)

DIM, CLASSES = 16, 12


@pytest.fixture(scope="module")
def inputs(features):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (len(features), CLASSES)).astype(np.float32)
    embedding = rng.normal(0, 1, (len(features), DIM)).astype(np.float32)
    embedding[(features["group"] != "original").to_numpy()] += 0.7  # the unfit groups sit elsewhere
    ref_embedding = rng.normal(0, 1, (30, DIM)).astype(np.float32)
    w, b = rng.normal(0, 1, (CLASSES, DIM)), rng.normal(0, 1, CLASSES)
    return logits, embedding, ref_embedding @ w.T.astype(np.float32) + b.astype(np.float32), ref_embedding, w, b


def _peer(name, w, b):
    return next(p for p in peers.standard_peers(w, b) if p.name == name)


def test_the_peers_are_pytorch_oods_and_msp_is_max_softmax(inputs):
    from pytorch_ood.detector import KNN, ViM, EnergyBased, Entropy, Mahalanobis, MaxLogit, MaxSoftmax

    logits, emb, _, ref_emb, w, b = inputs
    standard = peers.standard_peers(w, b)
    assert len(standard) + 1 >= 6  # + Feature Squeezing
    assert sum(p.source.startswith("pytorch-ood") for p in standard) >= 4
    L, Z, R = torch.tensor(logits), torch.tensor(emb), torch.tensor(ref_emb)
    by_hand_msp = -(np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).max(1)
    np.testing.assert_allclose(_peer("msp", w, b).score(logits, emb), by_hand_msp, rtol=1e-5)
    for name, ref in [("msp", MaxSoftmax.score(L)), ("energy", EnergyBased.score(L)), ("maxlogit", MaxLogit.score(L)),
                      ("entropy", Entropy.score(L))]:
        np.testing.assert_allclose(_peer(name, w, b).score(logits, emb), ref.numpy(), rtol=1e-5, err_msg=name)
    zeros = torch.zeros(len(R), dtype=torch.long)
    wt, bt = torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    direct = {"mahalanobis": Mahalanobis(None).fit_features(R, zeros),
              "vim": ViM(None, d=peers.vim_dim(len(R), DIM), w=wt, b=bt).fit_features(R, zeros),
              "knn": KNN(None, k=peers.knn_k(len(R))).fit_features(R, zeros)}
    for name, det in direct.items():
        ours = _peer(name, w, b).fit(None, ref_emb)
        assert ours.n_fit_ == len(ref_emb)
        np.testing.assert_allclose(ours.score(logits, emb), det.predict_features(Z).double().numpy(), rtol=1e-4,
                                   err_msg=name)
    doctor = _peer("doctor", w, b).score(logits, emb)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(doctor, 1 - (p ** 2).sum(1), rtol=1e-5, atol=1e-6)


def _held_out_originals(features, splits, k=0):
    src = features["source_id"].astype(str)
    return ((features["group"] == "original") & ~src.isin(set(splits[k][0]))).to_numpy()


@pytest.mark.parametrize("name", ["mahalanobis", "knn", "msp"])
def test_no_peer_is_fitted_or_thresholded_on_a_held_out_photo(features, splits, inputs, name):
    logits, emb, ref_logits, ref_emb, w, b = inputs
    before = peers.split_scores(_peer(name, w, b), features, logits, emb, splits[:1], ref_logits, ref_emb)
    held = _held_out_originals(features, splits)
    moved_logits, moved_emb = logits.copy(), emb.copy()
    moved_logits[held] += 5.0
    moved_emb[held] *= -3.0
    after = peers.split_scores(_peer(name, w, b), features, moved_logits, moved_emb, splits[:1], ref_logits, ref_emb)
    oof_b, oof_a = before[before["role"] == "oof"], after[after["role"] == "oof"]
    np.testing.assert_allclose(oof_b["score"], oof_a["score"])  # what the threshold is set on
    assert tables.thresholds_at_fpr(oof_b, 0.0857) == tables.thresholds_at_fpr(oof_a, 0.0857)
    rows = set(features.index[held])
    untouched_b = before[(before["role"] == "eval") & ~before["row"].isin(rows)]
    untouched_a = after[(after["role"] == "eval") & ~after["row"].isin(rows)]
    np.testing.assert_allclose(untouched_b["score"], untouched_a["score"])  # the fit never saw them
    assert not set(oof_b["row"]) & rows


def test_risk_coverage_and_aurc_by_hand():
    correct = np.array([True, False, True, True, False, True, True, False])
    score = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.4, 0.5, 0.7])
    cov, risk = metrics.risk_coverage(correct, score)
    order = np.argsort(score)
    by_hand = [(~correct[order][:k]).mean() for k in range(1, 9)]
    np.testing.assert_allclose(risk, by_hand)
    np.testing.assert_allclose(cov, np.arange(1, 9) / 8)
    assert metrics.aurc(correct, score) == pytest.approx(np.mean(by_hand))
    # no detector (one score for all): the risk is 1 − accuracy at every coverage
    np.testing.assert_allclose(metrics.risk_coverage(correct, np.zeros(8))[1], 1 - correct.mean())
    assert metrics.aurc(correct, np.zeros(8)) == pytest.approx(1 - correct.mean())


def test_fpr_at_95_tpr():
    neg, pos = np.arange(20.0), np.r_[np.arange(10.0, 29.0), 5.0]  # 95 % of pos are >= 10
    assert metrics.fpr_at_tpr(neg, pos) == pytest.approx(10 / 20)


@pytest.fixture(scope="module")
def study(features, splits, inputs):
    logits, emb, ref_logits, ref_emb, w, b = inputs
    scores = {"fit_for_task": evaluation.split_scores(features, splits, seed=0, progress=False),
              "msp+quality": evaluation.split_scores(features, splits, seed=0, columns=("top1", "quality"), progress=False),
              "fit_for_task+": evaluation.split_scores(features.assign(energy=_peer("energy", w, b).score(logits, emb)),
                                                       splits, seed=0, columns=("top1", "quality", "energy"), progress=False)}
    for p in peers.standard_peers(w, b):
        scores[p.name] = peers.split_scores(p, features, logits, emb, splits, ref_logits, ref_emb)
    return comparison.Comparison(scores, {n: "x" for n in scores}, 0.0857, 0.05, n_boot=100)


def test_comparison_table_and_the_no_detector_aurc(study, features):
    t = study.table()
    assert set(t["detector"]) == set(study.scores) and set(t["group"]) == {"distorted", "adversarial", "fool_ev", "fool_gd"}
    assert t["auroc"].between(0, 1).all() and t["fpr_at_95tpr"].between(0, 1).all()
    assert ((t["detection_rate_ci_low"] <= t["detection_rate"] + 1e-12)
            & (t["detection_rate"] <= t["detection_rate_ci_high"] + 1e-12)).all()
    assert (t.loc[t["detector"] == "knn", "n_fit"] > 30).all()  # the references and the training originals
    curves, aurc = study.risk_coverage()
    none = aurc[aurc["detector"] == "no detector"].set_index("group")
    ev = study.scores["fit_for_task"]
    for g in ("distorted", "adversarial"):
        e = ev[(ev["role"] == "eval") & (ev["group"] == g) & ev["labelled"].astype(bool)]
        acc = e.groupby("split")["correct"].mean().mean()
        assert none.loc[g, "aurc"] == pytest.approx(1 - acc)
    assert curves["accuracy"].between(0, 1).all()


def test_peer_verdicts_judge_the_paper_detector_the_quality_aware_one_and_msp_plus_quality(study):
    rows = pd.DataFrame(verdicts.peers(study.table()))
    assert rows["claim"].str.contains("best peer on adversarial").any()
    plus = rows[rows["claim"].str.contains("fit_for_task\\+")]
    assert len(plus) == 1 and plus["verdict"].iloc[0] in (verdicts.REPRODUCED, verdicts.NOT_REPRODUCED)
    assert rows["claim"].str.contains("MSP alone vs MSP \\+ quality").any()
