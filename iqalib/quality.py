"""No-reference image quality from a frozen ImageNet classifier: DTNIQ-f (Feng & Cai 2020,
Section III-A, Fig. 2), trained on subjective (or pseudo-) MOS in [0, 1].

Model
-----
The convolutional part of the classifier, frozen, gives a feature vector per patch; a head of two
fully connected layers of ``hidden`` = 2048 units with ReLU and an output layer of ``bins`` = 70
units with softmax gives a distribution over score bins; a patch's score is the expectation
``sum_j c_j * v_j`` with bin centres ``c_j = (j + 0.5) / bins`` in (0, 1); an image's score is the
mean over its patches; an ensemble's score is the mean over its ``n_models`` heads. Scores lie in
[0, 1], higher = better. Each head also holds the mean/std of its training features and
standardises its input with them (part of the head's state, saved with it).

Score <-> bins
--------------
Training target of a score ``s`` in [0, 1]: a discretised Gaussian over the bin centres,
``y_j ∝ exp(-(c_j - s)^2 / (2 * label_sigma^2))``, normalised to sum 1 (``label_sigma`` = 0.03 on
the [0, 1] scale, about two bins; ``label_sigma = 0`` gives one-hot on the bin containing ``s``).
Loss: cross-entropy between that target and the softmax. Back to a score: the expectation above.
Why soft labels: a one-hot target treats a neighbouring bin as wrong as a far one and makes 70
mostly-empty classes from a few hundred training scores; on the embedded set one-hot gave the
same mean SROCC with three times the spread over splits, while widths 0.015–0.08 were all alike.

Features (``features``)
-----------------------
- ``"multilevel"`` (default): per channel, the spatial mean and log(std + 1e-3) of the early
  feature maps of the SAME backbone pass that classifies the image (EfficientNet-Lite0: the stem
  and blocks 0–3, 32+16+24+40+80 channels -> 384 values; torchvision ResNets: maxpool, layer1,
  layer2 -> 1664 values), captured with forward hooks. Distortions such as blur, noise and JPEG
  live in these statistics; the final pooled embedding of an ImageNet classifier is trained to
  ignore them (on the embedded pseudo-MOS set it orders JPEG levels the wrong way round).
- ``"pooled"``: the classifier's final pooled embedding (EfficientNet-Lite0: 1280-d), i.e. the
  ``features.pooled`` part of what ``features.embed`` caches; kept for comparison.

Patches and cost
----------------
Patch 0 is the classifier's own view of the whole image (its ``view``: EfficientNet-Lite0 squeezes
any image, of any size, to 224x224 bilinear; so a 40x30 image is scored, up-sampled). Classify +
score therefore costs ONE backbone pass per image plus two heads (classifier head: 1280x1000;
quality head: D x 2048 + 2048 x 2048 + 2048 x 70, ~5 M multiply-adds, negligible next to the
backbone's ~400 M). ``patches = p`` adds p crops of ``input_size`` x ``input_size`` at native
resolution, each one more backbone pass (cost: 1 + p passes per image). Crop positions are drawn
from a generator seeded by (``seed``, SHA-1 of the decoded pixels), so the same image always gets
the same crops. An image whose shorter side is under ``input_size`` gets square crops of its short
side, each resized up (bilinear) to ``input_size``. Heads score the patch layout they were trained
on: ``fit`` and ``predict_embeddings`` take exactly 1 + ``patches`` patches per image (the cached
notebook pipeline stores the view only, so its params require ``patches: 0``).

Embedding arrays
----------------
``fit`` and ``predict_embeddings`` take (N, D) arrays (one patch per image) or (N, P, D) arrays
(P patches per image; a patch's training target is its image's score). A row with any NaN is an
image that could not be used: it is left out of training and scored NaN.

Ensembles and splits
--------------------
``fit(..., groups=None)`` trains every head on all rows (heads differ by seed).
``fit(..., groups=g)`` trains head k on the training part of content-disjoint split k
(``GroupShuffleSplit(n_models, test_size=holdout, random_state=seed)``): the paper's "ten models
trained on ten random splits". ``evaluate_splits`` does exactly this and scores head k on the
held-out content of split k, so the heads it evaluates ARE the returned, deployable ensemble.

Determinism: all randomness (initialisation, shuffling, dropout masks, crops) comes from explicit
``torch.Generator`` / ``numpy.random.Generator`` objects seeded from ``seed``; nothing global is
touched. On CPU, the same inputs, torch build and thread count give bitwise the same weights.

Hyper-parameter scales (EfficientNet-Lite0, 2 CPU cores, 440 training images):

========  ========  ======  =======  =====  ======================================
scale     n_models  epochs  patches  time   use
========  ========  ======  =======  =====  ======================================
smoke     1         3       0        ~1 s   wiring checks
default   10        30      0        ~2 min the embedded pseudo-MOS set, the tests
paper     10        30      0        ~2 min on TID2013's 3000 images (patches > 0: 1 + p passes/image)
========  ========  ======  =======  =====  ======================================
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.classifiers import Classifier, load_classifier, resolve_device
from iqalib.images import ImageSkip, as_rgb, open_image

__all__ = ["QualityModel", "evaluate_splits", "cross_dataset", "correlations", "heldout_predictions",
           "type_level_oracle", "per_distortion"]

FEATURE_KINDS = ("multilevel", "pooled")
CARD_FORMAT = "iqalib.quality/1"
# A feature with no spread in training is standardised by this floor, not by ~0: should it vary at
# prediction (another checkpoint, unusual input), it cannot blow the head's input up.
_MIN_FEATURE_STD = 1e-3

_CLASSIFIER_CACHE: dict[tuple[str, str], Classifier] = {}


# ----------------------------------------------------------------------------------------
# The head
# ----------------------------------------------------------------------------------------


class _Head(nn.Module):
    """Standardise -> FC(hidden) -> ReLU -> FC(hidden) -> ReLU -> FC(bins) -> softmax -> expectation."""

    def __init__(self, dim: int, hidden: int, bins: int):
        super().__init__()
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.register_buffer("centres", (torch.arange(bins, dtype=torch.float32) + 0.5) / bins)
        # nn.Linear initialises from the global RNG; fit() re-draws the weights from the head's own
        # generator, so the global state is saved and restored around construction.
        with torch.random.fork_rng(devices=[]):
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.out = nn.Linear(hidden, bins)

    def logits(self, x: torch.Tensor, dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        h = (x - self.mu) / self.sd
        for layer in (self.fc1, self.fc2):
            h = torch.relu(layer(h))
            if dropout > 0.0:  # explicit masks: dropout from our generator, never the global RNG
                keep = torch.rand(h.shape, generator=generator, device="cpu").to(h.device) >= dropout
                h = h * keep / (1.0 - dropout)
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1], one per row."""
        return (self.logits(x).softmax(-1) * self.centres).sum(-1).clamp(0.0, 1.0)


