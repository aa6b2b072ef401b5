"""Peer detectors: the field's standard ways to flag unfit inputs, scored on the same groups and
splits as the fit-for-task detector, and judged by the same operating-point rule.

* Failure detection on logits: maximum softmax probability (MSP; Hendrycks & Gimpel, ICLR 2017),
  the strongest overall in FD-Shifts (Jaeger et al., ICLR 2023); DOCTOR (Granese et al., NeurIPS
  2021); energy (Liu et al., NeurIPS 2020), MaxLogit (Hendrycks et al., ICML 2022), entropy.
* OOD detection on the penultimate embedding: Mahalanobis (Lee et al., NeurIPS 2018), ViM (Wang et
  al., CVPR 2022), KNN (Sun et al., ICML 2022). Fitted on clean images only: the IQA references
  and each split's TRAINING originals, never a held-out photo.
* Adversarial detection: Feature Squeezing (Xu et al., NDSS 2018), from pixels.

Every detector but DOCTOR and Feature Squeezing is a ``pytorch-ood`` 0.4.0 call (the scores are
pytorch-ood's, tested); DOCTOR is one line, and Feature Squeezing needs the classifier on squeezed
pixels, which pytorch-ood does not do. Scores: higher = more likely not fit (pytorch-ood's
convention too); NaN = unusable. ``split_scores`` gives one frame per detector in the layout of
``evaluation.split_scores`` (roles ``oof``: training originals, scored by a fit that did not see
them; ``eval``: every row whose photo is not a training photo), so every table of notebook 04
reads peers and ours alike.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from iqalib import evaluation, feature_table, features

__all__ = ["LogitPeer", "FeaturePeer", "standard_peers", "split_scores",
           "feature_squeezing_scores", "feature_squeezing_rates"]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def doctor(logits: torch.Tensor) -> torch.Tensor:
    """DOCTOR's D_α for α = 2 (Granese et al.): 1 − Σ softmax²; higher = more likely misclassified.
    (Their test thresholds (1 − g)/g, a monotone function of the same g.)"""
    return 1.0 - (logits.softmax(dim=1) ** 2).sum(dim=1)


@dataclass
class LogitPeer:
    """A detector that reads the logits alone and fits nothing."""

    name: str
    source: str
    score_logits: Callable[[torch.Tensor], torch.Tensor]
    fits = False

    def fit(self, logits: np.ndarray, embedding: np.ndarray) -> "LogitPeer":
        return self

    def score(self, logits: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        return _numpy(self.score_logits(torch.as_tensor(np.asarray(logits), dtype=torch.float32)))


@dataclass
class FeaturePeer:
    """A pytorch-ood detector on the penultimate embedding, fitted on clean images as ONE class:
    ``make(n_fit, dim)`` builds it unfitted (its settings may depend on the fit set's size)."""

    name: str
    source: str
    make: Callable[[int, int], Any]
    fits = True
    detector_: Any = field(default=None, repr=False)
    n_fit_: int = 0

    def fit(self, logits: np.ndarray, embedding: np.ndarray) -> "FeaturePeer":
        z = torch.as_tensor(np.asarray(embedding), dtype=torch.float32)
        z = z[~torch.isnan(z).any(dim=1)]
        # one class: a few hundred clean photos cannot give per-class means over 1000 classes
        self.detector_ = self.make(len(z), z.shape[1]).fit_features(z, torch.zeros(len(z), dtype=torch.long))
        self.n_fit_ = len(z)
        return self

    def score(self, logits: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(np.asarray(embedding), dtype=torch.float32)
        out = np.full(len(z), np.nan)
        ok = ~torch.isnan(z).any(dim=1)
        if ok.any():
            out[ok.numpy()] = _numpy(self.detector_.predict_features(z[ok]))
        return out


def knn_k(n_fit: int) -> int:
    """Sun et al.'s k = 1000 for all 1.28 M ImageNet training images, scaled to the fit set (their
    α-fraction rule), at least 1."""
    return max(1, round(1000 * n_fit / 1_281_167))


def vim_dim(n_fit: int, dim: int) -> int:
    """ViM's principal-subspace size: half the embedding (Wang et al. take 1000 of ResNet-50's 2048),
    and at most half the fit set, which bounds the rank of its covariance."""
    return max(1, min(dim // 2, n_fit // 2))


def standard_peers(head_weight: np.ndarray, head_bias: np.ndarray) -> list[LogitPeer | FeaturePeer]:
    """The peers of notebook 04, unfitted; ``head_weight`` (C, D) and ``head_bias`` (C,) are the
    classifier's last layer (ViM reads it)."""
    from pytorch_ood.detector import KNN, ViM, EnergyBased, Entropy, Mahalanobis, MaxLogit, MaxSoftmax

    ood = "pytorch-ood 0.4.0"
    w, b = torch.as_tensor(head_weight, dtype=torch.float32), torch.as_tensor(head_bias, dtype=torch.float32)
    # ViM's constructor takes the pseudo-inverse of the (C, D) head for its origin: 0.15 s on 2 cores
    # for EfficientNet-Lite0's, 60 times in notebook 04 (10 splits x 6 fits). The head is the same
    # for every fit, so each fit gets a shallow copy of one constructed ViM (``fit_features`` sets
    # everything a fit changes: the principal subspace and alpha).
    vim_template = ViM(None, d=1, w=w, b=b)

    def vim(n_fit: int, dim: int) -> ViM:
        fresh = copy.copy(vim_template)
        fresh.d = vim_dim(n_fit, dim)
        return fresh

    return [
        LogitPeer("msp", ood, MaxSoftmax.score),
        LogitPeer("energy", ood, EnergyBased.score),
        LogitPeer("maxlogit", ood, MaxLogit.score),
        LogitPeer("entropy", ood, Entropy.score),
        LogitPeer("doctor", "hand-written (one line)", doctor),
        FeaturePeer("mahalanobis", ood, lambda n, d: Mahalanobis(None)),
        FeaturePeer("vim", ood, vim),
        FeaturePeer("knn", ood, lambda n, d: KNN(None, k=knn_k(n))),
    ]


# --------------------------------------------------------------------------------------------------
# Scores per split, in the layout of evaluation.split_scores


def split_scores(peer: LogitPeer | FeaturePeer, table: pd.DataFrame, logits: np.ndarray, embedding: np.ndarray,
                 splits: Sequence[tuple[np.ndarray, np.ndarray]], reference_logits: np.ndarray,
                 reference_embedding: np.ndarray, *, folds: int = 5, cap: int | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """One peer's scores per split (``evaluation.untrained_split_scores``'s layout). A fitting peer is
    fitted per split on the clean reference images plus that split's TRAINING originals (a seeded
    sample of at most ``cap`` of them, if given); its ``oof`` scores come from ``folds`` fits, each
    leaving out one fold of the training originals' photos. No held-out photo is ever fitted on."""
    if not peer.fits:
        return evaluation.untrained_split_scores(peer.score(logits, embedding), table, splits)
    from sklearn.model_selection import GroupKFold

    src, original = feature_table.sources(table), (table["group"] == "original").to_numpy()
    rng = np.random.default_rng(seed)
    frames = []
    for k, (train_ids, _) in enumerate(splits):
        in_train = src.isin(set(train_ids)).to_numpy()
        fit_rows = np.flatnonzero(in_train & original)
        if cap is not None and len(fit_rows) > cap:
            fit_rows = np.sort(rng.choice(fit_rows, cap, replace=False))

        def fitted(rows: np.ndarray) -> LogitPeer | FeaturePeer:
            return peer.fit(np.r_[reference_logits, logits[rows]], np.r_[reference_embedding, embedding[rows]])

        oof = np.full(len(fit_rows), np.nan)
        n_folds = min(folds, len(set(src.to_numpy()[fit_rows])))
        if n_folds < 2:
            raise ValueError(f"split {k}: {peer.name} needs training originals of at least 2 photos for out-of-fold scores")
        for keep, held in GroupKFold(n_folds).split(fit_rows, groups=src.to_numpy()[fit_rows]):
            oof[held] = fitted(fit_rows[keep]).score(logits[fit_rows[held]], embedding[fit_rows[held]])
        mask = np.zeros(len(table), bool)
        mask[fit_rows] = True
        full = fitted(fit_rows)
        frames += [evaluation.score_frame(table, k, "oof", mask, oof, full.n_fit_),
                   evaluation.score_frame(table, k, "eval", ~in_train,
                                          full.score(logits[~in_train], embedding[~in_train]), full.n_fit_)]
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Feature Squeezing (pixels)


def feature_squeezing_scores(classifier: Any, images: Sequence[Any], *, bit_depth: int = 5,
                             median_size: int = 2, batch_size: int = 32, min_side: int = 1,
                             plain_proba: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """Feature squeezing (Xu et al., NDSS 2018) score per image, in [0, 2]; NaN for unusable inputs.

    max over squeezers of the L1 distance between the classifier's softmax on its view of the
    image and on the squeezed view: colour depth reduced to ``bit_depth`` bits, and a
    ``median_size``×``median_size`` median filter (scipy, reflect padding as in Xu et al.; Pillow's
    MedianFilter only takes odd sizes). Squeezing acts on the network's input pixels. ``images``:
    PIL images or paths; ``plain_proba``: (N, 1000) softmax of the unsqueezed images when already
    known (e.g. from the embedding cache), which saves one of the three passes; ``progress``: a tqdm
    bar over batches.
    """
    from scipy.ndimage import median_filter

    loaded, _ = features.load_inputs(images, min_side)
    out = np.full(len(loaded), np.nan)
    ok = [i for i, im in enumerate(loaded) if im is not None]
    levels = 2 ** bit_depth - 1
    for start in tqdm(range(0, len(ok), batch_size), desc="feature squeezing", disable=not progress, leave=False):
        idx = ok[start : start + batch_size]
        view = np.stack([np.asarray(classifier.view(loaded[i]), dtype=np.uint8) for i in idx])  # (N, S, S, 3)
        depth = np.round(np.round(view / 255.0 * levels) / levels * 255.0).astype(np.uint8)
        median = median_filter(view, size=(1, median_size, median_size, 1), mode="reflect")
        # The squeezed views go through the same backbone pass as every other image (features).
        arrays = (depth, median) if plain_proba is not None else (view, depth, median)
        squeezed = [[Image.fromarray(a) for a in batch] for batch in arrays]
        p = [features.predict(classifier, s, batch_size=batch_size).proba for s in squeezed]
        if plain_proba is not None:
            p.insert(0, np.asarray(plain_proba, np.float32)[idx])
        out[idx] = np.maximum(np.abs(p[0] - p[1]).sum(1), np.abs(p[0] - p[2]).sum(1))
    return out


def feature_squeezing_rates(scores_df: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                            target_fpr: float = 0.05, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Detection rate per group of feature squeezing at ``target_fpr`` false alarms, by the rule of
    ``evaluation.peer_rates``: each split's threshold set on the originals of its training half,
    the rows not in it judged (feature squeezing trains nothing; this makes both methods see the
    same images and choose their operating point on the same photos). ``scores_df``: ``group``,
    ``source_id`` and ``score`` (NaN = unusable = flagged). Columns as
    ``evaluation.rates_at_false_alarm`` with method 'feature_squeezing'."""
    return evaluation.peer_rates(scores_df, "feature_squeezing", target_fpr, splits, n_boot=n_boot, seed=seed)
