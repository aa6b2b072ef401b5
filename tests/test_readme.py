"""The README's headline table ("What the default shows") quotes the committed render,
``outputs/default``: each of its numbers is recomputed here from the table it comes from, so a
re-render that moves a number fails until the README says it (a review found 23 stale ones)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import REPO

TABLES = REPO / "outputs" / "default" / "tables"
#: the paper's detector and our own variants in peer_comparison.csv; the rest are the field's
OURS = {"fit_for_task", "msp+quality", "fit_for_task+"}
PEER_NAMES = {"doctor": "DOCTOR", "feature_squeezing": "Feature Squeezing", "vim": "ViM", "msp": "MSP",
              "energy": "energy", "maxlogit": "MaxLogit", "entropy": "entropy", "mahalanobis": "Mahalanobis",
              "knn": "KNN"}

pytestmark = pytest.mark.skipif(not TABLES.is_dir(), reason="no committed render under outputs/default")


def ours_cell(label: str) -> str:
    """The "ours" cell of the README row whose first cell starts with ``label``."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"README: {len(rows)} rows start with {label!r}"
    return rows[0].split(" | ")[1]


def table(name: str) -> pd.DataFrame:
    return pd.read_csv(TABLES / f"{name}.csv")


def at(frame: pd.DataFrame, column: str, **where: str) -> float:
    mask = pd.Series(True, index=frame.index)
    for key, value in where.items():
        mask &= frame[key] == value
    assert mask.sum() == 1, where
    return float(frame.loc[mask, column].iloc[0])


def pct(rate: float) -> str:
    return "100 %" if round(rate * 100, 1) == 100 else f"{rate * 100:.1f} %"


def test_the_quality_model_and_uap_rows():
    perf = table("iqa_performance").iloc[0]
    pooled = table("iqa_feature_kinds").set_index("features").loc["pooled"]
    assert ours_cell("DTNIQ-f, held-out SROCC") == (
        f"{perf.srocc:.3f} ± {perf.srocc_std:.3f} / {perf.plcc:.3f} ± {perf.plcc_std:.3f} vs pseudo-MOS; "
        f"the paper's `pooled` feature: {pooled.srocc:.3f} / {pooled.plcc:.3f}")
    uap = json.loads((REPO / "outputs" / "default" / "attacks" / "uap" / "uap.json").read_text())
    fooled = round(uap["fooling_rate"] * uap["n_eval"])
    assert ours_cell("UAP fooling rate").startswith(f"{uap['fooling_rate'] * 100:.0f} % ({fooled} of {uap['n_eval']})")


def test_tables_ii_to_iv_rows():
    means = table("table2").set_index("group")["mean"]
    assert ours_cell("Table II mean quality").startswith(
        " / ".join(f"{means[g]:.3f}" for g in ("original", "adversarial", "fool_ev", "fool_gd")))
    medians = table("table3").set_index("group")["median"]
    assert ours_cell("Table III median top-1").startswith(f"{medians['fool_ev']:.3f} / {medians['fool_gd']:.3f}")
    table4 = table("table4").set_index("group")
    column = next(c for c in table4.columns if c.startswith("detection_rate_q0.8"))
    assert ours_cell("Baseline-2 at the paper's operating point") == " / ".join(
        pct(table4.loc[g, column]) for g in ("fool_gd", "fool_ev", "adversarial"))


def test_table_v_and_auc_rows():
    table5 = table("table5").set_index("group")
    rates = " / ".join(pct(table5.loc[g, "detection_rate"]) for g in ("adversarial", "distorted", "fool_ev", "fool_gd"))
    assert ours_cell("Table V at the paper's operating point") == f"{rates}; {pct(1 - table5.loc['original', 'detection_rate'])}"
    auc = table("roc_auc").set_index("group").loc["adversarial"]
    quality = table("ablation")
    assert ours_cell("ROC AUC, adversarial vs held-out originals") == (
        f"{auc.auc:.3f} ± {auc.auc_std:.3f} / {at(quality, 'auc', features='quality', group='adversarial'):.3f} ± "
        f"{at(quality, 'auc_std', features='quality', group='adversarial'):.3f}")


def test_the_peer_rows():
    peers = table("peer_comparison")
    squeezing = at(peers, "detection_rate", detector="feature_squeezing", group="adversarial")
    assert ours_cell("Feature Squeezing at the same false-alarm rate") == pct(squeezing)
    groups = ("distorted", "adversarial", "fool_ev", "fool_gd")
    field = peers[~peers["detector"].isin(OURS)]
    best = [field[field["group"] == g].sort_values("detection_rate").iloc[-1] for g in groups]
    quoted = " / ".join(f"{PEER_NAMES[row.detector]} {pct(row.detection_rate)}" for row in best)

    def rates(detector: str) -> str:
        return " / ".join(pct(at(peers, "detection_rate", detector=detector, group=g)).replace(" %", "")
                          for g in groups) + " %"

    assert ours_cell("Best of the field's detectors") == (
        f"{quoted} (ours: {rates('fit_for_task')} on the same images; `fit_for_task+` {rates('fit_for_task+')})")