def _soft_labels(scores: np.ndarray, bins: int, sigma: float) -> np.ndarray:
    """(N, bins) targets: discretised Gaussian around each score (one-hot when sigma == 0)."""
    centres = (np.arange(bins) + 0.5) / bins
    if sigma <= 0:
        out = np.zeros((len(scores), bins), np.float32)
        out[np.arange(len(scores)), np.clip((scores * bins).astype(int), 0, bins - 1)] = 1.0
        return out
    d = (centres[None, :] - scores[:, None]) / sigma
    y = np.exp(-0.5 * d * d)
    return (y / y.sum(1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Feature extraction (one backbone pass, hooks for the multi-level statistics)
# ----------------------------------------------------------------------------------------


def _forward(classifier: Classifier, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One backbone pass on normalised input: (pooled embedding, quality features of ``kind``)."""
    pooled, stats = classifier.forward_with_stats(x)
    if kind == "pooled":
        return pooled, pooled
    if stats.shape[1] == 0:
        raise ValueError(
            f"features='multilevel' needs the early layers of the backbone (known for timm EfficientNet and "
            f"torchvision ResNet), which {classifier.name!r} does not expose; use features='pooled' for it.")
    return pooled, stats


def _image_seed(image: Image.Image, seed: int) -> np.random.Generator:
    digest = hashlib.sha1(f"{image.size}".encode() + image.tobytes()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def _native_crops(image: Image.Image, count: int, size: int, seed: int) -> list[Image.Image]:
    """``count`` random ``size``-square crops at native resolution. When the short side is under
    ``size``, the window is chosen in the original (side = the short side) and only the crop is
    resized up, so a very thin image never becomes a huge one."""
    w, h = image.size
    side = min(size, w, h)
    rng = _image_seed(image, seed)
    crops = []
    for _ in range(count):
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = image.crop((left, top, left + side, top + side))
        crops.append(crop if side == size else crop.resize((size, size), Image.BILINEAR))
    return crops


def _as_image(item: Any) -> Image.Image:
    """A PIL image as RGB, or a path decoded by ``images.open_image`` (raises ImageSkip)."""
    if isinstance(item, Image.Image):
        return as_rgb(item)  # same conversion as a file: EXIF, alpha on white, 16-bit scaled
    if isinstance(item, (str, Path)):
        # Quality is scored on images as given: no size floor (the view resizes anything) and grey
        # images are kept (a desaturated photo is a distortion, not a photo to exclude).
        return open_image(item, min_side=1, allow_grey=True)
    raise TypeError(f"predict takes PIL images or paths, got {type(item).__name__}")


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class QualityModel:
    """DTNIQ-f: an ensemble of ``n_models`` quality heads on a frozen classifier backbone.

    Parameters (units / ranges):
        classifier: backbone name for ``load_classifier`` (default ``"efficientnet_lite0"``) or a
            loaded ``Classifier`` (used as is, e.g. the one that also classifies).
        n_models: heads in the ensemble (paper: 10); the score is their mean.
        hidden: units of each of the two hidden layers (paper: 2048).
        bins: softmax output bins over [0, 1] (paper: 70).
        epochs: passes over the training rows (patch rows when P > 1, scaled so that every head
            takes the same number of optimiser steps as with one patch per image).
        lr: AdamW peak learning rate, cosine-annealed to 0 over training.
        weight_decay: AdamW decoupled weight decay.
        batch_size: training rows per optimiser step.
        seed: seeds head k with ``seed * 1000 + k`` and the patch crops with ``seed``.
        patches: extra native-resolution crops per image at prediction (0 = the view only).
        features: ``"multilevel"`` or ``"pooled"`` (see the module docstring).
        label_sigma: width of the Gaussian soft label on the [0, 1] scale (0 = one-hot).
        dropout: dropout rate after each hidden layer during training (0 = none).
        holdout: share of groups each head leaves out when ``fit`` gets ``groups``.
        device: ``auto`` | ``cpu`` | ``cuda`` for the heads and, when loaded here, the backbone.
    """

    def __init__(self, classifier: str | Classifier = "efficientnet_lite0", n_models: int = 10, hidden: int = 2048,
                 bins: int = 70, epochs: int = 30, lr: float = 1e-4, weight_decay: float = 1e-4,
                 batch_size: int = 64, seed: int = 0, patches: int = 0, features: str = "multilevel",
                 label_sigma: float = 0.03, dropout: float = 0.0, holdout: float = 0.2, device: str = "auto"):
        if features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
        if n_models < 1 or hidden < 1 or bins < 2 or epochs < 1 or batch_size < 1 or patches < 0:
            raise ValueError("n_models, hidden, epochs, batch_size must be >= 1, bins >= 2, patches >= 0")
        if not 0.0 <= dropout < 1.0 or not 0.0 < holdout < 1.0 or label_sigma < 0:
            raise ValueError("dropout must be in [0, 1), holdout in (0, 1), label_sigma >= 0")
        self._classifier: Classifier | None = classifier if isinstance(classifier, Classifier) else None
        self.backbone = classifier.name if isinstance(classifier, Classifier) else str(classifier)
        self.n_models, self.hidden, self.bins, self.epochs = int(n_models), int(hidden), int(bins), int(epochs)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.seed, self.patches, self.features = int(seed), int(patches), features
        self.label_sigma, self.dropout, self.holdout = float(label_sigma), float(dropout), float(holdout)
        self.device_name = device
        self.device = resolve_device(device)
        self.weights_id: str | None = self._classifier.weights_id if self._classifier else None
        self.preprocessing_id: str | None = self._classifier.preprocessing_id if self._classifier else None
        self.heads: list[_Head] = []
        self.feature_dim: int | None = None
        self.heldout_groups_: list[list[str]] | None = None
        self.last_reasons_: list[str | None] = []
        self.last_skipped_: dict[str, int] = {}
        self.card: dict | None = None

    # -- hyper-parameters -----------------------------------------------------------------

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able), as written to ``card.json``."""
        return {"classifier": self.backbone, "n_models": self.n_models, "hidden": self.hidden, "bins": self.bins,
                "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "seed": self.seed, "patches": self.patches,
                "features": self.features, "label_sigma": self.label_sigma, "dropout": self.dropout,
                "holdout": self.holdout}

    def __repr__(self) -> str:
        state = f"{len(self.heads)} heads trained" if self.heads else "untrained"
        return f"QualityModel({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())}; {state})"

    # -- backbone -------------------------------------------------------------------------

    def classifier(self, classifier: Classifier | None = None) -> Classifier:
        """The backbone to use: ``classifier`` if given (checked), else the model's own, loaded
        by name on first use. Raises ValueError if its weights or preprocessing differ from the
        ones the heads were trained on."""
        if classifier is None:
            if self._classifier is None:
                key = (self.backbone, str(self.device))
                if key not in _CLASSIFIER_CACHE:
                    _CLASSIFIER_CACHE[key] = load_classifier(self.backbone, str(self.device))
                self._classifier = _CLASSIFIER_CACHE[key]
            classifier = self._classifier
        if self.weights_id is not None and (classifier.weights_id, classifier.preprocessing_id) != (
                self.weights_id, self.preprocessing_id):
            raise ValueError(
                f"This quality model was trained on backbone {self.backbone!r} (weights {self.weights_id}, "
                f"preprocessing {self.preprocessing_id}); the classifier given is {classifier.name!r} "
                f"(weights {classifier.weights_id}, preprocessing {classifier.preprocessing_id}). "
                f"Pass the matching classifier or none (it is then loaded by name).")
        return classifier

    def _bind(self) -> Classifier:
        """Resolve the backbone's identity (weights_id, preprocessing_id) for the card."""
        c = self.classifier()
        self.weights_id, self.preprocessing_id = c.weights_id, c.preprocessing_id
        return c

    # -- training -------------------------------------------------------------------------

    def fit(self, embeddings: np.ndarray, mos: np.ndarray, groups: np.ndarray | None = None) -> "QualityModel":
        """Train the ``n_models`` heads on precomputed features and scores; returns self.

        embeddings: (N, D) or (N, P, D) float features from ``embed`` (or, for
            ``patches == 0``, from ``features.stats`` / ``features.pooled`` of ``features.embed``);
            P must be 1 + ``patches``; rows with NaN are left out.
        mos: (N,) scores in [0, 1], higher = better (NaN rows are left out).
        groups: (N,) content ids (e.g. ``ref_id``). None: every head sees all rows. Given: head k
            sees only the training part of content-disjoint split k (see the module docstring);
            the held-out groups of each head are kept in ``heldout_groups_``.
        """
        from sklearn.model_selection import GroupShuffleSplit

        x = self._as_3d(embeddings)
        y = np.asarray(mos, dtype=np.float64).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} embedding rows but {len(y)} scores")
        ok = ~np.isnan(x).any(axis=(1, 2)) & ~np.isnan(y)
        if not ((y[ok] >= 0.0) & (y[ok] <= 1.0)).all():
            raise ValueError("mos must lie in [0, 1] (higher = better); rescale the dataset's scores first")
        expected = self._probe_dim(self._bind())
        if x.shape[2] != expected:
            raise ValueError(f"embeddings have {x.shape[2]} features per patch; {self.features!r} features of "
                             f"{self.backbone!r} have {expected} (use QualityModel.embed to compute them)")
        if groups is None:
            parts = [np.flatnonzero(ok)] * self.n_models
            self.heldout_groups_ = None
        else:
            g = np.asarray(groups).astype(str).reshape(-1)
            if len(g) != len(x):
                raise ValueError(f"{len(x)} embedding rows but {len(g)} groups")
            if len(np.unique(g[ok])) < 2:
                raise ValueError("content-disjoint training needs at least two groups")
            splitter = GroupShuffleSplit(self.n_models, test_size=self.holdout, random_state=self.seed)
            idx = np.flatnonzero(ok)
            splits = list(splitter.split(idx, groups=g[idx]))
            parts = [idx[tr] for tr, _ in splits]
            self.heldout_groups_ = [sorted(set(g[idx[te]].tolist())) for _, te in splits]
        if min(len(p) for p in parts) < 2:
            raise ValueError("too few usable training rows (need at least 2 per head)")
        self.feature_dim = int(x.shape[2])
        self.heads = [self._train_head(x[p], y[p], self.seed * 1000 + k) for k, p in enumerate(parts)]
        return self

    def _train_head(self, x: np.ndarray, y: np.ndarray, seed: int) -> _Head:
        n, p, d = x.shape
        rows = torch.from_numpy(x.reshape(n * p, d).astype(np.float32))
        target = torch.from_numpy(_soft_labels(np.repeat(y, p), self.bins, self.label_sigma))
        g = torch.Generator().manual_seed(int(seed))
        head = _Head(d, self.hidden, self.bins)
        with torch.no_grad():
            head.mu.copy_(rows.mean(0))
            head.sd.copy_(rows.std(0, correction=0).clamp_min(_MIN_FEATURE_STD))
            for layer in (head.fc1, head.fc2, head.out):  # PyTorch's default init, from our generator
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=g)
        head.to(self.device).train()
        rows, target = rows.to(self.device), target.to(self.device)
        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # Same number of optimiser steps whatever the number of patches per image.
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = steps_per_epoch * self.epochs
        bs = self.batch_size * p
        step = 0
        while step < total:
            order = torch.randperm(n * p, generator=g)
            for start in range(0, n * p, bs):
                if step >= total:
                    break
                for group in opt.param_groups:
                    group["lr"] = 0.5 * self.lr * (1.0 + math.cos(math.pi * step / total))
                batch = order[start:start + bs].to(self.device)
                logp = head.logits(rows[batch], self.dropout, g).log_softmax(-1)
                loss = -(target[batch] * logp).sum(-1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        head.eval()
        for q in head.parameters():
            q.requires_grad_(False)
        return head

    # -- prediction -----------------------------------------------------------------------

    def _as_3d(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3:
            raise ValueError(f"embeddings must be (N, D) or (N, P, D), got shape {x.shape}")
        if x.shape[1] != 1 + self.patches:
            # Heads trained on one patch layout and scored on another would quietly disagree
            # with predict(images); the layout is part of the model.
            raise ValueError(f"embeddings have {x.shape[1]} patch(es) per image; this model uses 1 + patches = "
                             f"{1 + self.patches} (the view{f' + {self.patches} crops' if self.patches else ''}; "
                             "QualityModel.embed computes them)")
        return x

    def _check_dim(self, dim: int) -> None:
        want = self.feature_dim
        if want is not None and dim != want:
            raise ValueError(f"embeddings have {dim} features per patch; this model's heads take {want} "
                             f"({self.features!r} features of {self.backbone!r})")

    def member_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n_models, N) scores of each head in [0, 1] (NaN rows stay NaN)."""
        if not self.heads:
            raise RuntimeError("this QualityModel is not trained: call fit() or QualityModel.load()")
        x = self._as_3d(embeddings)
        self._check_dim(x.shape[2])
        n, p, d = x.shape
        ok = ~np.isnan(x).any(axis=(1, 2))
        out = np.full((len(self.heads), n), np.nan, dtype=np.float32)
        if ok.any():
            rows = torch.from_numpy(x[ok].reshape(-1, d)).to(self.device)
            with torch.inference_mode():
                for k, head in enumerate(self.heads):
                    out[k, ok] = head(rows).float().cpu().numpy().reshape(-1, p).mean(1)
        return out

    def predict_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) scores in [0, 1] from (N, D) or (N, P, D) features: mean over patches and heads."""
        return self.member_scores(embeddings).mean(0)

    def _extract(self, images: Sequence[Any], classifier: Classifier | None, batch_size: int,
                 want_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(quality features (N, 1 + patches, D), proba (N, 1000) or None); skipped rows NaN."""
        c = self.classifier(classifier)
        reasons: list[str | None] = [None] * len(images)
        feats: list[np.ndarray | None] = [None] * len(images)
        probas: list[np.ndarray | None] = [None] * len(images)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                idx, loaded = [], []
                for i in range(start, min(start + batch_size, len(images))):
                    try:
                        loaded.append(_as_image(images[i]))
                        idx.append(i)
                    except ImageSkip as skip:
                        reasons[i] = skip.reason
                if not loaded:
                    continue
                pooled, q0 = _forward(c, c.normalize(c.pixels(loaded)), self.features)
                parts = [q0.float().cpu().numpy()[:, None]]
                if self.patches:
                    crops = [crop for im in loaded for crop in _native_crops(im, self.patches, c.input_size, self.seed)]
                    _, qp = _forward(c, c.normalize(c.pixels(crops)), self.features)  # view = identity on S×S crops
                    parts.append(qp.float().cpu().numpy().reshape(len(loaded), self.patches, -1))
                q = np.concatenate(parts, 1)
                proba = c.head(pooled).softmax(1).float().cpu().numpy() if want_proba else None
                for j, i in enumerate(idx):
                    feats[i] = q[j]
                    if proba is not None:
                        probas[i] = proba[j]
        dim = next((f.shape[-1] for f in feats if f is not None), None)
        if dim is None:
            dim = self._probe_dim(c)
        out = np.full((len(images), 1 + self.patches, dim), np.nan, dtype=np.float32)
        for i, f in enumerate(feats):
            if f is not None:
                out[i] = f
        proba_out = None
        if want_proba:
            proba_out = np.full((len(images), 1000), np.nan, dtype=np.float32)
            for i, pr in enumerate(probas):
                if pr is not None:
                    proba_out[i] = pr
        self.last_reasons_ = reasons
        self.last_skipped_ = dict(sorted(Counter(r for r in reasons if r is not None).items()))
        return out, proba_out

    def _probe_dim(self, c: Classifier) -> int:
        with torch.inference_mode():
            x = torch.zeros(1, 3, c.input_size, c.input_size, device=c.device)
            return int(_forward(c, x, self.features)[1].shape[1])

    def embed(self, images: Sequence[Image.Image | str | Path], classifier: Classifier | None = None,
              batch_size: int = 16) -> np.ndarray:
        """Quality features of images for ``fit``: (N, D) when ``patches == 0``, else (N, 1 + patches, D).

        Rows of inputs that cannot be used are NaN; their reasons are in ``last_reasons_`` /
        ``last_skipped_``. Costs 1 + ``patches`` backbone passes per image.
        """
        x, _ = self._extract(list(images), classifier, batch_size, want_proba=False)
        return x[:, 0] if self.patches == 0 else x

    def predict(self, images: Sequence[Image.Image | str | Path], classifier: Classifier | None = None,
                batch_size: int = 16) -> np.ndarray:
        """(N,) quality scores in [0, 1] of PIL images or image paths of any size.

        ``classifier`` must be the backbone the heads were trained on (same ``weights_id`` and
        ``preprocessing_id``; ValueError otherwise); None loads it by name. A path that cannot be
        used (missing, not an image, corrupt, too large: ``images.open_image`` rules, with no
        size floor and grey images kept) scores NaN and is counted in ``last_skipped_``
        (reason -> count; per input in ``last_reasons_``); it never raises.
        """
        x, _ = self._extract(list(images), classifier, batch_size, want_proba=False)
        return self.predict_embeddings(x)

    def classify_and_score(self, images: Sequence[Image.Image | str | Path], classifier: Classifier | None = None,
                           batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, 1000) and quality scores (N,) from ONE backbone pass per image
        (plus ``patches`` passes for the quality crops). Skipped inputs: NaN rows, as in ``predict``."""
        x, proba = self._extract(list(images), classifier, batch_size, want_proba=True)
        return proba, self.predict_embeddings(x)

    # -- persistence ----------------------------------------------------------------------

    def save(self, folder: str | Path, training_data: str | dict | None = None,
             metrics: dict | None = None) -> Path:
        """Write ``head_KK.pt`` (each head's state_dict, ``torch.save``) and ``card.json`` (backbone
        identity, hyper-parameters, bin mapping, feature layout, training data description,
        evaluation metrics such as SROCC/PLCC when given) atomically into ``folder``."""
        if not self.heads:
            raise RuntimeError("nothing to save: the model is not trained")
        folder = Path(folder)
        names = []
        for k, head in enumerate(self.heads):
            buffer = io.BytesIO()
            torch.save({name: t.detach().cpu() for name, t in head.state_dict().items()}, buffer)
            names.append(f"head_{k:02d}.pt")
            atomic_write_bytes(folder / names[-1], buffer.getvalue())
        card = {
            "format": CARD_FORMAT,
            "model": "DTNIQ-f (Feng & Cai 2020, Sec. III-A): frozen classifier backbone + FC-ReLU-FC-ReLU-FC-softmax head",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backbone": {"name": self.backbone, "weights_id": self.weights_id,
                         "preprocessing_id": self.preprocessing_id, "features": self.features,
                         "feature_dim": self.feature_dim},
            "hyperparameters": self.hyperparameters(),
            "bins": {"n": self.bins, "centres": f"(j + 0.5) / {self.bins}, j = 0..{self.bins - 1}",
                     "training_target": (f"discretised Gaussian, sigma {self.label_sigma} on [0, 1], normalised"
                                         if self.label_sigma > 0 else "one-hot on the bin containing the score"),
                     "score": "expectation sum_j c_j * softmax_j; image = mean over patches; ensemble = mean over heads"},
            "heads": names,
            "heldout_groups": self.heldout_groups_,
            "training_data": training_data,
            "metrics": metrics,
        }
        atomic_write_text(folder / "card.json", json.dumps(card, indent=2, default=_json_default))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "QualityModel":
        """Restore a model written by ``save`` (state dicts read with ``weights_only=True``)."""
        folder = Path(folder)
        card_path = folder / "card.json"
        if not card_path.is_file():
            raise FileNotFoundError(f"{card_path} not found: not a saved QualityModel folder")
        card = json.loads(card_path.read_text())
        if card.get("format") != CARD_FORMAT:
            raise ValueError(f"{card_path}: format {card.get('format')!r}, expected {CARD_FORMAT!r}")
        model = cls(**card["hyperparameters"], device=device)
        model.weights_id = card["backbone"]["weights_id"]
        model.preprocessing_id = card["backbone"]["preprocessing_id"]
        model.feature_dim = int(card["backbone"]["feature_dim"])
        model.heldout_groups_ = card.get("heldout_groups")
        model.card = card
        heads = []
        for name in card["heads"]:
            state = torch.load(folder / name, map_location="cpu", weights_only=True)
            head = _Head(model.feature_dim, model.hidden, model.bins)
            head.load_state_dict(state)
            head.to(model.device).eval()
            for q in head.parameters():
                q.requires_grad_(False)
            heads.append(head)
        model.heads = heads
        return model


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------


def correlations(pred: np.ndarray, mos: np.ndarray) -> tuple[float, float]:
    """(SROCC, PLCC) over rows where both are finite; NaN when fewer than 3 rows or no spread."""
    from scipy.stats import pearsonr, spearmanr

    ok = ~np.isnan(pred) & ~np.isnan(mos)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(mos[ok]) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(pred[ok], mos[ok])[0]), float(pearsonr(pred[ok], mos[ok])[0])


def evaluate_splits(embeddings: np.ndarray, mos: np.ndarray, groups: np.ndarray, n_splits: int = 10,
                    test_size: float = 0.2, seed: int = 0, **model_kwargs: Any) -> tuple[pd.DataFrame, QualityModel]:
    """Content-disjoint evaluation: ``n_splits`` random group splits (scikit-learn
    ``GroupShuffleSplit``, ``test_size`` of the groups held out), one head per split.

    Returns a table with one row per split (``split``, ``n_train``, ``n_test``, ``srocc``,
    ``plcc``: ``scipy.stats.spearmanr`` / ``pearsonr`` of head k on the held-out part of split k,
    and ``test_groups``) and the fitted ``QualityModel`` with ``n_models = n_splits``: the very
    heads evaluated, i.e. the paper's ensemble of models trained on different splits.
    """
    model_kwargs.pop("n_models", None)
    model = QualityModel(n_models=n_splits, holdout=test_size, seed=seed, **model_kwargs)
    model.fit(embeddings, mos, groups)
    x = model._as_3d(embeddings)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).astype(str).reshape(-1)
    ok = ~np.isnan(x).any(axis=(1, 2)) & ~np.isnan(y)
    rows = []
    for k, held_out in enumerate(model.heldout_groups_):
        test = ok & np.isin(g, held_out)
        pred = model.member_scores(x[test])[k]
        srocc, plcc = correlations(pred, y[test])
        rows.append({"split": k, "n_train": int((ok & ~test).sum()), "n_test": int(test.sum()), "srocc": srocc,
                     "plcc": plcc, "test_groups": ",".join(held_out)})
    return pd.DataFrame(rows), model


