"""Fit-for-task detector: baselines, leakage-free paired splits, sklearn contract, ROC, persistence and
predict_fit. All feature tables here are SYNTHETIC (built below with seeded noise): they test the
machinery, not the paper's numbers. ``synthetic_features`` and ``tiny_classifier`` are shared with
test_tables and test_peers."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

from iqalib import detector as D
from iqalib import evaluation, feature_table, tables
from iqalib.classifiers import Classifier, plain_resize_view
from iqalib.features import backbone_rows, pooled

N_SPLITS = 3  # enough to exercise every code path; the notebooks use 10


def _probs(rng: np.random.Generator, top1: float) -> list[float]:
    """top1..top5 sorted descending, the rest of the mass spread over other classes."""
    rest = np.sort((1.0 - top1) * rng.dirichlet(np.ones(8)))[::-1][:4]
    return [top1, *np.minimum(rest, top1)]


def synthetic_features(n_sources: int = 60, n_fool: int = 20, seed: int = 0) -> pd.DataFrame:
    """SYNTHETIC features table: originals confident and good quality; adversarial twins flatter
    top-5 and a little lower quality (so both top-5 and quality carry signal); distorted lower
    quality; fooling images confident but low quality."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(group, sid, label, top1, quality, p_correct, distortion=None, level=None):
        top1 = float(np.clip(top1, 0.2, 0.995))
        correct = bool(rng.random() < p_correct) if label is not None else False
        pred = (label if correct else (label + 1) % 10) if label is not None else int(rng.integers(10))
        t = _probs(rng, top1)
        rows.append({"group": group, "source_id": sid, "distortion": distortion, "level": level,
                     "label": label, **{f"top{i + 1}": t[i] for i in range(5)}, "pred": pred,
                     "quality": float(np.clip(quality, 0, 1)), "correct": correct})

    for s in range(n_sources):
        sid, label = f"s{s:03d}", s % 10
        add("original", sid, label, rng.normal(0.82, 0.08), rng.normal(0.72, 0.06), 0.9)
        add("adversarial", sid, label, rng.normal(0.62, 0.10), rng.normal(0.60, 0.06), 0.05)
        for level in (3, 5):
            add("distorted", sid, label, rng.normal(0.6, 0.15), rng.normal(0.45 - 0.03 * level, 0.08), 0.6,
                "gaussian_blur", level)
    for group in feature_table.FOOLING:
        for _ in range(n_fool):
            add(group, None, None, rng.normal(0.95, 0.03), rng.normal(0.2, 0.08), 0.0)
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype(float)  # NaN for fooling images, as read from CSV
    return frame


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return synthetic_features()


@pytest.fixture(scope="module")
def splits(features):
    return evaluation.paired_splits(features, n_splits=N_SPLITS, seed=0)


@pytest.fixture(scope="module")
def scores(features, splits) -> pd.DataFrame:
    return evaluation.split_scores(features, splits, seed=0, progress=False)


@pytest.fixture(scope="module")
def fitted(features) -> D.FitForTaskDetector:
    m = features["group"].isin(["original", "adversarial"])
    return D.FitForTaskDetector().fit(features[m], (features.loc[m, "group"] == "adversarial").astype(int),
                                      groups=features.loc[m, "source_id"])


def tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(name="tiny", backbone=backbone, head=nn.Linear(8, 10), view=plain_resize_view(32),
                      mean=(0.5,) * 3, std=(0.5,) * 3, input_size=32, weights_id="tiny",
                      device=torch.device("cpu"), wnids=tuple(f"n{i:08d}" for i in range(10)))


@pytest.fixture(scope="module")
def tiny() -> Classifier:
    return tiny_classifier()


class StandInQuality:
    """Stands in for iqalib.quality.QualityModel: a fixed function of the embedding, near 0.85."""

    def predict_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return 0.85 + 0.01 * np.tanh(np.asarray(embeddings, float).mean(axis=1))


