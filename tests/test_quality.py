"""DTNIQ-f quality model: ordering on held-out content, determinism, persistence, bad inputs."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from iqalib import embedded_iqa, features, quality, tables
from iqalib.classifiers import load_classifier
from tests.conftest import colourful

PAPER_TYPES = ["gaussian_blur", "white_noise", "jpeg", "jpeg2000"]
TRAIN_REFS = ["coffee", "astronaut", "motorcycle", "hubble_deep_field"]
HELD_OUT_REFS = ["chelsea", "rocket"]


@pytest.fixture(scope="module")
def clf():
    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def iqa(tmp_path_factory, clf):
    """A reduced embedded set (6 photos x the paper's 4 types x 5 levels) and its features."""
    table = embedded_iqa.build_embedded_iqa(tmp_path_factory.mktemp("emb"), photos=TRAIN_REFS + HELD_OUT_REFS,
                                            distortions=PAPER_TYPES, short_side=224, progress=False)
    jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in table["path"]]
    embedded, reasons = features.embed(clf, jobs, None, 16, progress=False)
    assert all(r is None for r in reasons)
    return table, features.stats(clf, embedded)


@pytest.fixture(scope="module")
def model(iqa, clf):
    table, x = iqa
    train = table["ref_id"].isin(TRAIN_REFS).to_numpy()
    return quality.QualityModel(clf, n_models=2, epochs=30, seed=0, device="cpu").fit(x[train], table["mos"][train])


def test_stronger_distortion_scores_lower_on_held_out_content(iqa, model):
    table, x = iqa
    held = table["ref_id"].isin(HELD_OUT_REFS).to_numpy()
    scored = table[held].assign(pred=model.predict_embeddings(x[held]))
    assert scored["pred"].between(0, 1).all()
    per_image = scored.groupby(["distortion", "ref_id"]).apply(
        lambda g: spearmanr(g["level"], g["pred"]).statistic, include_groups=False)
    per_type = per_image.groupby(level="distortion").mean()
    assert set(per_type.index) == set(PAPER_TYPES)
    assert (per_type <= -0.6).all(), per_type.to_dict()
    assert spearmanr(scored["pred"], scored["mos"]).statistic > 0.5


def test_predict_on_images_equals_the_cached_shared_pass(iqa, model, clf):
    table, x = iqa
    paths = list(table["path"][:6])
    direct = model.predict(paths, classifier=clf)
    np.testing.assert_allclose(direct, model.predict_embeddings(x[:6]), atol=1e-5)
    proba, scores = model.classify_and_score([Image.open(p) for p in paths], classifier=clf)
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    np.testing.assert_allclose(proba, features.probabilities(clf, features.backbone_rows(clf, [Image.open(p) for p in paths])),
                               atol=1e-5)


def test_same_seed_same_scores_and_another_seed_differs(iqa, model, clf):
    table, x = iqa
    train = table["ref_id"].isin(TRAIN_REFS).to_numpy()
    again = quality.QualityModel(clf, n_models=2, epochs=30, seed=0, device="cpu").fit(x[train], table["mos"][train])
    np.testing.assert_array_equal(again.predict_embeddings(x), model.predict_embeddings(x))
    other = quality.QualityModel(clf, n_models=2, epochs=30, seed=1, device="cpu").fit(x[train], table["mos"][train])
    assert not np.array_equal(other.predict_embeddings(x), model.predict_embeddings(x))


def test_save_load_round_trip_uses_plain_state_dicts(tmp_path, iqa, model):
    _, x = iqa
    folder = model.save(tmp_path / "quality", training_data={"sets": ["embedded"]}, metrics={"srocc_mean": 0.5})
    card = json.loads((folder / "card.json").read_text())
    assert card["heads"] == ["head_00.pt", "head_01.pt"]
    for head in card["heads"]:
        state = torch.load(folder / head, weights_only=True)  # would raise on any pickled object
        assert all(isinstance(t, torch.Tensor) for t in state.values())
    loaded = quality.QualityModel.load(folder, device="cpu")
    np.testing.assert_array_equal(loaded.predict_embeddings(x), model.predict_embeddings(x))
    assert loaded.card["backbone"]["name"] == "efficientnet_lite0" and loaded.card["bins"]["n"] == 70
    assert loaded.card["metrics"] == {"srocc_mean": 0.5} and loaded.hyperparameters() == model.hyperparameters()


def test_load_of_a_folder_without_card_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="card.json"):
        quality.QualityModel.load(tmp_path)


