"""The quality half under attack: the differentiable score agrees with the cached path, I-FGSM
really attacks, and median-smoothing certificates hold against an attack inside their radius."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqalib import attacks, embedded_iqa, feature_layers, features, fooling, gradnorm, metrics, quality, robust
from iqalib import robust_experiment as rx
from iqalib.classifiers import load_classifier
from iqalib.denoiser import DnCNN, pair_rank_loss, train_denoiser, train_rank_preserving
from iqalib.feature_layers import FeatureLayers
from tests.test_detector import tiny_classifier

REFS = ["chelsea", "coffee", "rocket", "astronaut", "motorcycle", "china"]


@pytest.fixture(scope="module")
def clf():
    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def plain(tmp_path_factory, clf):
    """Heads trained on a reduced embedded set (6 photos x 4 types x 5 levels at 224 px), and views."""
    table = embedded_iqa.build_embedded_iqa(tmp_path_factory.mktemp("emb"), photos=REFS,
                                            distortions=["gaussian_blur", "white_noise", "jpeg", "jpeg2000"],
                                            short_side=224, progress=False)
    jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in table["path"]]
    rows, _ = features.embed(clf, jobs, None, 32, progress=False)
    model = quality.QualityModel(clf, n_models=2, hidden=256, epochs=20, batch_size=64, lr=3e-4, seed=0,
                                 device="cpu").fit(features.stats(clf, rows), table["mos"])
    views = [clf.view(Image.open(p).convert("RGB")) for p in sorted(set(table["ref_path"]))]
    x = torch.from_numpy(np.stack([np.asarray(v) for v in views])).permute(0, 3, 1, 2).float() / 255.0
    return model, x


def test_the_differentiable_score_is_the_cached_paths_score(clf, plain):
    model, x = plain
    score = robust.score_fn(model, clf)
    with torch.no_grad():
        ours = score(x).numpy()
    views = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, model.predict_embeddings(features.stats(clf, features.pixel_rows(clf, views))),
                               atol=1e-4)
    x.requires_grad_(True)
    score(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x.requires_grad_(False)


def test_ifgsm_moves_the_score_far_more_than_random_sign_noise(clf, plain):
    model, x = plain
    score = robust.score_fn(model, clf)
    eps = 4 / 255
    with torch.no_grad():
        clean = score(x)
        g = torch.Generator().manual_seed(0)
        noise = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).float() * eps
        random_change = (score((x + noise).clamp(0, 1)) - clean).abs().mean()
    for direction in (1, -1):
        adv = robust.ifgsm(score, x, eps, direction=direction)
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            moved = score(adv) - clean
        assert (direction * moved > 0).all()
        assert moved.abs().mean() >= 5 * random_change, (moved.abs().mean(), random_change)
    attacked = score(robust.ifgsm(score, x, eps, direction=1)).detach().numpy()
    assert metrics.robustness_score(clean.numpy(), attacked) < metrics.robustness_score(clean.numpy(), clean.numpy())


def test_interval_indices_widen_with_radius_and_refuse_too_few_samples():
    lo1, hi1 = robust.median_interval_indices(200, 0.05, 0.12)
    lo2, hi2 = robust.median_interval_indices(200, 0.2, 0.12)
    assert 0 <= lo2 <= lo1 < 100 <= hi1 <= hi2 < 200
    with pytest.raises(ValueError):
        robust.median_interval_indices(10, 0.5, 0.12)


def _pgd_l2_on_smoothed(score, x, radius, sigma, steps=10, draws=16, seed=1):
    """An ℓ2 attack of at most ``radius`` that raises the expected noisy score (EOT gradient)."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        noisy = torch.stack([score((x + delta + torch.randn(x.shape, generator=g) * sigma).clamp(0, 1))
                             for _ in range(draws)])
        grad, = torch.autograd.grad(noisy.mean(0).sum(), delta)
        with torch.no_grad():
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta + radius / 4 * step
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * torch.clamp(radius / norm.clamp_min(1e-12), max=1.0)
    return (x + delta).detach()


