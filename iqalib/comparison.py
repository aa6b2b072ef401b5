"""Notebook 04's comparison of detectors: the paper's detector, the field's peers (``peers``) and
our quality-aware variants, each as one scores frame in the layout of ``evaluation.split_scores``
on the same rows and the same paired splits, read by the same rules.

Owns the comparison table (AUROC, detection at the paper's and at 5 % false alarms with
thresholds from training originals only, false alarms at 95 % detection), its ROC points, and the
risk–coverage view of the gated classifier (accuracy of what is kept vs how much is kept, AURC).
Pure: arrays and frames in, frames out; trains nothing but what ``evaluation`` trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from iqalib import evaluation, feature_table, metrics, tables

#: Where a risk–coverage curve is defined (images with a true class): each labelled group that
#: can be misclassified, and all of them together (held-out originals, distorted and adversarial
#: images) as they would arrive at the gate. The evaluated originals are all classified right, so
#: alone their curve is flat at accuracy 1.
ALL_LABELLED = "all labelled"
LABELLED_GROUPS = ("distorted", "adversarial", ALL_LABELLED)


def table(scores: Mapping[str, pd.DataFrame], sources: Mapping[str, str], paper_fpr: float,
          target_fpr: float, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per detector × group (not ``original``): ``detector, source, group, auroc, auroc_std``
    (held-out originals as negatives, mean over splits), ``detection_rate`` (at ``paper_fpr``,
    each split's threshold set on its ``oof`` rows), its photo-bootstrap interval,
    ``detection_rate_fpr05`` (at ``target_fpr``), ``false_alarm_rate`` (realised on held-out
    originals at ``paper_fpr``), ``fpr_at_95tpr`` (mean over splits), ``n`` and ``n_fit`` (clean
    images a fitted detector saw per split; 0 for one that fits nothing, NaN for ours)."""
    rows = []
    for name, s in scores.items():
        ev, calibration = s[s["role"] == "eval"], s[s["role"] == "oof"]
        _, auc = evaluation.roc_per_group(None, scores=s, n_points=2)
        main = tables.rates_from_scores(ev, calibration, paper_fpr, name, n_boot=n_boot, seed=seed).set_index("group")
        low = tables.rates_from_scores(ev, calibration, target_fpr, name, ci=False).set_index("group")
        fpr95 = _fpr_at_95tpr(ev)
        n_fit = float(s["n_fit"].mean()) if "n_fit" in s else float("nan")
        for a in auc.itertuples():
            g = a.group
            rows.append({"detector": name, "source": sources.get(name, ""), "group": g, "auroc": a.auc,
                         "auroc_std": a.auc_std, "detection_rate": main.loc[g, "detection_rate"],
                         "detection_rate_ci_low": main.loc[g, "detection_rate_ci_low"],
                         "detection_rate_ci_high": main.loc[g, "detection_rate_ci_high"],
                         "detection_rate_fpr05": low.loc[g, "detection_rate"],
                         "false_alarm_rate": main.loc["original", "detection_rate"],
                         "fpr_at_95tpr": fpr95.get(g, np.nan), "n": int(main.loc[g, "n"]), "n_fit": n_fit})
    return pd.DataFrame(rows)


def _fpr_at_95tpr(ev: pd.DataFrame) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for _, e in ev.groupby("split", sort=True):
        neg = e.loc[e["group"] == "original", "score"].to_numpy(float)
        for g in feature_table.ordered_groups(e["group"]):
            if g != "original":
                out.setdefault(g, []).append(metrics.fpr_at_tpr(neg, e.loc[e["group"] == g, "score"].to_numpy(float)))
    return {g: float(np.nanmean(v)) for g, v in out.items()}


def roc_points(scores: Mapping[str, pd.DataFrame], n_points: int = 101) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evaluation.roc_per_group`` per detector, stacked with a ``detector`` column: (points, auc)."""
    points, aucs = [], []
    for name, s in scores.items():
        p, a = evaluation.roc_per_group(None, scores=s, n_points=n_points)
        points.append(p.assign(detector=name))
        aucs.append(a.assign(detector=name))
    return pd.concat(points, ignore_index=True), pd.concat(aucs, ignore_index=True)


def risk_coverage(scores: Mapping[str, pd.DataFrame], groups: Sequence[str] = LABELLED_GROUPS,
                  n_points: int = 101) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gated classifier per detector and labelled group: accept held-out images of the group in
    order of rising score. Returns (curves, aurc). ``curves``: ``detector, group, coverage,
    accuracy`` (accuracy of the accepted images on a common coverage grid, averaged over splits).
    ``aurc``: ``detector, group, aurc, aurc_std`` (``metrics.aurc``, mean and std over splits),
    ``accuracy`` (all accepted), ``n``. A ``no detector`` row per group (a constant score) gives
    the AURC of accepting in arbitrary order: 1 − accuracy."""
    grid = np.linspace(0.0, 1.0, n_points)[1:]
    curves, rows = [], []
    first = next(iter(scores.values()))
    named = {**scores, "no detector": first.assign(score=0.0)}
    for name, s in named.items():
        ev = s[(s["role"] == "eval") & s["labelled"].astype(bool)]
        for g in groups:
            per_split, acc, aurcs, n = [], [], [], []
            chosen = ev if g == ALL_LABELLED else ev[ev["group"] == g]
            for _, e in chosen.groupby("split", sort=True):
                correct = e["correct"].to_numpy(bool)
                cov, risk = metrics.risk_coverage(correct, e["score"].to_numpy(float))
                # accuracy at coverage c: the first ceil(c·N) accepted images
                at = np.clip(np.ceil(grid * len(cov)).astype(int) - 1, 0, len(cov) - 1)
                per_split.append(1.0 - risk[at])
                aurcs.append(float(risk.mean()))
                acc.append(correct.mean())
                n.append(len(correct))
            if not per_split:
                continue
            curves.append(pd.DataFrame({"detector": name, "group": g, "coverage": grid,
                                        "accuracy": np.mean(per_split, axis=0)}))
            rows.append({"detector": name, "group": g, "aurc": float(np.mean(aurcs)),
                         "aurc_std": metrics.sample_std(aurcs), "accuracy": float(np.mean(acc)),
                         "n": int(round(np.mean(n)))})
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


def paper_points(paper_table5: pd.DataFrame, groups: Sequence[str] = ("distorted", "adversarial")) -> pd.DataFrame:
    """The paper's detector as points of the risk–coverage plane: coverage = 1 − its detection
    rate, accuracy = its accuracy on the images judged fit (Table V; 55 % → 85 % on adversarial
    images is its own example)."""
    t = paper_table5.set_index("group")
    return pd.DataFrame([{"group": g, "coverage": 1.0 - float(t.loc[g, "detection_rate"]),
                          "accuracy": float(t.loc[g, "fit_accuracy"])} for g in groups if g in t.index])


@dataclass
class Comparison:
    """The detectors' ``scores`` frames (name -> ``evaluation.split_scores`` layout) on one set of
    rows and splits, what each is (``sources``), and the settings every table of it shares."""

    scores: dict[str, pd.DataFrame]
    sources: dict[str, str]
    paper_fpr: float
    target_fpr: float
    n_boot: int = 1000
    seed: int = 0

    def table(self) -> pd.DataFrame:
        return table(self.scores, self.sources, self.paper_fpr, self.target_fpr, n_boot=self.n_boot, seed=self.seed)

    def roc(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return roc_points(self.scores)

    def risk_coverage(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return risk_coverage(self.scores)

    def paper_points(self, paper_table5: pd.DataFrame) -> pd.DataFrame:
        return paper_points(paper_table5)
