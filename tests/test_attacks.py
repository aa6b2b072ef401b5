"""Tests for iqalib.attacks (DeepFool, UAP) on a tiny seeded classifier (fast), plus one slow real-model
check. The tiny classifier and image helpers are shared with test_fooling."""
from __future__ import annotations

import glob
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from iqalib.attacks import (
    StochasticUniversalPerturbation,
    UniversalPerturbation,
    apply_perturbation,
    deepfool,
    fooling_rate,
    load_uap,
    save_uap,
)
from iqalib.classifiers import Classifier, plain_resize_view

S = 32


def tiny_classifier(seed: int = 0) -> Classifier:
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),  # a 2×2 map, not a single vector: predictions vary more between images
        nn.Flatten(),
    )
    head = nn.Linear(64, 10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(backbone.parameters()) + list(head.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.0))  # zero biases
    return Classifier(
        name="tiny",
        backbone=backbone,
        head=head,
        view=plain_resize_view(S),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        input_size=S,
        weights_id="tiny",
        device=torch.device("cpu"),
        wnids=tuple(f"n{i:08d}" for i in range(10)),
    )


def random_images(n: int, seed: int, size: tuple[int, int] = (S, S)) -> list[Image.Image]:
    """Smooth-ish random RGB images (low-res noise upsampled), ``size`` = (W, H)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").resize(size, Image.BILINEAR)
        for _ in range(n)
    ]


def png_roundtrip(images, folder: Path) -> list[Image.Image]:
    out = []
    for i, im in enumerate(images):
        p = folder / f"{i}.png"
        im.save(p)
        out.append(Image.open(p).convert("RGB"))
    return out


def assert_valid_8bit(images, size: int = S):
    for im in images:
        assert im.mode == "RGB" and im.size == (size, size)
        assert np.asarray(im).dtype == np.uint8


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return tiny_classifier()


# ---------------------------------------------------------------------------------------------
# DeepFool
# ---------------------------------------------------------------------------------------------


class _UnitInterval(nn.Module):
    """torchattacks works in [0, 1]: x -> logits_from_pixels(255 x)."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # torchattacks reads a device from it

    def forward(self, x):
        return self.clf.logits_from_pixels(x * 255)


def test_deepfool_flips_and_matches_torchattacks(clf):
    torchattacks = pytest.importorskip("torchattacks")
    x = clf.pixels(random_images(6, seed=1))
    with torch.no_grad():
        labels = clf.logits_from_pixels(x).argmax(1)
    r, n_iter = deepfool(clf, x, num_candidates=10, overshoot=0.02, max_iter=50)
    assert r.shape == x.shape and n_iter.shape == (6,)
    with torch.no_grad():
        adv_labels = clf.logits_from_pixels((x + r).clamp(0, 255)).argmax(1)
    ours_flip = adv_labels != labels
    assert ours_flip.all(), "DeepFool should flip every image of the tiny model"
    assert ((x + r) >= 0).all() and ((x + r) <= 255).all()

    attack = torchattacks.DeepFool(_UnitInterval(clf).eval(), steps=50, overshoot=0.02)
    adv_ta = attack(x / 255, labels) * 255
    with torch.no_grad():
        ta_flip = clf.logits_from_pixels(adv_ta).argmax(1) != labels
    assert ta_flip.all()
    ours = r.flatten(1).norm(dim=1)
    theirs = (adv_ta - x).flatten(1).norm(dim=1)
    ratio = ours / theirs
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio


def test_deepfool_already_misclassified_gives_zero(clf):
    x = clf.pixels(random_images(3, seed=2))
    with torch.no_grad():
        labels = clf.logits_from_pixels(x).argmax(1)
    r, n_iter = deepfool(clf, x, labels=(labels + 1) % 10)
    assert (n_iter == 0).all() and (r == 0).all()


# ---------------------------------------------------------------------------------------------
# UAP
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uap(clf):
    attack = UniversalPerturbation(clf, xi=12.0, delta=0.2, max_passes=2, num_candidates=5, seed=0, progress=False)
    v = attack.fit(random_images(16, seed=3))
    return attack, v


def test_uap_budget_and_shape(uap):
    attack, v = uap
    assert v.shape == (S, S, 3) and v.dtype == np.float32
    assert np.abs(v).max() <= attack.xi
    assert np.array_equal(v, np.rint(v)), "fitted maps are whole 8-bit steps"
    assert 1 <= len(attack.history_) <= attack.max_passes
    assert attack.history_[-1] > 0


def test_apply_perturbation_within_xi_exactly(clf, uap):
    attack, v = uap
    xi = int(attack.xi)
    for im in random_images(5, seed=4) + random_images(3, seed=5, size=(70, 50)):
        base = np.asarray(clf.view(im), dtype=np.int16)
        adv = np.asarray(apply_perturbation(im, v, clf.view), dtype=np.int16)
        assert np.abs(adv - base).max() <= xi
    # a non-integer map: the sum is still within round(max|v|) of the base
    v_frac = np.full((S, S, 3), 2.4, np.float32)
    im = random_images(1, seed=6)[0]
    diff = np.asarray(apply_perturbation(im, v_frac, clf.view), np.int16) - np.asarray(clf.view(im), np.int16)
    assert np.abs(diff).max() <= 2


