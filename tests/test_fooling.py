"""Tests for iqalib.fooling (Fool_GD, Fool_EV) on the tiny seeded classifier of test_attacks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqalib.classifiers import Classifier
from iqalib.fooling import EvolutionaryFooling, GradientAscentFooling
from tests.test_attacks import assert_valid_8bit, png_roundtrip, tiny_classifier


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return tiny_classifier()


# ---------------------------------------------------------------------------------------------
# Fool_GD
# ---------------------------------------------------------------------------------------------


def test_fool_gd_valid_and_reclassified(clf, tmp_path):
    targets = [0, 3, 7]
    gen = GradientAscentFooling(
        clf, steps=15, lr=4.0, l2_decay=0.01, blur_every=4, blur_sigma=0.5, batch_size=2, progress=False
    )
    images, conf = gen(targets)
    assert len(images) == 3 and conf.shape == (3,)
    assert_valid_8bit(images)
    reloaded = png_roundtrip(images, tmp_path)
    re_conf = clf.predict_proba(reloaded)[np.arange(3), targets]
    np.testing.assert_allclose(conf, re_conf, atol=1e-6)
    start = _to_images(gen.start_images(3))
    start_conf = clf.predict_proba(start)[np.arange(3), targets]
    assert (conf > start_conf).all(), (conf, start_conf)
    # the same target list gives the same images, whatever the batch size
    gen.batch_size = 3
    images2, _ = gen(targets)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, images2))


def _to_images(pixels: torch.Tensor) -> list[Image.Image]:
    arr = pixels.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


# ---------------------------------------------------------------------------------------------
# Fool_EV
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["cppn", "direct"])
def test_fool_ev_valid_reclassified_deterministic(clf, tmp_path, encoding):
    kwargs = dict(population=12, generations=6, mutation_rate=0.2, encoding=encoding, seed=5, progress=False)
    images, classes, conf = EvolutionaryFooling(clf, **kwargs)([1, 4, 9])
    assert list(classes) == [1, 4, 9] and conf.shape == (3,)
    assert_valid_8bit(images)
    re_conf = clf.predict_proba(png_roundtrip(images, tmp_path))[np.arange(3), classes]
    np.testing.assert_allclose(conf, re_conf, atol=1e-6)
    images2, classes2, conf2 = EvolutionaryFooling(clf, **kwargs)([1, 4, 9])
    assert np.array_equal(classes, classes2) and np.array_equal(conf, conf2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, images2))


def test_fool_ev_all_classes_and_improves(clf):
    ev = EvolutionaryFooling(clf, population=10, generations=1, seed=1, progress=False)
    _, classes, conf1 = ev()
    assert list(classes) == list(range(10))
    ev.generations = 8
    _, _, conf8 = ev()
    # MAP-Elites never loses an elite: more generations, same seed prefix -> no class gets worse
    assert (conf8 >= conf1 - 1e-6).all() and conf8.mean() > conf1.mean()