def _images(n: int = 4, size: int = 120) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 10, 3), dtype=np.uint8)) for _ in range(n)]


# -- baselines ------------------------------------------------------------------------------------


def _tiny_table() -> pd.DataFrame:
    return pd.DataFrame({
        "group": ["original"] * 4 + ["adversarial"] * 2 + ["fool_ev"] * 2,
        "source_id": ["a", "b", "c", "d", "a", "b", None, None],
        "label": [1, 2, 3, 4, 1, 2, np.nan, np.nan],
        "quality": [0.9, 0.5, 0.32, 0.2, 0.4, 0.33, 0.1, 0.6],
        "correct": [True, True, False, True, False, True, False, False],
    })


def test_baseline1_matches_hand_computation():
    t = tables.baseline1(_tiny_table())
    assert list(t.columns[:1]) == ["group"] and list(t["group"]) == ["original", "adversarial", "fool_ev"]
    acc = dict(zip(t["group"], t["accuracy"]))
    assert acc["original"] == pytest.approx(3 / 4) and acc["adversarial"] == pytest.approx(1 / 2)
    assert np.isnan(acc["fool_ev"])  # no true class: undefined


def test_baseline2_matches_hand_computation():
    t = tables.baseline2(_tiny_table(), thresholds=(0.3, 0.35)).set_index(["group", "threshold"])
    assert t.index.names == ["group", "threshold"] and len(t) == 6
    # originals, quality 0.9 0.5 0.32 0.2: t=0.3 rejects 0.2 -> fit {0.9 ok, 0.5 ok, 0.32 wrong}
    assert t.loc[("original", 0.3), "detection_rate"] == pytest.approx(1 / 4)
    assert t.loc[("original", 0.3), "fit_accuracy"] == pytest.approx(2 / 3)
    # t=0.35 also rejects 0.32 -> fit {0.9, 0.5} both right
    assert t.loc[("original", 0.35), "detection_rate"] == pytest.approx(2 / 4)
    assert t.loc[("original", 0.35), "fit_accuracy"] == pytest.approx(1.0)
    # adversarial 0.4 (wrong) 0.33 (right): t=0.35 rejects 0.33 -> fit {0.4 wrong}
    assert t.loc[("adversarial", 0.3), "detection_rate"] == 0 and t.loc[("adversarial", 0.3), "fit_accuracy"] == 0.5
    assert t.loc[("adversarial", 0.35), "detection_rate"] == 0.5 and t.loc[("adversarial", 0.35), "fit_accuracy"] == 0
    assert t.loc[("fool_ev", 0.35), "detection_rate"] == 0.5 and np.isnan(t.loc[("fool_ev", 0.35), "fit_accuracy"])


# -- splits and leakage ---------------------------------------------------------------------------


def test_paired_splits_are_disjoint_halves_and_deterministic(features, splits):
    paired = set(features.loc[features["group"] == "original", "source_id"])
    assert len(splits) == N_SPLITS
    for train, test in splits:
        assert not set(train) & set(test) and set(train) | set(test) == paired and len(train) == len(test) == 30
    again = evaluation.paired_splits(features, n_splits=N_SPLITS, seed=0)
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(splits, again))
    shuffled = evaluation.paired_splits(features.sample(frac=1, random_state=3), n_splits=N_SPLITS, seed=0)
    assert all((a == c).all() for (a, _), (c, _) in zip(splits, shuffled))  # row order does not matter


