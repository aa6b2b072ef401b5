"""Tables I–V and the IQA metrics. Detector tables run on the SYNTHETIC features of test_detector
(machinery, not the paper's numbers); the bootstrap is checked against the hand-written one it
replaced."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from iqalib import evaluation, feature_table, metrics, tables
from tests.conftest import REPO
from tests.test_detector import N_SPLITS, _tiny_table, features, scores, splits  # noqa: F401  (shared module fixtures)


# -- Tables I–IV ----------------------------------------------------------------------------------


def test_table1_aggregates_per_dataset_and_classifier():
    pairs = pd.DataFrame({"dataset": ["a"] * 4 + ["b"] * 2, "classifier": ["m"] * 6,
                          "mos": [0.1, 0.2, 0.3, 0.4, 0.5, 0.7], "wup": [1.0, 0.5, 0.8, 0.2, 1.0, 1.0],
                          "top1": [1, 2, 1, 3, 5, 5], "top1_ref": [1, 1, 1, 1, 5, 5]})
    t = tables.table1(pairs).set_index("dataset")
    assert t.loc["a", "n_images"] == 4 and t.loc["a", "mos_median"] == pytest.approx(0.25)
    assert t.loc["a", "wup_mean"] == pytest.approx(0.625) and t.loc["a", "wup_std"] == pytest.approx(np.std([1, .5, .8, .2], ddof=1))
    assert t.loc["a", "top1_changed"] == pytest.approx(0.5) and t.loc["b", "top1_changed"] == 0


def test_group_summary_in_the_given_order_with_nan_dropped():
    df = pd.DataFrame({"group": ["b", "a", "a", "a", "b"], "quality": [0.5, 0.1, np.nan, 0.3, "bad"]})
    t = tables.group_summary(df, "quality", ["a", "b", "c"])
    assert list(t.columns) == ["group", "median", "mean", "std", "count"] and list(t["group"]) == ["a", "b", "c"]
    a, b, c = (t.iloc[i] for i in range(3))
    assert a["count"] == 2 and a["mean"] == pytest.approx(0.2) and a["std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert b["count"] == 1 and np.isnan(b["std"]) and c["count"] == 0 and np.isnan(c["mean"])


def test_table4_is_the_papers_layout_of_both_baselines():
    t = tables.table4(_tiny_table(), thresholds=(0.3, 0.35)).set_index("group")
    assert list(t.index) == ["original", "adversarial", "fool_ev"]
    assert list(t.columns) == ["n", "n_labelled", "accuracy", "detection_rate_q030", "fit_accuracy_q030",
                               "detection_rate_q035", "fit_accuracy_q035"]  # the paper's q030 names (paper_values.yaml)
    assert t.loc["original", "accuracy"] == pytest.approx(3 / 4)
    assert t.loc["original", "detection_rate_q030"] == pytest.approx(1 / 4)
    assert t.loc["original", "fit_accuracy_q030"] == pytest.approx(2 / 3)
    assert t.loc["adversarial", "detection_rate_q035"] == 0.5 and t.loc["adversarial", "fit_accuracy_q035"] == 0
    assert np.isnan(t.loc["fool_ev", "accuracy"]) and np.isnan(t.loc["fool_ev", "fit_accuracy_q035"])


# -- Table V and beyond ---------------------------------------------------------------------------


PAPER_FPR = 0.0857


def test_table5_contract_and_determinism(features):
    sc = evaluation.split_scores(features, n_splits=N_SPLITS, seed=0, progress=False)
    per_split, table5 = tables.table5(sc, PAPER_FPR, seed=0, n_boot=200)
    per_split2, table5b = tables.table5(evaluation.split_scores(features, n_splits=N_SPLITS, seed=0, progress=False),
                                        PAPER_FPR, seed=0, n_boot=200)
    pd.testing.assert_frame_equal(per_split, per_split2)
    pd.testing.assert_frame_equal(table5, table5b)
    assert list(table5.columns) == ["group", "n", "detection_rate", "detection_rate_std", "detection_rate_ci_low",
                                    "detection_rate_ci_high", "fit_accuracy", "fit_accuracy_std", "fit_accuracy_ci_low",
                                    "fit_accuracy_ci_high", "target_fpr", "false_alarm_rate", "detection_rate_fpr05",
                                    "detection_rate_default", "fit_accuracy_default"]
    assert list(table5["group"]) == list(feature_table.GROUPS)
    t = table5.set_index("group")
    assert t[["detection_rate"]].apply(lambda c: c.between(0, 1)).all().all()
    assert t.loc["fool_ev", "fit_accuracy"] != t.loc["fool_ev", "fit_accuracy"]  # NaN: no labels
    assert t.loc["fool_ev", "n"] == 20 and t.loc["adversarial", "n"] == 30 and t.loc["distorted", "n"] == 60
    assert t.loc["adversarial", "detection_rate"] > 0.8 and t.loc["original", "detection_rate"] < 0.25
    assert (t["false_alarm_rate"] == t.loc["original", "detection_rate"]).all()
    assert set(per_split["split"]) == set(range(N_SPLITS)) and per_split["best_params"].notna().all()
    assert per_split.groupby("split")["threshold"].nunique().eq(1).all()


def _other_held_out_originals(scores: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The same scores with every held-out original's score replaced by another value."""
    changed = scores.copy()
    held = (changed["role"] == "eval") & (changed["group"] == "original")
    changed.loc[held, "score"] = np.random.default_rng(seed).normal(0, 10, int(held.sum()))
    return changed