def cross_dataset(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  **model_kwargs: Any) -> dict[str, float]:
    """Train on one dataset's (embeddings, mos), test on another's: ``{srocc, plcc, n_train, n_test}``.

    Every head is trained on all of ``train`` (no groups); both datasets must use the same
    backbone and feature kind.
    """
    model = QualityModel(**model_kwargs).fit(*train)
    pred = model.predict_embeddings(test[0])
    srocc, plcc = correlations(pred, np.asarray(test[1], dtype=np.float64))
    x_train, y_train = model._as_3d(train[0]), np.asarray(train[1], dtype=np.float64)
    n_train = int(np.sum(~np.isnan(x_train).any(axis=(1, 2)) & ~np.isnan(y_train)))
    return {"srocc": srocc, "plcc": plcc, "n_train": n_train, "n_test": int(np.sum(~np.isnan(pred)))}


def heldout_predictions(model: QualityModel, embeddings: np.ndarray, table: pd.DataFrame,
                        groups: np.ndarray) -> pd.DataFrame:
    """Rows of ``table`` scored by the head that did NOT see them: for each split k of a model
    from ``evaluate_splits`` (or ``fit`` with groups), the rows of its held-out groups with
    ``pred`` (head k's score) and ``split`` = k. A row appears once per split holding it out."""
    if model.heldout_groups_ is None:
        raise ValueError("the model was fitted without groups: it has no held-out content")
    scores = model.member_scores(embeddings)
    g = np.asarray(groups).astype(str)
    parts = []
    for k, held_out in enumerate(model.heldout_groups_):
        rows = np.isin(g, held_out)
        parts.append(table[rows].assign(pred=scores[k][rows], split=k))
    return pd.concat(parts, ignore_index=True)


