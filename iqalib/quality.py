"""No-reference image quality from a frozen ImageNet classifier: DTNIQ-f (Feng & Cai 2020,
Section III-A, Fig. 2), trained on subjective (or pseudo-) MOS in [0, 1]. Heads on arrays: this
module fits, scores, saves and loads; it never decodes an image or runs a backbone (``features``
does, and ``QualityModel.predict(images)`` goes through it).

Model
-----
The convolutional part of the classifier, frozen, gives a feature vector per image; a head of two
fully connected layers of ``hidden`` = 2048 units with ReLU and an output layer of ``bins`` = 70
units with softmax gives a distribution over score bins; the score is the expectation
``sum_j c_j * v_j`` with bin centres ``c_j = (j + 0.5) / bins`` in (0, 1); an ensemble's score is
the mean over its ``n_models`` heads. Scores lie in [0, 1], higher = better. Each head also holds
the mean/std of its training features and standardises its input with them (saved with it).

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
  and blocks 0–3 -> 384 values; torchvision ResNets: maxpool, layer1, layer2 -> 1664 values).
  Distortions such as blur, noise and JPEG live in these statistics; the final pooled embedding of
  an ImageNet classifier is trained to ignore them.
- ``"pooled"``: the classifier's final pooled embedding (EfficientNet-Lite0: 1280-d) — the paper's
  own DTNIQ-f feature.
Classify + score costs ONE backbone pass per image plus two heads (quality head: D x 2048 +
2048 x 2048 + 2048 x 70, ~5 M multiply-adds, negligible next to the backbone's ~400 M).

Ensembles and splits
--------------------
``fit(..., groups=None)`` trains every head on all rows (heads differ by seed).
``fit(..., groups=g)`` trains head k on the training part of content-disjoint split k
(``GroupShuffleSplit(n_models, test_size=holdout, random_state=seed)``): the paper's "ten models
trained on ten random splits". ``evaluate_splits`` does exactly this and scores head k on the
held-out content of split k, so the heads it evaluates ARE the returned, deployable ensemble.
A row with any NaN is an image that could not be used: left out of training, scored NaN.

Determinism: all randomness (initialisation, shuffling, dropout masks) comes from explicit
``torch.Generator`` objects seeded from ``seed``; nothing global is touched. On CPU, the same
inputs, torch build and thread count give bitwise the same weights.
"""
from __future__ import annotations

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
from torch import nn

from iqalib import metrics
from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.classifiers import Classifier, load_classifier, resolve_device

__all__ = ["QualityModel", "evaluate_splits", "heldout_predictions"]

FEATURE_KINDS = ("multilevel", "pooled")
CARD_FORMAT = "iqalib.quality/2"
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

    def redraw(self, generator: torch.Generator) -> None:
        """Draw the layers' weights afresh (PyTorch's default init) from ``generator``."""
        with torch.no_grad():
            for layer in (self.fc1, self.fc2, self.out):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

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


