"""Tables I–V and the IQA tables, shaped from the features table and from detectors' per-split
scores — pure pandas/numpy/scipy: no I/O, no training (``report`` writes and shows them;
``paper_vs_ours`` adds the paper's values; ``evaluation`` trains the detectors whose scores
these tables summarise; the numbers themselves come from ``metrics``).

Table I ``table1``; Tables II–III ``group_summary``; Table IV ``baseline1``/``baseline2``/``table4``;
Table V ``table5``; any detector's scores at a false-alarm rate ``rates_from_scores``; the IQA
tables ``iqa_performance``, ``type_level_oracle`` and ``per_distortion``. Notebook 05's tables
are ``robust_tables``.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iqalib import feature_table, metrics


# --------------------------------------------------------------------------------------------------
# Tables I–IV


def table1(pairs: pd.DataFrame) -> pd.DataFrame:
    """Paper Table I: per dataset and classifier, subjective MOS and Wu-Palmer similarity between
    the top-1 on the reference and on each distorted image (median / mean / std / count)."""
    rows = []
    for (dataset, classifier), g in pairs.groupby(["dataset", "classifier"], sort=False):
        rows.append({
            "dataset": dataset, "classifier": classifier, "n_images": len(g),
            "mos_median": g["mos"].median(), "mos_mean": g["mos"].mean(), "mos_std": g["mos"].std(ddof=1),
            "wup_median": g["wup"].median(), "wup_mean": g["wup"].mean(), "wup_std": g["wup"].std(ddof=1),
            "top1_changed": float((g["top1"] != g["top1_ref"]).mean()),
        })
    return pd.DataFrame(rows)


def fooling_rate(features: pd.DataFrame) -> float:
    """Share of the adversarial rows whose top-1 differs from their original's (``correct_vs_clean``
    false): the UAP's fooling rate on the evaluated originals, read from the table's own pass."""
    adv = features.loc[features["group"] == "adversarial", "correct_vs_clean"].dropna()
    return float(1.0 - adv.astype(bool).mean()) if len(adv) else float("nan")


def summarize(values: pd.Series) -> dict[str, float]:
    """median / mean / std (ddof=1) / count of a numeric series, NaNs dropped."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return {"median": float(v.median()) if len(v) else float("nan"), "mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "count": int(len(v))}


def group_summary(df: pd.DataFrame, column: str, groups: list[str]) -> pd.DataFrame:
    """median / mean / std / count of ``column`` per group, in the given order (Tables II and III)."""
    rows = [{"group": g, **summarize(df.loc[df["group"] == g, column])} for g in groups]
    return pd.DataFrame(rows)


def threshold_suffix(t: float) -> str:
    """0.3 -> 'q030', 0.35 -> 'q035': the paper's column names (``paper_values.yaml``)."""
    hundredths = round(t * 100)
    return f"q{hundredths:03d}" if abs(t * 100 - hundredths) < 1e-9 else f"q{t:g}"


def table4(features: pd.DataFrame, thresholds: Sequence[float] = (0.3, 0.35)) -> pd.DataFrame:
    """Paper Table IV, one row per group in paper order: Baseline-1 ``accuracy`` (every image
    accepted; with ``n``, ``n_labelled``), then per threshold T Baseline-2's ``detection_rate_qT``
    (share with predicted quality < T) and ``fit_accuracy_qT`` (accuracy on the rest), T in hundredths
    (``q030`` = 0.30) as in the paper's layout. Fractions in [0, 1]; NaN where undefined (fooling
    images have no true class). See ``baseline1`` / ``baseline2``.
    """
    table = baseline1(features)
    b2 = baseline2(features, thresholds)
    for t in thresholds:
        part = b2[b2["threshold"] == float(t)].set_index("group")
        suffix = threshold_suffix(float(t))
        for metric in ("detection_rate", "fit_accuracy"):
            table[f"{metric}_{suffix}"] = table["group"].map(part[metric])
    return table