def type_level_oracle(table: pd.DataFrame, groups: np.ndarray, heldout_groups: list[list[str]]) -> np.ndarray:
    """Held-out SROCC per split of a content-blind reference predictor: the mean training ``mos``
    of each held-out row's (``distortion``, ``level``). Not a quality model: it shows how much of
    the score the distortion alone explains, i.e. what a model that cannot see content could reach."""
    g = np.asarray(groups).astype(str)
    out = []
    for held_out in heldout_groups:
        test = np.isin(g, held_out)
        means = table[~test].groupby(["distortion", "level"])["mos"].mean()
        keys = pd.MultiIndex.from_frame(table.loc[test, ["distortion", "level"]])
        guess = means.reindex(keys).to_numpy(float)  # NaN where a (type, level) never occurs in training
        out.append(correlations(guess, table.loc[test, "mos"].to_numpy(float))[0])
    return np.asarray(out)


def per_distortion(held: pd.DataFrame) -> pd.DataFrame:
    """Per distortion type of ``heldout_predictions`` rows: ``srocc`` (pred vs mos); the Spearman
    between level and pred within one image (per split and ``ref_id``, then averaged: −1 = a stronger
    distortion always scores lower); and level-vs-pred / level-vs-mos Spearman pooled over images."""
    from scipy.stats import spearmanr

    within = held.groupby(["split", "distortion", "ref_id"]).apply(
        lambda g: spearmanr(g["level"], g["pred"]).statistic, include_groups=False)
    within = within.groupby(level="distortion").mean()
    return held.groupby("distortion").apply(lambda g: pd.Series({
        "n": len(g), "srocc": correlations(g["pred"].to_numpy(float), g["mos"].to_numpy(float))[0],
        "spearman_level_pred_within_image": within[g.name],
        "spearman_level_pred_pooled": spearmanr(g["level"], g["pred"]).statistic,
        "spearman_level_mos_pooled": spearmanr(g["level"], g["mos"]).statistic}), include_groups=False).reset_index()