def _stacked_scores(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(K, N) scores of K stacked heads on (N, D) rows: ``_Head.forward`` for all heads at once."""
    h = (x[None] - w["mu"]) / w["sd"]
    h = torch.relu(torch.baddbmm(w["b1"], h, w["w1"]))
    h = torch.relu(torch.baddbmm(w["b2"], h, w["w2"]))
    return (torch.baddbmm(w["b3"], h, w["w3"]).softmax(-1) * w["centres"]).sum(-1).clamp(0.0, 1.0)


def _stack_heads(heads: Sequence[_Head], detach: bool) -> dict[str, torch.Tensor]:
    """The weights of ``heads`` stacked along a first axis, as ``_stacked_scores`` reads them."""
    def stack(get):
        return torch.stack([get(h).detach() if detach else get(h) for h in heads])
    return {"mu": stack(lambda h: h.mu)[:, None, :], "sd": stack(lambda h: h.sd)[:, None, :],
            "w1": stack(lambda h: h.fc1.weight).transpose(1, 2).contiguous(), "b1": stack(lambda h: h.fc1.bias)[:, None, :],
            "w2": stack(lambda h: h.fc2.weight).transpose(1, 2).contiguous(), "b2": stack(lambda h: h.fc2.bias)[:, None, :],
            "w3": stack(lambda h: h.out.weight).transpose(1, 2).contiguous(), "b3": stack(lambda h: h.out.bias)[:, None, :],
            "centres": heads[0].centres}


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
# The model
# ----------------------------------------------------------------------------------------


class QualityModel:
    """DTNIQ-f: an ensemble of ``n_models`` quality heads on a frozen classifier backbone.

    Parameters (units / ranges):
        classifier: backbone name for ``load_classifier`` (default ``"efficientnet_lite0"``) or a
            loaded ``Classifier`` (used as is, e.g. the one that also classifies); it fixes the
            backbone identity (weights, preprocessing) the heads belong to.
        n_models: heads in the ensemble (paper: 10); the score is their mean.
        hidden: units of each of the two hidden layers (paper: 2048).
        bins: softmax output bins over [0, 1] (paper: 70).
        epochs: passes over the training rows.
        lr: AdamW peak learning rate, cosine-annealed to 0 over training.
        weight_decay: AdamW decoupled weight decay.
        batch_size: training rows per optimiser step.
        seed: seeds head k with ``seed * 1000 + k``.
        features: ``"multilevel"`` or ``"pooled"`` (see the module docstring).
        label_sigma: width of the Gaussian soft label on the [0, 1] scale (0 = one-hot).
        dropout: dropout rate after each hidden layer during training (0 = none).
        holdout: share of groups each head leaves out when ``fit`` gets ``groups``.
        device: ``auto`` | ``cpu`` | ``cuda`` for the heads and, when loaded here, the backbone.
    """

    def __init__(self, classifier: str | Classifier = "efficientnet_lite0", n_models: int = 10, hidden: int = 2048,
                 bins: int = 70, epochs: int = 30, lr: float = 1e-4, weight_decay: float = 1e-4,
                 batch_size: int = 64, seed: int = 0, features: str = "multilevel",
                 label_sigma: float = 0.03, dropout: float = 0.0, holdout: float = 0.2, device: str = "auto"):
        if features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
        if n_models < 1 or hidden < 1 or bins < 2 or epochs < 1 or batch_size < 1:
            raise ValueError("n_models, hidden, epochs, batch_size must be >= 1 and bins >= 2")
        if not 0.0 <= dropout < 1.0 or not 0.0 < holdout < 1.0 or label_sigma < 0:
            raise ValueError("dropout must be in [0, 1), holdout in (0, 1), label_sigma >= 0")
        self._classifier: Classifier | None = classifier if isinstance(classifier, Classifier) else None
        self.backbone = classifier.name if isinstance(classifier, Classifier) else str(classifier)
        self.n_models, self.hidden, self.bins, self.epochs = int(n_models), int(hidden), int(bins), int(epochs)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.seed, self.features = int(seed), features
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
        self._stacked: tuple = (None, None)
        # Optional own feature layers (``attach_own_layers``, NT); None: the heads read the shared pass.
        self.feature_layers: nn.Module | None = None
        self._feature_layers_state: dict[str, torch.Tensor] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able), as written to ``card.json``."""
        return {"classifier": self.backbone, "n_models": self.n_models, "hidden": self.hidden, "bins": self.bins,
                "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "seed": self.seed, "features": self.features,
                "label_sigma": self.label_sigma, "dropout": self.dropout, "holdout": self.holdout}

    def __repr__(self) -> str:
        state = f"{len(self.heads)} heads trained" if self.heads else "untrained"
        return f"QualityModel({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())}; {state})"

    def classifier(self, classifier: Classifier | None = None) -> Classifier:
        """The backbone to score images with: ``classifier`` if given, else the model's own, loaded by
        name on first use. Raises ValueError if its weights or preprocessing differ from the ones
        the heads were trained on."""
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

    # -- own feature layers (NT on the whole model) ------------------------------------------

    @property
    def has_own_layers(self) -> bool:
        """Whether the heads read the model's own copy of the early layers instead of the shared pass."""
        return self.feature_layers is not None or self._feature_layers_state is not None

    def attach_own_layers(self, classifier: Classifier | None = None, keep_batchnorm: bool = False) -> nn.Module:
        """Give the model its own trainable copy of ``classifier``'s layers up to the deepest its
        heads read (``iqalib.feature_layers``: the early layers, or the whole backbone for
        ``pooled`` features), initialised from the classifier's weights; returns it. BatchNorm is
        folded into the convolutions unless ``keep_batchnorm`` (an unfolded classifier's)."""
        from iqalib.feature_layers import FeatureLayers

        self.feature_layers = FeatureLayers(self.classifier(classifier), self.features, keep_batchnorm)
        self._feature_layers_state = None
        return self.feature_layers

    def own_layers(self, classifier: Classifier | None = None) -> nn.Module | None:
        """The model's own feature layers (frozen), or None when the heads read the shared pass. A
        loaded model builds them on first use from ``classifier``'s architecture and its saved weights."""
        if self.feature_layers is None and self._feature_layers_state is not None:
            from iqalib.feature_layers import FeatureLayers

            layers = FeatureLayers(self.classifier(classifier), self.features)
            layers.load_state_dict(self._feature_layers_state)
            self.feature_layers = layers.requires_grad_(False)
            self._feature_layers_state = None
        return self.feature_layers

    # -- training -------------------------------------------------------------------------

    def fit(self, embeddings: np.ndarray, mos: np.ndarray, groups: np.ndarray | None = None,
            progress: bool = True) -> "QualityModel":
        """Train the ``n_models`` heads on precomputed features and scores; returns self.

        embeddings: (N, D) features of the kind ``features`` names, from ``features.quality_features``
            of ``features.embed``'s rows; rows with NaN are left out.
        mos: (N,) scores in [0, 1], higher = better (NaN rows are left out).
        groups: (N,) content ids (e.g. ``ref_id``). None: every head sees all rows. Given: head k
            sees only the training part of content-disjoint split k (see the module docstring);
            the held-out groups of each head are kept in ``heldout_groups_``.
        """
        from sklearn.model_selection import GroupShuffleSplit
        from tqdm.auto import tqdm

        x = self._as_2d(embeddings)
        y = np.asarray(mos, dtype=np.float64).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} embedding rows but {len(y)} scores")
        ok = ~np.isnan(x).any(axis=1) & ~np.isnan(y)
        if not ((y[ok] >= 0.0) & (y[ok] <= 1.0)).all():
            raise ValueError("mos must lie in [0, 1] (higher = better); rescale the dataset's scores first")
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
        if self._classifier is not None:
            self.weights_id, self.preprocessing_id = self._classifier.weights_id, self._classifier.preprocessing_id
        self.feature_dim = int(x.shape[1])
        bar = tqdm(parts, desc="quality heads", disable=not progress, leave=False)
        self.heads = [self._train_head(x[p], y[p], self.seed * 1000 + k) for k, p in enumerate(bar)]
        return self

    def _train_head(self, x: np.ndarray, y: np.ndarray, seed: int) -> _Head:
        n, d = x.shape
        rows = torch.from_numpy(x.astype(np.float32))
        target = torch.from_numpy(_soft_labels(y, self.bins, self.label_sigma))
        g = torch.Generator().manual_seed(int(seed))
        head = _Head(d, self.hidden, self.bins)
        with torch.no_grad():
            head.mu.copy_(rows.mean(0))
            head.sd.copy_(rows.std(0, correction=0).clamp_min(_MIN_FEATURE_STD))
        head.redraw(g)
        head.to(self.device).train()
        rows, target = rows.to(self.device), target.to(self.device)
        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = math.ceil(n / self.batch_size) * self.epochs
        step = 0
        while step < total:
            order = torch.randperm(n, generator=g)
            for start in range(0, n, self.batch_size):
                if step >= total:
                    break
                for group in opt.param_groups:
                    group["lr"] = 0.5 * self.lr * (1.0 + math.cos(math.pi * step / total))
                batch = order[start:start + self.batch_size].to(self.device)
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

    def _as_2d(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
        if self.feature_dim is not None and x.shape[1] != self.feature_dim:
            raise ValueError(f"embeddings have {x.shape[1]} features per image; this model's heads take "
                             f"{self.feature_dim} ({self.features!r} features of {self.backbone!r})")
        return x

    def member_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n_models, N) scores of each head in [0, 1] (NaN rows stay NaN)."""
        if not self.heads:
            raise RuntimeError("this QualityModel is not trained: call fit() or QualityModel.load()")
        x = self._as_2d(embeddings)
        ok = ~np.isnan(x).any(axis=1)
        out = np.full((len(self.heads), len(x)), np.nan, dtype=np.float32)
        if ok.any():
            rows = torch.from_numpy(x[ok]).to(self.device)
            with torch.inference_mode():
                out[:, ok] = self.score_tensor(rows, members=True).float().cpu().numpy()
        return out

    def score_tensor(self, features: torch.Tensor, members: bool = False) -> torch.Tensor:
        """Scores in [0, 1] of (N, D) feature rows as a tensor, differentiable in ``features``: the
        ensemble mean (N,), or each head's (n_models, N) with ``members``. What attacks and smoothing
        (``iqalib.robust``) call; ``member_scores`` is this on NumPy rows."""
        if not self.heads:
            raise RuntimeError("this QualityModel is not trained: call fit() or QualityModel.load()")
        weights = {k: v.to(features.device) for k, v in self._stack().items()}
        each = _stacked_scores(weights, features)
        return each if members else each.mean(0)

    def _stack(self) -> dict[str, torch.Tensor]:
        """The heads' weights stacked along a first axis (built once per set of heads), so all heads
        score a batch in three batched matrix products instead of one small product per head."""
        ident = tuple(id(h) for h in self.heads)
        if self._stacked[0] != ident:
            self._stacked = (ident, _stack_heads(self.heads, detach=True))
        return self._stacked[1]

    def live_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(n_models, N) scores with autograd through the heads' current parameters (not the
        cached stack): what fine-tuning the heads in place (``gradnorm.train_nt``) optimises."""
        weights = {k: v.to(features.device) for k, v in _stack_heads(self.heads, detach=False).items()}
        return _stacked_scores(weights, features)

    def copy(self) -> "QualityModel":
        """An independent copy of the heads and settings that shares the loaded backbone, if any."""
        import copy

        return copy.deepcopy(self, memo={id(self._classifier): self._classifier})

    def forget_stack(self) -> None:
        """Drop the cached stacked weights; call after changing the heads' parameters in place."""
        self._stacked = (None, None)

    def predict_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) scores in [0, 1] from (N, D) features: mean over the heads."""
        return self.member_scores(embeddings).mean(0)

    def predict(self, images: Sequence[Any], classifier: Classifier | None = None,
                batch_size: int = 16) -> np.ndarray:
        """(N,) quality scores in [0, 1] of PIL images or image paths of any size, through
        ``features.predict`` (the one backbone pass; quality heads on its early-layer statistics).

        ``classifier`` must be the backbone the heads were trained on (ValueError otherwise); None
        loads it by name. A path that cannot be used (missing, not an image, corrupt, too large:
        ``images.open_image`` rules, no size floor, grey kept) scores NaN and is counted in
        ``last_skipped_`` (reason -> count; per input in ``last_reasons_``); it never raises.
        """
        return self.classify_and_score(images, classifier, batch_size)[1]

    def classify_and_score(self, images: Sequence[Any], classifier: Classifier | None = None,
                           batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, 1000) and quality scores (N,) from ONE backbone pass per image."""
        from iqalib import features  # features runs the backbone; the heads only read its rows

        result = features.predict(self.classifier(classifier), images, quality=self, batch_size=batch_size)
        self.last_reasons_ = result.reasons
        self.last_skipped_ = dict(sorted(Counter(r for r in result.reasons if r is not None).items()))
        return result.proba, result.quality

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
                     "score": "expectation sum_j c_j * softmax_j; ensemble = mean over heads"},
            "heads": names,
            "heldout_groups": self.heldout_groups_,
            "training_data": training_data,
            "metrics": metrics,
        }
        layers = self.own_layers()
        if layers is not None:
            buffer = io.BytesIO()
            torch.save({name: t.detach().cpu() for name, t in layers.state_dict().items()}, buffer)
            atomic_write_bytes(folder / "feature_layers.pt", buffer.getvalue())
            card["feature_layers"] = {
                "file": "feature_layers.pt", "modules": len(layers.layers),
                "initialised_from": layers.source_weights_id,
                "what": "the model's own trained copy of the backbone's early layers; the heads read its "
                        "statistics, not the shared pass (one more pass through these layers per image)"}
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
        if card.get("feature_layers"):
            model._feature_layers_state = torch.load(folder / card["feature_layers"]["file"], map_location="cpu",
                                                     weights_only=True)
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