def test_apply_perturbation_sizes_and_modes(uap):
    _, v = uap
    rng = np.random.default_rng(7)
    grey = Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8), "L")  # 70 wide, 50 high
    rgba = Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA")
    rgb = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), "RGB")
    for im in (grey, rgba, rgb):
        out = apply_perturbation(im, v)  # no view: plain bilinear resize to the map's size
        assert out.mode == "RGB" and out.size == (S, S)
        base = np.asarray(im.convert("RGB").resize((S, S), Image.BILINEAR), np.int16)
        assert np.abs(np.asarray(out, np.int16) - base).max() <= 12


def test_fooling_rate_matches_saved_map_by_hand(clf, uap, tmp_path):
    attack, v = uap
    held_out = random_images(12, seed=8) + random_images(4, seed=9, size=(50, 40))
    rate = fooling_rate(clf, held_out, v)
    assert rate > 0, "the check below is only informative when some image is fooled"
    save_uap(tmp_path / "uap", v, {**attack.params(), "fooling_rate": rate, "n_eval": len(held_out)})
    for name in ("uap.npy", "uap.json", "uap.png"):
        assert (tmp_path / "uap" / name).exists()
    assert not any(p.name.startswith(".") for p in (tmp_path / "uap").iterdir()), "no temp files left"
    v2, meta = load_uap(tmp_path / "uap")
    assert np.array_equal(v, v2) and meta["fooling_rate"] == rate and meta["n_eval"] == 16
    assert meta["xi"] == attack.xi and meta["classifier"] == "tiny" and meta["input_size"] == S
    vis = Image.open(tmp_path / "uap" / "uap.png")
    assert vis.size == (S, S) and vis.mode == "RGB"
    # by hand: classify the view and the saved/re-loaded adversarial PNGs
    advs = png_roundtrip([apply_perturbation(im, v2, clf.view) for im in held_out], tmp_path)
    clean = clf.predict_proba([clf.view(im) for im in held_out]).argmax(1)
    adv = clf.predict_proba(advs).argmax(1)
    assert rate == pytest.approx(float(np.mean(clean != adv)), abs=1e-12)
    with pytest.raises(ValueError):
        save_uap(tmp_path / "bad", v, {"xi": 12.0})


def test_uap_history_is_exact_pool_rate(clf, uap):
    attack, v = uap
    pool = random_images(16, seed=3)
    assert attack.history_[-1] == pytest.approx(fooling_rate(clf, pool, v))


def test_sgd_uap_is_bounded_deterministic_and_fools_held_out_images(clf):
    pool = random_images(12, seed=7, size=(70, 50))  # other sizes than the view: crops are resized
    held_out = random_images(24, seed=8)
    attack = StochasticUniversalPerturbation(clf, xi=12.0, steps=40, batch_size=8, lr=2.0, seed=0, progress=False)
    v = attack.fit(pool)
    assert v.shape == (S, S, 3) and v.dtype == np.float32
    assert np.abs(v).max() <= attack.xi and np.array_equal(v, np.rint(v))
    assert len(attack.history_) == attack.steps
    again = StochasticUniversalPerturbation(clf, xi=12.0, steps=40, batch_size=8, lr=2.0, seed=0, progress=False)
    assert np.array_equal(again.fit(pool), v), "same seed, same map"
    signs = np.random.default_rng(0).choice([-12.0, 12.0], size=v.shape).astype(np.float32)
    assert fooling_rate(clf, held_out, v) > fooling_rate(clf, held_out, signs), "beats random noise of the same size"
    assert attack.params()["algorithm"] == "uap-sgd-untargeted"



# ---------------------------------------------------------------------------------------------
# slow: the real EfficientNet-Lite0
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="set RUN_SLOW=1 to run the real-model test")
def test_uap_real_model_fools_something():
    from iqalib.classifiers import WeightsNotFoundError, load_classifier

    try:
        real = load_classifier("efficientnet_lite0", device="cpu")
    except WeightsNotFoundError as exc:  # pragma: no cover
        pytest.skip(str(exc))
    data = Path(importlib.util.find_spec("foolbox").origin).parent / "data"
    files = sorted(glob.glob(str(data / "imagenet_*.jpg")))[:2]
    images = [Image.open(f) for f in files]
    t = time.time()
    attack = UniversalPerturbation(real, xi=10.0, max_passes=2, num_candidates=3, progress=False)
    v = attack.fit(images)
    rate = fooling_rate(real, images, v)
    print(f"real UAP: {time.time() - t:.1f}s, history {attack.history_}, fooling rate {rate}")
    assert np.abs(v).max() <= 10
    assert rate > 0