def test_another_backbone_is_refused(model, clf):
    other = dataclasses.replace(clf, weights_id="some-other-weights")
    with pytest.raises(ValueError, match="trained on backbone"):
        model.predict([colourful()], classifier=other)


def test_wrong_feature_width_and_scores_out_of_range_are_refused(iqa, model, clf):
    table, x = iqa
    with pytest.raises(ValueError, match="features per image"):
        model.predict_embeddings(x[:, :10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quality.QualityModel(clf, n_models=1, epochs=1, device="cpu").fit(x, table["mos"] * 100)


def test_untrained_model_says_so(clf):
    with pytest.raises(RuntimeError, match="not trained"):
        quality.QualityModel(clf, device="cpu").predict_embeddings(np.zeros((1, 384), np.float32))


def test_bad_inputs_score_nan_and_are_counted(tmp_path, model, clf):
    (tmp_path / "junk.jpg").write_text("not an image")
    inputs = [colourful(), tmp_path / "missing.png", tmp_path / "junk.jpg", colourful((40, 30)), colourful().convert("L")]
    scores = model.predict(inputs, classifier=clf)
    assert np.isfinite(scores[[0, 3, 4]]).all() and scores[[0, 3, 4]].min() >= 0 and scores[[0, 3, 4]].max() <= 1
    assert np.isnan(scores[[1, 2]]).all()
    assert sum(model.last_skipped_.values()) == 2 and model.last_reasons_[0] is None


def test_evaluate_splits_holds_out_whole_references(iqa, clf):
    table, x = iqa
    per_split, fitted = quality.evaluate_splits(x, table["mos"].to_numpy(), table["ref_id"].to_numpy(), n_splits=3,
                                                test_size=0.34, seed=0, classifier=clf, epochs=3, hidden=64,
                                                device="cpu")
    assert len(fitted.heads) == 3 and len(per_split) == 3
    for row, held in zip(per_split.itertuples(), fitted.heldout_groups_):
        assert row.n_test == table["ref_id"].isin(held).sum()
        assert row.n_train == (~table["ref_id"].isin(held)).sum() and 0 < len(held) < 6
        assert -1 <= row.srocc <= 1


def test_pil_inputs_are_converted_like_files(tmp_path, model, clf):
    sixteen = Image.fromarray((np.linspace(0, 65535, 160 * 120).reshape(120, 160)).astype(np.uint16))
    rgba = colourful((160, 120)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.r_[np.zeros(80), np.full(80, 255)], (120, 1)).astype(np.uint8)))
    for k, image in enumerate((sixteen, rgba)):
        image.save(tmp_path / f"{k}.png")
        from_file, in_memory = model.predict([tmp_path / f"{k}.png", Image.open(tmp_path / f"{k}.png")], classifier=clf)
        assert from_file == pytest.approx(in_memory, abs=1e-6)


def test_fit_leaves_the_global_rng_alone(iqa, clf):
    table, x = iqa
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    quality.QualityModel(clf, n_models=1, epochs=1, hidden=16, device="cpu").fit(x[:20], table["mos"][:20])
    assert torch.equal(torch.rand(3), expected)


def test_cached_features_of_another_backbone_are_refused(model, clf):
    embedded = features.backbone_rows(clf, [colourful()])
    assert features.quality_input(model, clf, embedded).shape == (1, 384)
    with pytest.raises(ValueError, match="trained on backbone weights"):
        features.quality_input(model, dataclasses.replace(clf, weights_id="resnet-like"), embedded)


def test_heldout_analysis_uses_only_unseen_content(iqa, clf):
    table, x = iqa
    groups = table["ref_id"].to_numpy()
    per_split, fitted = quality.evaluate_splits(x, table["mos"].to_numpy(), groups, n_splits=2, test_size=0.34,
                                                seed=0, classifier=clf, epochs=3, hidden=64, device="cpu")
    held = quality.heldout_predictions(fitted, x, table, groups)
    for k, held_out in enumerate(fitted.heldout_groups_):
        part = held[held["split"] == k]
        assert set(part["ref_id"]) == set(held_out) and len(part) == per_split.loc[k, "n_test"]
        np.testing.assert_allclose(part["pred"], fitted.member_scores(x[np.isin(groups, held_out)])[k])
    oracle = tables.type_level_oracle(table, groups, fitted.heldout_groups_)
    assert oracle.shape == (2,) and (oracle > 0.5).all()  # the pseudo-MOS falls with the level on every photo
    by_type = tables.per_distortion(held)
    assert set(by_type["distortion"]) == set(PAPER_TYPES)
    assert (by_type["spearman_level_mos_pooled"] < 0).all() and by_type["srocc"].between(-1, 1).all()
