"""One-line readings of the main tables and figures, computed from the very tables they read.

Each function takes a table a notebook has just saved and returns the sentence shown under it
(``report.save_table(..., takeaway=...)``, ``report.save_figure(..., takeaway=...)``): numbers,
never adjectives typed in advance, so a run whose numbers differ reads differently. Pure pandas;
no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd


def iqa_sets(sets: Mapping[str, pd.DataFrame]) -> str:
    """The IQA sets in one sentence, counted from the tables (never typed into a notebook)."""
    parts = []
    for name, t in sets.items():
        levels = t["level"].nunique() if "level" in t else 0
        parts.append(f"**{name}**: {len(t):,} distorted images of {t['ref_id'].nunique():,} reference photos, "
                     f"{t['distortion'].nunique()} distortion types" + (f" × {levels} levels" if levels > 1 else ""))
    return "This run: " + "; ".join(parts) + "."


def iqa_performance(performance: pd.DataFrame, target: str) -> str:
    return (f"On reference photos it never saw, predicted quality ranks images with SROCC "
            f"{performance.loc[0, 'srocc']:.3f} against the {target}.")


def iqa_scatter(performance: pd.DataFrame) -> str:
    return (f"PLCC {performance.loc[0, 'plcc']:.3f}: the closer the points lie to a line, the more the "
            "model's score on unseen content follows the target's.")


def quality_vs_level(per_type: pd.DataFrame) -> str:
    return "Spearman of level vs predicted quality within an image, per type: " + ", ".join(
        f"{r.distortion} {r.spearman_level_pred_within_image:.2f}" for r in per_type.itertuples()) + "."


def _span(values: pd.Series) -> str:
    """``low–high`` to 3 decimals, or the one value when they agree (one row: no range)."""
    low, high = f"{values.min():.3f}", f"{values.max():.3f}"
    return low if low == high else f"{low}–{high}"


def table1(table1: pd.DataFrame) -> str:
    ours = table1[table1["n_images"].notna()]
    return (f"Mean Wu-Palmer similarity of the top-1 before and after distortion: "
            f"{_span(ours['wup_mean'])} here, {_span(table1['paper_wup_mean'])} in the paper (1 = unchanged).")


def quality_vs_similarity(pairs: pd.DataFrame) -> str:
    rho = pairs["mos"].corr(pairs["wup"], method="spearman")
    return (f"Spearman of score vs similarity, all distortions: {rho:.2f} (positive: the worse the image, "
            "the further its top-1 moves).")


def table2(table2: pd.DataFrame, order: Sequence[str]) -> str:
    t = table2.set_index("group")
    return "Mean predicted quality, ours (paper): " + ", ".join(
        f"{g} {t.loc[g, 'mean']:.3f} ({t.loc[g, 'paper_mean']:.3f})" for g in order) + "."


def uap_similarity(adv: pd.DataFrame) -> str:
    return (f"The UAP changes the top-1 of {(adv['pred'] != adv['pred_original']).mean():.0%} of the images; "
            f"mean similarity {adv['wup'].mean():.2f}.")


def table4(table4: pd.DataFrame, threshold: float, column: str) -> str:
    t = table4.set_index("group")
    return (f"Accuracy falls from {t.loc['original', 'accuracy']:.0%} (originals) to {t.loc['distorted', 'accuracy']:.0%} "
            f"(distorted) and {t.loc['adversarial', 'accuracy']:.0%} (UAP); quality < {threshold} rejects "
            f"{t.loc['fool_gd', column]:.0%} of Fool_GD (paper: {t.loc['fool_gd', 'paper_' + column]:.0%}).")


def by_level(by_level: pd.DataFrame) -> str:
    top = by_level[by_level["level"] == by_level["level"].max()]
    return (f"At the strongest level, accuracy {top['accuracy'].mean():.0%} and rejected "
            f"{top['detection_rate'].mean():.0%} (mean over distortions).")


def table5(table5: pd.DataFrame) -> str:
    t = table5.set_index("group")
    a = t.loc["adversarial"]
    return (f"Adversarial images flagged: {a['detection_rate']:.1%} [{a['detection_rate_ci_low']:.1%}, "
            f"{a['detection_rate_ci_high']:.1%}] vs the paper's {a['paper_detection_rate']:.1%}, at "
            f"{t.loc['original', 'detection_rate']:.1%} false alarms on held-out originals.")
