"""What the quality model sees of a universal perturbation: control maps of the same amplitude
(the UAP's own values with their structure destroyed, Gaussian noise at its RMS, random ±ξ signs),
and where in the backbone's early layers each map moves the statistics the quality heads read.

Why: on the embedded default the UAP lowers predicted quality far less than the paper reports
(Table II). These probes tell apart "the model is blind to perturbations this small" from "the
model is blind to *this* perturbation". Pure NumPy on backbone rows (``features`` computes them);
no I/O, no backbone pass of its own.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["CLEAN", "UAP", "SHUFFLED", "NOISE", "SIGNS", "controls", "visibility", "feature_shift"]

CLEAN = "none (originals)"
UAP = "UAP"
SHUFFLED = "UAP, pixels shuffled"
NOISE = "Gaussian noise, UAP's RMS"
SIGNS = "random ±ξ signs"


def controls(v: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The UAP ``v`` ((S, S, 3), 0–255 units) and three control maps, each ONE map added to every
    image as a UAP is, all integer-valued like ``v``:

    * the UAP's pixels shuffled: the same values (so the same RMS, ‖·‖∞ and histogram), the
      spatial and colour structure destroyed (a seeded permutation of its pixels);
    * Gaussian noise at the UAP's RMS, rounded to whole steps (not clipped, so its RMS is the
      UAP's and its ‖·‖∞ larger);
    * random ±⌊‖v‖∞⌋ signs (the usual control of an ℓ∞ attack; a larger RMS than the UAP's).
    """
    v = np.rint(np.asarray(v, dtype=np.float32))
    if v.ndim != 3 or v.shape[2] != 3:
        raise ValueError(f"v must be an (S, S, 3) map, got shape {v.shape}")
    rng = np.random.default_rng(seed)
    linf = float(np.abs(v).max())
    rms = float(np.sqrt(np.mean(v ** 2)))
    shuffled = rng.permutation(v.reshape(-1, 3)).reshape(v.shape)
    gaussian = np.rint(rng.standard_normal(v.shape) * rms)
    signs = np.where(rng.random(v.shape) < 0.5, -linf, linf)
    return {UAP: v, SHUFFLED: shuffled, NOISE: gaussian.astype(np.float32), SIGNS: signs.astype(np.float32)}


def _auc_lower(clean: np.ndarray, other: np.ndarray) -> float:
    """ROC AUC of "lower score = perturbed", originals as negatives (0.5 = not told apart)."""
    from sklearn.metrics import roc_auc_score

    if len(clean) == 0 or len(other) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(clean)), np.ones(len(other))]
    return float(roc_auc_score(y, -np.r_[clean, other]))


def visibility(quality: Mapping[str, np.ndarray], top1: Mapping[str, np.ndarray],
               maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per perturbation in ``maps``: its RMS and ‖·‖∞ (0–255 units), the mean predicted
    quality of the perturbed images, the mean paired drop from their originals, the share scored
    below their own original, the ROC AUC of quality alone (originals vs perturbed, unpaired: what a
    no-reference detector faces), and the share whose top-1 changed (the fooling rate).

    ``quality`` / ``top1``: per-image arrays keyed by ``CLEAN`` and every name in ``maps``, rows in
    the same image order.
    """
    q0, t0 = np.asarray(quality[CLEAN], float), np.asarray(top1[CLEAN])
    rows = [{"perturbation": CLEAN, "rms": 0.0, "linf": 0.0, "quality": float(np.mean(q0)), "drop": 0.0,
             "lower_than_original": float("nan"), "auc_vs_originals": float("nan"), "top1_changed": 0.0, "n": len(q0)}]
    for name, v in maps.items():
        q, t = np.asarray(quality[name], float), np.asarray(top1[name])
        if len(q) != len(q0):
            raise ValueError(f"{name}: {len(q)} scores for {len(q0)} originals; rows must pair up")
        rows.append({"perturbation": name, "rms": float(np.sqrt(np.mean(np.asarray(v, float) ** 2))),
                     "linf": float(np.abs(v).max()), "quality": float(np.mean(q)), "drop": float(np.mean(q0 - q)),
                     "lower_than_original": float(np.mean(q < q0)), "auc_vs_originals": _auc_lower(q0, q),
                     "top1_changed": float(np.mean(t != t0)), "n": len(q)})
    return pd.DataFrame(rows)


def feature_shift(stats: Mapping[str, np.ndarray], layout: Sequence[tuple[str, int]],
                  reference: str = NOISE) -> pd.DataFrame:
    """Where each perturbation moves the early-layer statistics the quality heads read.

    ``stats``: per-image statistics rows keyed by ``CLEAN`` and perturbation names (same image
    order); ``layout``: the taps as (name, channels) in row order, each tap contributing its
    channels' spatial means, then their log-stds (``Classifier.forward_with_stats``).

    One row per (tap, statistic, perturbation): ``shift`` is the length of the mean paired change,
    each feature divided by its spread over the originals (so taps of different widths and scales
    compare); ``cosine_to_reference`` is the cosine between that mean change and ``reference``'s
    (1 = moved the way noise moves it).
    """
    clean = np.asarray(stats[CLEAN], float)
    if sum(2 * c for _, c in layout) != clean.shape[1]:
        raise ValueError(f"layout covers {sum(2 * c for _, c in layout)} statistics, rows have {clean.shape[1]}")
    spread = clean.std(0) + 1e-6
    mean_change = {name: ((np.asarray(s, float) - clean) / spread).mean(0) for name, s in stats.items() if name != CLEAN}
    if reference not in mean_change:
        raise ValueError(f"reference {reference!r} is not among {list(mean_change)}")
    rows, start = [], 0
    for tap, channels in layout:
        for stat in ("mean", "log-std"):
            part = slice(start, start + channels)
            start += channels
            ref = mean_change[reference][part]
            for name, change in mean_change.items():
                d = change[part]
                cosine = float(d @ ref / (np.linalg.norm(d) * np.linalg.norm(ref) + 1e-12))
                rows.append({"tap": tap, "statistic": stat, "perturbation": name,
                             "shift": float(np.linalg.norm(d)), "cosine_to_reference": cosine})
    return pd.DataFrame(rows)


def summary(controls: pd.DataFrame, shift: pd.DataFrame) -> str:
    """The probe in one markdown paragraph: quality alone against the UAP and its controls (AUC,
    mean drop), the top-1 changes, and the cosine of the UAP's change of the log-std statistics
    with the change noise makes, tap by tap."""
    c = controls.set_index("perturbation")
    auc, drop = c["auc_vs_originals"], c["drop"]
    cos = shift[(shift["perturbation"] == UAP) & (shift["statistic"] == "log-std")].set_index("tap")["cosine_to_reference"]
    return (f"Quality alone tells the UAP images from their originals at AUC **{auc[UAP]:.2f}** (mean drop "
            f"{drop[UAP]:.3f}); the UAP's values with their pixels shuffled at **{auc[SHUFFLED]:.2f}** "
            f"({drop[SHUFFLED]:.3f}), Gaussian noise of its RMS at **{auc[NOISE]:.2f}** ({drop[NOISE]:.3f}). "
            f"Top-1 changed: {c.loc[UAP, 'top1_changed']:.0%} under the UAP, at most "
            f"{c.drop(index=[UAP, CLEAN])['top1_changed'].max():.0%} under a control. Cosine of the UAP's change "
            "of the log-std statistics with the change noise makes, tap by tap: "
            + ", ".join(f"{t} {v:+.2f}" for t, v in cos.items()) + ".")
