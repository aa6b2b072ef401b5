"""Notebook 05's tables: the quality half under attack, shaped from the rows ``robust`` and
``adaptive`` return — pure pandas/numpy: no I/O, no training (``robust_experiment`` computes the
rows, ``report`` writes and shows the tables, ``verdicts.robust`` reads them).

Score attacks ``robust_attacks`` (per image ``robust_attack_images``; how much less a defended
model's score moves than plain's, with paired bootstrap intervals, ``robust_change_cut`` and its
reading view ``cut_view``; how far the attacks take the scores, ``attack_reach``); certificates
``robust_certified``; the joint classifier + detector attack ``robust_detector``; a per-ε reading
view of any of them ``by_eps``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iqalib import metrics


def robust_attacks(model: str, rows: Sequence[Mapping[str, Any]], mos: np.ndarray) -> pd.DataFrame:
    """``robust_attacks.csv`` rows of one quality model from ``robust.attack_scores``: per attack and
    ε, the mean |s − s′| (the Guardians benchmark's absolute gain on [0, 1] scores), its relative
    gain (``metrics.relative_gain``, both scores from the same defended model), SROCC/PLCC of the
    attacked scores against ``mos``, the MSU robustness score R (higher = more robust). Timings are in ``robust_models`` and ``robust_certified`` only, so
    this table is the same bytes on every render of the same params."""
    out = []
    for r in rows:
        srocc, plcc = metrics.correlations(r["attacked"], mos)
        out.append({"quality_model": model, "attack": r["attack"], "eps_255": r["eps_255"], "n": len(r["clean"]),
                    "score_change_mean": float(np.mean(np.abs(r["attacked"] - r["clean"]))),
                    "relative_gain": metrics.relative_gain(r["clean"], r["attacked"]), "srocc": srocc,
                    "plcc": plcc, "robustness_R": metrics.robustness_score(r["clean"], r["attacked"])})
    return pd.DataFrame(out)


def robust_attack_images(model: str, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``robust_attack_images.csv``: the per-image scores behind ``robust_attacks`` (one row per
    image, attack and ε: ``image`` is its position in the attacked sample, the same for every
    model), so an interval over images can be drawn from the very numbers the means come from."""
    return pd.DataFrame([{"quality_model": model, "attack": r["attack"], "eps_255": r["eps_255"], "image": i,
                          "clean": float(c), "attacked": float(a)}
                         for r in rows for i, (c, a) in enumerate(zip(r["clean"], r["attacked"]))])


def _cut(defended: np.ndarray, reference: np.ndarray, axis: int = -1) -> np.ndarray:
    """1 − the defended model's mean change / the reference's; NaN where the reference's does not move."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = 1.0 - np.mean(defended, axis=axis) / np.mean(reference, axis=axis)
    return np.where(np.isfinite(cut), cut, np.nan)


def _cut_per_spread(defended: np.ndarray, reference: np.ndarray, defended_clean: np.ndarray,
                    reference_clean: np.ndarray, axis: int = -1) -> np.ndarray:
    """``_cut`` with each model's mean change in units of the spread (std) of its own clean scores
    on the same images: a model that squeezes its scores together moves them less in absolute terms
    without ranking images any more stably. NaN where a model's clean scores do not spread at all
    or the reference's do not move."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = 1.0 - (np.mean(defended, axis=axis) / np.std(defended_clean, axis=axis, ddof=1)) / (
            np.mean(reference, axis=axis) / np.std(reference_clean, axis=axis, ddof=1))
    return np.where(np.isfinite(cut), cut, np.nan)


