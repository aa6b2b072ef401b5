"""Adversarial perturbations of real images: DeepFool, the universal adversarial perturbation (the
paper's Algorithm 1, ``UniversalPerturbation``; and a data-efficient stochastic-gradient variant,
``StochasticUniversalPerturbation``), applying and quantising a saved map, its fooling rate, and
``save_uap``/``load_uap``.

Unrecognisable fooling images live in ``fooling``; caching generated images in ``cache``. Knows
nothing of notebooks, params files or image quality; every attack takes a ``Classifier``.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from iqalib.cache import atomic_write_bytes, json_default, png_bytes
from iqalib.classifiers import Classifier

# Bump when a change here alters what an attack produces, so cache keys that include it stop
# matching stale maps and images.
ATTACKS_VERSION = "2"

__all__ = [
    "ATTACKS_VERSION",
    "deepfool",
    "UniversalPerturbation",
    "StochasticUniversalPerturbation",
    "quantize_perturbation",
    "apply_perturbation",
    "fooling_rate",
    "save_uap",
    "load_uap",
]


# --------------------------------------------------------------------------------------------
# DeepFool
# --------------------------------------------------------------------------------------------


def deepfool(
    classifier: Classifier,
    pixels: torch.Tensor,
    num_candidates: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016, Algorithm 2), batched.

    ``pixels``: (N, 3, S, S) images in the classifier's view, 0–255 units. ``labels``: the
    labels to escape (default: the classifier's top-1 on ``pixels``). Only the top
    ``num_candidates`` classes of the clean logits (the label first) are linearised, as the
    authors' reference code does for ImageNet.

    Returns ``(r_total, n_iter)``: the perturbation (N, 3, S, S) in 0–255 units such that
    ``clamp(pixels + r_total, 0, 255)`` is (normally) no longer classified as the label —
    ``r_total`` already includes the ``(1 + overshoot)`` factor and the clipping to the valid
    pixel range — and the number of linearisation steps per image (0 when the image already
    was not of the label; ``max_iter`` when it did not flip in time).
    """
    device = classifier.device
    x0 = pixels.detach().to(device).float()
    n = len(x0)
    with torch.no_grad():
        logits0 = classifier.logits_from_pixels(x0)
    n_classes = logits0.shape[1]
    k = max(2, min(num_candidates, n_classes))
    if labels is None:
        labels = logits0.argmax(1)
    labels = labels.to(device).long()
    # Candidate set: the label, then the k-1 highest-scoring other classes (Algorithm 2 ranges
    # over all classes; restricting to the top ones is the paper's ImageNet speed-up).
    masked = logits0.clone()
    masked[torch.arange(n, device=device), labels] = -math.inf
    others = masked.topk(k - 1, dim=1).indices
    cand = torch.cat([labels[:, None], others], dim=1)  # (N, k)

    r_tot = torch.zeros_like(x0)
    n_iter = torch.zeros(n, dtype=torch.long, device=device)
    active = logits0.argmax(1) == labels
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        x = (x0[idx] + (1 + overshoot) * r_tot[idx]).clamp(0, 255).requires_grad_(True)
        logits = classifier.logits_from_pixels(x)
        still = logits.argmax(1) == labels[idx]
        active[idx[~still]] = False
        if not still.any():
            break
        # Keep only images still of their label; the others are done (Algorithm 2's while test).
        idx, c = idx[still], cand[idx[still]]
        rows = torch.arange(len(x), device=device)[still]
        f = logits[rows[:, None], c]  # (m, k)
        grads = []
        for j in range(k):
            (g,) = torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < k - 1)
            grads.append(g[rows])
        w = torch.stack(grads, 1)  # (m, k, 3, S, S)
        w_prime = (w[:, 1:] - w[:, :1]).flatten(2)  # (m, k-1, D)
        f_prime = (f[:, 1:] - f[:, :1]).detach()  # (m, k-1)
        w_norm = w_prime.norm(dim=2) + 1e-8
        # Distance to each linearised boundary; step to the closest (Algorithm 2, l̂ and r_i).
        best = (f_prime.abs() / w_norm).argmin(1)
        m = torch.arange(len(idx), device=device)
        wb, fb, nb = w_prime[m, best], f_prime[m, best], w_norm[m, best]
        r_i = ((fb.abs() + 1e-4) / nb**2)[:, None] * wb
        r_tot[idx] += r_i.view(-1, *x0.shape[1:])
        n_iter[idx] += 1
    r_final = (x0 + (1 + overshoot) * r_tot).clamp(0, 255) - x0
    return r_final.detach(), n_iter