def test_no_operating_point_is_set_on_held_out_rows(features, scores):
    """Replacing the held-out originals' scores changes their own flags, and nothing else: every
    threshold, and every other group's rate, comes from training data."""
    changed = _other_held_out_originals(scores)
    per_split, t5 = tables.table5(scores, PAPER_FPR, n_boot=50)
    per_split2, t5b = tables.table5(changed, PAPER_FPR, n_boot=50)
    pd.testing.assert_series_equal(per_split["threshold"], per_split2["threshold"])
    others = t5["group"] != "original"
    columns = ["detection_rate", "detection_rate_std", "fit_accuracy", "detection_rate_fpr05"]
    pd.testing.assert_frame_equal(t5.loc[others, columns], t5b.loc[others, columns])
    for fpr in (0.05, PAPER_FPR):
        a = evaluation.rates_at_false_alarm(features, scores=scores, target_fpr=fpr, n_boot=50)
        b = evaluation.rates_at_false_alarm(features, scores=changed, target_fpr=fpr, n_boot=50)
        assert (a["threshold"] == b["threshold"]).all()
        pd.testing.assert_frame_equal(a[a["group"] != "original"], b[b["group"] != "original"])


def test_rates_at_false_alarm(features, scores):
    rates = evaluation.rates_at_false_alarm(features, scores=scores, target_fpr=0.1, n_boot=200).set_index("group")
    oof = scores[(scores["role"] == "oof") & (scores["group"] == "original")]
    thresholds = tables.thresholds_at_fpr(oof, 0.1)
    assert all(np.mean(g["score"] > thresholds[k]) <= 0.1 for k, g in oof.groupby("split"))  # on training rows
    assert rates.loc["original", "threshold"] == pytest.approx(np.mean(list(thresholds.values())))
    assert (rates["method"] == "fit_for_task").all() and (rates["target_fpr"] == 0.1).all()
    assert (rates["detection_rate_ci_low"] <= rates["detection_rate"] + 1e-12).all()
    assert (rates["detection_rate"] <= rates["detection_rate_ci_high"] + 1e-12).all()


def test_detector_separates_synthetic_data_and_ablation_order(features, splits, scores):
    """SYNTHETIC data built so that both top-5 and quality carry signal."""
    _, auc = evaluation.roc_per_group(features, scores=scores)
    auc = auc.set_index("group")
    assert auc.loc["adversarial", "auc"] > 0.9
    table = evaluation.ablation(features, splits, seed=0, scores={"top5+quality": scores},
                            progress=False).set_index(["features", "group"])
    both = table.loc[("top5+quality", "adversarial"), "auc"]
    assert both == pytest.approx(auc.loc["adversarial", "auc"])
    assert both >= table.loc[("top5", "adversarial"), "auc"]
    assert both >= table.loc[("quality", "adversarial"), "auc"]
    assert np.isnan(table.loc[("quality", "original"), "auc"])
    # fooling images are confident: only quality sees them
    assert table.loc[("quality", "fool_gd"), "auc"] > table.loc[("top5", "fool_gd"), "auc"]