def robust_change_cut(images: pd.DataFrame, reference: str = "plain", attacks: Sequence[str] = ("ifgsm_up", "ifgsm_down"),
                      n_boot: int = 2000, seed: int = 0, midpoint: float | None = 0.5) -> pd.DataFrame:
    """How much less each defended model's score moves than ``reference``'s under the gradient
    attacks, from ``robust_attack_images``: per model and ε, for each attack and for their mean
    (``attack`` = ``both``), cut = 1 − mean |Δs| / the reference's mean |Δs| on the same images, with
    a 95 % percentile bootstrap interval (``metrics.bootstrap_ci``) resampling images, paired: an
    image's changes under every attack and model travel together, so the interval is the point
    estimate's own procedure repeated, not a sum of two models' errors.

    ``cut_per_spread``: the same with each model's mean |Δs| divided by the sample std of its own
    clean scores over those images (``spread``, ``reference_spread``), so a defence that squeezes
    its scores together gets no credit for the squeeze; its interval resamples the images the same
    paired way, the spreads recomputed on each resample.

    With ``midpoint`` (the score scale's middle) and both I-FGSM directions among ``attacks``, the
    row ``toward_middle`` is NT's authors' evaluation (YangiD/DefenseIQA-NT, ``FGSM_demo.py``: the
    attack lowers a score above the middle of the scale and raises one below it, each model by its
    own clean score): each image's change under the direction its model's score picks."""
    change = images.assign(change=(images["attacked"] - images["clean"]).abs())
    change = change[change["attack"].isin(attacks)]
    wide = change.pivot_table(index=["eps_255", "image"], columns=["quality_model", "attack"], values="change")
    clean = change.pivot_table(index=["eps_255", "image"], columns=["quality_model", "attack"], values="clean")
    authors = midpoint is not None and {"ifgsm_up", "ifgsm_down"} <= set(attacks)
    rows = []

    def per_image(g: pd.DataFrame, m: str, attack: str) -> np.ndarray:
        if attack == "toward_middle":
            lowered = clean.loc[g.index, (m, "ifgsm_down")].to_numpy() > midpoint
            return np.where(lowered, g[(m, "ifgsm_down")], g[(m, "ifgsm_up")])
        return g[m][list(attacks) if attack == "both" else [attack]].mean(axis=1).to_numpy()

    for model in [m for m in change["quality_model"].unique() if m != reference]:
        for eps, g in wide.groupby(level="eps_255"):
            # every attack on a model starts from one clean score per image (robust.attack_scores scores once)
            ours_clean, theirs_clean = (clean.loc[g.index, (m, attacks[0])].to_numpy() for m in (model, reference))
            for attack in (*attacks, "both", *(["toward_middle"] if authors else [])):
                ours, theirs = per_image(g, model, attack), per_image(g, reference, attack)
                low, high = metrics.bootstrap_ci((ours, theirs), _cut, n_boot=n_boot, seed=seed)
                scaled = (ours, theirs, ours_clean, theirs_clean)
                scaled_low, scaled_high = metrics.bootstrap_ci(scaled, _cut_per_spread, n_boot=n_boot, seed=seed)
                rows.append({"quality_model": model, "reference": reference, "attack": attack, "eps_255": float(eps),
                             "n": len(ours), "change": float(ours.mean()), "reference_change": float(theirs.mean()),
                             "cut": float(_cut(ours, theirs)), "cut_ci_low": low, "cut_ci_high": high,
                             "spread": float(ours_clean.std(ddof=1)), "reference_spread": float(theirs_clean.std(ddof=1)),
                             "cut_per_spread": float(_cut_per_spread(*scaled)),
                             "cut_per_spread_ci_low": scaled_low, "cut_per_spread_ci_high": scaled_high})
    return pd.DataFrame(rows)


#: Which way each score attack pushes: +1 raises the score, −1 lowers it.
DIRECTIONS: dict[str, int] = {"ifgsm_up": 1, "ifgsm_down": -1}


def attack_reach(images: pd.DataFrame, tol: float = 0.05) -> pd.DataFrame:
    """How far the score attacks take each model's scores, from ``robust_attack_images``: per model,
    attack and ε, ``extreme``, the highest score the raising attack reached on that model at any ε
    (the lowest, for the lowering one: the attack's own best, not a proven end of the model's
    scale); ``at_extreme``, the share of images whose attacked score lies within ``tol`` of it;
    ``room``, the mean distance from the clean score to it in the attack's direction;
    ``progress``, the mean move in the attack's direction, a move against it counting as none;
    ``room_used``, progress / room; ``change``, the mean |Δs| (as in ``robust_attacks``, which counts
    a move against the attack's direction as change too); ``wrong_way``, the share of images moved
    against the attack's direction. Where ``room_used`` is near 1, the attack has taken the scores
    about as far as it takes them at any ε, and a smaller change there says less about how hard a
    score is to move than about where the attack stops on that model."""
    rows = []
    for (model, attack), g in images[images["attack"].isin(list(DIRECTIONS))].groupby(["quality_model", "attack"],
                                                                                       sort=False):
        sign = DIRECTIONS[attack]
        extreme = float(sign * (sign * g["attacked"]).max())
        for eps, e in g.groupby("eps_255"):
            moved = sign * (e["attacked"] - e["clean"]).to_numpy()
            room = float(np.mean(np.clip(sign * (extreme - e["clean"].to_numpy()), 0, None)))
            progress = float(np.mean(np.clip(moved, 0, None)))
            rows.append({"quality_model": model, "attack": attack, "eps_255": float(eps), "n": len(e),
                         "extreme": extreme,
                         "at_extreme": float(np.mean(np.abs(e["attacked"].to_numpy() - extreme) <= tol)),
                         "room": room, "progress": progress,
                         "room_used": progress / room if room > 0 else float("nan"),
                         "change": float(np.mean(np.abs(moved))), "wrong_way": float(np.mean(moved < 0))})
    return pd.DataFrame(rows)


# ``robust_change_cut_per_spread``: the columns of ``robust_change_cut`` that the cut per clean-score spread needs
PER_SPREAD_COLUMNS = ("quality_model", "reference", "attack", "eps_255", "n", "spread", "reference_spread",
                      "cut_per_spread", "cut_per_spread_ci_low", "cut_per_spread_ci_high")


