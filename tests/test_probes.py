"""Tests for iqalib.probes: the control maps keep what they claim to keep, and the two summaries
compute what their docstrings say on arrays built by hand."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from iqalib import classifiers, probes


@pytest.fixture
def uap():
    rng = np.random.default_rng(1)
    return np.clip(np.rint(rng.normal(0, 6, (16, 16, 3))), -10, 10).astype(np.float32)


def test_controls_keep_the_amplitude_and_drop_the_structure(uap):
    maps = probes.controls(uap, seed=3)
    assert list(maps) == [probes.UAP, probes.SHUFFLED, probes.NOISE, probes.SIGNS]
    for name, m in maps.items():
        assert m.shape == uap.shape and np.array_equal(m, np.rint(m)), name
    assert np.array_equal(maps[probes.UAP], uap)
    shuffled = maps[probes.SHUFFLED]
    assert np.array_equal(np.sort(shuffled.reshape(-1, 3), axis=0), np.sort(uap.reshape(-1, 3), axis=0))
    assert not np.array_equal(shuffled, uap)
    rms = np.sqrt(np.mean(uap ** 2))
    assert abs(np.sqrt(np.mean(maps[probes.NOISE] ** 2)) / rms - 1) < 0.1
    assert set(np.unique(maps[probes.SIGNS])) == {-10.0, 10.0}
    again = probes.controls(uap, seed=3)
    assert all(np.array_equal(again[k], maps[k]) for k in maps)
    with pytest.raises(ValueError, match="map"):
        probes.controls(uap[..., :2])


def test_visibility_pairs_images_with_their_originals():
    clean = np.array([0.5, 0.6, 0.7, 0.8])
    maps = {"down": np.full((2, 2, 3), 3.0), "same": np.zeros((2, 2, 3))}
    quality = {probes.CLEAN: clean, "down": clean - 0.1, "same": clean.copy()}
    top1 = {probes.CLEAN: np.array([1, 2, 3, 4]), "down": np.array([1, 2, 3, 9]), "same": np.array([1, 2, 3, 4])}
    table = probes.visibility(quality, top1, maps).set_index("perturbation")
    assert table.loc["down", "drop"] == pytest.approx(0.1)
    assert table.loc["down", "lower_than_original"] == 1.0 and table.loc["same", "lower_than_original"] == 0.0
    y = np.r_[np.zeros(4), np.ones(4)]
    assert table.loc["down", "auc_vs_originals"] == pytest.approx(roc_auc_score(y, -np.r_[clean, clean - 0.1]))
    assert table.loc["same", "auc_vs_originals"] == pytest.approx(0.5)
    assert table.loc["down", "top1_changed"] == 0.25 and table.loc["same", "top1_changed"] == 0.0
    assert table.loc["down", "rms"] == 3.0 and table.loc["down", "linf"] == 3.0
    with pytest.raises(ValueError, match="pair up"):
        probes.visibility({**quality, "down": clean[:3]}, top1, maps)


def test_feature_shift_measures_length_and_direction_per_tap():
    rng = np.random.default_rng(0)
    layout = [("a", 2), ("b", 1)]  # a: 2 means then 2 log-stds; b: 1 mean then 1 log-std
    clean = rng.normal(size=(50, 6))
    spread = clean.std(0) + 1e-6
    noise_change = np.array([1.0, 0.0, 2.0, 1.0, 3.0, -1.0])
    other_change = np.array([2.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # a-means along noise, b-log-std against it
    stats = {probes.CLEAN: clean, probes.NOISE: clean + noise_change * spread, "other": clean + other_change * spread}
    table = probes.feature_shift(stats, layout).set_index(["tap", "statistic", "perturbation"])
    assert table.loc[("a", "log-std", probes.NOISE), "shift"] == pytest.approx(np.sqrt(5.0), rel=1e-4)
    assert table.loc[("a", "mean", "other"), "cosine_to_reference"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc[("b", "log-std", "other"), "cosine_to_reference"] == pytest.approx(-1.0, abs=1e-6)
    assert table.loc[("a", "log-std", "other"), "shift"] == pytest.approx(0.0, abs=1e-9)
    assert len(table) == 2 * 2 * 2
    with pytest.raises(ValueError, match="layout"):
        probes.feature_shift(stats, [("a", 2)])
    with pytest.raises(ValueError, match="reference"):
        probes.feature_shift(stats, layout, reference="missing")


def test_stat_layout_names_the_taps_that_fill_a_row():
    lite0 = classifiers.load_classifier("efficientnet_lite0", "cpu")
    layout = lite0.stat_layout
    assert [name for name, _ in layout] == ["bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert 2 * sum(c for _, c in layout) == lite0.stats_dim