def test_kernel_ablation_reuses_given_scores_and_covers_each_choice(features, splits, scores):
    table = evaluation.kernel_ablation(features, splits, seed=0, scores={"linear (default)": scores},
                                       choices={"linear (default)": ("linear",), "rbf only": ("rbf",)})
    assert list(dict.fromkeys(table["kernel"])) == ["linear (default)", "rbf only"]
    assert set(table["group"]) == set(features["group"])
    _, auc = evaluation.roc_per_group(features, scores=scores)
    given = table[table["kernel"] == "linear (default)"].set_index("group")["auc"]
    assert given["adversarial"] == pytest.approx(auc.set_index("group").loc["adversarial", "auc"])


def test_matched_threshold_leaves_the_share_of_originals_below():
    frame = pd.DataFrame({"group": ["original"] * 100 + ["fool_gd"] * 5,
                          "quality": list(np.linspace(0.5, 0.99, 100)) + [0.1] * 5})
    t = tables.matched_threshold(frame, 0.05)
    below = (frame.loc[frame["group"] == "original", "quality"] < t).mean()
    assert 0.03 <= below <= 0.06 and t == round(t, 3)
    assert tables.threshold_suffix(0.3) == "q030" and tables.threshold_suffix(0.828) == "q0.828"


# -- the bootstrap --------------------------------------------------------------------------------


def _hand_written_bootstrap(data, statistic=None, *, paired=True, n_boot=1000, alpha=0.05, seed=0):
    """The percentile bootstrap ``metrics.bootstrap_ci`` replaced (kept here as the reference)."""
    samples = tuple(np.asarray(d, float) for d in data) if isinstance(data, tuple) else (np.asarray(data, float),)
    rng = np.random.default_rng(seed)
    n = len(samples[0])
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        draw = [x[idx] for x in samples] if paired else [x[rng.integers(0, len(x), len(x))] for x in samples]
        stats.append(draw[0].mean() if statistic is None else statistic(*draw))
    stats = np.asarray(stats, float)
    stats = stats[~np.isnan(stats)]
    return tuple(np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)]))


def _ratio(w, c, axis=-1):
    return (w * c).sum(axis) / w.sum(axis)


