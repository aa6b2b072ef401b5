"""Adaptive attacks on the whole fit-for-task detector: one perturbation that changes the
classifier's top-1 AND keeps the detector's decision at "fit", by PGD through the classifier, the
quality model (any ``robust.Scorer``) and the SVM's decision function — selective and orthogonal
PGD (Bryniarski et al., ICLR 2022) and ``strong``, the two combined — and the oblivious attack
(the classifier alone) they are compared with.

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

__all__ = ["svm_decision", "detector_inputs", "pgd", "strong", "curve", "judge"]


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
    is scored, and for a quality model with its own feature layers, which reads them."""
    pooled, stats = classifier.forward_with_stats(classifier.normalize(x * 255.0))
    own = scorer.quality.has_own_layers  # NT: its heads read its own layers, one more pass through them
    phi = None if scorer.space == "input" or own else (stats if scorer.quality.features == "multilevel" else pooled)
    n = 1 if scorer.space == "none" else draws
    return classifier.head(pooled), torch.stack([scorer.draw(x, generator, phi) for _ in range(n)]).mean(0)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logit[label] − the largest other logit (< 0: the top-1 has changed)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], float("-inf")).max(1).values


def _orthogonal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, ``a`` less its component along ``b`` (flattened): a − (⟨a, b⟩ / ⟨b, b⟩) b."""
    fa, fb = a.flatten(1), b.flatten(1)
    coef = (fa * fb).sum(1) / (fb * fb).sum(1).clamp_min(1e-20)
    return (fa - coef[:, None] * fb).view_as(a)


MODES = ("selective", "orthogonal")


def pgd(classifier: Classifier, x: torch.Tensor, labels: torch.Tensor, eps: float, scorer: Scorer | None = None,
        decision: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 10,
        step: float | None = None, margin: float = 0.0, draws: int = 1, seed: int = 0,
        mode: str = "selective") -> torch.Tensor:
    """ℓ∞ PGD of radius ``eps`` (images in [0, 1], classifier view) from ``x``.

    Oblivious (``decision`` None): lower the classifier's margin logit[label] − max other logit.
    Adaptive, two modes of Bryniarski et al. (ICLR 2022, v-wangg/OrthogonalPGD), per image and
    step: ``selective`` lowers that margin while it is above −``margin``, and once it is below,
    lowers the detector's decision while it is above −``margin`` (one backward pass per step);
    ``orthogonal`` takes both gradients (two backward passes) and steps on the margin's gradient
    less its component along the decision's while the top-1 holds, then on the decision's less
    its component along the margin's, so one goal's step does not undo the other. A smoothed
    scorer is followed through the mean of ``draws`` fresh noise draws per step (expectation over
    transformation), from a generator salted away from the scorer's own seed, so the attack never
    sees the very noise the deployed median is taken over. Step ``step`` (default 2.5 eps / steps,
    Madry et al.), sign of the gradient. Returned per image: the last iterate that met both goals
    under its draws, else the last iterate."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    step = 2.5 * eps / steps if step is None else step
    g = torch.Generator(device="cpu").manual_seed(seed + 7919)
    x = x.detach()
    adv, kept = x.clone(), x.clone()
    met = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        adv.requires_grad_(True)
        if decision is None:
            gap = _margin(classifier.logits_from_pixels(adv * 255.0), labels)
            grad, = torch.autograd.grad(gap.sum(), adv)
            done = gap < 0
        else:
            logits, quality = _forward(classifier, scorer, adv, g, draws)
            d = decision(detector_inputs(logits, quality))
            gap = _margin(logits, labels)
            fooled = gap < -margin
            done = (gap < 0) & (d < 0)
            if mode == "selective":
                loss = torch.where(fooled, d, gap) * ((~fooled) | (d > -margin))
                grad, = torch.autograd.grad(loss.sum(), adv)
            else:
                g_gap, = torch.autograd.grad(gap.sum(), adv, retain_graph=True)
                g_d, = torch.autograd.grad(d.sum(), adv)
                g_gap, g_d = torch.nan_to_num(g_gap, nan=0.0), torch.nan_to_num(g_d, nan=0.0)
                view = (-1, *[1] * (x.dim() - 1))
                grad = torch.where(fooled.view(view), _orthogonal(g_d, g_gap), _orthogonal(g_gap, g_d))
                grad = grad * ((~fooled) | (d > -margin)).view(view)
        with torch.no_grad():
            kept[done] = adv.detach()[done]
            met |= done
            adv = adv - step * torch.nan_to_num(grad, nan=0.0).sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0.0, 1.0)
    kept[~met] = adv.detach()[~met]
    return kept