def cut_view(cuts: pd.DataFrame, measure: str = "cut") -> pd.DataFrame:
    """``robust_change_cut`` for reading: one row per model and attack, one column per ε, each cell
    ``measure`` (``cut`` or ``cut_per_spread``) with its interval (``"20% [9, 31]"``); for
    ``cut_per_spread`` a last column gives the two clean-score spreads it divides by."""
    def percent(v: float) -> str:  # round() to an int first: no "-0" for a tiny negative
        return "nan" if np.isnan(v) else f"{round(v * 100)}"

    cells = cuts.assign(cell=[f"{percent(c)}% [{percent(lo)}, {percent(hi)}]" for c, lo, hi in
                              zip(cuts[measure], cuts[f"{measure}_ci_low"], cuts[f"{measure}_ci_high"])])
    wide = cells.pivot_table(index=["quality_model", "attack"], columns="eps_255", values="cell", aggfunc="first",
                             sort=False)
    wide.columns = [f"{measure.replace('_', ' ')} @{e:g}/255" for e in wide.columns]
    if measure == "cut_per_spread":  # the same images at every ε and attack: one pair per model
        first = cuts.groupby(["quality_model", "attack"], sort=False).first()
        wide["clean spread vs reference"] = [f"{a:.3f} vs {b:.3f}" for a, b in
                                             zip(first.loc[wide.index, "spread"], first.loc[wide.index, "reference_spread"])]
    return wide.reset_index()


def robust_certified(model: str, space: str, sigma: float, n_samples: int, certified: Mapping[str, np.ndarray],
                     radii: Sequence[float], seconds_per_image: float,
                     attacked: Mapping[float, np.ndarray] | None = None) -> pd.DataFrame:
    """``robust_certified.csv`` rows from ``Scorer.certify``: per ℓ2 radius, the mean width of the
    certified interval (uncertified images count the whole range, width 1) and the share certified.
    With ``attacked`` (radius -> deployed scores after an ℓ2 attack raising them within the radius):
    the largest certified rise (high − median; mean and max over images), the attack's achieved
    rise (mean and max) and the share of images whose attacked score stayed within the certificate."""
    rows = []
    for r in radii:
        low, high, median = certified[f"low_{r:g}"], certified[f"high_{r:g}"], certified["median"]
        row = {"quality_model": model, "space": space, "sigma": sigma, "n_samples": n_samples, "radius": float(r),
               "interval_width_mean": float(np.mean(high - low)),
               "certified_fraction": float(np.mean(certified[f"certified_{r:g}"])),
               "seconds_per_image": seconds_per_image}
        if attacked is not None:
            rise = np.asarray(attacked[r], float) - median
            row |= {"certified_rise_mean": float(np.mean(high - median)), "certified_rise_max": float(np.max(high - median)),
                    "attack_rise_mean": float(np.mean(rise)), "attack_rise_max": float(np.max(rise)),
                    "within_certificate": float(np.mean((attacked[r] <= high) & (attacked[r] >= low)))}
        rows.append(row)
    return pd.DataFrame(rows)


def by_eps(df: pd.DataFrame, values: Mapping[str, str], index: Sequence[str] = ("quality_model", "attack")) -> pd.DataFrame:
    """A long per-ε table (``robust_attacks``, ``robust_detector``) as one row per ``index`` and one
    column per measure and ε, named ``<label> @<ε>/255`` (``values``: column → label): what a
    reader compares across radii, in a few rows."""
    wide = df.pivot_table(index=list(index), columns="eps_255", values=list(values), sort=False)
    eps = sorted(df["eps_255"].unique())
    columns = [(v, e) for e in eps for v in values if (v, e) in wide.columns]
    wide = wide[columns]
    wide.columns = [f"{values[v]} @{e:g}/255" for v, e in columns]
    return wide.reset_index()


def robust_detector(model: str, attack: str, eps_255: float, judged: Mapping[str, np.ndarray],
                    clean_flagged: np.ndarray) -> dict[str, Any]:
    """One ``robust_detector.csv`` row from ``adaptive.judge`` on attacked held-out originals:
    ``attack_success_rate`` = share fooled AND judged fit; ``detection_rate`` = share flagged among
    those fooled (NaN when none is); ``false_alarm_rate`` = share of the same originals flagged clean;
    ``carried``, how many images kept a smaller radius's success (``adaptive.curve``) instead of
    being attacked again."""
    fooled, flagged = np.asarray(judged["fooled"], bool), np.asarray(judged["flagged"], bool)
    return {"quality_model": model, "attack": attack, "eps_255": float(eps_255), "n": len(fooled),
            "fooled_rate": float(fooled.mean()), "attack_success_rate": float((fooled & ~flagged).mean()),
            "detection_rate": float(flagged[fooled].mean()) if fooled.any() else float("nan"),
            "false_alarm_rate": float(np.mean(clean_flagged)),
            "carried": int(np.sum(judged.get("carried", False)))}