# --------------------------------------------------------------------------------------------
# Universal adversarial perturbation
# --------------------------------------------------------------------------------------------


def quantize_perturbation(v: np.ndarray | torch.Tensor, xi: float | None = None):
    """Round a perturbation to whole 0–255 steps (half to even), optionally clipped to ±⌊ξ⌋.

    A quantised map is what an 8-bit image can carry: adding it to an 8-bit image and clipping
    to [0, 255] changes each pixel by at most ``max|v|`` (≤ ⌊ξ⌋), exactly.
    """
    if isinstance(v, torch.Tensor):
        q = v.round()
        return q.clamp(-math.floor(xi), math.floor(xi)) if xi is not None else q
    q = np.rint(np.asarray(v, dtype=np.float32))
    return np.clip(q, -math.floor(xi), math.floor(xi)) if xi is not None else q


def _base_array(image: Image.Image, size: tuple[int, int], view: Callable | None) -> np.ndarray:
    """The image as an 8-bit RGB array of ``size`` (H, W): ``view`` if given, else bilinear."""
    h, w = size
    base = view(image) if view is not None else image.convert("RGB")
    base = base.convert("RGB")
    if base.size != (w, h):
        base = base.resize((w, h), Image.BILINEAR)
    return np.asarray(base, dtype=np.uint8)


def _add_perturbation(base: np.ndarray, v: np.ndarray) -> np.ndarray:
    """uint8 base (…, H, W, 3) + rint(v), clipped to [0, 255], as uint8."""
    return np.clip(base.astype(np.int16) + np.rint(v).astype(np.int16), 0, 255).astype(np.uint8)


def apply_perturbation(image: Image.Image, v: np.ndarray, view: Callable | None = None) -> Image.Image:
    """Add a saved perturbation ``v`` ((H, W, 3), 0–255 units) to an image; 8-bit RGB H×W out.

    Size rule: the image is first brought to the map's size — through ``view`` (pass the
    classifier's own view, e.g. ``clf.view``) when given, else a plain bilinear resize to H×W
    (grey, RGBA, … are converted to RGB) — then ``v`` *rounded to whole steps* is added and the
    sum clipped to [0, 255]. Hence every pixel moves by at most ``max|rint(v)|``; for maps from
    ``UniversalPerturbation.fit`` (already integers within ±⌊ξ⌋) that is ≤ ξ exactly. The
    classifier's view of an S×S image is the identity, so the returned image is exactly what
    the network sees when it is saved losslessly and classified again.
    """
    v = np.asarray(v)
    base = _base_array(image, v.shape[:2], view)
    return Image.fromarray(_add_perturbation(base, v), "RGB")


def _fooling_rate_arrays(
    classifier: Classifier, base: np.ndarray, v: np.ndarray, batch_size: int, clean: torch.Tensor | None = None
) -> float:
    """Fooling rate of ``v`` on uint8 view arrays ``base`` (N, S, S, 3); ``clean``: their top-1s if known."""
    if len(base) == 0:
        return float("nan")
    if clean is None:
        clean = classifier.view_logits(base, batch_size).argmax(1)
    adv = classifier.view_logits(_add_perturbation(base, v), batch_size).argmax(1)
    return float(np.mean((clean != adv).numpy()))