def test_certified_intervals_hold_against_an_attack_within_the_radius():
    """On 24 images of a tiny model behind a rank-preserving denoiser (DMS): PGD inside the
    certified ℓ2 radius, through noise and denoiser, never moves the smoothed median out of the
    interval certified at the clean image (n = 200 draws, sigma 0.12)."""
    clf = tiny_classifier()
    rng = np.random.default_rng(0)
    model = quality.QualityModel(clf, n_models=2, hidden=16, bins=20, epochs=5, features="pooled", seed=0,
                                 device="cpu").fit(rng.normal(size=(64, clf.embedding_dim)).astype(np.float32),
                                                   rng.uniform(0.2, 0.8, 64), progress=False)
    radius, sigma = 0.1, 0.12
    x = torch.from_numpy(rng.uniform(0, 1, (24, 3, 32, 32)).astype(np.float32))
    photos = [(rng.uniform(0, 1, (40, 40, 3)) * 255).astype(np.uint8) for _ in range(4)]
    mse, _ = train_denoiser(photos, sigma, layers=3, channels=4, steps=5, batch_size=4, patch=16, progress=False)
    den, _ = train_rank_preserving(mse, photos, x, robust.score_fn(model, clf), sigma, steps=5, batch_size=6,
                                   patch=16, patch_batch=4, lr=1e-3, progress=False)
    den = den.folded()  # as notebook 05 deploys it
    smoothed = robust.Scorer("dms", model, clf, "input", sigma=sigma, n=200, denoiser=den, seed=0)
    clean = smoothed.certify(x, (radius,), n=200)
    behind = robust.score_fn(model, clf)
    attacked = smoothed.certify(_pgd_l2_on_smoothed(lambda z: behind(den(z).clamp(0, 1)), x, radius, sigma),
                                (radius,), n=200)
    low, high = clean[f"low_{radius:g}"], clean[f"high_{radius:g}"]
    assert clean[f"certified_{radius:g}"].all()
    assert (low <= clean["median"]).all() and (clean["median"] <= high).all()
    assert ((attacked["median"] >= low) & (attacked["median"] <= high)).all()
    assert (attacked["median"] != clean["median"]).any(), "the attack moved the median at all"
    ours = smoothed.certify(robust.pgd_l2(smoothed, x, radius, steps=5, draws=8), (), n=200)["median"]
    assert ((ours >= low) & (ours <= high)).all() and (ours > clean["median"]).mean() > 0.5, "iqalib's l2 PGD raises"


def test_pair_rank_loss_is_zero_only_when_every_pair_keeps_its_order_by_the_margin():
    clean = torch.tensor([0.9, 0.5, 0.1])
    assert pair_rank_loss(torch.tensor([0.8, 0.5, 0.2]), clean, 0.01).item() == 0.0
    assert pair_rank_loss(torch.tensor([0.2, 0.5, 0.8]), clean, 0.01).item() > 0.3
    assert pair_rank_loss(torch.tensor([0.5, 0.5, 0.5]), clean, 0.01).item() == pytest.approx(0.01)
    assert pair_rank_loss(torch.tensor([0.3, 0.1]), torch.tensor([0.5, 0.5]), 0.01).item() == 0.0  # no ordered pair


def test_rank_fine_tuning_follows_the_metric_and_leaves_the_mse_net_alone():
    """A metric that reads the mean brightness; images of distinct brightness: the ranking loss
    drives the denoised noisy images' order towards the clean order, on a copy of the MSE net."""
    rng = np.random.default_rng(0)
    photos = [(rng.uniform(0, 1, (48, 48, 3)) * 255).astype(np.uint8) for _ in range(3)]
    mse, _ = train_denoiser(photos, 0.12, layers=3, channels=4, steps=3, batch_size=4, patch=16, progress=False)
    views = torch.linspace(0.2, 0.8, 8).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    brightness = lambda z: z.mean((1, 2, 3))  # noqa: E731
    before = [t.clone() for t in mse.parameters()]
    den, log = train_rank_preserving(mse, photos, views, brightness, 0.12, steps=20, batch_size=8, margin=0.2,
                                     patch=16, patch_batch=4, lr=1e-2, progress=False)
    assert {"mse", "rank", "violated"} <= set(log[0]) and len(log) == 20
    assert np.mean([r["rank"] for r in log[-5:]]) < np.mean([r["rank"] for r in log[:5]])
    assert all(torch.equal(a, b) for a, b in zip(mse.parameters(), before))
    assert not any(q.requires_grad for q in den.parameters())