def test_bootstrap_ci_brackets_the_estimate():
    values = np.random.default_rng(0).random(200) < 0.3
    low, high = metrics.bootstrap_ci((values,), n_boot=500, seed=1)
    assert low < values.mean() < high and 0 <= low and high <= 1
    assert metrics.bootstrap_ci((values,), n_boot=500, seed=1) == (low, high)  # seeded
    w, c = np.random.default_rng(1).random(100), np.random.default_rng(2).random(100) < 0.6
    ratio = float((w * c).sum() / w.sum())
    lo, hi = metrics.bootstrap_ci((w, c), _ratio, paired=True, n_boot=300)
    assert lo < ratio < hi
    assert metrics.bootstrap_ci((np.ones(5),)) == (1.0, 1.0)
    assert np.isnan(metrics.bootstrap_ci((np.ones(1),))).all()
    # a difference of two independent rates: each sample resampled on its own
    a, b = values[:100], values[100:]
    lo, hi = metrics.bootstrap_ci((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=False, n_boot=300)
    assert lo < a.mean() - b.mean() < hi
    # resamples without any fit image give NaN ratios and are left out rather than poisoning the CI
    with np.errstate(invalid="ignore"):
        lo, hi = metrics.bootstrap_ci((np.r_[1.0, np.zeros(9)], np.zeros(10)), _ratio)
    assert (lo, hi) == (0.0, 0.0)


def test_bootstrap_ci_matches_the_hand_written_one():
    rng = np.random.default_rng(3)
    flags = rng.random(200) < 0.3
    w, c = rng.random(150), rng.random(150) < 0.7
    for ours, ref in [(metrics.bootstrap_ci((flags,), n_boot=2000, seed=5), _hand_written_bootstrap(flags, n_boot=2000)),
                      (metrics.bootstrap_ci((w, c), _ratio, n_boot=2000, seed=5),
                       _hand_written_bootstrap((w, c), _ratio, n_boot=2000))]:
        assert ours == pytest.approx(ref, abs=0.02)


def test_table5_intervals_are_the_photo_bootstrap_of_the_reported_mean(scores):
    """Point and interval from one procedure: the mean over splits, recomputed on resampled photos."""
    _, t5 = tables.table5(scores, PAPER_FPR, n_boot=1000, seed=0)
    ev = scores[scores["role"] == "eval"].copy()
    thresholds = tables.thresholds_at_fpr(scores[scores["role"] == "oof"], PAPER_FPR)
    ev["flag"] = tables.flag_at(ev, thresholds)
    rng = np.random.default_rng(7)
    for group in ("original", "adversarial", "distorted", "fool_ev"):
        g = ev[ev["group"] == group]
        unit = np.where(g["source_id"].isna(), "row:" + g["row"].astype(str), g["source_id"].astype(str))
        units = np.unique(unit)
        means = []
        for _ in range(400):  # by hand: draw photos, keep all their rows, mean over splits of the split rates
            drawn = pd.Series(rng.choice(units, len(units))).value_counts()
            w = pd.Series(unit).map(drawn).fillna(0).to_numpy()
            per_split = [np.sum(w[m] * g["flag"].to_numpy()[m]) / np.sum(w[m])
                         for m in (g["split"].to_numpy() == k for k in sorted(set(g["split"]))) if np.sum(w[m]) > 0]
            means.append(np.mean(per_split))
        row = t5.set_index("group").loc[group]
        by_split = [g["flag"].to_numpy()[g["split"].to_numpy() == k].mean() for k in sorted(set(g["split"]))]
        assert row["detection_rate"] == pytest.approx(np.mean(by_split))  # the point: the same mean, unweighted
        ref = np.percentile(means, [2.5, 97.5])
        assert (row["detection_rate_ci_low"], row["detection_rate_ci_high"]) == pytest.approx(ref, abs=0.03)


def test_every_reported_value_lies_within_its_interval(features, scores):
    frames = [tables.table5(scores, PAPER_FPR, n_boot=300)[1],
              evaluation.rates_at_false_alarm(features, scores=scores, target_fpr=0.05, n_boot=300)]
    for frame in frames:
        for low in [c for c in frame.columns if c.endswith("_ci_low")]:
            name = low.removesuffix("_ci_low")
            ok = frame[[name, low, f"{name}_ci_high"]].dropna()
            assert ((ok[low] <= ok[name] + 1e-12) & (ok[name] <= ok[f"{name}_ci_high"] + 1e-12)).all(), frame


# -- IQA metrics ----------------------------------------------------------------------------------


def test_correlations_match_scipy_and_refuse_degenerate_input():
    rng = np.random.default_rng(0)
    mos = rng.random(30)
    pred = mos + rng.normal(0, 0.2, 30)
    pred[3] = np.nan
    srocc, plcc = metrics.correlations(pred, mos)
    ok = ~np.isnan(pred)
    assert srocc == pytest.approx(spearmanr(pred[ok], mos[ok])[0]) and plcc == pytest.approx(pearsonr(pred[ok], mos[ok])[0])
    assert np.isnan(metrics.correlations(np.ones(10), mos[:10])).all()
    assert np.isnan(metrics.correlations(pred[:2], mos[:2])).all()


def test_mean_std_and_iqa_performance():
    per_split = pd.DataFrame({"split": [0, 1, 2], "n_test": [10, 12, 14], "srocc": [0.5, 0.7, np.nan],
                              "plcc": [0.4, 0.6, 0.8], "test_groups": ["a,b", "c,d", "e,f"]})
    assert metrics.mean_std(per_split, ["srocc"]) == pytest.approx({"srocc": 0.6, "srocc_std": np.std([0.5, 0.7], ddof=1)})
    mos = np.linspace(0, 1, 20)
    perf = tables.iqa_performance(per_split, "embedded", "pseudo-MOS", {"live": (mos ** 2, mos)})
    assert list(perf.columns) == ["dataset", "split", "target", "n", "srocc", "srocc_std", "plcc", "plcc_std"]
    assert list(perf["dataset"]) == ["embedded", "live"] and perf.loc[0, "n"] == 12
    assert perf.loc[0, "plcc"] == pytest.approx(0.6) and perf.loc[1, "srocc"] == pytest.approx(1.0)
    assert np.isnan(perf.loc[1, "srocc_std"]) and perf.loc[1, "n"] == 20 and "2 held out" in perf.loc[0, "split"]


def test_type_level_oracle_and_per_distortion():
    rows = [{"ref_id": r, "distortion": d, "level": lv, "mos": 1 - 0.15 * lv - (0.1 if d == "jpeg" else 0) + 0.01 * i,
             "pred": 1 - 0.1 * lv + 0.02 * i}
            for i, r in enumerate("abcd") for d in ("blur", "jpeg") for lv in range(1, 6)]
    table = pd.DataFrame(rows)
    oracle = tables.type_level_oracle(table, table["ref_id"].to_numpy(), [["a"], ["d"]])
    assert oracle.shape == (2,) and (oracle > 0.9).all()
    held = pd.concat([table[table["ref_id"] == r].assign(split=k) for k, r in enumerate("ad")], ignore_index=True)
    by_type = tables.per_distortion(held).set_index("distortion")
    assert set(by_type.index) == {"blur", "jpeg"} and (by_type["n"] == 10).all()
    assert np.allclose(by_type["spearman_level_pred_within_image"], -1.0)
    assert (by_type["spearman_level_mos_pooled"] < 0).all()


def test_learning_curve_keeps_the_held_out_pairs_and_ends_at_the_full_detector(features, splits, scores):
    from sklearn.metrics import roc_auc_score

    curve = evaluation.learning_curve(features, splits, fractions=(0.25, 1.0), seed=0)
    pd.testing.assert_frame_equal(evaluation.learning_curve(features, splits, fractions=(0.25, 1.0), seed=0, scores=scores),
                                  curve)  # Table V's scores stand in for the full share
    assert list(curve["fraction"]) == [0.25, 1.0]
    assert list(curve["train_pairs"]) == [round(0.25 * len(splits[0][0])), len(splits[0][0])]
    assert (curve["test_pairs"] == len(splits[0][1])).all()  # the same held-out pairs at every share
    # all the training pairs: the detector of Table V on the same splits
    _, auc = evaluation.roc_per_group(features, scores=scores)
    assert curve["auc"].iloc[-1] == pytest.approx(auc.set_index("group").loc["adversarial", "auc"])
    assert curve["auc"].between(0, 1).all() and curve["auc_std"].ge(0).all()
    # quality alone needs no training: one value, computed by hand on each split's test pairs
    per_split = [roc_auc_score(t["group"] == "adversarial", -t["quality"]) for t in (
        features[features["source_id"].isin(set(te)) & features["group"].isin(["original", "adversarial"])]
        for _, te in splits)]
    assert list(curve["quality_auc"]) == pytest.approx([np.mean(per_split)] * len(curve))
    with pytest.raises(ValueError, match=r"fractions must lie in \(0, 1\]"):
        evaluation.learning_curve(features, splits, fractions=(0.0,))


def test_every_committed_table_value_lies_within_its_interval():
    """Over the rendered default run: each value that has ``_ci_low``/``_ci_high`` twins lies between them."""
    folder = REPO / "outputs" / "default" / "tables"
    checked = 0
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path)
        for low in [c for c in frame.columns if c.endswith("_ci_low")]:
            name = low.removesuffix("_ci_low")
            if name not in frame or f"{name}_ci_high" not in frame:
                continue
            ok = frame[[name, low, f"{name}_ci_high"]].dropna()
            outside = ok[(ok[name] < ok[low] - 1e-12) | (ok[name] > ok[f"{name}_ci_high"] + 1e-12)]
            assert outside.empty, f"{path.name}: {name} outside its interval in rows {list(outside.index)}"
            checked += len(ok)
    assert checked > 0


