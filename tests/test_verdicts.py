"""verdicts: each notebook's claims judged from hand-made tables. Every rule is checked on both
sides of its threshold (and, where it has one, the 'not testable' case), and each row's text must
carry the numbers it was judged on. Pure pandas: no model, no images."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iqalib import report, verdicts
from iqalib.tables import threshold_suffix

OK = {verdicts.REPRODUCED: True, verdicts.NOT_REPRODUCED: False, verdicts.NOT_TESTABLE: None}


def oks(rows: list[dict]) -> list[bool | None]:
    """The ``ok`` each row was judged with (reproduced / not reproduced / not testable)."""
    assert all(set(r) == set(report.VERDICT_COLUMNS) for r in rows), rows
    assert all(r["scope"] in report.SCOPES and r["judges"] in report.JUDGES for r in rows), rows
    return [OK[r["verdict"]] for r in rows]


# -- notebook 00 -----------------------------------------------------------------------------------


def _performance(srocc=0.85, plcc=0.82):
    return pd.DataFrame({"srocc": [srocc], "srocc_std": [0.02], "plcc": [plcc], "plcc_std": [0.03]})


def _per_type(**within):
    within = within or {"gaussian_blur": -0.9, "white_noise": -0.6}
    return pd.DataFrame({"distortion": list(within), "spearman_level_pred_within_image": list(within.values())})


def test_quality_model_passes_at_080_and_fails_just_below():
    rows = verdicts.quality_model(_performance(0.85, 0.82), _per_type(), "pseudo-MOS (HaarPSI)")
    assert oks(rows) == [True, True]
    assert "SROCC 0.850 ± 0.020, PLCC 0.820 ± 0.030 vs pseudo-MOS (HaarPSI)" == rows[0]["ours"]
    assert "not human opinion" in rows[0]["why"] and "0.80" in rows[0]["why"]
    assert rows[1]["ours"] == "gaussian_blur -0.90, white_noise -0.60"
    assert oks(verdicts.quality_model(_performance(0.80, 0.80), _per_type(), "MOS"))[0] is True  # ≥ 0.80
    assert oks(verdicts.quality_model(_performance(0.79, 0.90), _per_type(), "MOS"))[0] is False
    assert oks(verdicts.quality_model(_performance(0.90, 0.79), _per_type(), "MOS"))[0] is False
    assert "pseudo" not in verdicts.quality_model(_performance(), _per_type(), "MOS")[0]["why"]


def test_quality_model_needs_every_distortion_at_or_below_minus_half():
    assert oks(verdicts.quality_model(_performance(), _per_type(jpeg=-0.5, blur=-0.99), "MOS"))[1] is True
    rows = verdicts.quality_model(_performance(), _per_type(jpeg=-0.49, blur=-0.99), "MOS")
    assert oks(rows)[1] is False and "jpeg -0.49" in rows[1]["ours"]


# -- notebook 01 -----------------------------------------------------------------------------------


def _table1(wup_mean=0.9, top1_changed=0.10):
    ours = {"dataset": "a", "classifier": "m", "n_images": 10, "wup_mean": wup_mean, "top1_changed": top1_changed,
            "paper_wup_mean": np.nan}
    # the paper's own rows (no n_images) follow ours and must not be judged
    paper = [{"dataset": "TID2013", "classifier": "alexnet", "n_images": np.nan, "wup_mean": 1.0, "top1_changed": 0.0,
              "paper_wup_mean": v} for v in (0.812, 0.905)]
    return pd.DataFrame([ours, *paper])


def _pairs(wup):
    return pd.DataFrame({"dataset": "a", "classifier": "m", "mos": np.linspace(0.1, 1.0, len(wup)), "wup": wup})


RISING = np.linspace(0.3, 1.0, 10)


def test_quality_vs_accuracy_judges_our_rows_only():
    rows = verdicts.quality_vs_accuracy(_table1(0.9, 0.10), _pairs(RISING))
    assert oks(rows) == [True, True]
    assert rows[0]["paper"].startswith("mean Wu-Palmer similarity 0.812–0.905")
    assert rows[0]["ours"] == "a/m 0.900, top-1 changed 10%"
    assert rows[1]["ours"].startswith("a/m: Spearman 1.00 (p=")


@pytest.mark.parametrize("wup_mean, changed", [(1.0, 0.10), (0.9, 0.049)])
def test_quality_vs_accuracy_fails_when_the_top1_hardly_moves(wup_mean, changed):
    rows = verdicts.quality_vs_accuracy(_table1(wup_mean, changed), _pairs(RISING))
    assert oks(rows)[0] is False
    assert f"{wup_mean:.3f}" in rows[0]["ours"] and f"{changed:.0%}" in rows[0]["ours"]


def test_quality_vs_accuracy_correlation_rule():
    falling = verdicts.quality_vs_accuracy(_table1(), _pairs(RISING[::-1]))
    assert oks(falling)[1] is False and "Spearman -1.00" in falling[1]["ours"]
    weak = _pairs(RISING)
    weak["wup"] = [0.5, 1.0] * 5  # no significant rise
    assert oks(verdicts.quality_vs_accuracy(_table1(), weak))[1] is False
    flat = verdicts.quality_vs_accuracy(_table1(), _pairs(np.full(10, 0.7)))
    assert oks(flat)[1] is None and flat[1]["ours"] == "no variation in similarity"


# -- notebook 02 -----------------------------------------------------------------------------------


N = 8
Q_ORIG = np.linspace(0.5, 0.8, N)
C_ORIG = np.linspace(0.6, 0.9, N)


def _features(adv_shift=-0.1, conf_shift=-0.2, fool_quality=0.1):
    """Originals, their UAP children (quality / top-1 moved by the shifts, distinct per pair so the
    Wilcoxon test has no ties) and two fooling groups; one orphan child that must be ignored."""
    spread = np.arange(N) * 0.001
    orig = pd.DataFrame({"group": "original", "image_id": [f"o{i}" for i in range(N)], "parent_id": None,
                         "quality": Q_ORIG, "top1": C_ORIG})
    adv = pd.DataFrame({"group": "adversarial", "image_id": [f"a{i}" for i in range(N)],
                        "parent_id": [f"o{i}" for i in range(N)], "quality": Q_ORIG + adv_shift + spread,
                        "top1": C_ORIG + conf_shift + spread})
    orphan = pd.DataFrame({"group": ["adversarial"], "image_id": ["a_orphan"], "parent_id": ["gone"],
                           "quality": [5.0], "top1": [5.0]})
    fool = pd.concat([pd.DataFrame({"group": g, "image_id": [f"{g}{i}" for i in range(N)], "parent_id": None,
                                    "quality": fool_quality + spread, "top1": 0.5}) for g in ("fool_ev", "fool_gd")])
    return pd.concat([orig, adv, orphan, fool], ignore_index=True)


TABLE2 = pd.DataFrame({"group": ["original", "adversarial", "fool_ev", "fool_gd"],
                       "paper_mean": [0.601, 0.552, 0.301, 0.202]})
TABLE3 = pd.DataFrame({"group": ["original", "adversarial", "fool_ev", "fool_gd"], "paper_median": [0.911, 0.733, 0.465, np.nan],
                       "median": [0.9, 0.7, 0.5, 0.995], "count": [8, 8, 10, 10], "distinct_images": [8, 8, 10, 10]})


def test_adversarial_quality_reproduced_when_lower_and_significant():
    rows = verdicts.adversarial_quality(_features(), TABLE2, TABLE3, fooling_rate=0.8)
    assert oks(rows) == [True, True, True, True]
    assert rows[3]["ours"] == "fool_ev 0.500 (10 distinct of 10), fool_gd 0.995 (10 distinct of 10)"
    q_adv = Q_ORIG - 0.1 + np.arange(N) * 0.001
    assert rows[0]["paper"] == "mean 0.552 vs 0.601"
    assert f"mean {q_adv.mean():.3f} vs {Q_ORIG.mean():.3f}" in rows[0]["ours"] and f"{N} pairs" in rows[0]["ours"]
    assert rows[1]["paper"] == "Fool_EV 0.301, Fool_GD 0.202" and "fool_ev 0.104" in rows[1]["ours"]
    c_adv = C_ORIG - 0.2 + np.arange(N) * 0.001
    assert rows[2]["paper"] == "0.733 vs 0.911"
    assert rows[2]["ours"].startswith(f"{np.median(c_adv):.3f} vs {np.median(C_ORIG):.3f}")


def test_adversarial_quality_not_reproduced_when_the_groups_look_better():
    rows = verdicts.adversarial_quality(_features(adv_shift=+0.1, conf_shift=+0.05, fool_quality=0.9), TABLE2, TABLE3,
                                        fooling_rate=0.8)
    assert oks(rows) == [False, False, False, True]
    # lower on average but only two of eight pairs: not significant at 0.05
    few = _features()
    few = few[~few["image_id"].isin([f"o{i}" for i in range(2, N)])]
    assert oks(verdicts.adversarial_quality(few, TABLE2, TABLE3, fooling_rate=0.8))[0] is False


def test_adversarial_quality_not_testable_below_the_minimum_fooling_rate():
    rows = verdicts.adversarial_quality(_features(), TABLE2, TABLE3, fooling_rate=0.1)
    assert oks(rows) == [None, True, None, True]  # the fooling images do not depend on the UAP
    assert "only 10%" in rows[0]["why"] and "only 10%" in rows[2]["why"]
    at_min = verdicts.adversarial_quality(_features(), TABLE2, TABLE3, fooling_rate=verdicts.MIN_FOOLING_RATE)
    assert oks(at_min) == [True, True, True, True]


@pytest.mark.parametrize("change", [{"median": [0.9, 0.7, 0.44, 0.995]}, {"median": [0.9, 0.7, 0.5, 0.98]},
                                    {"distinct_images": [8, 8, 9, 10]}])
def test_fooling_images_must_be_confident_and_distinct(change):
    assert oks(verdicts.adversarial_quality(_features(), TABLE2, TABLE3.assign(**change), fooling_rate=0.8))[3] is False


# -- notebook 03 -----------------------------------------------------------------------------------


def _table4(adv_det=0.1, gd_det=0.9, acc=(1.0, 0.7, 0.4), suffix="q030", extra=None):
    t = pd.DataFrame({"group": ["original", "distorted", "adversarial", "fool_ev", "fool_gd"],
                      "accuracy": [*acc, np.nan, np.nan], "paper_accuracy": [1.0, 0.8, 0.5, np.nan, np.nan],
                      f"detection_rate_{suffix}": [0.02, 0.6, adv_det, 0.95, gd_det],
                      "paper_detection_rate_q030": [0.0244, 0.7, 0.05, 0.99, 0.98]})
    for col, values in (extra or {}).items():
        t[col] = values
    return t


def test_baselines_reproduced_and_texts():
    rows = verdicts.baselines(_table4(), 0.3)
    assert oks(rows) == [True, True] and len(rows) == 2  # no matched threshold: no third row
    assert rows[0]["ours"] == "distorted 70.0%, adversarial 40.0% (originals 100%)"
    assert rows[0]["paper"].startswith("distorted 80.0%, adversarial 50.0%")
    assert rows[1]["ours"] == "Fool_GD 90.0%, adversarial 10.0%" and "(0.3)" in rows[1]["claim"]


@pytest.mark.parametrize("acc", [(1.0, 1.0, 0.4), (1.0, 0.7, 1.0)])
def test_baseline1_needs_both_groups_below_the_originals(acc):
    assert oks(verdicts.baselines(_table4(acc=acc), 0.3))[0] is False


@pytest.mark.parametrize("adv_det, gd_det, ok", [(0.49, 0.9, True), (0.5, 0.9, False), (0.3, 0.3, False),
                                                 (0.3, 0.2, False)])
def test_baseline2_rule(adv_det, gd_det, ok):
    assert oks(verdicts.baselines(_table4(adv_det, gd_det), 0.3))[1] is ok


def test_baselines_read_the_columns_of_the_given_and_matched_thresholds():
    # the q030 rates fail the rule; at 0.35 (the column judged) they pass
    t = _table4(0.1, 0.9, suffix="q035", extra={"detection_rate_q030": [0.0, 0.0, 0.6, 0.0, 0.1]})
    assert oks(verdicts.baselines(t, 0.35))[1] is True
    assert oks(verdicts.baselines(t, 0.3))[1] is False
    matched = 0.412
    col = f"detection_rate_{threshold_suffix(matched)}"
    passing = _table4(extra={col: [0.0244, 0.81, 0.2, 0.93, 0.7]})
    rows = verdicts.baselines(passing, 0.3, matched=matched, matched_share=0.0244)
    assert len(rows) == 3 and oks(rows)[2] is True
    assert "quality < 0.412: 2.4% of our originals below, where the paper's 0.3 leaves 2.44% of ImageNet val" in rows[2]["claim"]
    assert rows[2]["ours"] == "Fool_GD 70.0%, Fool_EV 93.0%, adversarial 20.0% (originals 2.4%, distorted 81.0%)"
    failing = _table4(extra={col: [0.0244, 0.81, 0.7, 0.93, 0.6]})
    assert oks(verdicts.baselines(failing, 0.3, matched=matched, matched_share=0.0244))[2] is False
    assert len(verdicts.baselines(passing, 0.3, matched=float("nan"), matched_share=0.0244)) == 2


# -- notebook 04 -----------------------------------------------------------------------------------

PAPER5 = {"original": 0.0857, "distorted": 0.9, "adversarial": 0.8, "fool_ev": 0.9, "fool_gd": 0.95}


def _table5(**rates):
    rate = {"original": 0.07, "distorted": 0.9, "adversarial": 0.85, "fool_ev": 0.95, "fool_gd": 0.97, **rates}
    return pd.DataFrame({"group": list(rate), "detection_rate": list(rate.values()), "target_fpr": 0.0857,
                         "paper_detection_rate": [PAPER5[g] for g in rate]})


def _ablation(top5=0.80, with_quality=0.85, quality=0.75, at_both=0.6, at_quality=0.5):
    return pd.DataFrame({"group": ["adversarial"] * 3 + ["fool_ev"], "features": ["top5", "top5+quality", "quality", "top5"],
                         "auc": [top5, with_quality, quality, 0.99],
                         "detection_rate_at_fpr": [0.4, at_both, at_quality, 0.9]})


T4 = pd.DataFrame({"group": ["original", "adversarial"], "detection_rate_q030": [0.02, 0.3],
                   "paper_detection_rate_q030": [0.0244, 0.05]})


def test_detector_reproduced_and_texts():
    rows = verdicts.detector(_table5(), T4, _ablation(), 0.3, fooling_rate=0.8)
    assert oks(rows) == [True] * 5
    assert rows[0]["paper"] == "80.00%" and rows[0]["ours"] == "85.00%" and "8.57%" in rows[0]["why"]
    assert rows[1]["ours"] == "93.00% judged fit (held-out originals)" and rows[1]["paper"] == "91.43% judged fit"
    assert rows[2]["ours"] == "Fool_EV 95.00%, Fool_GD 97.00%"
    assert rows[3]["ours"] == "85.00% vs 30.00%" and rows[3]["paper"] == "80.00% vs 5.00%"
    assert "quality alone 0.750, top-5 + quality 0.850 (top-5 alone 0.800)" in rows[4]["ours"]
    assert "quality alone 50.00%, top-5 + quality 60.00%" in rows[4]["ours"]


@pytest.mark.parametrize("rates, failing", [({"adversarial": 0.79}, [0]), ({"original": 0.12}, [1]),
                                            ({"original": 0.05}, [1]), ({"fool_ev": 0.89}, [2]),
                                            ({"fool_gd": 0.94}, [2]), ({"adversarial": 0.3}, [0, 3])])
def test_detector_rules_flip_below_the_paper_and_the_baseline(rates, failing):
    got = oks(verdicts.detector(_table5(**rates), T4, _ablation(), 0.3, fooling_rate=0.8))
    assert got == [i not in failing for i in range(5)], (rates, got)


def test_detector_premise_is_top5_adding_to_quality():
    assert oks(verdicts.detector(_table5(), T4, _ablation(quality=0.85), 0.3, 0.8))[4] is False  # AUC must be higher
    assert oks(verdicts.detector(_table5(), T4, _ablation(at_quality=0.6), 0.3, 0.8))[4] is False  # and detection
    assert oks(verdicts.detector(_table5(), T4, _ablation(top5=0.99), 0.3, 0.8))[4] is True  # top-5 alone is not the test


def test_detector_weak_attack_and_threshold_column():
    weak = verdicts.detector(_table5(), T4, _ablation(), 0.3, fooling_rate=0.05)
    assert oks(weak) == [None] * 5 and all("only 5%" in r["why"] for r in weak)
    t4 = T4.assign(detection_rate_q035=[0.02, 0.9])
    assert oks(verdicts.detector(_table5(), t4, _ablation(), 0.35, 0.8))[3] is False


# -- notebook 05 -----------------------------------------------------------------------------------

MODELS = {"plain": 0.95, "nt": 0.91, "dms": 0.92, "fs": 0.94, "dms_mse": 0.85}
EPS = (0.5, 4.0, 8.0)


def _robust(change=None, srocc=None, seconds=None, within=1.0, success=None, selective_gap=0.0, random_change=0.02):
    """Notebook 05's four tables, every rule met by default; ``success``: model -> strong attack
    success at each of ``EPS``; selective is ``selective_gap`` above strong at the largest ε."""
    change = {"plain": 0.30, "nt": 0.20, "dms": 0.05, "fs": 0.28, **(change or {})}
    srocc = {**MODELS, **(srocc or {})}
    seconds = {"plain": 0.01, "nt": 0.01, "dms": 1.0, "fs": 0.01, "dms_mse": 1.0, **(seconds or {})}
    success = {"plain": (0.2, 1.0, 1.0), "nt": (0.1, 0.4, 0.9), "dms": (0.1, 0.6, 1.0), "fs": (0.2, 0.9, 1.0),
               **(success or {})}
    models = pd.DataFrame({"quality_model": list(srocc), "srocc": list(srocc.values()),
                           "plcc": [v - 0.01 for v in srocc.values()], "seconds_per_image": [seconds[m] for m in srocc]})
    attacks = pd.DataFrame([{"quality_model": m, "attack": a, "eps_255": e,
                             "score_change_mean": (random_change if a == "random_sign" else c) * (1 if e == 4 else 9),
                             "robustness_R": 1.0 - c, "relative_gain": 2 * c}
                            for m, c in change.items() for a in ("random_sign", "ifgsm_up", "ifgsm_down")
                            for e in (4.0, 8.0)])  # ε = 8 rows must not be read at ε = 4
    certified = pd.DataFrame({"quality_model": ["dms", "fs", "dms", "fs", "dms (l2 PGD inside r)"],
                              "radius": [0.05, 0.05, 0.25, 0.25, 0.05],
                              "certified_fraction": [1.0, 0.0, 0.5, 0.0, 1.0],
                              "interval_width_mean": [0.1, 1.0, 1.0, 1.0, 0.1],
                              "certified_rise_mean": [np.nan] * 4 + [0.05], "certified_rise_max": [np.nan] * 4 + [0.08],
                              "attack_rise_mean": [np.nan] * 4 + [0.01],
                              "attack_rise_max": [np.nan] * 4 + [0.02], "within_certificate": [np.nan] * 4 + [within]})
    detected = pd.DataFrame([{"quality_model": m, "attack": a, "eps_255": e,
                              "attack_success_rate": {"oblivious": 0.5 * v, "strong": v,
                                                      "selective": v + (selective_gap if e == EPS[-1] else 0)}[a]}
                             for m, rates in success.items() for e, v in zip(EPS, rates)
                             for a in ("oblivious", "selective", "strong")])
    return models, attacks, certified, detected


def test_robust_reproduced_and_texts():
    rows = verdicts.robust(*_robust())
    assert oks(rows) == [True] * 7
    assert "mean |Δs| 0.3000 vs random sign noise 0.0200 (15.0×)" == rows[0]["ours"]
    assert "0.3000 → NT 0.2000 (33% less); R 0.70 → 0.80; relative gain 0.600 → 0.400; SROCC 0.950 → 0.910" in rows[1]["ours"]
    cuts = pd.DataFrame([{"quality_model": "nt", "attack": "both", "eps_255": e, "n": 24, "cut": 0.33,
                          "cut_ci_low": low, "cut_ci_high": 0.5} for e, low in ((4.0, 0.12), (8.0, 0.3))])
    with_interval = verdicts.robust(*_robust(), cuts)
    assert "(33% less, 95 % interval over the 24 images 12% to 50%); R" in with_interval[1]["ours"]
    assert oks(with_interval) == oks(rows), "the interval is shown, the verdict stays on the point estimate"
    authors = pd.concat([cuts, pd.DataFrame([{"quality_model": "nt", "attack": "toward_middle", "eps_255": 4.0, "n": 24,
                                              "cut": 0.05, "cut_ci_low": -0.1, "cut_ci_high": 0.2}])])
    with_rule = verdicts.robust(*_robust(), authors)
    assert "12% to 50%); by the authors' direction rule (lower a score above the middle, raise one below) 5% less, " \
           "-10% to 20%; R" in with_rule[1]["ours"]
    assert oks(with_rule) == oks(rows), "the authors' rule is shown beside the issue's goal, not judged instead"
    spread = cuts.assign(cut_per_spread=0.08, cut_per_spread_ci_low=-0.05, cut_per_spread_ci_high=0.2)
    with_spread = verdicts.robust(*_robust(), spread)
    assert "12% to 50%; in units of each model's clean-score spread 8% less, -5% to 20%); R" in with_spread[1]["ours"]
    assert oks(with_spread) == oks(rows), "shown beside the issue's goal, not judged instead"
    reach = pd.DataFrame([{"quality_model": m, "attack": a, "eps_255": e, "extreme": x, "at_extreme": at,
                           "room_used": used} for m, x, at, used in (("plain", 0.92, 1.0, 0.96), ("nt", 0.83, 0.83, 0.91))
                          for a in ("ifgsm_up", "ifgsm_down") for e in (4.0, 8.0)])
    with_reach = verdicts.robust(*_robust(), reach=reach)
    assert ("raising, the attack took 100% of plain's images and 83% of NT's to within 0.05 of the highest score it "
            "reached on each (0.92 vs 0.83), using 96% vs 91% of the room to it; R") in with_reach[1]["ours"]
    assert oks(with_reach) == oks(rows), "shown beside the issue's goal, not judged instead"
    slopes = pd.DataFrame([{"quality_model": m, "step": h, "step_255": h * 128, "nt_h": h == 1e-2, "rise": rise,
                            "quotient_share": share}
                           for m, rises, shares in (("plain", (0.05, 0.15), (0.7, 0.2)), ("nt", (0.03, 0.03), (0.6, 0.06)))
                           for h, rise, share in zip((1e-3, 1e-2), rises, shares)])
    with_slopes = verdicts.robust(*_robust(), slopes=slopes)
    assert ("; at the image, the forward difference (step 1.28/255) is 20% of plain's ‖∇f‖₁: it weighs one short step's "
            "rise along sign(∇f), 0.150 on plain, 0.030 on NT (80% less); R") in with_slopes[1]["ours"]
    assert oks(with_slopes) == oks(rows), "shown beside the issue's goal, not judged instead"
    # a form of ours is named in the claim, the measurement and the rule; the authors' form is not flagged
    ours = verdicts.robust(*_robust(), nt_form="NT's loss (λ = 0.003, h = 0.01) with the difference two-sided (ours; "
                                               "the authors take it one-sided, at the image)")[1]
    assert ours["claim"].startswith("NT on the whole model (with changes of ours) reduces")
    assert ours["ours"].startswith("Trained with NT's loss (λ = 0.003, h = 0.01) with the difference two-sided (ours;")
    assert "the form departs from the authors'" in ours["why"]
    authors = verdicts.robust(*_robust(), nt_form="NT's loss in the authors' form (λ = 0.001, h = 0.01, one-sided "
                                                  "difference at the image)")[1]
    assert "ours" not in authors["claim"] and "departs" not in authors["why"]
    assert "DMS (rank) 0.920, PLCC 0.910; DMS (MSE only, ablation) 0.850" in rows[2]["ours"]
    assert ("certified rise ≤ 0.0500 (mean), attack rose +0.0100 (max +0.0200); a weak check: the attack's largest rise "
            "is 25% of the largest certified one") in rows[3]["ours"]
    strong = _robust()[2].assign(attack_rise_max=lambda c: c["attack_rise_max"] * 3)  # 0.06 of a certified 0.08
    assert "weak check" not in verdicts.robust(*_robust()[:2], strong, _robust()[3])[3]["ours"]
    assert rows[4]["ours"].startswith("10.0 ms vs 1000.0 ms per image (99.0% less)")
    assert rows[4]["ours"].endswith("FS's certificate is local (Lipschitz estimate) and certifies 0% of images at ℓ2 "
                                    "radius 0.05–0.25")
    assert "ε = 0.5/255, strong: dms 10%, fs 20%, nt 10%, plain 20%" in rows[5]["ours"]
    assert "strong attack success: dms 60%, fs 90%, nt 40%, plain 100%" in rows[6]["ours"]
    assert all("ε = 4/255" in r["claim"] for r in (rows[0], rows[1], rows[6]))
    assert all(r["paper"] for r in rows), "every verdict states its authors' claim"


@pytest.mark.parametrize("kwargs, failing", [
    ({"random_change": 0.061}, 0),                              # I-FGSM < 5× random noise
    ({"change": {"nt": 0.22}}, 1),                              # 27 % less change: below 30 %
    ({"srocc": {"nt": 0.89}}, 1),                               # NT costs 0.06 SROCC
    ({"srocc": {"dms": 0.89}}, 2),                              # DMS 0.06 below plain
    ({"within": 0.75}, 3),                                      # an attacked median left its interval
    ({"seconds": {"fs": 0.11}}, 4),                             # FS only 89 % faster than DMS
    ({"selective_gap": 0.05}, 5),                               # selective beat strong at one ε
    ({"success": {"nt": (0.5, 0.4, 0.9)}}, 5),                  # success fell with ε for one model
    ({"success": {"fs": (1.0, 1.0, 1.0)}}, 5),                  # flat at 100 %: does not rise
    ({"success": {"nt": (0.1, 0.6, 0.9), "dms": (0.1, 0.51, 1.0)}}, 6),  # no hardened model at ≤ 50 %
])
def test_robust_each_rule_flips_at_its_threshold(kwargs, failing):
    got = oks(verdicts.robust(*_robust(**kwargs)))
    assert got == [i != failing for i in range(7)], (kwargs, got)


def test_robust_reads_the_given_eps():
    rows = verdicts.robust(*_robust(), eps_255=8.0)  # attacks ×9 at ε = 8
    assert "mean |Δs| 2.7000 vs random sign noise 0.1800" in rows[0]["ours"] and "ε = 8/255" in rows[0]["claim"]
    assert oks(rows)[6] is False and "nt 90%" in rows[6]["ours"]  # at 8/255 every model is past 50 %


def test_robust_without_an_adaptive_attack_at_the_given_eps_is_not_testable():
    models, attacks, certified, detected = _robust()
    rows = verdicts.robust(models, attacks, certified, detected[detected["eps_255"] != 4.0])
    assert oks(rows)[6] is None and "no adaptive attack at ε = 4/255" in rows[6]["ours"]
    assert "at ε = 4/255" not in rows[5]["ours"] and "ε = 0.5/255, strong:" in rows[5]["ours"]