def test_local_lipschitz_is_positive_per_image(clf, plain):
    model, x = plain
    lipschitz = robust.local_lipschitz(robust.feature_fn(model, clf), x[:2], iters=3)
    assert lipschitz.shape == (2,) and (lipschitz > 0).all()


def test_sign_step_rises_are_the_gradient_norm_where_the_score_is_linear_and_less_where_it_saturates(clf, plain):
    assert torch.allclose(gradnorm.input_unit(clf), torch.full((1, 3, 1, 1), 128 / 255))  # EfficientNet-Lite's (x - 127) / 128
    weights = torch.linspace(-1.0, 1.0, 3 * 8 * 8).view(1, 3, 8, 8)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    unit = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    norms, rises = gradnorm.sign_step_rises(lambda t: (t * weights).flatten(1).sum(1), x, [1e-3, 0.1], unit)
    expected = float((weights * unit).abs().sum())  # ‖∇f‖₁ per network unit; a linear score rises step × it
    assert np.allclose(norms, expected, rtol=1e-5)
    assert np.allclose(rises, np.array([1e-3, 0.1]) * expected, rtol=1e-4)
    saturating = lambda t: torch.tanh(20 * (t * weights).flatten(1).sum(1) / weights.abs().sum())  # noqa: E731
    norms, rises = gradnorm.sign_step_rises(saturating, torch.zeros(2, 3, 8, 8), [1e-3, 1.0])
    quotient_share = rises / np.array([1e-3, 1.0]) / norms[:, None]
    assert np.allclose(quotient_share[:, 0], 1.0, atol=1e-3) and np.all(quotient_share[:, 1] < 0.1)
    model, views = plain  # the real score: one rise per image and step, the first-order share near 1 at a tiny step
    norms, rises = gradnorm.sign_step_rises(robust.score_fn(model, clf), views[:2], [1e-4, 1e-2], gradnorm.input_unit(clf))
    assert rises.shape == (2, 2) and np.all(norms > 0) and np.all(rises[:, 0] > 0)
    assert np.all(np.abs(rises[:, 0] / 1e-4 / norms - 1) < 0.2)


def test_stats_only_pass_gives_the_full_pass_statistics(clf):
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        pooled, full = clf.forward_with_stats(x)
        none, early = clf.forward_with_stats(x, stats_only=True)
    assert none is None and pooled is not None
    torch.testing.assert_close(early, full)


def test_own_feature_layers_start_as_the_shared_pass_and_score_like_it(clf, plain):
    model, x = plain
    layers = FeatureLayers(clf)
    z = clf.normalize(x[:2] * 255.0)
    with torch.no_grad():
        torch.testing.assert_close(layers(z), clf.forward_with_stats(z, stats_only=True)[1])
    layers.train()
    assert not layers.training and not any(m.training for m in layers.modules()), "BatchNorm keeps its statistics"
    # the paper's pooled features: the copy is the whole backbone and gives the pooled embedding
    pooled = quality.QualityModel(clf, features="pooled").attach_own_layers(clf)
    with torch.no_grad():
        torch.testing.assert_close(pooled(z), clf.forward_with_stats(z)[0])
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(pooled.parameters(), clf.backbone.parameters()))
    with pytest.raises(ValueError, match="'multilevel' or 'pooled'"):
        FeatureLayers(clf, "edges")


def test_nt_two_sided_difference_also_penalises_the_slope_that_lowers_the_score(clf, plain):
    """The ablation of NT's finite difference (ours): with both one-sided differences penalised the
    penalty is the mean of two squares, so it is at least half the forward one's on the same first
    step; training with it lowers the gradient too; an unknown form is refused."""
    model, x = plain
    mos = robust.score_fn(model, clf)(x).detach().numpy()
    logs = {d: gradnorm.train_nt(model, clf, x, mos, lam=1.0, steps=6, batch_size=3, lr=3e-4, layer_lr=3e-4,
                                     progress=False, difference=d)[1] for d in ("forward", "two_sided")}
    assert logs["forward"][0]["l1"] == pytest.approx(logs["two_sided"][0]["l1"])  # the same first batch
    assert logs["two_sided"][0]["penalty"] >= 0.5 * logs["forward"][0]["penalty"]
    assert logs["two_sided"][-1]["grad_l1"] < logs["two_sided"][0]["grad_l1"]
    with pytest.raises(ValueError, match="two_sided"):
        gradnorm.train_nt(model, clf, x, mos, steps=1, progress=False, difference="central")


