"""An adaptive attack on the whole fit-for-task detector: one perturbation that changes the
classifier's top-1 AND keeps the detector's decision at "fit", by PGD through the classifier, the
quality model (any ``robust.Scorer``) and the SVM's decision function; and the oblivious attack
(the classifier alone) it is compared with.

The detector's fitted ``Pipeline(StandardScaler, LinearSVC or SVC)`` is rewritten as a torch
function from its own arrays (weights or support vectors and dual coefficients, intercept, scaler,
operating-point threshold): exactly scikit-learn's ``decision_function`` less the threshold
(test), but differentiable. Knows nothing of params or notebooks.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.svm import LinearSVC

from iqalib.classifiers import Classifier
from iqalib.detector import FitForTaskDetector
from iqalib.robust import Scorer

__all__ = ["svm_decision", "detector_inputs", "pgd", "judge"]


def svm_decision(detector: FitForTaskDetector) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, 6) [top1..top5, quality] -> (N,) decision values minus the detector's operating-point
    threshold (> 0: not fit, as ``predict`` says), differentiable; the fitted pipeline of
    ``FitForTaskDetector`` (rbf or linear kernel)."""
    scaler, svc = detector.pipeline_.named_steps["scale"], detector.pipeline_.named_steps["svc"]
    mean = torch.tensor(scaler.mean_, dtype=torch.float64)
    scale = torch.tensor(scaler.scale_, dtype=torch.float64)
    intercept = float(svc.intercept_[0]) - float(getattr(detector, "threshold_", 0.0))
    if isinstance(svc, LinearSVC):  # primal weights: decision = z . w + b
        kernel, gamma = "linear", 0.0
        vectors = torch.eye(len(mean), dtype=torch.float64)
        coef = torch.tensor(svc.coef_[0], dtype=torch.float64)
    else:
        kernel, gamma = svc.kernel, float(getattr(svc, "_gamma", 0.0))
        vectors = torch.tensor(svc.support_vectors_, dtype=torch.float64)
        coef = torch.tensor(svc.dual_coef_[0], dtype=torch.float64)
    if kernel not in ("rbf", "linear"):
        raise ValueError(f"svm_decision handles rbf and linear kernels, the detector has {kernel!r}")

    def decision(features: torch.Tensor) -> torch.Tensor:
        z = (features.double() - mean.to(features.device)) / scale.to(features.device)
        sv = vectors.to(features.device)
        if kernel == "linear":
            k = z @ sv.T
        else:
            k = torch.exp(-gamma * ((z[:, None, :] - sv[None]) ** 2).sum(-1))
        return (k @ coef.to(features.device) + intercept).float()

    return decision


def detector_inputs(logits: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(N, 6): the five largest class probabilities, largest first, and the quality score."""
    return torch.cat([logits.softmax(-1).topk(5, dim=-1).values, quality[:, None]], 1)


def _forward(classifier: Classifier, scorer: Scorer, x: torch.Tensor, generator: torch.Generator,
             draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the mean of ``draws`` (noisy, for a smoothed scorer) quality draws from ONE backbone
    pass (the quality heads read that pass's features), except in input space, where each noisy image
    is scored."""
    pooled, stats = classifier.forward_with_stats(classifier.normalize(x * 255.0))
    phi = None if scorer.space == "input" else (stats if scorer.quality.features == "multilevel" else pooled)
    n = 1 if scorer.space == "none" else draws
    return classifier.head(pooled), torch.stack([scorer.draw(x, generator, phi) for _ in range(n)]).mean(0)


def pgd(classifier: Classifier, x: torch.Tensor, labels: torch.Tensor, eps: float, scorer: Scorer | None = None,
        decision: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 10,
        step: float | None = None, margin: float = 0.0, draws: int = 1, seed: int = 0) -> torch.Tensor:
    """ℓ∞ PGD of radius ``eps`` (images in [0, 1], classifier view) from ``x``.

    Oblivious (``decision`` None): lower the classifier's margin logit[label] − max other logit.
    Adaptive: per image and step, lower that margin while it is above −``margin``, and once it is
    below, lower the detector's decision while it is above −``margin`` (a switching loss: the two
    terms live on different scales, and a weighted sum lets the larger one drown the other; one
    backward pass per step either way). A smoothed scorer is followed through the mean of
    ``draws`` fresh noise draws per step (expectation over transformation), from a generator
    salted away from the scorer's own seed, so the attack never sees the very noise the deployed
    median is taken over. Step ``step`` (default 2.5 eps / steps, Madry et al.). Returned per
    image: the last iterate that met both goals under its draws, else the last iterate."""
    step = 2.5 * eps / steps if step is None else step
    g = torch.Generator(device="cpu").manual_seed(seed + 7919)
    x = x.detach()
    adv, kept = x.clone(), x.clone()
    met = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        adv.requires_grad_(True)
        if decision is None:
            logits, d = classifier.logits_from_pixels(adv * 255.0), None
        else:
            logits, quality = _forward(classifier, scorer, adv, g, draws)
            d = decision(detector_inputs(logits, quality))
        true = logits.gather(1, labels[:, None]).squeeze(1)
        gap = true - logits.scatter(1, labels[:, None], float("-inf")).max(1).values
        if d is None:
            loss, done = gap, gap < 0
        else:
            fooled = gap < -margin
            loss = torch.where(fooled, d, gap) * ((~fooled) | (d > -margin))
            done = (gap < 0) & (d < 0)
        grad, = torch.autograd.grad(loss.sum(), adv)
        with torch.no_grad():
            kept[done] = adv.detach()[done]
            met |= done
            adv = adv - step * torch.nan_to_num(grad, nan=0.0).sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0.0, 1.0)
    kept[~met] = adv.detach()[~met]
    return kept


@torch.no_grad()
def judge(classifier: Classifier, scorer: Scorer, detector: FitForTaskDetector, x: torch.Tensor,
          labels: torch.Tensor) -> dict[str, np.ndarray]:
    """The deployed system on ``x``: ``fooled`` (top-1 ≠ label), ``flagged`` (the detector says not
    fit at its operating point, with the scorer's deployed — median, for a smoothed one — quality),
    ``quality``, ``decision`` (minus the threshold: > 0 is flagged)."""
    logits = classifier.logits_from_pixels(x * 255.0)
    quality = torch.from_numpy(scorer.scores(x)).to(logits.device)
    inputs = detector_inputs(logits, quality).double().cpu().numpy()
    decision = detector.decision_function(inputs) - getattr(detector, "threshold_", 0.0)
    return {"fooled": (logits.argmax(1) != labels).cpu().numpy(), "flagged": decision > 0,
            "quality": quality.cpu().numpy(), "decision": decision}