def evaluate_splits(embeddings: np.ndarray, mos: np.ndarray, groups: np.ndarray, n_splits: int = 10,
                    test_size: float = 0.2, seed: int = 0, progress: bool = True,
                    **model_kwargs: Any) -> tuple[pd.DataFrame, QualityModel]:
    """Content-disjoint evaluation: ``n_splits`` random group splits (scikit-learn
    ``GroupShuffleSplit``, ``test_size`` of the groups held out), one head per split.

    Returns a table with one row per split (``split``, ``n_train``, ``n_test``, ``srocc``,
    ``plcc``: ``scipy.stats.spearmanr`` / ``pearsonr`` of head k on the held-out part of split k,
    and ``test_groups``) and the fitted ``QualityModel`` with ``n_models = n_splits``: the very
    heads evaluated, i.e. the paper's ensemble of models trained on different splits.
    """
    model_kwargs.pop("n_models", None)
    model = QualityModel(n_models=n_splits, holdout=test_size, seed=seed, **model_kwargs)
    model.fit(embeddings, mos, groups, progress=progress)
    x = model._as_2d(embeddings)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).astype(str).reshape(-1)
    ok = ~np.isnan(x).any(axis=1) & ~np.isnan(y)
    rows = []
    for k, held_out in enumerate(model.heldout_groups_):
        test = ok & np.isin(g, held_out)
        pred = model.member_scores(x[test])[k]
        srocc, plcc = metrics.correlations(pred, y[test])
        rows.append({"split": k, "n_train": int((ok & ~test).sum()), "n_test": int(test.sum()), "srocc": srocc,
                     "plcc": plcc, "test_groups": ",".join(held_out)})
    return pd.DataFrame(rows), model


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
