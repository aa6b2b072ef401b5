"""features: the one backbone path. Cached jobs, images given directly, QualityModel.predict and
FitForTaskDetector.predict_fit all read the same pass, each image decoded once per pass."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from iqalib import detector, feature_table, features, groups, images, quality
from iqalib.classifiers import load_classifier
from tests.conftest import colourful


@pytest.fixture(scope="module")
def clf():
    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for k in range(4):
        colourful((160 + 20 * k, 130), seed=k).save(folder / f"{k}.png")
        paths.append(str(folder / f"{k}.png"))
    return paths


@pytest.fixture(scope="module")
def quality_model(clf):
    rng = np.random.default_rng(0)
    return quality.QualityModel(clf, n_models=2, epochs=2, hidden=16, device="cpu").fit(
        rng.normal(size=(24, clf.stats_dim)).astype(np.float32), rng.uniform(0, 1, 24), progress=False)


@pytest.fixture
def decodes(monkeypatch):
    """Counts ``open_image`` calls per path inside ``features``."""
    seen: Counter = Counter()
    real = features.open_image
    monkeypatch.setattr(features, "open_image", lambda path, **kw: seen.update([str(path)]) or real(path, **kw))
    return seen


def _job_table(clf, quality_model, photos):
    jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in photos]
    meta = pd.DataFrame({"group": "original", "image_id": [f"i{k}" for k in range(len(photos))], "parent_id": None,
                         "source_id": [f"s{k}" for k in range(len(photos))], "view": "full", "distortion": None,
                         "level": None, "attack": None, "seed": None, "label": 1})
    embedded, reasons = features.embed(clf, jobs, None, progress=False)
    return groups.scored(clf, meta.assign(path=[str(p) for p in photos]), embedded, reasons, quality_model)[0]


def test_every_route_reads_the_same_pass_and_decodes_once(clf, quality_model, photos, decodes):
    table = _job_table(clf, quality_model, photos)
    assert decodes == Counter({p: 1 for p in photos})

    decodes.clear()
    direct = features.predict(clf, photos, quality=quality_model)
    assert decodes == Counter({p: 1 for p in photos})
    np.testing.assert_allclose(np.sort(direct.proba, 1)[:, ::-1][:, :5], table[list(feature_table.TOP5)], atol=1e-5)
    np.testing.assert_allclose(direct.quality, table["quality"], atol=1e-5)

    decodes.clear()
    np.testing.assert_allclose(quality_model.predict(photos, classifier=clf), table["quality"], atol=1e-5)
    assert decodes == Counter({p: 1 for p in photos})

    rng = np.random.default_rng(1)
    synthetic = pd.DataFrame(rng.uniform(0, 1, (40, 6)), columns=list(feature_table.FEATURES))
    fitted = detector.FitForTaskDetector(kernels=("linear",), C_grid=(1.0,), cv=2).fit(synthetic, np.arange(40) % 2)
    decodes.clear()
    report = fitted.fit_report(photos, classifier=clf, quality=quality_model)
    assert decodes == Counter({p: 1 for p in photos})
    np.testing.assert_allclose(report[list(feature_table.FEATURES)].to_numpy(float),
                               table[list(feature_table.FEATURES)].to_numpy(float), atol=1e-5)
    assert (fitted.predict_fit(photos, classifier=clf, quality=quality_model) == report["fit"]).all()


def test_embed_caches_and_skips_are_counted(tmp_path, clf, photos, decodes):
    jobs = [features.ImageJob(photos[0], min_side=1, allow_grey=True),
            features.ImageJob(photos[0], min_side=1, allow_grey=True, distortion="jpeg", level=3, noise_id="i0"),
            features.ImageJob(str(tmp_path / "missing.png"))]
    cache = features.cache_for(tmp_path / "run")
    first, reasons = features.embed(clf, jobs, cache, progress=False)
    assert reasons == [None, None, "missing"] and np.isnan(first[2]).all()
    assert not np.allclose(first[0], first[1])  # the distortion is part of the key and the pixels
    decodes.clear()
    again, _ = features.embed(clf, jobs, cache, progress=False)
    assert not decodes and np.array_equal(again[:2], first[:2])  # nothing decoded, nothing recomputed
    assert features.skip_counts(reasons) == {"used": 2, "skipped": {"missing": 1}}


def test_bad_inputs_are_nan_rows_with_reasons(tmp_path, clf, quality_model):
    (tmp_path / "junk.jpg").write_text("not an image")
    result = features.predict(clf, [colourful(), tmp_path / "junk.jpg", tmp_path / "nope.png"], quality=quality_model)
    assert result.reasons == [None, "not_an_image", "missing"]
    assert np.isfinite(result.quality[0]) and np.isnan(result.quality[1:]).all() and np.isnan(result.proba[1:]).all()
    with pytest.raises(TypeError, match="PIL images or paths"):
        features.predict(clf, [42])


def test_correct_vs_clean_follows_the_parent(clf, quality_model, photos):
    jobs = [features.ImageJob(photos[0], min_side=1, allow_grey=True),
            features.ImageJob(photos[0], min_side=1, allow_grey=True, distortion="white_noise", level=5, noise_id="o")]
    meta = pd.DataFrame({"group": ["original", "distorted"], "image_id": ["o", "o|wn"], "parent_id": [None, "o"],
                         "source_id": "s", "view": "full", "distortion": [None, "white_noise"], "level": [None, 5],
                         "attack": None, "seed": [None, 0], "label": None})
    embedded, reasons = features.embed(clf, jobs, None, progress=False)
    table = groups.scored(clf, meta.assign(path=str(photos[0])), embedded, reasons, quality_model)[0]
    assert list(table.columns) == list(feature_table.TABLE_COLUMNS)
    assert (table["file_digest"] == images.file_digest(photos[0])).all()
    assert table.loc[0, "correct_vs_clean"] and not table["correct"].any()
    assert table.loc[1, "correct_vs_clean"] == (table.loc[1, "pred"] == table.loc[0, "pred"])