#: the columns of the README's notebook 05 table ("What it measured")
ROBUST_MODELS = ("plain", "nt", "dms", "dms_mse", "fs")


def robust_cells(label: str) -> list[str]:
    """The five model cells of the README's notebook 05 row whose first cell starts with ``label``."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"README: {len(rows)} rows start with {label!r}"
    cells = [cell.strip() for cell in rows[0].strip().strip("|").split(" | ")[1:]]
    assert len(cells) == len(ROBUST_MODELS), rows[0]
    return cells


def signed(value: float) -> str:
    return f"{value:.0f}".replace("-", "−")


def test_the_robust_quality_rows():
    models = table("robust_models").set_index("quality_model")
    assert robust_cells("clean SROCC / PLCC") == [f"{models.loc[m, 'srocc']:.3f} / {models.loc[m, 'plcc']:.3f}"
                                                  for m in ROBUST_MODELS]
    attacks = table("robust_attacks")

    def change(model: str, attack: str) -> str:
        return f"{at(attacks, 'score_change_mean', quality_model=model, attack=attack, eps_255=4.0):.3f}"

    assert robust_cells("mean \\|Δs\\| under I-FGSM at 4/255") == [
        "—" if m == "dms_mse" else f"{change(m, 'ifgsm_up')} / {change(m, 'ifgsm_down')}" for m in ROBUST_MODELS]
    assert robust_cells("mean \\|Δs\\| under random") == [
        "—" if m == "dms_mse" else change(m, "random_sign") for m in ROBUST_MODELS]
    cuts = table("robust_change_cut")

    def cut(model: str, attack: str) -> str:
        row = {c: 100 * at(cuts, c, quality_model=model, attack=attack, eps_255=4.0)
               for c in ("cut", "cut_ci_low", "cut_ci_high")}
        return f"{signed(row['cut'])} % [{signed(row['cut_ci_low'])}, {signed(row['cut_ci_high'])}]"

    assert robust_cells("less score change than plain at 4/255, both") == [
        "—" if m in ("plain", "dms_mse") else cut(m, "both") for m in ROBUST_MODELS]
    assert robust_cells("the same, in the direction NT's authors attack") == [
        "—" if m in ("plain", "dms_mse") else cut(m, "toward_middle") for m in ROBUST_MODELS]
    ms = 1000 * models["seconds_per_image"]
    assert robust_cells("milliseconds per score") == [f"{ms[m]:.1f}" if ms[m] < 10 else f"{ms[m]:.0f}"
                                                      for m in ROBUST_MODELS]


def test_the_table_v_and_peer_prose_quotes_the_same_tables():
    """The two prose paragraphs that restate Table V and the peer comparison (a review found both
    stale after a re-render): each quoted number recomputed, the README's line wrapping ignored."""
    text = " ".join((REPO / "README.md").read_text().split())
    t5 = table("table5").set_index("group")
    auc = table("roc_auc").set_index("group").loc["adversarial"]
    peers = table("peer_comparison")
    rate = lambda detector, group: pct(at(peers, "detection_rate", detector=detector, group=group))  # noqa: E731
    expected = [
        f"Held-out originals: {pct(t5.loc['original', 'detection_rate'])} flagged, "
        f"{pct(1 - t5.loc['original', 'detection_rate'])} judged fit",
        f"UAP images: {pct(t5.loc['adversarial', 'detection_rate'])} ± {100 * t5.loc['adversarial', 'detection_rate_std']:.1f} "
        f"detected (95 % CI {100 * t5.loc['adversarial', 'detection_rate_ci_low']:.1f}–"
        f"{100 * t5.loc['adversarial', 'detection_rate_ci_high']:.1f} %",
        f"ROC AUC {auc.auc:.3f} ± {auc.auc_std:.3f}. Distorted {pct(t5.loc['distorted', 'detection_rate'])} "
        f"± {100 * t5.loc['distorted', 'detection_rate_std']:.1f}",
        f"Fool_GD {pct(t5.loc['fool_gd', 'detection_rate'])} ± {100 * t5.loc['fool_gd', 'detection_rate_std']:.1f}",
        f"the UAP rate is {pct(t5.loc['adversarial', 'detection_rate_fpr05'])}; at the SVM's own threshold it is "
        f"{pct(t5.loc['adversarial', 'detection_rate_default'])}, but that threshold flags "
        f"{pct(t5.loc['original', 'detection_rate_default'])} of originals",
        f"distorted images ({rate('fit_for_task', 'distorted')} vs DOCTOR {rate('doctor', 'distorted')})",
        f"Fool_EV ({rate('fit_for_task', 'fool_ev')} vs ViM {rate('vim', 'fool_ev')})",
        f"Fool_GD ({rate('fit_for_task', 'fool_gd')} vs Feature Squeezing {rate('feature_squeezing', 'fool_gd')})",
        f"{rate('fit_for_task', 'adversarial')} vs Feature Squeezing {rate('feature_squeezing', 'adversarial')}",
    ]
    missing = [e for e in expected if e not in text]
    assert not missing, missing