def test_no_leakage_in_rows_actually_used(features, splits, scores):
    for k, (train_ids, _) in enumerate(splits):
        s = scores[scores["split"] == k]
        train, ev = s[s["role"] == "train"], s[s["role"] == "eval"]
        train_src = set(train["source_id"])
        assert train_src == set(train_ids)
        assert set(train["group"]) == {"original", "adversarial"}
        # every trained pair is complete, and no evaluated image shares a source with training
        assert set(train.loc[train["group"] == "original", "source_id"]) == set(
            train.loc[train["group"] == "adversarial", "source_id"])
        assert not train_src & set(ev["source_id"].dropna())
        for group in ("original", "adversarial"):
            assert set(ev.loc[ev["group"] == group, "source_id"]).isdisjoint(train_src)
        assert not set(features.loc[ev.loc[ev["group"] == "distorted", "row"], "source_id"]) & train_src
        # the rows point back at the features table they came from
        assert (features["group"].to_numpy()[s["row"]] == s["group"].to_numpy()).all()
        assert ev.loc[ev["group"].isin(feature_table.FOOLING), "row"].nunique() == 2 * 20


# -- the estimator --------------------------------------------------------------------------------


def test_sklearn_contract(features, fitted):
    grid = (0.5, 5.0)
    det = D.FitForTaskDetector(C_grid=grid, cv=3, random_state=7)
    params = det.get_params()
    assert params["C_grid"] is grid and params["cv"] == 3 and params["random_state"] == 7
    assert params["columns"] == feature_table.FEATURES
    twin = clone(det)
    assert twin.get_params() == params and not hasattr(twin, "pipeline_")
    m = features["group"].isin(["original", "adversarial"])
    X, y = features.loc[m, list(feature_table.FEATURES)].to_numpy(), (features.loc[m, "group"] == "adversarial").to_numpy(int)
    cv_scores = cross_val_score(det, X, y, cv=3)
    assert cv_scores.shape == (3,) and (cv_scores > 0.7).all()
    pred = fitted.predict(X)
    assert set(np.unique(pred)) <= {0, 1}
    dec = fitted.decision_function(X)
    assert (pred == (dec > 0)).all()
    assert dec[y == 1].mean() > dec[y == 0].mean()  # higher = more likely not fit
    assert set(fitted.best_params_) >= {"kernel", "C"} and fitted.best_params_["kernel"] in ("rbf", "linear")
    nan_row = np.array([[np.nan, 0.1, 0.1, 0.1, 0.1, 0.5]])
    assert fitted.predict(nan_row)[0] == 1 and fitted.decision_function(nan_row)[0] == np.inf


def test_roc_per_group(features, scores):
    points, auc = evaluation.roc_per_group(features, scores=scores, n_points=51)
    assert set(points["group"]) == {"distorted", "adversarial", "fool_ev", "fool_gd"}
    for _, g in points.groupby("group"):
        assert len(g) == 51 and np.all(np.diff(g["tpr"]) >= -1e-12) and g["tpr"].between(0, 1).all()
    assert auc.set_index("group").loc["adversarial", "auc"] > 0.9  # SYNTHETIC data built to separate


# -- persistence ----------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, features, fitted):
    run = tmp_path / "run"
    (run / "quality").mkdir(parents=True)
    det = clone(fitted).set_params(classifier_name="tiny", classifier_weights_id="tiny",
                                   quality_folder=str(run / "quality"))
    m = features["group"].isin(["original", "adversarial"])
    det.fit(features[m], (features.loc[m, "group"] == "adversarial").astype(int), groups=features.loc[m, "source_id"])
    det.save(run / "detector")
    meta = json.loads((run / "detector" / "detector.json").read_text())
    assert meta["quality_model"] == os.path.join("..", "quality") and meta["columns"] == list(feature_table.FEATURES)
    assert meta["classifier"] == {"name": "tiny", "weights_id": "tiny"}
    back = D.FitForTaskDetector.load(run / "detector")
    assert back.get_params() == {**det.get_params(), "quality_folder": str((run / "quality").resolve())}
    assert (back.predict(features) == det.predict(features)).all()
    assert np.allclose(back.decision_function(features), det.decision_function(features))


