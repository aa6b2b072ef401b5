"""Adversarial and fooling-image generators (DeepFool, universal perturbations, Fool_GD, Fool_EV),
applying a saved perturbation, and the on-disk cache of generated image groups.

Knows nothing of notebooks, params files or image quality; every generator takes a ``Classifier``.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .classifiers import IMAGENET_MEAN, Classifier

# Bump when a change here alters what a generator produces, so ``cached_group`` keys that
# include it stop matching stale images.
ATTACKS_VERSION = "1"

__all__ = [
    "ATTACKS_VERSION",
    "deepfool",
    "UniversalPerturbation",
    "quantize_perturbation",
    "apply_perturbation",
    "fooling_rate",
    "save_uap",
    "load_uap",
    "GradientAscentFooling",
    "EvolutionaryFooling",
    "cached_group",
]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace`` (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _json_default(o):
    """numpy scalars/arrays in meta or keys -> plain JSON values."""
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _to_uint8_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(N, 3, S, S) 0–255 float tensor -> 8-bit RGB PIL images (rounded half-to-even, clipped)."""
    arr = pixels.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


@torch.no_grad()
def _logits_uint8(classifier: Classifier, arrays: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """Logits (N, C) for (N, S, S, 3) uint8 arrays that are already the classifier's view."""
    out = []
    for start in range(0, len(arrays), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(arrays[start : start + batch_size]))
        x = x.to(classifier.device).permute(0, 3, 1, 2).float()
        out.append(classifier.logits_from_pixels(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(classifier.wnids))


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
        clean = _logits_uint8(classifier, base, batch_size).argmax(1)
    adv = _logits_uint8(classifier, _add_perturbation(base, v), batch_size).argmax(1)
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
        clean = _logits_uint8(clf, base).argmax(1)
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
            "weights_id": self.classifier.weights_id,
            "input_size": self.classifier.input_size,
            "code_version": ATTACKS_VERSION,
        }


_UAP_REQUIRED = ("xi", "fooling_rate", "n_eval", "classifier", "input_size")


def save_uap(folder: str | Path, v: np.ndarray, meta: dict) -> None:
    """Write ``uap.npy`` (v, float32, 0–255 units), ``uap.json`` (``meta`` + shape/ℓ∞ facts) and
    ``uap.png`` (v mapped from [−ξ, ξ] to [0, 255], for looking at) into ``folder``, atomically.

    ``meta`` must hold at least xi, fooling_rate, n_eval, classifier, input_size.
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
    _atomic_write_bytes(folder / "uap.npy", buf.getvalue())
    _atomic_write_bytes(folder / "uap.png", _png_bytes(Image.fromarray(vis, "RGB")))
    text = json.dumps(full_meta, indent=2, sort_keys=True, default=_json_default)
    _atomic_write_bytes(folder / "uap.json", text.encode())


def load_uap(folder: str | Path) -> tuple[np.ndarray, dict]:
    """Read what ``save_uap`` wrote: (v float32 (S, S, 3), meta dict)."""
    folder = Path(folder)
    v = np.load(folder / "uap.npy", allow_pickle=False)
    meta = json.loads((folder / "uap.json").read_text())
    return v.astype(np.float32, copy=False), meta


# --------------------------------------------------------------------------------------------
# Fool_GD: gradient-ascent fooling images
# --------------------------------------------------------------------------------------------


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class GradientAscentFooling:
    """Fool_GD (Nguyen et al., CVPR 2015, §3): images the classifier takes for a class, made by
    gradient ascent on that class's logit from the mean image, as in Simonyan et al. (2014).

    Ascends the target's score S_c *before* softmax, as Simonyan et al. (ascending the softmax
    can succeed by pushing the other classes down instead). The steps are Adam's (lr in 0–255
    pixel units per step), which make the step size independent of the network's gradient
    scale; with plain or mean-normalised gradient steps the same 20-step budget reached a
    mean target confidence of 0.87 on EfficientNet-Lite0, with Adam 0.99. After each step the
    L2 regulariser of Simonyan et al. (max S_c − λ‖x − m‖²) is applied as Yosinski et al.'s
    (2015) decay operator x ← m + (1 − l2_decay)(x − m) around the mean image m; every
    ``blur_every`` steps an optional Gaussian blur of ``blur_sigma`` pixels (Yosinski et al.'s
    regulariser: smoother, less high-frequency images, slightly lower confidence; 0 = off);
    pixels are clipped to [0, 255].

    Image i starts from the ImageNet mean colour plus N(0, ``noise_std``²) noise (0–255 units)
    seeded by ``np.random.default_rng([seed, i])``; each image's optimisation is independent of
    the others in its batch.
    """

    def __init__(
        self,
        classifier: Classifier,
        steps: int = 40,
        lr: float = 2.0,
        l2_decay: float = 0.002,
        blur_every: int = 0,
        blur_sigma: float = 0.5,
        noise_std: float = 2.0,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = True,
    ):
        self.classifier = classifier
        self.steps = int(steps)
        self.lr = float(lr)
        self.l2_decay = float(l2_decay)
        self.blur_every = int(blur_every)
        self.blur_sigma = float(blur_sigma)
        self.noise_std = float(noise_std)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress

    def params(self) -> dict:
        return {
            "generator": "fool_gd",
            **{
                k: getattr(self, k)
                for k in ("steps", "lr", "l2_decay", "blur_every", "blur_sigma", "noise_std", "seed")
            },
            "classifier": self.classifier.name,
            "weights_id": self.classifier.weights_id,
            "code_version": ATTACKS_VERSION,
        }

    def start_images(self, n: int, offset: int = 0) -> torch.Tensor:
        """(n, 3, S, S) start points (mean colour + seeded noise), 0–255, on the classifier device."""
        s = self.classifier.input_size
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1) * 255
        rngs = [np.random.default_rng([self.seed, offset + i]) for i in range(n)]
        noise = [rng.standard_normal((3, s, s), np.float32) for rng in rngs]
        x = mean + self.noise_std * np.stack(noise) if n else np.zeros((0, 3, s, s), np.float32)
        return torch.from_numpy(np.clip(x, 0, 255)).to(self.classifier.device)

    def __call__(self, targets: Sequence[int]) -> tuple[list[Image.Image], np.ndarray]:
        """Images (8-bit RGB, S×S) for ``targets`` and the target-class softmax confidence
        measured by re-classifying those 8-bit images."""
        clf = self.classifier
        targets = [int(t) for t in targets]
        mean = torch.tensor(IMAGENET_MEAN, device=clf.device).view(1, 3, 1, 1) * 255
        images: list[Image.Image] = []
        bar = tqdm(total=len(targets) * self.steps, desc="Fool_GD", disable=not self.progress, leave=False)
        for start in range(0, len(targets), self.batch_size):
            t = torch.tensor(targets[start : start + self.batch_size], device=clf.device)
            x = self.start_images(len(t), start).requires_grad_(True)
            rows = torch.arange(len(t), device=clf.device)
            opt = torch.optim.Adam([x], lr=self.lr)
            for step in range(self.steps):
                opt.zero_grad(set_to_none=True)
                (-clf.logits_from_pixels(x)[rows, t].sum()).backward()
                opt.step()
                with torch.no_grad():
                    x.copy_(mean + (1 - self.l2_decay) * (x - mean))
                    if self.blur_every > 0 and self.blur_sigma > 0 and (step + 1) % self.blur_every == 0:
                        x.copy_(_gaussian_blur(x, self.blur_sigma))
                    x.clamp_(0, 255)
                bar.update(len(t))
            images.extend(_to_uint8_images(x))
        bar.close()
        conf = clf.predict_proba(images)[np.arange(len(targets)), targets] if targets else np.zeros(0, np.float32)
        return images, conf.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Fool_EV: MAP-Elites with CPPN or direct encoding
# --------------------------------------------------------------------------------------------

_ACTIVATIONS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    np.sin,
    lambda z: np.exp(-(z**2)),  # gaussian
    lambda z: 1.0 / (1.0 + np.exp(-z)),  # sigmoid
    np.tanh,
)


class _CPPN:
    """A compact CPPN: inputs (x, y, r, bias) -> hidden nodes in topological order -> RGB.

    ``w[j]`` holds node j's incoming weights from the inputs and all earlier hidden nodes;
    ``mask[j]`` which of them exist. Output rows come after the hidden rows and may read every
    hidden node, so appending a hidden node keeps the order topological.
    """

    N_IN = 4

    def __init__(self, w: np.ndarray, mask: np.ndarray, act: np.ndarray):
        self.w, self.mask, self.act = w, mask, act  # w/mask: (H + 3, N_IN + H); act: (H,)

    @property
    def n_hidden(self) -> int:
        return len(self.act)

    @classmethod
    def random(cls, rng: np.random.Generator, n_hidden: int) -> "_CPPN":
        g = cls(np.zeros((3, cls.N_IN)), np.ones((3, cls.N_IN), bool), np.zeros(0, np.int64))
        g.w = rng.normal(0, 1.0, g.w.shape)
        for _ in range(n_hidden):
            g = g.add_node(rng)
        return g

    def copy(self) -> "_CPPN":
        return _CPPN(self.w.copy(), self.mask.copy(), self.act.copy())

    def add_node(self, rng: np.random.Generator) -> "_CPPN":
        h = self.n_hidden
        n_src = self.N_IN + h
        w = np.zeros((h + 4, n_src + 1))
        mask = np.zeros((h + 4, n_src + 1), bool)
        w[:h, :n_src], mask[:h, :n_src] = self.w[:h], self.mask[:h]  # old hidden rows
        w[h + 1 :, :n_src], mask[h + 1 :, :n_src] = self.w[h:], self.mask[h:]  # old output rows
        # New node h reads a random non-empty subset of the inputs and earlier hidden nodes, and
        # feeds every output with a fresh weight (NEAT-style complexification, Stanley 2007).
        reads = rng.random(n_src) < 0.5
        reads[rng.integers(n_src)] = True
        w[h, :n_src], mask[h, :n_src] = rng.normal(0, 1.0, n_src) * reads, reads
        w[h + 1 :, n_src], mask[h + 1 :, n_src] = rng.normal(0, 1.0, 3), True
        act = np.append(self.act, rng.integers(len(_ACTIVATIONS)))
        return _CPPN(w, mask, act)

    def mutate(self, rng: np.random.Generator, rate: float) -> "_CPPN":
        g = self.copy()
        hit = (rng.random(g.w.shape) < rate) & g.mask
        g.w = g.w + hit * rng.normal(0, 0.5, g.w.shape)
        if rng.random() < 0.1:  # enable a missing connection
            free = np.argwhere(~g.mask & _allowed(g.n_hidden, g.N_IN))
            if len(free):
                j, i = free[rng.integers(len(free))]
                g.mask[j, i], g.w[j, i] = True, rng.normal(0, 1.0)
        if g.n_hidden and rng.random() < 0.05:  # change an activation function
            g.act[rng.integers(g.n_hidden)] = rng.integers(len(_ACTIVATIONS))
        if rng.random() < 0.1:
            g = g.add_node(rng)
        return g

    def render(self, size: int) -> np.ndarray:
        """(size, size, 3) uint8."""
        t = np.linspace(-1.0, 1.0, size)
        yy, xx = np.meshgrid(t, t, indexing="ij")
        vals = np.stack([xx.ravel(), yy.ravel(), np.sqrt(xx**2 + yy**2).ravel() * 1.4, np.ones(size * size)], 1)
        w = self.w * self.mask
        h = self.n_hidden
        nodes = np.empty((size * size, self.N_IN + h))
        nodes[:, : self.N_IN] = vals
        for j in range(h):
            nodes[:, self.N_IN + j] = _ACTIVATIONS[self.act[j]](nodes[:, : self.N_IN + j] @ w[j, : self.N_IN + j])
        out = 1.0 / (1.0 + np.exp(-(nodes @ w[h:].T)))
        return np.rint(out * 255).astype(np.uint8).reshape(size, size, 3)


def _allowed(n_hidden: int, n_in: int) -> np.ndarray:
    """Connections allowed by the topological order (hidden j reads inputs and hidden < j)."""
    a = np.ones((n_hidden + 3, n_in + n_hidden), bool)
    for j in range(n_hidden):
        a[j, n_in + j :] = False
    return a


class EvolutionaryFooling:
    """Fool_EV (Nguyen et al., CVPR 2015, §2): MAP-Elites over the target classes — one elite
    per class, its fitness the classifier's softmax probability of that class — with a CPPN
    (``encoding="cppn"``) or direct (``"direct"``) image encoding.

    Generation 0 is ``population`` random genomes; every later generation draws ``population``
    parents uniformly from the filled cells, mutates them, classifies the offspring in one batch,
    and each offspring replaces the elite of every target class it beats (as Nguyen et al.).
    Budget: ``population × generations`` classifier evaluations.

    CPPN: small networks of (x, y, r, bias) with sin/gaussian/sigmoid/tanh hidden nodes and
    sigmoid RGB outputs, started with ``init_nodes`` random hidden nodes; mutation perturbs each
    weight with probability ``mutation_rate`` (default 0.5; σ = 0.5), occasionally adds a connection (10 %),
    changes an activation (5 %) or adds a node (10 %). Rendered at ``resolution`` (default
    S/2: CPPN images are smooth, and rendering costs ~4× less) and resized bilinearly to S×S.
    Direct: a ``resolution``² RGB grid (default 32), pixels uniform at start, each value mutated
    with probability ``mutation_rate`` (default 0.1) by N(0, 25²) (0–255 units), upsampled bilinearly to S×S.

    What is evaluated is the final 8-bit S×S image, and the returned confidences come from
    re-classifying the returned images. ``np.random.default_rng(seed)`` drives everything.
    """

    def __init__(
        self,
        classifier: Classifier,
        population: int = 32,
        generations: int = 40,
        mutation_rate: float | None = None,
        encoding: str = "cppn",
        resolution: int | None = None,
        init_nodes: int = 3,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = True,
    ):
        if encoding not in ("cppn", "direct"):
            raise ValueError(f"encoding must be 'cppn' or 'direct', not {encoding!r}")
        self.classifier = classifier
        self.population = int(population)
        self.generations = int(generations)
        # Per-encoding defaults: on EfficientNet-Lite0 with 960 evaluations, CPPN weight-mutation
        # probability 0.5 gave 4 classes > 0.5 confidence against 1 with 0.2.
        self.mutation_rate = float(mutation_rate) if mutation_rate is not None else (0.5 if encoding == "cppn" else 0.1)
        self.encoding = encoding
        default_resolution = max(8, classifier.input_size // 2) if encoding == "cppn" else 32
        self.resolution = int(resolution) if resolution else default_resolution
        self.init_nodes = int(init_nodes)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress

    def params(self) -> dict:
        return {
            "generator": "fool_ev",
            **{
                k: getattr(self, k)
                for k in ("population", "generations", "mutation_rate", "encoding", "resolution", "init_nodes", "seed")
            },
            "classifier": self.classifier.name,
            "weights_id": self.classifier.weights_id,
            "code_version": ATTACKS_VERSION,
        }

    # genome ops ------------------------------------------------------------------------------
    def _random(self, rng: np.random.Generator):
        if self.encoding == "cppn":
            return _CPPN.random(rng, self.init_nodes)
        return rng.integers(0, 256, (self.resolution, self.resolution, 3)).astype(np.uint8)

    def _mutate(self, genome, rng: np.random.Generator):
        if self.encoding == "cppn":
            return genome.mutate(rng, self.mutation_rate)
        hit = rng.random(genome.shape) < self.mutation_rate
        noise = rng.normal(0, 25.0, genome.shape)
        return np.clip(np.rint(genome + hit * noise), 0, 255).astype(np.uint8)

    def _phenotype(self, genome) -> np.ndarray:
        """(S, S, 3) uint8: the exact image the classifier is shown."""
        s = self.classifier.input_size
        low = genome.render(self.resolution) if self.encoding == "cppn" else genome
        if low.shape[0] == s:
            return low
        return np.asarray(Image.fromarray(low, "RGB").resize((s, s), Image.BILINEAR))

    def _probs(self, arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _logits_uint8(self.classifier, arrays, self.batch_size).softmax(1).numpy()

    # ------------------------------------------------------------------------------------------
    def __call__(self, targets: Sequence[int] | None = None) -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
        """Run MAP-Elites; returns (images, class index, confidence) with one elite per target
        class (all classes when ``targets`` is None), confidence = softmax of that class on the
        returned 8-bit S×S image."""
        if self.generations <= 0 or self.population <= 0:
            raise ValueError("population and generations must be ≥ 1")
        n_classes = len(self.classifier.wnids)
        classes = np.arange(n_classes) if targets is None else np.asarray([int(t) for t in targets], np.int64)
        rng = np.random.default_rng(self.seed)
        fitness = np.full(len(classes), -1.0)
        elites: list = [None] * len(classes)
        # An offspring can become the elite of many classes at once; ``owner[c]`` names it by
        # (generation, index) so the final re-classification runs once per distinct image.
        owner: list[tuple[int, int] | None] = [None] * len(classes)
        phenotypes: dict[tuple[int, int], np.ndarray] = {}
        for gen in tqdm(range(self.generations), desc="Fool_EV", disable=not self.progress, leave=False):
            if gen == 0:
                genomes = [self._random(rng) for _ in range(self.population)]
            else:
                filled = np.flatnonzero(fitness >= 0)
                parents = rng.choice(filled, self.population)
                genomes = [self._mutate(elites[p], rng) for p in parents]
            arrays = np.stack([self._phenotype(g) for g in genomes])
            fit = self._probs(arrays)[:, classes]  # (P, T)
            best = fit.argmax(0)
            better = fit[best, np.arange(len(classes))] > fitness
            for c in np.flatnonzero(better):
                fitness[c] = fit[best[c], c]
                elites[c], owner[c] = genomes[best[c]], (gen, int(best[c]))
                phenotypes[owner[c]] = arrays[best[c]]
            alive = set(owner)
            phenotypes = {k: a for k, a in phenotypes.items() if k in alive}
        keys = sorted(phenotypes)
        unique = [Image.fromarray(phenotypes[k], "RGB") for k in keys]
        proba = self.classifier.predict_proba(unique, self.batch_size)
        row = {k: i for i, k in enumerate(keys)}
        rows = np.array([row[o] for o in owner])
        images = [unique[r] for r in rows]
        conf = proba[rows, classes]
        return images, classes.copy(), conf.astype(np.float32)


# --------------------------------------------------------------------------------------------
# cached groups of generated images
# --------------------------------------------------------------------------------------------

_NUMBERED_PNG = re.compile(r"^\d{4,}\.png$")


def _canonical(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=_json_default))


def cached_group(
    folder: str | Path,
    key: dict,
    generate: Callable[[], tuple[list[Image.Image], pd.DataFrame]],
) -> tuple[list[Path], pd.DataFrame]:
    """Generate a group of images once and reuse it while ``key`` is unchanged.

    ``key`` is a JSON-able dict of everything that affects the result (generator name, budget,
    seed, classifier weights id, ``ATTACKS_VERSION``, ...). If ``folder/key.json`` equals it and
    every file listed in ``folder/meta.csv`` exists, those are returned and ``generate`` is not
    called. Otherwise ``generate()`` -> (images, per-image DataFrame) is called, images are saved
    as lossless PNG ``NNNN.png`` (so re-classifying a file gives the generator's result), then
    ``meta.csv`` (a ``file`` column + the DataFrame's columns), then ``key.json`` last — each
    atomically — so an interrupted run is never mistaken for a finished one.

    Returns (image paths, the DataFrame as read back from ``meta.csv``) in both cases.
    """
    folder = Path(folder)
    key = _canonical(key)
    key_path, meta_path = folder / "key.json", folder / "meta.csv"
    if key_path.exists() and meta_path.exists():
        try:
            same = json.loads(key_path.read_text()) == key
        except json.JSONDecodeError:
            same = False
        if same:
            df = pd.read_csv(meta_path)
            paths = [folder / f for f in df["file"]]
            if all(p.exists() for p in paths):
                return paths, df
    images, df = generate()
    if len(images) != len(df):
        raise ValueError(f"generate() returned {len(images)} images but {len(df)} meta rows")
    if "file" in df.columns:
        raise ValueError("generate()'s DataFrame must not have a 'file' column (cached_group adds it)")
    folder.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)  # invalid until the new group is complete
    names = [f"{i:04d}.png" for i in range(len(images))]
    for name, im in zip(names, images):
        _atomic_write_bytes(folder / name, _png_bytes(im))
    keep = set(names)
    for stale in folder.iterdir():
        if _NUMBERED_PNG.match(stale.name) and stale.name not in keep:
            stale.unlink()
    df = df.reset_index(drop=True).copy()
    df.insert(0, "file", names)
    _atomic_write_bytes(meta_path, df.to_csv(index=False).encode())
    _atomic_write_bytes(key_path, json.dumps(key, indent=2, sort_keys=True).encode())
    df = pd.read_csv(meta_path)
    return [folder / f for f in df["file"]], df