def _through(judged: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, whether the attack got through: ``judge`` says fooled and not flagged."""
    return judged["fooled"] & ~judged["flagged"]


def strong(classifier: Classifier, scorer: Scorer, detector: FitForTaskDetector, x: torch.Tensor,
           labels: torch.Tensor, eps: float, steps: int = 10, draws: int = 1,
           seed: int = 0) -> dict[str, tuple[torch.Tensor, dict[str, np.ndarray]]]:
    """The strongest adaptive attack here: selective PGD, then, on each image the deployed system
    still stops (not fooled, or flagged: ``judge``), orthogonal PGD from the clean image, kept where
    it succeeds. Per image it succeeds whenever selective PGD does, so it is at least as strong.
    Returns ``{"selective": (images, judged), "strong": (images, judged)}``, each with the deployed
    system's ``judge`` of those images (the same judgement when orthogonal PGD replaced nothing:
    the same images; a smoothed scorer's median costs ``n`` passes an image, so it is not repeated)."""
    decision = svm_decision(detector)
    selective = pgd(classifier, x, labels, eps, scorer, decision, steps=steps, draws=draws, seed=seed,
                    mode="selective")
    judged = judge(classifier, scorer, detector, selective, labels)
    adv, judged_strong = selective.clone(), judged
    failed = torch.from_numpy(~_through(judged)).to(x.device)
    if failed.any():
        retry = pgd(classifier, x[failed], labels[failed], eps, scorer, decision, steps=steps, draws=draws,
                    seed=seed + 1, mode="orthogonal")
        again = judge(classifier, scorer, detector, retry, labels[failed])
        better = torch.from_numpy(_through(again)).to(x.device)
        if better.any():
            adv[failed.nonzero().squeeze(1)[better]] = retry[better]
            # Judged whole, as the selective images were: a smoothed score's noise follows an
            # image's place in its batch.
            judged_strong = judge(classifier, scorer, detector, adv, labels)
    return {"selective": (selective, judged), "strong": (adv, judged_strong)}


def curve(classifier: Classifier, scorer: Scorer, detector: FitForTaskDetector, x: torch.Tensor,
          labels: torch.Tensor, radii: list[float], steps: int = 10, draws: int = 1,
          seed: int = 0) -> dict[float, dict[str, tuple[torch.Tensor, dict[str, np.ndarray]]]]:
    """``strong`` at every radius in ``radii``, smallest first, as a robustness curve: an image an
    attack got through (fooled and judged fit) at a smaller radius is through at every larger one,
    since its perturbation lies in each larger ball, so it keeps that image and is not attacked
    again (why a minimum-norm evaluation's curve is monotone). Each attack carries its own
    successes: selective PGD runs again on an image only ``strong`` has got through. The images of
    each radius are judged whole, each in its own place, as ``strong`` judges (a smoothed score's
    noise follows an image's place in its batch); where that judgement passes selective's image
    and not strong's, strong takes selective's, so per image strong succeeds wherever selective
    does, at every radius. Returns ``{radius: {"selective": (images, judged), "strong": (images,
    judged)}}``: ``judge``'s arrays, and ``carried``, True where the image is a smaller radius's."""
    if not len(x):
        raise ValueError("curve needs at least one image")
    attacks = ("selective", "strong")
    through = {k: np.zeros(len(x), bool) for k in attacks}
    adv = {k: x.detach().clone() for k in attacks}
    judged: dict[str, dict[str, np.ndarray]] = {}
    out: dict[float, dict[str, tuple[torch.Tensor, dict[str, np.ndarray]]]] = {}
    for radius in sorted(set(radii)):
        todo = ~through["selective"]  # strong has got through every image selective has
        fresh_here = {k: todo & ~through[k] for k in attacks}  # a success carried from a smaller radius stays
        if todo.any():
            pick = torch.from_numpy(todo).to(x.device)
            fresh = strong(classifier, scorer, detector, x[pick], labels[pick], radius, steps, draws, seed)
            for k in attacks:
                new = torch.from_numpy(fresh_here[k]).to(x.device)
                adv[k][new] = fresh[k][0][new[pick]]
                again = fresh[k][1] if todo.all() else judge(classifier, scorer, detector, adv[k], labels)
                if k not in judged:
                    judged[k] = {f: np.empty((len(x), *v.shape[1:]), v.dtype) for f, v in again.items()}
                for f, v in again.items():
                    judged[k][f][fresh_here[k]] = v[fresh_here[k]]  # ``again`` covers every image
            won = {k: _through(judged[k]) for k in attacks}
            lost = won["selective"] & ~won["strong"]  # judged in another place than strong judged it
            if lost.any():
                swap = torch.from_numpy(lost).to(x.device)
                adv["strong"][swap] = adv["selective"][swap]
                for f in judged["strong"]:
                    judged["strong"][f][lost] = judged["selective"][f][lost]
        for k in attacks:
            through[k] |= _through(judged[k])
        out[radius] = {k: (adv[k].clone(), {**{f: v.copy() for f, v in judged[k].items()}, "carried": ~fresh_here[k]})
                       for k in attacks}
    return out


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