def test_nt_around_takes_the_difference_at_a_point_inside_the_radius(clf, plain):
    """Ours: with ``around`` > 0 the difference is taken at a random point within that ℓ∞ radius of
    each image, the L1 term still on the image itself; the same seed gives the same run; the
    gradient falls where the attack goes too; a negative or non-finite radius is refused."""
    model, x = plain
    mos = robust.score_fn(model, clf)(x).detach().numpy()
    settings = dict(lam=1.0, steps=6, batch_size=3, lr=3e-4, layer_lr=3e-4, progress=False, difference="two_sided")
    at_image = gradnorm.train_nt(model, clf, x, mos, **settings)[1]
    nt, around = gradnorm.train_nt(model, clf, x, mos, around=8 / 255, **settings)
    assert around[0]["l1"] == pytest.approx(at_image[0]["l1"])  # the same first batch, L1 on the images
    assert around[0]["grad_l1"] != pytest.approx(at_image[0]["grad_l1"])  # the slope taken elsewhere
    assert gradnorm.train_nt(model, clf, x, mos, around=8 / 255, **settings)[1] == around
    shifted = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 8 / 255).clamp(0, 1)

    def grad_l1(m):
        probe = shifted.clone().requires_grad_(True)
        return torch.autograd.grad(robust.score_fn(m, clf)(probe).sum(), probe)[0].abs().sum().item()

    assert grad_l1(nt) < grad_l1(model)
    for bad in (-1 / 255, float("nan"), 2.0):
        with pytest.raises(ValueError, match="around must be a radius"):
            gradnorm.train_nt(model, clf, x, mos, steps=1, progress=False, around=bad)


def test_nt_form_names_what_departs_from_the_authors_loss():
    authors = rx.nt_form({"lam": 1e-3, "h": 1e-2})
    assert authors.startswith("NT's loss in the authors' form (λ = 0.001, h = 0.01, one-sided") and "ours" not in authors
    ours = rx.nt_form({"lam": 3e-3, "h": 1e-2, "difference": "two_sided", "around_255": 4})
    assert "two-sided" in ours and "within 4/255" in ours and "(ours;" in ours
    assert "within" not in rx.nt_form({"lam": 1e-3, "h": 1e-2, "difference": "two_sided"})


