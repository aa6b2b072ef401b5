"""Attacking and hardening the quality half: a differentiable quality score, I-FGSM score attacks
and the robustness score of the MSU metrics-robustness benchmark; median smoothing with its certified interval in input space
(DMS-IQA, with a denoiser from ``iqalib.denoiser``) and in feature space (the FS-IQA idea: noise
on the features the heads read, one backbone pass); a local Lipschitz estimate of the features;
and ``Scorer``, one quality model as attacks, certificates and the detector see it (plain, NT,
input-smoothed or feature-smoothed), so each can be swapped for another.

Everything takes images as float tensors in [0, 1], (N, 3, H, W). Knows nothing of params or
notebooks. The adaptive attack on the whole detector lives in ``iqalib.adaptive``, NT's training of
a quality model's own layers in ``iqalib.gradnorm``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from iqalib.classifiers import Classifier
from iqalib.quality import QualityModel

__all__ = ["score_fn", "feature_fn", "ifgsm", "ifgsm_radii", "median_interval_indices", "local_lipschitz",
           "Scorer", "random_sign", "pgd_l2", "attack_scores"]

Score = Callable[[torch.Tensor], torch.Tensor]

# Images per pass in scoring and score attacks. On 2 CPU cores a 224-px batch of 24 costs 27-41 %
# more time per image forward + backward than one of 16 (backbone, early layers and denoiser
# alike; forward alone 5-10 %): its activations outgrow the cache (benchmarks/bench_robust.py
# --images 24 vs --images 16).
BATCH = 16


def _head_input(quality_model: QualityModel, classifier: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalised network input -> the features the heads read: the model's own feature layers
    when it has them (NT), else ONE backbone pass (stopped after the last early layer for
    ``multilevel`` features)."""
    own = quality_model.own_layers(classifier)
    if own is not None:
        return own
    multilevel = quality_model.features == "multilevel"

    def features(z: torch.Tensor) -> torch.Tensor:
        pooled, statistics = classifier.forward_with_stats(z, stats_only=multilevel)
        return statistics if multilevel else pooled

    return features


