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
    images, classes, conf = EvolutionaryFooling(clf, distinct=False, **kwargs)([1, 4, 9])
    assert list(classes) == [1, 4, 9] and conf.shape == (3,)
    assert_valid_8bit(images)
    re_conf = clf.predict_proba(png_roundtrip(images, tmp_path))[np.arange(3), classes]
    np.testing.assert_allclose(conf, re_conf, atol=1e-6)
    # the same seed gives the same images, distinct or not
    runs = {False: [(images, classes, conf)], True: []}
    for distinct in (False, True, True):
        runs[distinct].append(EvolutionaryFooling(clf, distinct=distinct, **kwargs)([1, 4, 9]))
    for a, b in runs.values():
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a[0], b[0]))
    # and another seed other images
    other = EvolutionaryFooling(clf, distinct=False, **{**kwargs, "seed": 6})([1, 4, 9])[0]
    assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(images, other))


def test_fool_ev_all_classes_and_improves(clf):
    ev = EvolutionaryFooling(clf, population=10, generations=1, distinct=False, seed=1, progress=False)
    _, classes, conf1 = ev()
    assert list(classes) == list(range(10))
    ev.generations = 8
    _, _, conf8 = ev()
    # MAP-Elites never loses an elite: more generations, same seed prefix -> no class gets worse
    assert (conf8 >= conf1 - 1e-6).all() and conf8.mean() > conf1.mean()


def _pixels(im) -> bytes:
    return np.asarray(im).tobytes()


@pytest.mark.parametrize("tournament", [1, 4])
def test_fool_ev_distinct_images_under_their_best_class(clf, tournament):
    kwargs = dict(population=4, generations=2, tournament=tournament, seed=3, progress=False)
    per_class, all_classes, all_conf = EvolutionaryFooling(clf, distinct=False, **kwargs)()
    by_pixels: dict[bytes, list[int]] = {}
    for i, im in enumerate(per_class):
        by_pixels.setdefault(_pixels(im), []).append(i)
    assert len(by_pixels) < len(per_class)  # 8 genomes for 10 cells: some image holds several
    images, classes, conf = EvolutionaryFooling(clf, **kwargs)()
    keys = [_pixels(im) for im in images]
    assert len(set(keys)) == len(keys) == len(by_pixels)  # every elite image, once
    assert len(set(classes.tolist())) == len(classes)
    assert (np.diff(conf) <= 0).all()  # most confident first
    np.testing.assert_allclose(conf, clf.predict_proba(images)[np.arange(len(images)), classes], atol=1e-6)
    for k, c, p in zip(keys, classes, conf):
        held = by_pixels[k]
        assert c in all_classes[held] and p == all_conf[held].max()  # its best held class


def test_fool_ev_keep(clf):
    ev = EvolutionaryFooling(clf, population=8, generations=3, seed=2, progress=False)
    images, classes, conf = ev()
    n = len(images)
    assert n >= 3
    for keep in (1, n - 1, n, n + 5):
        kept = ev(keep=keep)
        assert len(kept[0]) == min(keep, n)  # ``keep`` distinct images when there are that many
        assert len({_pixels(im) for im in kept[0]}) == len(kept[0])
        assert np.array_equal(kept[1], classes[:keep]) and np.array_equal(kept[2], conf[:keep])
    # without ``distinct``, ``keep`` is the old rule: the most confident cells, duplicates and all
    cells = EvolutionaryFooling(clf, population=8, generations=3, distinct=False, seed=2, progress=False)
    _, all_classes, all_conf = cells()
    _, top_classes, top_conf = cells(keep=4)
    best = np.argsort(-all_conf, kind="stable")[:4]
    assert np.array_equal(top_classes, all_classes[best]) and np.array_equal(top_conf, all_conf[best])


def test_fool_ev_params_name_the_new_settings(clf):
    p = EvolutionaryFooling(clf, progress=False).params()
    assert {"tournament", "mutation_sigma", "init_sigma", "distinct", "code_version"} <= set(p)
    assert p["mutation_sigma"] == 8.0 and p["tournament"] == 16 and p["distinct"] is True
    assert EvolutionaryFooling(clf, encoding="direct", progress=False).params()["mutation_sigma"] == 25.0
    with pytest.raises(ValueError):
        EvolutionaryFooling(clf, tournament=0)
