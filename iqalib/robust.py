"""Attacking and certifying the quality half: a differentiable quality score, I-FGSM score attacks,
the robustness score of the MSU metrics-robustness benchmark, and median smoothing with its
certified interval, in input space (DMS-IQA, without its denoiser) and in feature space (the
FS-IQA idea: noise on the features the heads read, one backbone pass), and a local Lipschitz
estimate of the features.

Everything takes images as float tensors in [0, 1], (N, 3, H, W). Knows nothing of params or
notebooks. Gradient-norm training (NT) and the adaptive attack on the whole detector are not here
yet (see the README's honest notes).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy import stats

from iqalib.classifiers import Classifier

__all__ = ["score_fn", "feature_fn", "ifgsm", "robustness_score", "median_interval_indices",
           "median_smoothing", "feature_median_smoothing", "local_lipschitz"]

Score = Callable[[torch.Tensor], torch.Tensor]


def feature_fn(quality_model, classifier: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [0, 1] (N, 3, H, W) -> the (N, D) features the quality heads read, differentiably:
    the classifier's view as a bilinear, antialiased resize to S×S (its PIL view, up to interpolation
    rounding), 0–255 pixels, normalisation, ONE backbone pass (``Classifier.forward_with_stats``)."""
    s = classifier.input_size
    kind = quality_model.features

    def features(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        pooled, statistics = classifier.forward_with_stats(classifier.normalize(x * 255.0))
        return statistics if kind == "multilevel" else pooled

    return features


def score_fn(quality_model, classifier: Classifier) -> Score:
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
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(score(adv).sum(), adv)
        with torch.no_grad():
            # A feature-map channel with no spread has a NaN log-std gradient; it gives no direction.
            adv = adv + direction * step * torch.nan_to_num(grad, nan=0.0).sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0.0, 1.0)
    return adv.detach()


def robustness_score(clean: np.ndarray, attacked: np.ndarray) -> float:
    """The MSU metrics-robustness benchmark's R (Antsiferova et al., arXiv 2310.06958) on scores in
    [0, 1]: mean of log10(max(1 − s, s) / (|s − s′| + 1e-6)); higher = more robust."""
    s, t = np.asarray(clean, float), np.asarray(attacked, float)
    return float(np.mean(np.log10(np.maximum(1.0 - s, s) / (np.abs(s - t) + 1e-6))))


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


def _smoothed(samples: torch.Tensor, radii: list[float], sigma: float, conf: float) -> dict[str, np.ndarray]:
    """(n, N) noisy scores -> median and, per radius, the certified lower and upper bounds."""
    ordered = samples.sort(0).values.cpu().numpy()
    n = ordered.shape[0]
    out = {"median": np.median(ordered, 0)}
    for r in radii:
        lo, hi = median_interval_indices(n, r, sigma, conf)
        out[f"low_{r:g}"], out[f"high_{r:g}"] = ordered[lo], ordered[hi]
    return out


@torch.no_grad()
def median_smoothing(score: Score, x: torch.Tensor, sigma: float = 0.12, n: int = 100,
                     radii: tuple[float, ...] = (0.1, 0.25), conf: float = 0.999, batch: int = 50,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Median-smoothed score of each image (input space): the median of ``score(clamp(x + N(0, σ²)))``
    over ``n`` draws (σ on [0, 1] pixels), and per ℓ2 ``radius`` (same units, over the whole image)
    its certified interval [``low_r``, ``high_r``]. Noise from ``torch.Generator(seed)``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    samples = []
    for _ in range(n):
        noise = torch.randn(x.shape, generator=g).to(x.device) * sigma
        samples.append(score((x + noise).clamp(0.0, 1.0)))
    return _smoothed(torch.stack(samples), list(radii), sigma, conf)


@torch.no_grad()
def feature_median_smoothing(quality_model, features: torch.Tensor, sigma: float, n: int = 100,
                             radii: tuple[float, ...] = (0.1, 0.25), conf: float = 0.999,
                             seed: int = 0) -> dict[str, np.ndarray]:
    """Median smoothing in feature space: the heads score ``features + N(0, σ²)`` ``n`` times (one
    backbone pass, ``n`` head passes). The interval for feature radius r holds for input
    perturbations up to r / L where ‖Δφ‖ ≤ L‖Δx‖; L is only a local estimate (see
    ``local_lipschitz``), so this is not a global certificate in input space."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    samples = [quality_model.score_tensor(features + torch.randn(features.shape, generator=g).to(features.device) * sigma)
               for _ in range(n)]
    return _smoothed(torch.stack(samples), list(radii), sigma, conf)


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