def feature_fn(quality_model: QualityModel, classifier: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [0, 1] (N, 3, H, W) -> the (N, D) features the quality heads read, differentiably:
    the classifier's view as a bilinear, antialiased resize to S×S (its PIL view, up to interpolation
    rounding), 0–255 pixels, normalisation, ONE backbone pass (``Classifier.forward_with_stats``)."""
    s = classifier.input_size
    head_input = _head_input(quality_model, classifier)

    def features(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return head_input(classifier.normalize(x * 255.0))

    return features


def score_fn(quality_model: QualityModel, classifier: Classifier) -> Score:
    """Images in [0, 1] (N, 3, H, W) -> predicted quality in [0, 1] (N,), differentiably, through
    the classifier's view, backbone and the quality model's heads (mean over the ensemble). The
    model must have been trained on this backbone (ValueError otherwise, as ``features`` checks)."""
    quality_model.classifier(classifier)  # the one backbone-compatibility check
    to_features = feature_fn(quality_model, classifier)

    def score(x: torch.Tensor) -> torch.Tensor:
        return quality_model.score_tensor(to_features(x))

    return score


def ifgsm(score: Score, x: torch.Tensor, eps: float, step: float = 1 / 255, iters: int = 10,
          direction: int = 1) -> torch.Tensor:
    """I-FGSM on a score (the MSU benchmark's setting: step 1/255, 10 iterations): ``iters`` signed
    gradient steps of ``step`` that raise (``direction=+1``) or lower (``-1``) ``score``, projected
    onto the ℓ∞ ball of radius ``eps`` around ``x`` and onto [0, 1]. Returns the attacked images."""
    x = x.detach()
    adv = x.clone()
    for _ in range(iters):
        adv = _ifgsm_step(score, x, adv, step, direction, eps)
    return adv


def _ifgsm_step(score: Score, x: torch.Tensor, adv: torch.Tensor, step: float, direction: int,
                eps: float | None) -> torch.Tensor:
    """One I-FGSM step from ``adv``, projected onto the ℓ∞ ball of radius ``eps`` around ``x`` (None:
    no ball, a step known to stay inside it) and onto [0, 1]."""
    adv = adv.detach().requires_grad_(True)
    grad, = torch.autograd.grad(score(adv).sum(), adv)
    with torch.no_grad():
        # A feature-map channel with no spread has a NaN log-std gradient; it gives no direction.
        adv = adv + direction * step * torch.nan_to_num(grad, nan=0.0).sign()
        if eps is not None:
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps)
        return adv.clamp(0.0, 1.0)


def ifgsm_radii(scorer: "Scorer", x: torch.Tensor, radii: Sequence[float], step: float = 1 / 255,
                iters: int = 10, direction: int = 1, draws: int = 1, seed: int = 1) -> dict[float, torch.Tensor]:
    """``ifgsm`` on ``scorer.expected(draws, seed)`` at every radius, sharing the iterations the
    runs have in common: after k steps of ``step`` no pixel has moved more than k·step, so up to
    its k_ε = ⌊ε / step⌋-th iterate the run at radius ε never meets its ball and is the same as
    the run at any larger radius. One trunk runs (unprojected) to the largest k_ε below ``iters``;
    each radius goes on from its own iterate of the trunk with a copy of the trunk's noise
    generator (a smoothed scorer's EOT draws), so it draws what a run of its own would draw. The
    MSU setting (radii 1, 2, 4, 8 /255, step 1/255, 10 iterations) takes 33 gradient steps instead
    of 40. Returns {radius: attacked images}: ``ifgsm`` at each radius, up to the float rounding
    of the ball's bound (tested)."""
    x = x.detach()
    generator = None if scorer.space == "none" else torch.Generator(device="cpu").manual_seed(seed)

    def advance(adv: torch.Tensor, g: torch.Generator | None, eps: float | None, steps: int) -> torch.Tensor:
        score = scorer.expected(draws, generator=g)
        for _ in range(steps):
            adv = _ifgsm_step(score, x, adv, step, direction, eps)
        return adv

    out: dict[float, torch.Tensor] = {}
    trunk, done = x.clone(), 0
    for eps in sorted(set(radii)):
        shared = min(iters, math.floor(eps / step + 1e-9))
        trunk, done = advance(trunk, generator, None, shared - done), shared
        branch = None
        if generator is not None:
            branch = torch.Generator(device="cpu")
            branch.set_state(generator.get_state())
        out[eps] = advance(trunk, branch, eps, iters - shared)
    return {eps: out[eps] for eps in radii}


def median_interval_indices(n: int, radius: float, sigma: float, conf: float = 0.999) -> tuple[int, int]:
    """0-based indices (lower, upper) into the sorted ``n`` noisy scores that bound the smoothed
    median under any ℓ2 perturbation of at most ``radius`` (Chiang et al., NeurIPS 2020, median
    smoothing; as in DMS-IQA): p_u = Φ(ε/σ), p_l = Φ(−ε/σ); q_u is the smallest rank ≥ ⌈p_u n⌉
    with BinomCDF(q_u − 1; n, p_u) > conf, q_l the largest rank ≤ ⌊p_l n⌋ with
    1 − BinomCDF(q_l − 1; n, p_l) > conf (ranks 1..n). ValueError when n is too small for ``conf``."""
    p_u, p_l = stats.norm.cdf(radius / sigma), stats.norm.cdf(-radius / sigma)
    q_u = next((q for q in range(math.ceil(p_u * n), n + 1) if stats.binom.cdf(q - 1, n, p_u) > conf), None)
    q_l = next((q for q in range(math.floor(p_l * n), 0, -1) if 1 - stats.binom.cdf(q - 1, n, p_l) > conf), None)
    if q_u is None or q_l is None:
        raise ValueError(f"{n} samples cannot certify radius {radius} at sigma {sigma} with confidence {conf}")
    return q_l - 1, q_u - 1


def local_lipschitz(to_features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int = 10,
                    h: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Per image, the largest singular value of the feature Jacobian ∂φ/∂x at ``x`` by power
    iteration: a LOCAL estimate of ‖Δφ‖ / ‖Δx‖ near each image, not a global bound. J·v is a
    central difference of step ``h`` (forward-mode and double-backward autograd give NaN where a
    feature map channel has no spread: the log-std taps); Jᵀ·u is reverse-mode autograd, with
    those channels' NaN read as 0 (they do not move under a small perturbation)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (-1, *[1] * (x.dim() - 1))

    def unit(t: torch.Tensor) -> torch.Tensor:
        return t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)

    v = unit(torch.randn(x.shape, generator=g).to(x.device))
    sigma = torch.zeros(len(x))
    for _ in range(iters):
        with torch.no_grad():
            jv = (to_features(x + h * v) - to_features(x - h * v)) / (2 * h)
        sigma = jv.flatten(1).norm(dim=1).cpu()
        probe = x.detach().clone().requires_grad_(True)
        jtjv, = torch.autograd.grad(to_features(probe), probe, grad_outputs=jv)
        v = unit(torch.nan_to_num(jtjv, nan=0.0, posinf=0.0, neginf=0.0))
    return sigma.numpy()


# ----------------------------------------------------------------------------------------------
# One quality model as attacks, certificates and the detector see it


SPACES = ("none", "input", "feature")


@dataclass
class Scorer:
    """A quality model as deployed: the plain (or NT) ensemble, or its median-smoothed version.

    ``space``: ``"none"`` scores ``x`` itself; ``"input"`` takes the median over ``n`` draws of
    ``clamp(x + N(0, sigma^2))`` (through ``denoiser`` first when given: DMS-IQA); ``"feature"``
    takes the median over ``n`` draws of the heads on ``phi(x) + sigma * scale * N(0, 1)``, with
    ``scale`` the heads' mean per-feature training std, so ``sigma`` is in feature std units and one
    backbone pass serves all draws. Noise comes from ``torch.Generator(seed)`` per call, so the same
    input batch gives the same score. ``draw`` is one noisy, differentiable score (what an
    expectation-over-transformation attack follows); ``scores`` is the deployed, median score."""

    name: str
    quality: QualityModel
    classifier: Classifier
    space: str = "none"
    sigma: float = 0.0
    n: int = 1
    denoiser: torch.nn.Module | None = None
    seed: int = 0
    to_features: Callable[[torch.Tensor], torch.Tensor] = field(init=False, repr=False)
    scale: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.space != "none" and (self.sigma <= 0 or self.n < 1):
            raise ValueError("a smoothed scorer needs sigma > 0 and n >= 1")
        self.quality.classifier(self.classifier)  # the one backbone-compatibility check
        self.to_features = feature_fn(self.quality, self.classifier)
        self.scale = torch.stack([h.sd for h in self.quality.heads]).mean(0).detach()

    def draw(self, x: torch.Tensor, generator: torch.Generator, phi: torch.Tensor | None = None) -> torch.Tensor:
        """One (noisy) score per image, differentiable in ``x``; ``phi``: ``x``'s features when the
        caller already ran the backbone (not used in input space, where the noisy image is scored)."""
        if self.space == "input":
            noisy = (x + torch.randn(x.shape, generator=generator).to(x.device) * self.sigma).clamp(0.0, 1.0)
            if self.denoiser is not None:
                noisy = self.denoiser(noisy).clamp(0.0, 1.0)
            return self.quality.score_tensor(self.to_features(noisy))
        phi = self.to_features(x) if phi is None else phi
        if self.space == "feature":
            noise = torch.randn(phi.shape, generator=generator).to(phi.device)
            phi = phi + noise * (self.sigma * self.scale.to(phi.device))
        return self.quality.score_tensor(phi)

    @torch.no_grad()
    def samples(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """(n, N) noisy scores (one backbone pass in total in feature space, ``n`` in input space)."""
        n = self.n if n is None else n
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        if self.space == "none":
            return self.draw(x, g)[None]
        phi = None if self.space == "input" else self.to_features(x)
        return torch.stack([self.draw(x, g, phi) for _ in range(n)])

    @torch.no_grad()
    def scores(self, x: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """(N,) deployed scores: the plain score, or the median of ``n`` noisy scores (the lower of
        the two middle ones when ``n`` is even: an order statistic, as the certificate assumes)."""
        batch_size = batch_size or BATCH
        out = [self.samples(x[i:i + batch_size]).median(0).values for i in range(0, len(x), batch_size)]
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

    def passes_per_image(self) -> dict[str, int]:
        """Passes per image of ``scores``: through the classifier's backbone (unsmoothed, the very
        pass that classifies: shared), through the model's own copy of its early layers (NT: on top
        of the classifier's pass), through the heads and through the denoiser."""
        early = self.n if self.space == "input" else 1
        own = self.quality.has_own_layers
        return {"backbone_passes": 0 if own else early, "own_layer_passes": early if own else 0,
                "head_passes": 1 if self.space == "none" else self.n,
                "denoiser_passes": self.n if self.space == "input" and self.denoiser is not None else 0}

    def expected(self, draws: int, seed: int = 1, generator: torch.Generator | None = None) -> Score:
        """A differentiable score for attacks on this scorer: the plain score, or the mean of
        ``draws`` noisy scores (expectation over transformation, fresh noise at every call, from
        ``generator``, else from a new one seeded ``seed``)."""
        if self.space == "none":
            return lambda x: self.draw(x, None)
        g = torch.Generator(device="cpu").manual_seed(seed) if generator is None else generator
        return lambda x: torch.stack([self.draw(x, g) for _ in range(draws)]).mean(0)

    def certify(self, x: torch.Tensor, radii: tuple[float, ...], n: int, conf: float = 0.999,
                lipschitz: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Median and certified [low, high] per ℓ2 input radius (on [0, 1] pixels), from ``n`` draws.

        Input space: the DMS-IQA certificate. Feature space: the interval at feature radius
        ``L_i * r`` per image, with ``lipschitz`` the local estimate ``L_i`` of ‖Δ(phi/scale)‖ / ‖Δx‖
        (``local_lipschitz``): a LOCAL certificate, not a global one. Where ``n`` draws cannot
        certify a radius, the interval is the whole score range [0, 1] and ``certified_r`` is False."""
        if self.space == "none":
            raise ValueError("only a smoothed scorer has a certificate")
        if self.space == "feature" and lipschitz is None:
            raise ValueError("a feature-space certificate needs the local Lipschitz estimate of each image")
        ordered = self.samples(x, n).sort(0).values.cpu().numpy()
        out: dict[str, np.ndarray] = {"median": ordered[(n - 1) // 2]}  # torch's median: the same order statistic
        for r in radii:
            feature_r = (np.full(ordered.shape[1], r) if self.space == "input"
                         else np.asarray(lipschitz, float) * r)
            low, high, ok = np.zeros(ordered.shape[1]), np.ones(ordered.shape[1]), np.zeros(ordered.shape[1], bool)
            for i, ri in enumerate(feature_r):
                try:
                    lo, hi = median_interval_indices(n, float(ri), self.sigma, conf)
                except ValueError:
                    continue
                low[i], high[i], ok[i] = ordered[lo, i], ordered[hi, i], True
            out[f"low_{r:g}"], out[f"high_{r:g}"], out[f"certified_{r:g}"] = low, high, ok
        return out

    def scaled_features(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """x -> phi(x) / scale: the space the feature noise is isotropic in (for ``local_lipschitz``)."""
        return lambda x: self.to_features(x) / self.scale.to(x.device)


# ----------------------------------------------------------------------------------------------
# Attacks on a scorer


def random_sign(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """``x`` plus uniform random ±eps per pixel, clamped to [0, 1]: the attack-free reference."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x) * eps
    return (x + noise).clamp(0.0, 1.0)


def pgd_l2(scorer: Scorer, x: torch.Tensor, radius: float, steps: int = 10, draws: int = 4,
           direction: int = 1, seed: int = 1) -> torch.Tensor:
    """ℓ2 PGD of at most ``radius`` per image (whole image, [0, 1] pixels) that raises
    (``direction=+1``) or lowers ``scorer.expected(draws)``: normalised gradient steps of radius / 4,
    projected onto the ℓ2 ball and [0, 1]. What the certificate of an input-smoothed scorer bounds."""
    score = scorer.expected(draws, seed)
    view = (-1, *[1] * (x.dim() - 1))
    x = x.detach()
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(score(adv).sum(), adv)
        with torch.no_grad():
            grad = torch.nan_to_num(grad, nan=0.0)
            adv = adv + direction * radius / 4 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            delta = adv - x
            delta = delta * torch.clamp(radius / delta.flatten(1).norm(dim=1).clamp_min(1e-12), max=1.0).view(view)
            adv = (x + delta).clamp(0.0, 1.0)
    return adv.detach()


SCORE_ATTACKS = ("random_sign", "ifgsm_up", "ifgsm_down")


def attack_scores(scorer: Scorer, x: torch.Tensor, eps_255: tuple[float, ...], step_255: float = 1.0,
                  iters: int = 10, draws: int = 1, seed: int = 0, progress: bool = False) -> list[dict]:
    """Per attack and ε (0–255 units): deployed scores before (``clean``) and after (``attacked``).

    Attacks: ``ifgsm_up`` / ``ifgsm_down`` (I-FGSM raising / lowering the score, on ``scorer.expected
    (draws)``: exact for a plain scorer, expectation over ``draws`` noisy copies per step for a
    smoothed one, its noise seeded ``seed + 1`` plus the index of the first image of each ``BATCH``)
    and ``random_sign`` (the same ℓ∞ size, no gradient)."""
    from tqdm.auto import tqdm

    clean = scorer.scores(x)
    attacked: dict[tuple[str, float], np.ndarray] = {}
    for attack in tqdm(SCORE_ATTACKS, desc=f"attacks on {scorer.name}", disable=not progress, leave=False):
        if attack == "random_sign":
            images = {e: random_sign(x, e / 255, seed) for e in eps_255}
        else:  # every radius in one go (the runs share their first iterations), BATCH images at a time
            parts = [ifgsm_radii(scorer, x[i:i + BATCH], [e / 255 for e in eps_255], step_255 / 255, iters,
                                 1 if attack == "ifgsm_up" else -1, draws, seed + 1 + i)
                     for i in range(0, len(x), BATCH)]
            images = {e: torch.cat([part[e / 255] for part in parts]) for e in eps_255}
        attacked.update({(attack, e): scorer.scores(adv) for e, adv in images.items()})
    return [{"attack": attack, "eps_255": float(e), "clean": clean, "attacked": attacked[attack, e]}
            for e in eps_255 for attack in SCORE_ATTACKS]