def test_fit_cap_fits_on_fewer_photos_and_judges_the_same_rows(features, splits):
    full = evaluation.split_scores(features, splits[:2], seed=0, progress=False)
    capped = evaluation.split_scores(features, splits[:2], seed=0, progress=False, fit_cap=10)
    for k in (0, 1):
        f, c = full[full["split"] == k], capped[capped["split"] == k]
        assert sorted(c.loc[c["role"] == "eval", "row"]) == sorted(f.loc[f["role"] == "eval", "row"])
        fitted = set(c.loc[c["role"] == "train", "source_id"])
        assert len(fitted) == 10 and fitted < set(f.loc[f["role"] == "train", "source_id"])
        assert set(c.loc[c["role"] == "oof", "row"]) == set(c.loc[c["role"] == "train", "row"])
    again = evaluation.split_scores(features, splits[:2], seed=0, progress=False, fit_cap=10)
    pd.testing.assert_frame_equal(capped, again)


def test_table1_takeaway_gives_a_range_only_where_there_is_one():
    from iqalib import takeaways

    one = pd.DataFrame({"n_images": [40.0, np.nan], "wup_mean": [0.6471, np.nan], "paper_wup_mean": [np.nan, 0.61]})
    assert "0.647 here, 0.610 in the paper" in takeaways.table1(one)
    two = one.assign(n_images=[40.0, 20.0], wup_mean=[0.6471, 0.702])
    assert "0.647–0.702 here" in takeaways.table1(two)
