"""The adaptive attack: the torch SVM decision is scikit-learn's, PGD stays in its ball, and an
attack that also follows the detector's decision gets past it at least as often as one that does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iqalib import adaptive, detector, quality, robust
from tests.test_detector import tiny_classifier


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_svm_decision_is_scikit_learns(kernel):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (80, 6))
    y = (X[:, 0] + 0.3 * X[:, 5] > 0.6).astype(int)
    det = detector.FitForTaskDetector(kernels=(kernel,), random_state=0).fit(X, y)
    probe = rng.uniform(0, 1, (25, 6))
    ours = adaptive.svm_decision(det)(torch.tensor(probe, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, det.decision_function(probe), rtol=1e-4, atol=1e-4)


def test_svm_decision_and_judge_follow_the_operating_point():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (120, 6))
    y = (X[:, 0] + 0.3 * X[:, 5] + rng.normal(0, 0.2, 120) > 0.7).astype(int)
    groups = np.arange(120) // 2
    det = detector.FitForTaskDetector(random_state=0).fit(X, y, groups=groups)
    det.set_operating_point(X, y, groups, 0.0857)
    assert det.threshold_ != 0.0
    probe = rng.uniform(0, 1, (40, 6))
    ours = adaptive.svm_decision(det)(torch.tensor(probe, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, det.decision_function(probe) - det.threshold_, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ours > 0, det.predict(probe) == 1)


def test_detector_inputs_are_sorted_top5_and_quality():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, 0.5]])
    out = adaptive.detector_inputs(logits, torch.tensor([0.7]))
    p = logits.softmax(-1)[0].sort(descending=True).values[:5]
    torch.testing.assert_close(out[0, :5], p)
    assert out[0, 5] == pytest.approx(0.7)


@pytest.fixture(scope="module")
def system():
    """A tiny classifier, a quality model on its pooled features, and a detector trained to flag
    images whose top-1 confidence is low (a stand-in for the UAP-trained one)."""
    clf = tiny_classifier()
    rng = np.random.default_rng(0)
    model = quality.QualityModel(clf, n_models=2, hidden=16, bins=20, epochs=5, features="pooled", seed=0,
                                 device="cpu").fit(rng.normal(size=(64, clf.embedding_dim)).astype(np.float32),
                                                   rng.uniform(0.2, 0.8, 64), progress=False)
    scorer = robust.Scorer("plain", model, clf)
    x = torch.from_numpy(rng.uniform(0, 1, (40, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        logits = clf.logits_from_pixels(x * 255.0)
        feats = adaptive.detector_inputs(logits, scorer.draw(x, None)).numpy()
    y = (feats[:, 0] < np.median(feats[:, 0])).astype(int)
    det = detector.FitForTaskDetector(kernels=("linear",), random_state=0).fit(feats, y)
    return clf, scorer, det, x, logits.argmax(1)


def test_pgd_stays_in_its_ball_and_the_adaptive_attack_beats_the_oblivious_one(system):
    clf, scorer, det, x, labels = system
    eps = 0.25  # the tiny network averages its input away: it takes a large ball to move it
    oblivious = adaptive.pgd(clf, x, labels, eps, steps=10)
    adapted = adaptive.pgd(clf, x, labels, eps, scorer, adaptive.svm_decision(det), steps=10)
    for adv in (oblivious, adapted):
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    plain = adaptive.judge(clf, scorer, det, oblivious, labels)
    adaptive_result = adaptive.judge(clf, scorer, det, adapted, labels)
    assert plain["fooled"].mean() > 0.5
    success = {k: (r["fooled"] & ~r["flagged"]).mean() for k, r in (("oblivious", plain), ("adaptive", adaptive_result))}
    assert success["adaptive"] >= success["oblivious"] and success["adaptive"] > 0, success
    feats = adaptive.detector_inputs(clf.logits_from_pixels(adapted * 255.0), torch.from_numpy(adaptive_result["quality"]))
    np.testing.assert_array_equal(adaptive_result["flagged"], det.predict(feats.detach().double().numpy()).astype(bool))


def test_orthogonal_pgd_stays_in_its_ball_and_strong_is_at_least_selective_at_every_eps(system):
    """The strong attack (selective, then orthogonal where it failed) succeeds on every image
    selective PGD gets through, at every radius, and succeeds more often at a larger radius."""
    clf, scorer, det, x, labels = system
    success = {}
    for eps in (0.1, 0.25, 0.5):
        orthogonal = adaptive.pgd(clf, x, labels, eps, scorer, adaptive.svm_decision(det), steps=10, mode="orthogonal")
        assert (orthogonal - x).abs().max() <= eps + 1e-6 and orthogonal.min() >= 0 and orthogonal.max() <= 1
        out = adaptive.strong(clf, scorer, det, x, labels, eps, steps=10)
        assert (out["strong"][0] - x).abs().max() <= eps + 1e-6
        won = {k: adaptive.judge(clf, scorer, det, out[k][0], labels) for k in ("selective", "strong")}
        for k, fresh in won.items():  # what strong says of its images is what judge says
            for field in ("fooled", "flagged", "quality", "decision"):
                np.testing.assert_array_equal(out[k][1][field], fresh[field])
        won = {k: r["fooled"] & ~r["flagged"] for k, r in won.items()}
        assert (won["strong"] >= won["selective"]).all(), eps  # per image, not only on average
        success[eps] = won["strong"].mean()
    assert success[0.5] > success[0.1], success
    with pytest.raises(ValueError, match="mode"):
        adaptive.pgd(clf, x, labels, 0.1, scorer, adaptive.svm_decision(det), mode="sideways")


@pytest.mark.parametrize("smoothed", [False, True])
def test_the_curve_carries_successes_and_attacks_only_the_rest(system, monkeypatch, smoothed):
    """Each radius attacks only the images no smaller radius got through; each radius's images,
    judged whole, are judged as reported (a smoothed score's noise follows an image's place);
    success never falls as the radius grows, and strong is at least selective per image."""
    clf, scorer, det, x, labels = system
    if smoothed:  # feature-space smoothing: noise drawn per place in the batch
        scorer = robust.Scorer("fs", scorer.quality, clf, "feature", sigma=0.05, n=8, seed=0)
    radii = [0.3, 0.1, 0.5, 0.75]  # the tiny network, plain scorer: 0, 18, then all 40 of 40 through
    attacked, strong = [], adaptive.strong
    monkeypatch.setattr(adaptive, "strong", lambda c, s, d, xs, *rest: attacked.append(len(xs)) or strong(c, s, d, xs, *rest))
    out = adaptive.curve(clf, scorer, det, x, labels, radii, steps=10)
    assert list(out) == sorted(radii) and attacked[0] == len(x)
    won = {e: {k: out[e][k][1]["fooled"] & ~out[e][k][1]["flagged"] for k in ("selective", "strong")} for e in out}
    for e, previous in zip(sorted(radii)[1:], sorted(radii)):
        for k in ("selective", "strong"):
            assert (won[e][k] >= won[previous][k]).all() and (out[e][k][1]["carried"] >= won[previous][k]).all()
            carried = torch.from_numpy(out[e][k][1]["carried"])
            torch.testing.assert_close(out[e][k][0][carried], out[previous][k][0][carried])
    for e in out:
        assert (won[e]["strong"] >= won[e]["selective"]).all(), e
        for k in ("selective", "strong"):
            images, judged = out[e][k]
            assert (images - x).abs().max() <= e + 1e-6
            again = adaptive.judge(clf, scorer, det, images, labels)
            for field in ("fooled", "flagged", "quality", "decision"):
                np.testing.assert_array_equal(judged[field], again[field], err_msg=f"{e} {k} {field}")
    left = [int((~won[e]["selective"]).sum()) for e in sorted(radii)[:-1]]
    assert attacked[1:] == [n for n in left if n]
    assert attacked[-1] < len(x)  # the point: larger radii attack fewer images
    with pytest.raises(ValueError, match="at least one image"):
        adaptive.curve(clf, scorer, det, x[:0], labels[:0], radii)


def test_orthogonal_removes_the_component_along_the_other_gradient():
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    out = adaptive._orthogonal(a, b)
    assert torch.allclose((out * b).flatten(1).sum(1), torch.zeros(3), atol=1e-5)
