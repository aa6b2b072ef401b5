"""Notebook 05's tables on hand-made rows: what each column means, the paired intervals of how much
less a defence moves, the per-spread cut, the authors' direction rule, how far the attacks take the scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iqalib import robust_tables as t


def test_robust_tables_from_attack_certificate_and_detector_rows():
    clean, mos = np.array([0.2, 0.5, 0.8, 0.9]), np.array([0.1, 0.4, 0.7, 0.95])
    rows = [{"attack": "ifgsm_up", "eps_255": 4.0, "clean": clean, "attacked": clean + 0.1}]
    attacks = t.robust_attacks("plain", rows, mos)
    assert attacks.loc[0, "score_change_mean"] == pytest.approx(0.1) and attacks.loc[0, "srocc"] == pytest.approx(1.0)
    assert attacks.loc[0, "robustness_R"] == pytest.approx(np.mean(np.log10(np.maximum(1 - clean, clean) / (0.1 + 1e-6))))
    cert = {"median": clean, "low_0.1": clean - 0.05, "high_0.1": clean + 0.05, "certified_0.1": np.array([1, 1, 0, 1], bool)}
    certified = t.robust_certified("dms", "input", 0.12, 100, cert, [0.1], 0.3)
    assert certified.loc[0, "interval_width_mean"] == pytest.approx(0.1) and certified.loc[0, "certified_fraction"] == 0.75
    judged = {"fooled": np.array([1, 1, 0, 1], bool), "flagged": np.array([1, 0, 0, 0], bool)}
    row = t.robust_detector("nt", "adaptive", 4, judged, np.array([0, 1, 0, 0], bool))
    assert row["attack_success_rate"] == 0.5 and row["detection_rate"] == pytest.approx(1 / 3)
    assert row["false_alarm_rate"] == 0.25 and row["fooled_rate"] == 0.75
    none_fooled = t.robust_detector("nt", "adaptive", 4, {"fooled": np.zeros(2, bool), "flagged": np.ones(2, bool)},
                                    np.zeros(2, bool))
    assert np.isnan(none_fooled["detection_rate"])


def test_robust_change_cut_is_paired_over_images_and_its_interval_holds_the_point():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, 30)
    plain_change = rng.uniform(0.1, 0.5, 30)

    def rows(scale_up: float, scale_down: float) -> list[dict]:
        return [{"attack": "ifgsm_up", "eps_255": 4.0, "clean": clean, "attacked": clean + scale_up * plain_change},
                {"attack": "ifgsm_down", "eps_255": 4.0, "clean": clean, "attacked": clean - scale_down * plain_change},
                {"attack": "random_sign", "eps_255": 4.0, "clean": clean, "attacked": clean + 0.9}]

    images = pd.concat([t.robust_attack_images("plain", rows(1.0, 1.0)), t.robust_attack_images("nt", rows(0.6, 1.0))],
                       ignore_index=True)
    assert len(images) == 2 * 3 * 30 and (images.groupby(["quality_model", "attack"])["image"].nunique() == 30).all()
    cuts = t.robust_change_cut(images, n_boot=500).set_index("attack")
    assert list(cuts.index) == ["ifgsm_up", "ifgsm_down", "both", "toward_middle"], "random noise is not a gradient attack"
    assert cuts.loc["ifgsm_up", "cut"] == pytest.approx(0.4) and cuts.loc["ifgsm_down", "cut"] == pytest.approx(0.0)
    assert cuts.loc["both", "cut"] == pytest.approx(0.2) and (cuts["n"] == 30).all()
    low = clean <= 0.5  # the authors' rule raises these, lowers the rest: only the raised ones are cut
    assert cuts.loc["toward_middle", "cut"] == pytest.approx(0.4 * plain_change[low].sum() / plain_change.sum())
    # NT's change is an exact multiple of plain's on every image: paired resampling cannot move the cut
    assert cuts.loc["ifgsm_up", "cut_ci_low"] == pytest.approx(0.4) and cuts.loc["ifgsm_up", "cut_ci_high"] == pytest.approx(0.4)
    noisy = images.copy()
    is_nt = noisy["quality_model"] == "nt"
    noisy.loc[is_nt, "attacked"] += rng.normal(0, 0.05, is_nt.sum())
    both = t.robust_change_cut(noisy, n_boot=500).set_index("attack").loc["both"]
    assert both["cut_ci_low"] < both["cut"] < both["cut_ci_high"]
    assert t.robust_change_cut(noisy, n_boot=500).equals(t.robust_change_cut(noisy, n_boot=500)), "seeded"
    # a defence that only squeezes its scores together: half the spread, half the change
    half = 0.5 + 0.5 * (clean - 0.5)
    squeezed = pd.concat([t.robust_attack_images("plain", rows(1.0, 1.0)), t.robust_attack_images("nt", [
        {"attack": "ifgsm_up", "eps_255": 4.0, "clean": half, "attacked": half + 0.5 * plain_change},
        {"attack": "ifgsm_down", "eps_255": 4.0, "clean": half, "attacked": half - 0.5 * plain_change}])],
        ignore_index=True)
    flat = t.robust_change_cut(squeezed, n_boot=300).set_index("attack")
    assert flat.loc["both", "cut"] == pytest.approx(0.5), "in absolute terms it halves the change"
    assert flat.loc["both", "spread"] == pytest.approx(0.5 * flat.loc["both", "reference_spread"])
    assert flat["cut_per_spread"].to_numpy() == pytest.approx(0.0, abs=1e-9), "per spread it changes nothing"
    assert flat.loc["both", ["cut_per_spread_ci_low", "cut_per_spread_ci_high"]].to_numpy(float) == \
        pytest.approx([0.0, 0.0], abs=1e-9), "paired: every resample squeezes alike"
    # clean scores that spread differently from plain's, image by image: the resamples' spreads move
    wider = rng.uniform(0.0, 1.0, 30)
    varied = pd.concat([t.robust_attack_images("plain", rows(1.0, 1.0)), t.robust_attack_images("nt", [
        {"attack": "ifgsm_up", "eps_255": 4.0, "clean": wider, "attacked": wider + 0.6 * plain_change},
        {"attack": "ifgsm_down", "eps_255": 4.0, "clean": wider, "attacked": wider - 0.6 * plain_change}])],
        ignore_index=True)
    row = t.robust_change_cut(varied, n_boot=500).set_index("attack").loc["both"]
    assert row["spread"] == pytest.approx(np.std(wider, ddof=1)) and row["reference_spread"] == pytest.approx(
        np.std(clean, ddof=1))
    by_hand = 1 - (0.6 / np.std(wider, ddof=1)) / (1.0 / np.std(clean, ddof=1))
    assert row["cut_per_spread"] == pytest.approx(by_hand) and row["cut"] == pytest.approx(0.4)
    assert row["cut_per_spread_ci_low"] < by_hand < row["cut_per_spread_ci_high"], "the spreads are resampled too"
    # clean scores that do not spread at all: no per-spread cut, not an infinite one
    flat_nt = np.full(30, 0.5)
    still = pd.concat([t.robust_attack_images("plain", rows(1.0, 1.0)), t.robust_attack_images("nt", [
        {"attack": "ifgsm_up", "eps_255": 4.0, "clean": flat_nt, "attacked": flat_nt + 0.6 * plain_change},
        {"attack": "ifgsm_down", "eps_255": 4.0, "clean": flat_nt, "attacked": flat_nt - 0.6 * plain_change}])],
        ignore_index=True)
    row = t.robust_change_cut(still, n_boot=100).set_index("attack").loc["both"]
    assert np.isnan(row["cut_per_spread"]) and np.isnan(row["cut_per_spread_ci_low"]) and row["cut"] == pytest.approx(0.4)
    view = t.cut_view(t.robust_change_cut(images, n_boot=200))
    spread_view = t.cut_view(flat.reset_index(), "cut_per_spread")
    assert list(spread_view.columns) == ["quality_model", "attack", "cut per spread @4/255", "clean spread vs reference"]
    assert spread_view["clean spread vs reference"].iloc[0] == \
        f"{np.std(half, ddof=1):.3f} vs {np.std(clean, ddof=1):.3f}"
    assert list(view.columns) == ["quality_model", "attack", "cut @4/255"]
    assert list(view["attack"]) == ["ifgsm_up", "ifgsm_down", "both", "toward_middle"], "the table's order, not the alphabet's"
    assert view.set_index("attack").loc["ifgsm_up", "cut @4/255"] == "40% [40, 40]"
    assert view.set_index("attack").loc["ifgsm_down", "cut @4/255"] == "0% [0, 0]", "no '-0'"


def test_the_authors_direction_rule_follows_each_models_own_clean_score():
    def rows(clean: list[float], up: list[float], down: list[float]) -> list[dict]:
        c = np.array(clean)
        return [{"attack": "ifgsm_up", "eps_255": 4.0, "clean": c, "attacked": c + np.array(up)},
                {"attack": "ifgsm_down", "eps_255": 4.0, "clean": c, "attacked": c - np.array(down)}]

    # image 0: plain scores it 0.7 (lowered: 0.3), NT 0.3 (raised: 0.05); image 1 raised by both
    images = pd.concat([t.robust_attack_images("plain", rows([0.7, 0.3], [0.1, 0.2], [0.3, 0.4])),
                        t.robust_attack_images("nt", rows([0.3, 0.3], [0.05, 0.1], [0.3, 0.4]))], ignore_index=True)
    cuts = t.robust_change_cut(images, n_boot=100).set_index("attack")
    assert cuts.loc["toward_middle", "change"] == pytest.approx(0.075)
    assert cuts.loc["toward_middle", "reference_change"] == pytest.approx(0.25)
    assert "toward_middle" not in set(t.robust_change_cut(images, n_boot=100, midpoint=None)["attack"])


def test_a_reference_that_does_not_move_gives_no_cut_not_an_infinite_one():
    clean = np.linspace(0.2, 0.8, 10)
    images = pd.concat([t.robust_attack_images(model, [
        {"attack": attack, "eps_255": 4.0, "clean": clean, "attacked": clean + moved}
        for attack in ("ifgsm_up", "ifgsm_down")]) for model, moved in (("plain", 0.0), ("nt", 0.1))],
        ignore_index=True)
    cuts = t.robust_change_cut(images, n_boot=50)
    assert len(cuts) == 4 and cuts["change"].to_numpy() == pytest.approx(0.1) and (cuts["reference_change"] == 0).all()
    for column in ("cut", "cut_ci_low", "cut_ci_high", "cut_per_spread", "cut_per_spread_ci_low"):
        assert cuts[column].isna().all(), column


def test_attack_reach_finds_each_models_extreme_and_how_much_of_the_room_to_it_the_attack_used():
    clean = [0.5, 0.6, 0.7]
    attacked = {("ifgsm_up", 1.0): [0.6, 0.88, 0.65], ("ifgsm_up", 4.0): [0.9, 0.9, 0.86],
                ("ifgsm_down", 1.0): [0.3, 0.9, 0.5], ("ifgsm_down", 4.0): [0.2, 0.25, 0.9],
                ("random_sign", 4.0): [0.0, 1.0, 0.0]}  # not a directed attack: left out
    other = {("ifgsm_up", 4.0): [0.7, 0.7, 0.7], ("ifgsm_down", 4.0): [0.5, 0.6, 0.7]}  # another model, its own ends
    images = pd.DataFrame([{"quality_model": m, "attack": a, "eps_255": e, "image": i, "clean": c, "attacked": s}
                           for m, table in (("plain", attacked), ("nt", other)) for (a, e), scores in table.items()
                           for i, (c, s) in enumerate(zip(clean, scores))])
    reach = t.attack_reach(images).set_index(["quality_model", "attack", "eps_255"])
    assert set(reach.index.get_level_values("attack")) == {"ifgsm_up", "ifgsm_down"}
    up, up_small = reach.loc[("plain", "ifgsm_up", 4.0)], reach.loc[("plain", "ifgsm_up", 1.0)]
    down = reach.loc[("plain", "ifgsm_down", 4.0)]
    assert up["extreme"] == pytest.approx(0.9) and down["extreme"] == pytest.approx(0.2)  # over every ε
    assert up["at_extreme"] == 1.0 and up_small["at_extreme"] == pytest.approx(1 / 3)
    assert up["room"] == pytest.approx(0.3) and up["change"] == pytest.approx((0.4 + 0.3 + 0.16) / 3)
    assert up["room_used"] == pytest.approx(up["progress"] / 0.3) and up["progress"] == pytest.approx(up["change"])
    # 0.7 -> 0.65 went down: counted in |Δs|, not as progress toward the top
    assert up_small["wrong_way"] == pytest.approx(1 / 3) and up["wrong_way"] == 0.0
    assert up_small["progress"] == pytest.approx((0.1 + 0.28) / 3) and up_small["progress"] < up_small["change"]
    # lowering: 0.7 -> 0.9 went up, which |Δs| counts as change but uses none of the room down
    assert down["at_extreme"] == pytest.approx(2 / 3) and down["wrong_way"] == pytest.approx(1 / 3)
    assert down["room"] == pytest.approx(0.4) and down["change"] == pytest.approx((0.3 + 0.35 + 0.2) / 3)
    assert down["room_used"] == pytest.approx((0.3 + 0.35) / 3 / 0.4)
    # the other model's extremes are its own; one whose attack never moves it has no room to use
    nt_up, nt_down = reach.loc[("nt", "ifgsm_up", 4.0)], reach.loc[("nt", "ifgsm_down", 4.0)]
    assert nt_up["extreme"] == pytest.approx(0.7) and nt_up["room_used"] == pytest.approx(1.0)
    assert nt_down["extreme"] == pytest.approx(0.5) and nt_down["room"] == pytest.approx(0.1)
    assert np.isnan(t.attack_reach(images.assign(clean=0.5, attacked=0.5))["room_used"]).all()