def test_nt_trains_its_own_layers_lowers_the_gradient_and_round_trips(clf, plain, tmp_path):
    model, x = plain
    mos = robust.score_fn(model, clf)(x).detach().numpy()  # targets the plain model already meets: only the penalty pulls
    before = {k: v.clone() for k, v in clf.backbone.state_dict().items()}

    def grad_l1(m):
        probe = x.clone().requires_grad_(True)
        return torch.autograd.grad(robust.score_fn(m, clf)(probe).sum(), probe)[0].abs().flatten(1).sum(1).mean().item()

    nt, log = gradnorm.train_nt(model, clf, x, mos, lam=1.0, steps=12, batch_size=3, lr=3e-4, layer_lr=3e-4,
                                progress=False)
    assert len(log) == 12 and {"l1", "penalty", "grad_l1"} <= set(log[0])
    assert nt.has_own_layers and not model.has_own_layers
    assert grad_l1(nt) < 0.8 * grad_l1(model), (grad_l1(nt), grad_l1(model))
    for k, v in clf.backbone.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"the classifier is untouched: {k}")
    moved = [not torch.equal(a, b) for a, b in zip(nt.own_layers().parameters(), FeatureLayers(clf).parameters())]
    assert any(moved), "the copied layers trained"
    assert all(not q.requires_grad for q in nt.own_layers().parameters())
    loaded = quality.QualityModel.load(nt.save(tmp_path / "nt"))
    assert loaded.has_own_layers and (tmp_path / "nt" / "feature_layers.pt").is_file()
    with torch.no_grad():
        torch.testing.assert_close(robust.score_fn(loaded, clf)(x), robust.score_fn(nt, clf)(x))
    # an outside attacker's gradient through score_fn of the saved model is the trained model's own
    assert grad_l1(loaded) == pytest.approx(grad_l1(nt), rel=1e-5)
    pictures = [Image.fromarray((v.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for v in x[:2]]
    with torch.no_grad():
        np.testing.assert_allclose(loaded.predict(pictures, clf), robust.score_fn(loaded, clf)(x[:2]).numpy(),
                                   atol=2e-3)  # predict re-views the uint8 picture: rounding only
    rows = features.pixel_rows(clf, (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    with pytest.raises(ValueError, match="own feature layers"):
        features.scores(loaded, clf, rows)


def test_nt_from_fresh_heads_redraws_them_by_seed_and_learns_them_leaving_plain_untouched(clf, plain):
    """``heads="fresh"`` (NT from the start, as the authors train): the heads are redrawn from the
    seed (the same seed, the same heads; plain's untouched) and learnt, the L1 term falling from
    the redrawn heads' level; an unknown choice is refused."""
    model, x = plain
    mos = robust.score_fn(model, clf)(x).detach().numpy()
    before = [h.fc1.weight.clone() for h in model.heads]
    still = dict(lam=0.0, steps=2, batch_size=3, lr=0.0, layer_lr=0.0, progress=False, heads="fresh")
    first, log = gradnorm.train_nt(model, clf, x, mos, seed=1, **still)
    again, _ = gradnorm.train_nt(model, clf, x, mos, seed=1, **still)
    other, _ = gradnorm.train_nt(model, clf, x, mos, seed=2, **still)
    for k, head in enumerate(model.heads):
        torch.testing.assert_close(head.fc1.weight, before[k], msg="plain's heads are untouched")
        assert not torch.equal(first.heads[k].fc1.weight, head.fc1.weight), "redrawn"
        torch.testing.assert_close(again.heads[k].out.weight, first.heads[k].out.weight)
        assert not torch.equal(other.heads[k].out.weight, first.heads[k].out.weight)
        torch.testing.assert_close(first.heads[k].mu, head.mu, msg="the feature standardisation is kept")
    _, plain_log = gradnorm.train_nt(model, clf, x, mos, **{**still, "heads": "plain"})
    assert log[0]["l1"] > plain_log[0]["l1"] + 0.01, "redrawn heads start far from the targets plain meets"
    _, learning = gradnorm.train_nt(model, clf, x, mos, lam=0.0, steps=30, batch_size=6, lr=1e-3, layer_lr=0.0,
                                    progress=False, heads="fresh", seed=1)
    assert np.mean([r["l1"] for r in learning[-5:]]) < 0.5 * learning[0]["l1"], (learning[0], learning[-1])
    with pytest.raises(ValueError, match="'plain' or 'fresh'"):
        gradnorm.train_nt(model, clf, x, mos, steps=1, progress=False, heads="random")


def test_nt_with_batchnorm_in_training_mode_learns_statistics_and_saves_folded(clf, plain, tmp_path, monkeypatch):
    """``batchnorm="train"`` (the authors' HyperIQA recipe) needs the unfolded classifier; with
    both learning rates at 0 only BatchNorm's running statistics can move, and they do, where the
    frozen form on the same classifier keeps the plain score; the result is folded, saves and
    scores through the folded classifier; neither classifier is touched."""
    model, x = plain
    raw = load_classifier("efficientnet_lite0", "cpu", fold_batchnorm=False)
    assert not raw.batchnorm_folded and any(isinstance(m, torch.nn.BatchNorm2d) for m in raw.backbone.modules())
    Image.new("RGB", (40, 40), "gray").save(tmp_path / "a.png")
    jobs = [features.ImageJob(tmp_path / "a.png")]
    keys = features.job_keys(raw, jobs) + features.job_keys(clf, jobs)
    assert None not in keys and keys[0] != keys[1], "embeddings of the unfolded classifier are cached apart"
    with torch.no_grad():
        torch.testing.assert_close(raw.logits_from_pixels(x[:2] * 255), clf.logits_from_pixels(x[:2] * 255),
                                   rtol=1e-3, atol=1e-3)
    layers = FeatureLayers(raw)  # folded all the same, the layout a saved model's layers have
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layers.modules())
    assert list(layers.state_dict()) == list(FeatureLayers(clf).state_dict())
    before = {k: v.clone() for k, v in raw.backbone.state_dict().items()}
    mos = robust.score_fn(model, clf)(x).detach().numpy()
    still = dict(lam=1.0, steps=3, batch_size=3, lr=0.0, layer_lr=0.0, progress=False)
    frozen, _ = gradnorm.train_nt(model, raw, x, mos, batchnorm="frozen", **still)
    trained, _ = gradnorm.train_nt(model, raw, x, mos, batchnorm="train", **still)
    for nt in (frozen, trained):
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in nt.own_layers().modules())
    with torch.no_grad():
        base = robust.score_fn(model, clf)(x)
        torch.testing.assert_close(robust.score_fn(frozen, clf)(x), base, rtol=1e-4, atol=1e-4)
        assert (robust.score_fn(trained, clf)(x) - base).abs().max() > 1e-3, "running statistics learnt"
        loaded = quality.QualityModel.load(trained.save(tmp_path / "nt_bn"))
        torch.testing.assert_close(robust.score_fn(loaded, clf)(x), robust.score_fn(trained, clf)(x))
    for k, v in raw.backbone.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"the classifier is untouched: {k}")
    with pytest.raises(ValueError, match="fold_batchnorm=False"):
        gradnorm.train_nt(model, clf, x, mos, steps=1, progress=False, batchnorm="train")
    # a fold that fails its check leaves the copy's BatchNorm in eval mode instead of failing
    monkeypatch.setattr(feature_layers, "fold_batchnorm_checked", lambda network, *_: network)
    kept = FeatureLayers(raw).train()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in kept.modules()) and not kept.training
    with torch.no_grad():
        z = clf.normalize(x[:2] * 255.0)
        torch.testing.assert_close(kept(z), layers(z), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="'frozen' or 'train'"):
        gradnorm.train_nt(model, raw, x, mos, steps=1, progress=False, batchnorm="eval")