def matched_threshold(features: pd.DataFrame, share_below: float) -> float:
    """The quality threshold below which ``share_below`` of the originals fall, rounded to 3
    decimals: the paper's Baseline-2 operating point carried to another quality scale (the paper's
    0.3 on human MOS leaves 2.44 % of ImageNet validation images below it, Sec. IV)."""
    q = features.loc[features["group"] == "original", "quality"].dropna()
    return round(float(q.quantile(share_below)), 3) if len(q) else float("nan")


# --------------------------------------------------------------------------------------------------
# bootstrap intervals over images


def _units(ev: pd.DataFrame) -> np.ndarray:
    """The independent unit of each evaluated row: its source photo (views, distortions and the
    UAP twin of one photo share it), or the image itself when it has none (fooling images)."""
    src = feature_table.sources(ev) if "source_id" in ev else pd.Series([None] * len(ev), index=ev.index)
    rows = ev["row"].astype(str).radd("row:")
    return np.where(src.isna(), rows, src.astype(object)).astype(str)


def _photo_bootstrap(ev: pd.DataFrame, flag: str, n_boot: int, seed: int,
                     alpha: float = 0.05) -> tuple[dict[str, float], dict[str, float]]:
    """The Table V estimator and its interval from ONE procedure: the mean over splits of each
    split's detection rate (and of its accuracy on images judged fit), recomputed on ``n_boot``
    resamples of the photos (percentile bootstrap, seeded; a resampled photo brings all its rows in
    every split). Returns (point estimates, ``*_ci_low/_ci_high``); the point is the statistic on
    the sample itself, so it is the ``detection_rate``/``fit_accuracy`` the table reports."""
    # By hand, not metrics.bootstrap_ci / scipy.stats.bootstrap: the statistic is a mean over splits
    # of per-split ratios, and a resampled photo must bring its rows in EVERY split at once; as
    # multinomial weights on a (photo x split) count matrix all resamples are a few matrix products.
    units, unit_index = np.unique(_units(ev), return_inverse=True)
    splits, split_index = np.unique(ev["split"].to_numpy(), return_inverse=True)
    flagged = ev[flag].to_numpy(bool)
    fit_lab = ~flagged & ev["labelled"].to_numpy(bool)
    right = fit_lab & ev["correct"].to_numpy(bool)

    def counts(mask: np.ndarray | None) -> np.ndarray:
        out = np.zeros((len(units), len(splits)))
        np.add.at(out, (unit_index, split_index), 1.0 if mask is None else mask.astype(float))
        return out

    n, f, lab, ok = counts(None), counts(flagged), counts(fit_lab), counts(right)

    def statistic(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without fit images: NaN
            det = np.nanmean((w @ f) / (w @ n), axis=-1)
            acc = np.nanmean((w @ ok) / (w @ lab), axis=-1)
        return det, acc

    point = statistic(np.ones((1, len(units))))
    rng = np.random.default_rng(seed)
    batch = max(1, min(n_boot, 5_000_000 // max(1, len(units) * len(splits))))
    draws: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, n_boot, batch):
        w = rng.multinomial(len(units), np.full(len(units), 1.0 / len(units)), size=min(batch, n_boot - start))
        draws.append(statistic(w.astype(float)))
    out = {}
    for k, name in enumerate(("detection_rate", "fit_accuracy")):
        values = np.concatenate([d[k] for d in draws]) if draws else np.zeros(0)
        values = values[~np.isnan(values)]
        low, high = (np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(values)
                     else (np.nan, np.nan))
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return {"detection_rate": float(point[0][0]), "fit_accuracy": float(point[1][0])}, out


# --------------------------------------------------------------------------------------------------
# Operating points: thresholds from training data only


def thresholds_at_fpr(calibration: pd.DataFrame, target_fpr: float) -> dict[Any, float]:
    """Per split, the smallest score threshold that flags at most ``target_fpr`` of that split's
    calibration originals — the OUT-OF-FOLD scores of its TRAINING originals (``split_scores``'s
    ``oof`` rows) for a trained detector, the training half's originals for an untrained peer.
    Held-out rows never enter: an operating point is chosen on training data only."""
    out = {}
    for k, c in calibration.groupby("split", sort=True):
        neg = c.loc[c["group"] == "original", "score"].to_numpy(float)
        if not len(neg):
            raise ValueError(f"split {k}: no training originals to set the false-alarm threshold on")
        out[k] = metrics.threshold_at_fpr(metrics.finite(neg), target_fpr)
    return out


def flag_at(ev: pd.DataFrame, thresholds: Mapping[Any, float]) -> np.ndarray:
    """Flagged (not fit) at each row's split threshold; +inf/NaN scores (unusable) are flagged."""
    t = ev["split"].map(thresholds).to_numpy(float)
    return ~(ev["score"].to_numpy(float) <= t)


# --------------------------------------------------------------------------------------------------
# Table V


def _split_rates(ev: pd.DataFrame, flag: str = "flagged") -> pd.DataFrame:
    rows = []
    for (k, group), g in ev.groupby(["split", "group"], sort=False):
        flagged = g[flag].to_numpy(bool)
        fit_lab = ~flagged & g["labelled"].to_numpy(bool)
        rows.append({"split": k, "group": group, "n": len(g), "n_flagged": int(flagged.sum()),
                     "detection_rate": float(flagged.mean()), "n_fit": int((~flagged).sum()),
                     "fit_accuracy": metrics.mean_or_nan(g["correct"].to_numpy(bool)[fit_lab])})
    out = pd.DataFrame(rows)
    order = {g: i for i, g in enumerate(feature_table.ordered_groups(out["group"]))}
    return out.sort_values(["split", "group"], key=lambda s: s.map(order) if s.name == "group" else s,
                           ignore_index=True)


def _summarise(per_split: pd.DataFrame, ev: pd.DataFrame, flag: str, ci: bool, n_boot: int,
               seed: int) -> pd.DataFrame:
    rows = []
    for group in feature_table.ordered_groups(per_split["group"]):
        g = per_split[per_split["group"] == group]
        row = {"group": group, "detection_rate": float(g["detection_rate"].mean()),
               "detection_rate_std": metrics.sample_std(g["detection_rate"]),
               "fit_accuracy": float(g["fit_accuracy"].mean()) if g["fit_accuracy"].notna().any() else float("nan"),
               "fit_accuracy_std": metrics.sample_std(g["fit_accuracy"]), "n": int(round(g["n"].mean()))}
        if ci:
            # the point is the bootstrap's statistic on the sample itself, which is the mean over
            # splits above (test); taking it from there makes "one procedure" literal
            point, interval = _photo_bootstrap(ev[ev["group"] == group], flag, n_boot, seed)
            row.update({**point, **interval})
        rows.append(row)
    return pd.DataFrame(rows)


def table5(scores: pd.DataFrame, target_fpr: float, *, secondary_fpr: Sequence[float] = (0.05,), ci: bool = True,
           n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paper Table V from ``evaluation.split_scores`` (one detector per paired 50/50 split; see there
    for who is evaluated), at the operating point of ``target_fpr`` false alarms (the paper's
    8.57 %), each split's threshold set on the out-of-fold scores of its TRAINING originals.

    Returns ``per_split`` (``split, group, n, n_flagged, detection_rate, n_fit, fit_accuracy,
    threshold, best_params``) and ``table5`` (one row per group): ``detection_rate`` (share
    judged not fit; for ``original`` the realised false-alarm rate on held-out originals),
    ``fit_accuracy`` (the classifier's accuracy on images judged fit; NaN for fooling images: no
    true class), each the mean over splits with its sample std over splits and, with ``ci``, its
    95 % percentile-bootstrap interval over photos (``n_boot`` resamples seeded by ``seed``) of the
    SAME mean; ``n`` (mean images per split); ``false_alarm_rate`` (the realised rate, on every
    row); secondary operating points: ``detection_rate_fpr<NN>`` per ``secondary_fpr`` (the same
    training-data rule) and ``detection_rate_default`` / ``fit_accuracy_default`` at the SVM's
    own threshold (decision > 0). Rates are fractions in [0, 1].
    """
    ev = scores[scores["role"] == "eval"].copy()
    calibration = scores[scores["role"] == "oof"]
    thresholds = thresholds_at_fpr(calibration, target_fpr)
    ev["at_target"] = flag_at(ev, thresholds)
    per_split = _split_rates(ev, "at_target")
    per_split["threshold"] = per_split["split"].map(thresholds)
    per_split["best_params"] = per_split["split"].map(ev.groupby("split")["best_params"].first())
    table = _summarise(per_split, ev, "at_target", ci, n_boot, seed)
    if not ci:
        table = table.assign(detection_rate_ci_low=np.nan, detection_rate_ci_high=np.nan,
                             fit_accuracy_ci_low=np.nan, fit_accuracy_ci_high=np.nan)
    table["false_alarm_rate"] = float(per_split.loc[per_split["group"] == "original", "detection_rate"].mean())
    table["target_fpr"] = float(target_fpr)
    for fpr in secondary_fpr:
        ev["at_other"] = flag_at(ev, thresholds_at_fpr(calibration, fpr))
        other = _split_rates(ev, "at_other").groupby("group")["detection_rate"].mean()
        table[f"detection_rate_fpr{round(fpr * 100):02d}"] = table["group"].map(other)
    default = rates_at_default(scores).set_index("group")
    table["detection_rate_default"] = table["group"].map(default["detection_rate"])
    table["fit_accuracy_default"] = table["group"].map(default["fit_accuracy"])
    order = ["group", "n", "detection_rate", "detection_rate_std", "detection_rate_ci_low", "detection_rate_ci_high",
             "fit_accuracy", "fit_accuracy_std", "fit_accuracy_ci_low", "fit_accuracy_ci_high", "target_fpr",
             "false_alarm_rate"]
    return per_split, table[order + [c for c in table.columns if c not in order]]


def rates_at_default(scores: pd.DataFrame) -> pd.DataFrame:
    """Per group, at the SVM's own threshold (decision > 0, the ``flagged`` column of the eval
    rows): ``group, detection_rate, detection_rate_std, fit_accuracy, fit_accuracy_std, n``, mean
    and sample std over splits. A secondary operating point: it is whatever false-alarm rate the
    fitted SVM happens to give, not one chosen for the task."""
    ev = scores[scores["role"] == "eval"]
    return _summarise(_split_rates(ev, "flagged"), ev, "flagged", False, 0, 0)


# --------------------------------------------------------------------------------------------------
# any detector's scores at a false-alarm rate


def rates_from_scores(ev: pd.DataFrame, calibration: pd.DataFrame, target_fpr: float, method: str, *,
                      n_boot: int = 1000, seed: int = 0, ci: bool = True) -> pd.DataFrame:
    """Detection rate per group of any detector at ``target_fpr`` false alarms, the threshold of
    each split set on ``calibration`` (``split, group, score`` of training rows only: see
    ``thresholds_at_fpr``), never on the evaluated rows.

    ``ev``: one row per (split, evaluated image) with ``split, group, row, score, correct,
    labelled`` (and ``source_id`` for the photo bootstrap; higher score = more likely not fit;
    +inf/NaN = unusable = flagged). Columns: ``group, method, target_fpr, threshold (mean over
    splits), detection_rate, detection_rate_std, detection_rate_ci_low, detection_rate_ci_high, n``
    (estimator and interval as in ``table5``); for ``original`` the rate is the realised false-alarm rate.
    """
    thresholds = thresholds_at_fpr(calibration, target_fpr)
    ev = ev.assign(at_fpr=flag_at(ev, thresholds))
    table = _summarise(_split_rates(ev, "at_fpr"), ev, "at_fpr", ci, n_boot, seed)
    if not ci:
        table = table.assign(detection_rate_ci_low=np.nan, detection_rate_ci_high=np.nan)
    table = table[["group", "detection_rate", "detection_rate_std", "detection_rate_ci_low",
                   "detection_rate_ci_high", "n"]]
    table.insert(1, "method", method)
    table.insert(2, "target_fpr", float(target_fpr))
    table.insert(3, "threshold", float(np.mean(list(thresholds.values()))))
    return table


# --------------------------------------------------------------------------------------------------
# IQA metrics


def iqa_performance(per_split: pd.DataFrame, train_name: str, target: str,
                    cross: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> pd.DataFrame:
    """IQA performance table: one row for the content-disjoint splits of the training data (``per_split``
    from ``quality.evaluate_splits``: mean ± std of SROCC/PLCC, ``n`` = mean held-out images), then
    one row per cross-dataset test set ``name -> (predicted quality, subjective score)`` scored by a
    model trained on ``train_name`` (``n`` = images with both values). Columns: ``dataset, split,
    target, n, srocc, srocc_std, plcc, plcc_std``; ``target`` names what was predicted.
    """
    held = ""
    if "test_groups" in per_split and len(per_split):
        held = f", {len(str(per_split['test_groups'].iloc[0]).split(','))} held out each"
    rows = [{"dataset": train_name, "split": f"held-out references ({len(per_split)} splits{held})",
             "target": target, "n": int(round(per_split["n_test"].mean())) if len(per_split) else 0,
             **metrics.mean_std(per_split, ["srocc", "plcc"])}]
    for name, (pred, mos) in (cross or {}).items():
        pred, mos = np.asarray(pred, float), np.asarray(mos, float)
        srocc, plcc = metrics.correlations(pred, mos)
        rows.append({"dataset": name, "split": f"cross-dataset (trained on {train_name})", "target": "MOS",
                     "n": int(np.sum(~np.isnan(pred) & ~np.isnan(mos))), "srocc": srocc, "srocc_std": np.nan,
                     "plcc": plcc, "plcc_std": np.nan})
    return pd.DataFrame(rows, columns=["dataset", "split", "target", "n", "srocc", "srocc_std", "plcc", "plcc_std"])


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
        out.append(metrics.correlations(guess, table.loc[test, "mos"].to_numpy(float))[0])
    return np.asarray(out)


def per_distortion(held: pd.DataFrame) -> pd.DataFrame:
    """Per distortion type of ``quality.heldout_predictions`` rows: ``srocc`` (pred vs mos); the
    Spearman between level and pred within one image (per split and ``ref_id``, then averaged: −1 = a
    stronger distortion always scores lower); and level-vs-pred / level-vs-mos Spearman pooled over
    images."""
    within = held.groupby(["split", "distortion", "ref_id"]).apply(
        lambda g: stats.spearmanr(g["level"], g["pred"]).statistic, include_groups=False)
    within = within.groupby(level="distortion").mean()
    return held.groupby("distortion").apply(lambda g: pd.Series({
        "n": len(g), "srocc": metrics.correlations(g["pred"].to_numpy(float), g["mos"].to_numpy(float))[0],
        "spearman_level_pred_within_image": within[g.name],
        "spearman_level_pred_pooled": stats.spearmanr(g["level"], g["pred"]).statistic,
        "spearman_level_mos_pooled": stats.spearmanr(g["level"], g["mos"]).statistic}),
        include_groups=False).reset_index()


def baseline1(features: pd.DataFrame) -> pd.DataFrame:
    """Baseline 1 (Table IV): classifier accuracy per group, every image accepted.

    Columns: ``group, n, n_labelled, accuracy`` (accuracy in [0, 1]). Fooling images have no true
    class, so their accuracy is undefined and reported as NaN.
    """
    labelled, correct = feature_table.labelled(features), feature_table.correct(features)
    rows = []
    for group in feature_table.ordered_groups(features["group"]):
        m = (features["group"] == group).to_numpy()
        lab = m & labelled
        rows.append({"group": group, "n": int(m.sum()), "n_labelled": int(lab.sum()),
                     "accuracy": metrics.mean_or_nan(correct[lab])})
    return pd.DataFrame(rows)


def baseline2(features: pd.DataFrame, thresholds: Sequence[float] = (0.3, 0.35)) -> pd.DataFrame:
    """Baseline 2 (Table IV): reject an image when its predicted quality < threshold.

    One row per (group, threshold): ``group, threshold, n, detection_rate, n_fit, fit_accuracy``.
    ``detection_rate`` in [0, 1] is the share flagged not fit (NaN quality counts as not fit);
    ``fit_accuracy`` in [0, 1] is the classifier's accuracy on images judged fit (NaN when no image
    is judged fit or the group has no labels, i.e. fooling images).
    """
    quality = features["quality"].to_numpy(float)
    labelled, correct = feature_table.labelled(features), feature_table.correct(features)
    rows = []
    for group in feature_table.ordered_groups(features["group"]):
        m = (features["group"] == group).to_numpy()
        for t in thresholds:
            flagged = ~(quality >= t)  # NaN quality -> flagged
            fit = m & ~flagged & labelled
            rows.append({"group": group, "threshold": float(t), "n": int(m.sum()),
                         "detection_rate": metrics.mean_or_nan(flagged[m]), "n_fit": int((m & ~flagged).sum()),
                         "fit_accuracy": metrics.mean_or_nan(correct[fit])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# The notebooks' smaller tables


def group_sizes(features: pd.DataFrame) -> pd.DataFrame:
    """Images per group of the features table, one row, groups in table order."""
    return features.groupby("group", sort=False).size().rename("images").to_frame().T


def iqa_overview(sets: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per IQA set and distortion: images, reference photos and mean score."""
    return pd.concat(sets.values()).groupby(["dataset", "distortion"]).agg(
        images=("path", "size"), references=("ref_id", "nunique"), mos_mean=("mos", "mean")).reset_index()


def table1_by_distortion(pairs: pd.DataFrame) -> pd.DataFrame:
    """Table I per distortion type: pairs, mean score, mean Wu-Palmer similarity, share of changed top-1."""
    return pairs.groupby(["dataset", "classifier", "distortion"]).agg(
        n=("wup", "size"), mos_mean=("mos", "mean"), wup_mean=("wup", "mean"),
        top1_changed=("top1", lambda s: float((s != pairs.loc[s.index, "top1_ref"]).mean()))).reset_index()


def table1_spearman(pairs: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of score and Wu-Palmer similarity per dataset, classifier and distortion
    (NaN where the similarity does not vary)."""
    return pairs.groupby(["dataset", "classifier", "distortion"]).apply(
        lambda g: stats.spearmanr(g["mos"], g["wup"]).statistic if g["wup"].nunique() > 1 else float("nan"),
        include_groups=False).rename("spearman_mos_wup").reset_index()


def uap_similarity(features: pd.DataFrame) -> pd.DataFrame:
    """The Adversarial group's rows with their original's top-1 (``pred_original``) and the Wu-Palmer
    similarity of the two top-1 classes (``wup``)."""
    from iqalib.semantic import wup_by_index

    orig = features[features["group"] == "original"].set_index("image_id")
    adv = features[features["group"] == "adversarial"].copy()
    adv["pred_original"] = adv["parent_id"].map(orig["pred"])
    adv["wup"] = wup_by_index(adv["pred_original"].astype(int).to_numpy(), adv["pred"].astype(int).to_numpy())
    return adv


def distorted_by_level(features: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Baseline-2 at quality < ``threshold`` on the Distorted group, per distortion and level:
    share rejected, classifier accuracy, mean quality, images."""
    dist = features[features["group"] == "distorted"].assign(rejected=lambda d: d["quality"] < threshold)
    return dist.groupby(["distortion", "level"]).agg(detection_rate=("rejected", "mean"), accuracy=("correct", "mean"),
                                                     quality=("quality", "mean"), n=("rejected", "size")).reset_index()


def iqa_ceiling(per_split: pd.DataFrame, oracle: np.ndarray) -> pd.DataFrame:
    """Held-out SROCC of the heads (``per_split``) beside the content-blind oracle's (``type_level_oracle``)."""
    return pd.DataFrame([{"predictor": "DTNIQ-f heads (no reference)", "srocc": per_split["srocc"].mean(),
                          "srocc_std": per_split["srocc"].std(ddof=1)},
                         {"predictor": "content-blind oracle: mean training score per (type, level)",
                          "srocc": np.mean(oracle), "srocc_std": np.std(oracle, ddof=1)}])