def fooling_rate(classifier: Classifier, images: Sequence[Image.Image], v: np.ndarray, batch_size: int = 32) -> float:
    """Share of images whose top-1 differs between ``clf.view(image)`` and
    ``apply_perturbation(image, v, clf.view)`` — the very 8-bit images, so the rate reported
    for a saved map is what anyone re-applying it reproduces."""
    v = np.asarray(v)
    base = np.stack([_base_array(im, v.shape[:2], classifier.view) for im in images]) if len(images) else np.zeros((0,))
    return _fooling_rate_arrays(classifier, base, v, batch_size)


class UniversalPerturbation:
    """Universal adversarial perturbation (Moosavi-Dezfooli et al., CVPR 2017, Algorithm 1)
    with DeepFool as the inner step and an ℓ∞ budget ``xi`` in 0–255 pixel units.

    This is the standard *untargeted* UAP: each not-yet-fooled image pushes v towards its own
    nearest decision boundary. (Feng & Cai write that each sample got a random target among the
    other 999 classes; that targeted variant is not implemented.)

    Implementation choices, all so that the returned map is judged as it will be used:
    the "is x_i already fooled" test of Algorithm 1 and the DeepFool starting point use the
    8-bit image ``clip(x_i + rint(v))``; v itself stays continuous between updates (so small
    DeepFool steps accumulate) and is projected onto ‖v‖∞ ≤ ξ after each update; a DeepFool
    step too small to survive rounding is doubled (up to ``max_doublings`` times) until the
    8-bit x_i + v is fooled (see ``_update``; 0 gives plain Algorithm 1); the pass's
    fooling rate — for the stopping rule ``≥ 1 − delta`` and ``history_`` — is that of the
    quantised map on the pool, computed exactly as ``fooling_rate`` does.

    Args:
        classifier: the model to fool (its view defines the S×S geometry of v).
        xi: ℓ∞ budget, 0–255 units (the paper: 10).
        delta: stop once the pool fooling rate ≥ 1 − delta (the paper: 0.2).
        max_passes: maximal passes over the pool.
        overshoot, num_candidates, max_iter: DeepFool parameters.
        max_doublings: how often a rounded-away DeepFool step may be doubled (0: plain Algorithm 1).
        seed: seeds the per-pass visiting order (``np.random.default_rng(seed)``).
        progress: show tqdm bars.
    """

    def __init__(
        self,
        classifier: Classifier,
        xi: float = 10.0,
        delta: float = 0.2,
        max_passes: int = 10,
        overshoot: float = 0.02,
        num_candidates: int = 10,
        max_iter: int = 50,
        max_doublings: int = 8,
        seed: int = 0,
        progress: bool = True,
    ):
        if xi < 1:
            raise ValueError(f"xi={xi} is below one 8-bit step; use xi ≥ 1 (0–255 units).")
        self.classifier = classifier
        self.xi = float(xi)
        self.delta = float(delta)
        self.max_passes = int(max_passes)
        self.overshoot = float(overshoot)
        self.num_candidates = int(num_candidates)
        self.max_iter = int(max_iter)
        self.max_doublings = int(max_doublings)
        self.seed = int(seed)
        self.progress = progress
        self.history_: list[float] = []
        self.v_: np.ndarray | None = None

    def fit(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Compute v on the pool ``images``; returns (S, S, 3) float32, integer-valued, ‖v‖∞ ≤ ⌊ξ⌋."""
        if len(images) == 0:
            raise ValueError("UniversalPerturbation.fit needs at least one image")
        clf = self.classifier
        s = clf.input_size
        base = np.stack([_base_array(im, (s, s), clf.view) for im in images])  # uint8, kept on CPU
        clean = clf.view_logits(base).argmax(1)
        rng = np.random.default_rng(self.seed)
        v = torch.zeros(3, s, s, device=clf.device)
        self.history_ = []
        for p in range(self.max_passes):
            order = rng.permutation(len(base))
            bar = tqdm(order, desc=f"UAP pass {p + 1}/{self.max_passes}", disable=not self.progress, leave=False)
            for i in bar:
                x = torch.from_numpy(base[i]).to(clf.device).permute(2, 0, 1).float()
                x_adv = (x + quantize_perturbation(v, self.xi)).clamp(0, 255)[None]
                # DeepFool returns n_iter = 0 when x_i + v is already fooled (Algorithm 1's test).
                r, n_it = deepfool(
                    clf, x_adv, self.num_candidates, self.overshoot, self.max_iter, labels=clean[i : i + 1]
                )
                n_it = int(n_it.item())
                if n_it == 0:
                    continue
                flipped = n_it < self.max_iter  # DeepFool stops early only once the label flipped
                if not flipped:
                    with torch.no_grad():
                        flipped = clf.logits_from_pixels((x_adv + r).clamp(0, 255)).argmax(1).item() != clean[i].item()
                if flipped:  # the reference code also skips images DeepFool did not flip
                    v = self._update(v, r[0], x, int(clean[i]))
            vq = quantize_perturbation(v, self.xi).permute(1, 2, 0).cpu().numpy().astype(np.float32)
            rate = _fooling_rate_arrays(clf, base, vq, 32, clean)
            self.history_.append(rate)
            if self.progress:
                tqdm.write(f"UAP pass {p + 1}: fooling rate on pool {rate:.3f}")
            if rate >= 1 - self.delta:
                break
        self.v_ = quantize_perturbation(v, self.xi).permute(1, 2, 0).cpu().numpy().astype(np.float32)
        return self.v_

    @torch.no_grad()
    def _update(self, v: torch.Tensor, r: torch.Tensor, x: torch.Tensor, label: int) -> torch.Tensor:
        """v ← P_{∞,ξ}(v + s·r) with the smallest s in 1, 2, 4, … for which the 8-bit image
        clip(x + rint(v_new)) leaves ``label``; plain s = 1 when none does before s·‖r‖∞ ≥ 2ξ.

        DeepFool's minimal steps on ImageNet models are mostly below half an 8-bit step
        (EfficientNet-Lite0: ‖r‖∞ ≈ 0.3–3.5, none of 8 images still fooled after rounding), so
        Algorithm 1's update would be rounded away while v is small; scaling restores its intent
        (x_i + v fooled) for the quantised map at the cost of one forward pass per doubling.
        """
        step = r
        for _ in range(self.max_doublings + 1):
            v_new = (v + step).clamp(-self.xi, self.xi)  # ℓ∞ projection P_{∞,ξ}
            x_adv = (x + quantize_perturbation(v_new, self.xi)).clamp(0, 255)[None]
            if self.classifier.logits_from_pixels(x_adv).argmax(1).item() != label:
                return v_new
            if step.abs().max() >= 2 * self.xi:
                break
            step = step * 2
        return (v + r).clamp(-self.xi, self.xi)

    def params(self) -> dict:
        """The settings that determine v (for ``save_uap`` meta and cache keys)."""
        return {
            "algorithm": "uap-deepfool-untargeted",
            "xi": self.xi,
            "norm": "linf",
            "delta": self.delta,
            "max_passes": self.max_passes,
            "overshoot": self.overshoot,
            "num_candidates": self.num_candidates,
            "max_iter": self.max_iter,
            "max_doublings": self.max_doublings,
            "seed": self.seed,
            "classifier": self.classifier.name,
            "weights_id": self.classifier.passes_id,
            "input_size": self.classifier.input_size,
            "code_version": ATTACKS_VERSION,
        }


class StochasticUniversalPerturbation:
    """Data-efficient universal perturbation: stochastic gradient ascent on the classifier's loss
    over random crops and flips of a small pool (the "sgd-uap" of Shafahi et al., "Universal
    adversarial training", AAAI 2020, Alg. 2), with an ℓ∞ budget ``xi`` in 0–255 pixel units.

    Why beside Algorithm 1: DeepFool's per-image minimal steps generalise poorly from a pool of
    tens to hundreds of images (at the embedded default, Algorithm 1 on 22 pool images fooled 0 of
    47 held-out photos, on 66 only 5 %, below random ±10 sign noise). Maximising the loss on
    *augmented* views of each pool photo asks v to fool many images at once, which transfers.

    Each step draws ``batch_size`` pool photos, a random square crop of each (side a share in
    [``min_scale``, 1] of the short side, uniform position, mirrored with probability 1/2)
    resized to the network's S×S, labels it with the classifier's top-1 on the whole photo, and moves
    v by Adam (``lr`` in 0–255 units) on the clipped cross-entropy
    ``min(CE(x + v, y), clip_loss)`` (clipping keeps already-fooled views from dominating, as in
    the paper's Alg. 2), then projects v onto ‖v‖∞ ≤ ξ. The returned map is rounded to whole
    8-bit steps, so ``apply_perturbation`` reproduces exactly what was judged.

    Args:
        classifier: the model to fool (its view defines the S×S geometry of v).
        xi: ℓ∞ budget, 0–255 units (the paper: 10).
        steps: optimiser steps; batch_size: crops per step.
        lr: Adam step size, 0–255 units.
        min_scale: smallest crop side as a share of the photo's short side.
        clip_loss: per-view cross-entropy cap.
        seed: seeds crops, flips and photo draws (``np.random.default_rng(seed)``).
        progress: show a tqdm bar.
    """

    def __init__(self, classifier: Classifier, xi: float = 10.0, steps: int = 150, batch_size: int = 16,
                 lr: float = 1.0, min_scale: float = 0.5, clip_loss: float = 10.0, seed: int = 0,
                 progress: bool = True):
        if xi < 1:
            raise ValueError(f"xi={xi} is below one 8-bit step; use xi ≥ 1 (0–255 units).")
        self.classifier = classifier
        self.xi, self.steps, self.batch_size = float(xi), int(steps), int(batch_size)
        self.lr, self.min_scale, self.clip_loss = float(lr), float(min_scale), float(clip_loss)
        self.seed, self.progress = int(seed), progress
        self.history_: list[float] = []
        self.v_: np.ndarray | None = None

    def _base(self, image: Image.Image) -> Image.Image:
        """A pool photo with its short side at 2·S (crops of 0.5–1 of it then shrink to S, as a
        photo's view does; a full-size camera photo would only cost time)."""
        image = image.convert("RGB")
        short = 2 * self.classifier.input_size
        if min(image.size) > short:
            scale = short / min(image.size)
            image = image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
                                 Image.LANCZOS)
        return image

    def _crops(self, pool: list[torch.Tensor], rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """(batch, 3, S, S) 0–255 float crops of randomly drawn pool photos, as 8-bit values, and
        which photo each crop is of."""
        s, out = self.classifier.input_size, []
        drawn = rng.integers(0, len(pool), self.batch_size)
        for i in drawn:
            photo = pool[i]
            h, w = photo.shape[1:]
            side = max(8, int(round(min(h, w) * rng.uniform(self.min_scale, 1.0))))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = photo[:, top:top + side, left:left + side][None].float()
            crop = torch.nn.functional.interpolate(crop, size=(s, s), mode="bilinear", antialias=True,
                                                   align_corners=False)
            if rng.random() < 0.5:
                crop = crop.flip(-1)
            out.append(crop.round().clamp(0, 255))
        return torch.cat(out).to(self.classifier.device), drawn

    def fit(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Compute v on the pool ``images``; returns (S, S, 3) float32, integer-valued, ‖v‖∞ ≤ ⌊ξ⌋.
        ``history_`` holds, per step, the share of the batch's perturbed crops not given their photo's
        label (a training curve)."""
        if len(images) == 0:
            raise ValueError("StochasticUniversalPerturbation.fit needs at least one image")
        clf = self.classifier
        pool = [torch.from_numpy(np.asarray(self._base(im), dtype=np.uint8).copy()).permute(2, 0, 1) for im in images]
        # Each photo's label is the classifier's top-1 on its whole view, as Shafahi et al. use an
        # image's one label for all its augmentations (the pool has no true labels; one pass per
        # photo instead of one per crop).
        labels = torch.from_numpy(self.classifier.predict_proba(list(images)).argmax(1)).to(clf.device)
        rng = np.random.default_rng(self.seed)
        v = torch.zeros(1, 3, clf.input_size, clf.input_size, device=clf.device, requires_grad=True)
        optimiser = torch.optim.Adam([v], lr=self.lr)
        self.history_ = []
        for _ in tqdm(range(self.steps), desc="UAP (sgd)", disable=not self.progress, leave=False):
            x, drawn = self._crops(pool, rng)
            label = labels[torch.from_numpy(drawn).to(clf.device)]
            logits = clf.logits_from_pixels((x + v).clamp(0, 255))
            loss = torch.nn.functional.cross_entropy(logits, label, reduction="none").clamp(max=self.clip_loss)
            optimiser.zero_grad()
            (-loss.mean()).backward()
            optimiser.step()
            with torch.no_grad():
                v.clamp_(-self.xi, self.xi)
            self.history_.append(float((logits.argmax(1) != label).float().mean()))
        vq = quantize_perturbation(v.detach()[0], self.xi)
        self.v_ = vq.permute(1, 2, 0).cpu().numpy().astype(np.float32)
        return self.v_

    def params(self) -> dict:
        """The settings that determine v (for ``save_uap`` meta and cache keys)."""
        return {"algorithm": "uap-sgd-untargeted", "xi": self.xi, "norm": "linf", "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "min_scale": self.min_scale,
                "clip_loss": self.clip_loss, "seed": self.seed, "classifier": self.classifier.name,
                "weights_id": self.classifier.passes_id, "input_size": self.classifier.input_size,
                "code_version": ATTACKS_VERSION}


_UAP_REQUIRED = ("xi", "n_eval", "classifier", "input_size")


def save_uap(folder: str | Path, v: np.ndarray, meta: dict) -> None:
    """Write ``uap.npy`` (v, float32, 0–255 units), ``uap.json`` (``meta`` + shape/ℓ∞ facts) and
    ``uap.png`` (v mapped from [−ξ, ξ] to [0, 255], for looking at) into ``folder``, atomically.

    ``meta`` must hold at least xi, n_eval, classifier, input_size (the fooling rate is read from the
    features table, ``tables.fooling_rate``).
    """
    missing = [k for k in _UAP_REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"save_uap meta lacks {missing}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = np.asarray(v, dtype=np.float32)
    xi = float(meta["xi"])
    buf = io.BytesIO()
    np.save(buf, v, allow_pickle=False)
    full_meta = {**meta, "shape": list(v.shape), "linf": float(np.abs(v).max()) if v.size else 0.0}
    vis = np.rint((np.clip(v, -xi, xi) + xi) / (2 * xi) * 255).astype(np.uint8)
    atomic_write_bytes(folder / "uap.npy", buf.getvalue())
    atomic_write_bytes(folder / "uap.png", png_bytes(Image.fromarray(vis, "RGB")))
    text = json.dumps(full_meta, indent=2, sort_keys=True, default=json_default)
    atomic_write_bytes(folder / "uap.json", text.encode())


def load_uap(folder: str | Path) -> tuple[np.ndarray, dict]:
    """Read what ``save_uap`` wrote: (v float32 (S, S, 3), meta dict)."""
    folder = Path(folder)
    v = np.load(folder / "uap.npy", allow_pickle=False)
    meta = json.loads((folder / "uap.json").read_text())
    return v.astype(np.float32, copy=False), meta