def test_cache_keys_name_the_classifier_as_its_passes_compute_it(clf):
    """An unfolded copy sums in another order: its UAPs and fooling images are keyed apart from the
    folded classifier's (``Classifier.passes_id``; the UAP groups and notebook 05's models use the
    same id), and the folded one's id is ``weights_id`` itself, so caches made before stay valid."""
    raw = load_classifier("efficientnet_lite0", "cpu", fold_batchnorm=False)
    assert raw.weights_id == clf.weights_id and clf.passes_id == clf.weights_id != raw.passes_id
    for make in (attacks.UniversalPerturbation, attacks.StochasticUniversalPerturbation,
                 fooling.GradientAscentFooling, fooling.EvolutionaryFooling):
        unfolded, folded = make(raw).params(), make(clf).params()
        assert {k for k in folded if unfolded[k] != folded[k]} == {"weights_id"}, make.__name__
        assert folded["weights_id"] == clf.weights_id, f"{make.__name__}: existing keys unchanged"


def test_scorers_plain_input_and_feature_smoothing(clf, plain):
    model, x = plain
    x = x[:3]
    plain_scorer = robust.Scorer("plain", model, clf)
    fs = robust.Scorer("fs", model, clf, "feature", sigma=0.1, n=20, seed=0)
    dms = robust.Scorer("dms", model, clf, "input", sigma=0.05, n=4, seed=0)
    with torch.no_grad():
        exact = robust.score_fn(model, clf)(x).numpy()
    np.testing.assert_allclose(plain_scorer.scores(x), exact, atol=1e-6)
    # feature smoothing by hand: per image the lower middle of 20 head scores on phi(x) + 0.1 · scale · N(0, 1),
    # scale = the heads' mean training std per feature, the draws from Generator(seed) on ONE backbone pass
    with torch.no_grad():
        phi = robust.feature_fn(model, clf)(x)
        scale = torch.stack([h.sd for h in model.heads]).mean(0)
        g = torch.Generator().manual_seed(0)
        noisy = np.stack([model.score_tensor(phi + torch.randn(phi.shape, generator=g) * 0.1 * scale).numpy()
                          for _ in range(20)])
    fs_scores = fs.scores(x)
    np.testing.assert_allclose(fs_scores, np.sort(noisy, axis=0)[(20 - 1) // 2], atol=1e-6)
    assert (noisy.std(axis=0) > 0).all() and not np.allclose(fs_scores, exact, atol=1e-6)  # the noise is real
    np.testing.assert_array_equal(fs.scores(x), fs_scores)  # seeded noise: the same input, the same score
    reseeded = robust.Scorer("fs", model, clf, "feature", sigma=0.1, n=20, seed=1).scores(x)
    assert not np.allclose(reseeded, fs_scores, atol=1e-6)  # ... and another seed, other draws
    assert np.abs(fs_scores - exact).max() < 0.2 and np.abs(dms.scores(x) - exact).max() < 0.2
    assert fs.passes_per_image() == {"backbone_passes": 1, "own_layer_passes": 0, "head_passes": 20,
                                     "denoiser_passes": 0}
    assert dms.passes_per_image()["backbone_passes"] == 4
    lipschitz = robust.local_lipschitz(fs.scaled_features(), x, iters=3)
    cert = fs.certify(x, (1e-4, 10.0), n=200, lipschitz=lipschitz)
    assert cert["certified_0.0001"].all() and (cert["low_0.0001"] <= cert["median"]).all()
    assert not cert["certified_10"].any() and (cert["high_10"] - cert["low_10"] == 1).all()
    with pytest.raises(ValueError):
        robust.Scorer("bad", model, clf, "pixels")
    with pytest.raises(ValueError):
        plain_scorer.certify(x, (0.1,), n=10)
    with pytest.raises(ValueError, match="Lipschitz"):
        fs.certify(x, (0.1,), n=10)


def test_the_denoiser_learns_and_round_trips(tmp_path):
    photos = [np.asarray(Image.open(embedded_iqa.embedded_photo_path(p)).convert("RGB").resize((96, 96)))
              for p in ("chelsea", "coffee")]
    net, log = train_denoiser(photos, sigma=0.12, layers=3, channels=8, steps=60, batch_size=8, patch=32, lr=3e-3,
                              progress=False)
    assert np.mean([r["mse"] for r in log[-10:]]) < 0.7 * np.mean([r["noisy_mse"] for r in log[-10:]])
    loaded = DnCNN.load(net.save(tmp_path / "den"))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net(x))
    folded = loaded.folded()  # what attacks and scoring run: the same function without BatchNorm
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())  # the trainable one keeps them
    torch.testing.assert_close(folded(x), loaded(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        train_denoiser(photos, 0.1, patch=200, progress=False)


@pytest.mark.parametrize("space", ["none", "input", "feature"])
def test_ifgsm_at_every_radius_at_once_equals_one_run_per_radius_in_fewer_steps(space):
    """``ifgsm_radii`` (runs sharing their first iterations, noise generator copied at each branch)
    gives each radius what ``ifgsm`` on ``expected(draws, seed)`` gives it alone, with 33 gradient
    steps instead of 40 at the MSU setting; for a smoothed scorer too (its EOT draws)."""
    clf = tiny_classifier()
    rng = np.random.default_rng(0)
    model = quality.QualityModel(clf, n_models=2, hidden=16, bins=20, epochs=5, features="pooled", seed=0,
                                 device="cpu").fit(rng.normal(size=(64, clf.embedding_dim)).astype(np.float32),
                                                   rng.uniform(0.2, 0.8, 64), progress=False)
    scorer = robust.Scorer(space, model, clf, space, sigma=0.0 if space == "none" else 0.1,
                           n=1 if space == "none" else 4, seed=0)
    x = torch.from_numpy(rng.uniform(0, 1, (6, 3, 32, 32)).astype(np.float32))
    radii = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    calls = []
    draw = scorer.draw
    scorer.draw = lambda *a, **k: calls.append(1) or draw(*a, **k)
    for direction in (1, -1):
        calls.clear()
        together = robust.ifgsm_radii(scorer, x, radii, 1 / 255, 10, direction, draws=2, seed=3)
        assert len(calls) == 33 * (1 if space == "none" else 2)  # draws per step: EOT only when smoothed
        for eps in radii:
            alone = robust.ifgsm(scorer.expected(2, seed=3), x, eps, 1 / 255, 10, direction)
            np.testing.assert_allclose(together[eps].numpy(), alone.numpy(), atol=1e-6)
            assert (together[eps] - x).abs().max() <= eps + 1e-6