def test_load_refuses_untrusted_types(tmp_path, fitted):
    import hashlib

    import skops.io as sio

    folder = tmp_path / "det"
    fitted.save(folder)
    evil = sio.dumps(Pipeline([("run", FunctionTransformer(os.system))]))
    (folder / "pipeline.skops").write_bytes(evil)
    with pytest.raises(D.UntrustedModelError, match="hash"):
        D.FitForTaskDetector.load(folder)
    meta = json.loads((folder / "detector.json").read_text())
    meta["pipeline_sha256"] = hashlib.sha256(evil).hexdigest()
    (folder / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(D.UntrustedModelError, match="not on the allow-list.*system"):
        D.FitForTaskDetector.load(folder)


# -- images: predict_fit ----------------------------------------------------


def test_predict_fit_end_to_end(tiny, tmp_path, features):
    good = tmp_path / "good.png"
    _images(1)[0].save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    images = [*_images(3), str(good), str(bad), Image.new("RGB", (20, 20))]

    m = features["group"].isin(["original", "adversarial"])
    y = (features.loc[m, "group"] == "adversarial").astype(int)
    full = D.FitForTaskDetector(classifier_weights_id="tiny").fit(features[m], y, groups=features.loc[m, "source_id"])
    report = full.fit_report(images, classifier=tiny, quality=StandInQuality())
    assert report["fit"].dtype == bool and len(report) == 6
    assert report.loc[4, "reason"] == "unusable: not_an_image" and report.loc[5, "reason"] == "unusable: too_small"
    assert not report.loc[4, "fit"] and not report.loc[5, "fit"]
    # the one-pass features equal those computed by hand from the classifier
    emb = pooled(tiny, backbone_rows(tiny, [*images[:3], Image.open(good)]))
    proba = tiny.proba_from_embeddings(emb)
    assert np.allclose(report.loc[:3, "top1"], proba.max(1), atol=1e-6)
    assert np.allclose(report.loc[:3, "quality"], StandInQuality().predict_embeddings(emb))
    assert (~report.loc[:3, "fit"].to_numpy() == full.predict(report.loc[:3, list(feature_table.FEATURES)]).astype(bool)).all()
    assert (full.predict_fit(images) == report["fit"].to_numpy()).all()  # classifier/quality were kept

    # quality-only detector: the stand-in's ~0.85 quality is high, so every usable image is fit
    qonly = D.FitForTaskDetector(columns=("quality",)).fit(features[m], y, groups=features.loc[m, "source_id"])
    fit = qonly.predict_fit(images, classifier=tiny, quality=StandInQuality())
    assert fit.dtype == bool and fit.tolist() == [True, True, True, True, False, False]

    with pytest.raises(ValueError, match="trained on features"):
        full.fit_report(images[:1], classifier=_renamed(tiny))
    wrong = StandInQuality()
    wrong.weights_id, wrong.preprocessing_id = "resnet152-weights", "resize_center_crop_view:224"
    with pytest.raises(ValueError, match="trained on backbone weights"):
        D.FitForTaskDetector().fit(features[m], y).fit_report(images[:1], classifier=tiny, quality=wrong)


def _renamed(tiny: Classifier) -> Classifier:
    return Classifier(name=tiny.name, backbone=tiny.backbone, head=tiny.head, view=tiny.view, mean=tiny.mean,
                      std=tiny.std, input_size=tiny.input_size, weights_id="other", device=tiny.device,
                      wnids=tiny.wnids)


def test_operating_point_is_set_on_out_of_fold_training_scores_and_survives_saving(tmp_path, features):
    m = features["group"].isin(["original", "adversarial"])
    X, y, g = features[m], (features.loc[m, "group"] == "adversarial").astype(int), features.loc[m, "source_id"]
    det = D.FitForTaskDetector(random_state=0).fit(X, y, groups=g)
    assert det.best_params_["kernel"] == "linear"  # the default: monotone where the training data end
    oof = det.cross_decision_function(X, y, g)
    assert np.isfinite(oof).all() and not np.allclose(oof, det.decision_function(X))  # other fits scored them
    det.set_operating_point(X, y, g, 0.1)
    assert np.mean(oof[y.to_numpy() == 0] > det.threshold_) <= 0.1
    flagged = det.predict(X).astype(bool)
    assert np.array_equal(flagged, det.decision_function(X) > det.threshold_)
    back = D.FitForTaskDetector.load(det.save(tmp_path / "det"))
    assert back.threshold_ == det.threshold_ and back.false_alarm_rate_ == 0.1
    assert np.array_equal(back.predict(X), det.predict(X))


def test_grouped_folds_are_scikit_learns_and_computed_once_per_rows(features):
    from sklearn.model_selection import StratifiedGroupKFold

    m = features["group"].isin(["original", "adversarial"]).to_numpy()
    y = (features.loc[m, "group"] == "adversarial").astype(int).to_numpy()
    g = features.loc[m, "source_id"].to_numpy(dtype=object)
    folds = D.grouped_folds(y, g, 5, 3)
    expected = list(StratifiedGroupKFold(5, shuffle=True, random_state=3).split(np.zeros(len(y)), y, g))
    assert len(folds) == 5
    for (train, test), (train0, test0) in zip(folds, expected):
        assert np.array_equal(train, train0) and np.array_equal(test, test0)
    kept = len(D._FOLDS)
    again = D.grouped_folds(y.copy(), g.copy(), 5, 3)  # same rows: the kept assignment
    assert len(D._FOLDS) == kept and all(np.array_equal(a, b) for f, f0 in zip(again, folds) for a, b in zip(f, f0))
    D.grouped_folds(y, g, 5, 4)  # another seed, another assignment
    D.grouped_folds(y, np.array([f"x{s}" for s in g], dtype=object), 5, 3)  # other groups of the same sizes
    assert len(D._FOLDS) == min(kept + 2, D._FOLDS_KEPT)


def test_fits_in_parallel_give_the_serial_fits_results(features):
    m = features["group"].isin(["original", "adversarial"])
    X, y, g = features[m], (features.loc[m, "group"] == "adversarial").astype(int), features.loc[m, "source_id"]
    kw = dict(kernels=("rbf", "linear"), C_grid=(0.1, 10.0), gamma_grid=("scale", 1.0), random_state=0)
    serial = D.FitForTaskDetector(**kw).fit(X, y, groups=g)
    parallel = D.FitForTaskDetector(n_jobs=2, **kw).fit(X, y, groups=g)
    assert parallel.best_params_ == serial.best_params_
    assert np.array_equal(parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    assert np.array_equal(parallel.decision_function(X), serial.decision_function(X))
    assert np.array_equal(parallel.cross_decision_function(X, y, g), serial.cross_decision_function(X, y, g))


def test_a_saved_detector_does_not_record_the_fitting_machines_process_count(tmp_path, features):
    m = features["group"].isin(["original", "adversarial"])
    X, y, g = features[m], (features.loc[m, "group"] == "adversarial").astype(int), features.loc[m, "source_id"]
    det = D.FitForTaskDetector(n_jobs=2).fit(X, y, groups=g)
    folder = det.save(tmp_path / "det")
    assert json.loads((folder / D.META_FILE).read_text())["params"]["n_jobs"] is None
    assert D.FitForTaskDetector.load(folder).n_jobs is None


def test_folds_of_a_seed_that_is_not_a_number_are_drawn_each_time_and_not_kept(features):
    m = features["group"].isin(["original", "adversarial"]).to_numpy()
    y = (features.loc[m, "group"] == "adversarial").astype(int).to_numpy()
    g = features.loc[m, "source_id"].to_numpy(dtype=object)
    kept = len(D._FOLDS)
    folds = D.grouped_folds(y, g, 5, np.random.RandomState(0))
    assert len(folds) == 5 and len(D._FOLDS) == kept
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(y)))
