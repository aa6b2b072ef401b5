# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Quality vs. accuracy (Section III, Table I and Fig. 3 right)
#
# Feng & Cai ask first whether poor image quality alone makes an ImageNet classifier fail. For every
# image of a subjective IQA data set they compare the classifier's top-1 class on the pristine
# reference with its top-1 on each distorted version, measuring *how wrong* the change is with the
# Wu-Palmer similarity of the two WordNet classes (1 = same class; catamaran–trimaran 0.92,
# catamaran–safety pin 0.50). Table I summarises subjective quality and this similarity per data set
# and classifier; Fig. 3 (right) shows their joint density per distortion type.
#
# With `params/paper.yaml` the rows are TID2013, CSIQ and LIVE × AlexNet, VGG-16 and ResNet-152. With
# the embedded default they are the **embedded IQA set** (11 photos that ship inside scikit-image,
# scikit-learn and matplotlib, 10 distortions × 5 levels) whose scores are a **pseudo-MOS** —
# HaarPSI, a full-reference metric — not human opinions, classified by EfficientNet-Lite0.

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
import pandas as pd
from scipy.stats import spearmanr

from iqalib import experiment, features, report, tables, verdicts

run = experiment.open_run(params_path)
P = run.params
report.use_style()
print(f"run '{P.run_name}': classifiers {list(P.classifiers_table1)}, IQA sets {[s['name'] for s in P.iqa_sets]}")

# %% [markdown]
# ## The IQA data
# Each set is one table: reference, distorted image, distortion type, level, and a score in [0, 1]
# (higher = better). Real data sets are normalised as the paper does (TID2013 MOS/9, CSIQ 1 − DMOS,
# LIVE 1 − DMOS/100); the embedded set is built once and cached.

# %%
iqa = experiment.iqa_sets(run)
overview = pd.concat(iqa.values()).groupby(["dataset", "distortion"]).agg(
    images=("path", "size"), references=("ref_id", "nunique"), mos_mean=("mos", "mean")).reset_index()
report.save_table(overview, "iqa_sets", P, "The IQA data: images, reference photos and mean score per distortion"
                  + (" (embedded set: pseudo-MOS, HaarPSI)." if "embedded" in iqa else "."))

# %% [markdown]
# ## Classify references and distorted images
# One backbone pass per image, cached on disk under `outputs/<run>/cache/`: a re-run recomputes
# nothing. Images that cannot be read are skipped and counted in the manifest.

# %%
pairs = []
for name in P.classifiers_table1:
    clf = run.classifier_named(name)
    for dataset, table in iqa.items():
        scored, counts = features.iqa_predictions(clf, table, **run.pass_options)
        report.save_counts(f"01_{dataset}_{name}", counts, P)
        pairs.append(scored)
pairs = pd.concat(pairs, ignore_index=True)

# %% [markdown]
# ## The originals: how good is the classifier before any distortion?
# The run's original images pass the paper's rules: grey-scale images and images under 90 px are
# excluded; unreadable files are skipped. Counts go to the manifest.

# %%
originals = experiment.originals(run)
report.save_counts("01_originals", originals.counts(), P)
clean = experiment.clean_predictions(run, originals)
print(f"{originals.counts()} -> top-1 accuracy of {run.classifier.name} on {len(clean)} originals: "
      f"{clean['correct'].mean():.3f}")

# %% [markdown]
# ## Table I
# Median, mean and standard deviation of the subjective score (`mos_*`) and of the Wu-Palmer
# similarity between top-1 on the reference and on the distorted image (`wup_*`), per data set and
# classifier; `top1_changed` is the share of distorted images whose top-1 differs from the
# reference's. The paper's values stand beside ours (`paper_*`); its rows are TID2013, CSIQ and LIVE
# with AlexNet, VGG-16 and ResNet-152, so a run on other data shows them as rows of their own below ours.

# %%
paper, _ = report.paper_values("table1")
table1 = report.paper_vs_ours(tables.table1(pairs), paper, on=["dataset", "classifier"], keep_paper_rows=True)
caption = ("Table I. Subjective quality and Wu-Palmer similarity of top-1 (reference vs distorted). "
           + ("Embedded set: scores are pseudo-MOS (HaarPSI), not human opinions. " if "embedded" in iqa else ""))
report.save_table(table1, "table1", P, caption, view_columns=["dataset", "classifier", "n_images", "mos_mean",
                                                              "wup_median", "wup_mean", "wup_std", "top1_changed",
                                                              "paper_mos_mean", "paper_wup_median", "paper_wup_mean"])

# %% [markdown]
# Per distortion type, the same similarity (mean) and how often the top-1 changes:

# %%
by_type = pairs.groupby(["dataset", "classifier", "distortion"]).agg(
    n=("wup", "size"), mos_mean=("mos", "mean"), wup_mean=("wup", "mean"),
    top1_changed=("top1", lambda s: float((s != pairs.loc[s.index, "top1_ref"]).mean()))).reset_index()
report.save_table(by_type, "table1_by_distortion", P, "Table I broken down by distortion type.")

# %% [markdown]
# ## Fig. 3 (right): similarity against quality, per distortion type
# A kernel density estimate of (score, Wu-Palmer similarity) for each distortion type, points on
# top. If quality drives failure, low-score images should sit low on the similarity axis.

# %%
for (dataset, name), g in pairs.groupby(["dataset", "classifier"]):
    label = "pseudo-MOS (HaarPSI)" if dataset == "embedded" else "MOS (normalised)"
    fig = report.kde_grid(g, x="mos", y="wup", by="distortion", xlabel=label, ylabel="Wu-Palmer similarity",
                          title=f"{dataset} · {name}: top-1 similarity vs quality")
    suffix = "" if (len(iqa) == 1 and len(P.classifiers_table1) == 1) else f"_{dataset}_{name}"
    report.save_figure(fig, f"fig3_quality_vs_similarity{suffix}", P)

# %% [markdown]
# ## How strongly does quality predict the change? (beyond the paper)
# Spearman correlation between the score and the similarity, per data set, classifier and distortion.

# %%
rho = pairs.groupby(["dataset", "classifier", "distortion"]).apply(
    lambda g: spearmanr(g["mos"], g["wup"]).statistic if g["wup"].nunique() > 1 else float("nan"),
    include_groups=False).rename("spearman_mos_wup").reset_index()
report.save_table(rho, "table1_spearman", P, "Spearman correlation of quality score and Wu-Palmer similarity.")

# %% [markdown]
# ## Ours vs the paper
# On the embedded set the score is a pseudo-MOS from a full-reference metric: it measures signal
# fidelity and ranks distortion types differently than people do (contrast loss scores low on
# HaarPSI), so comparisons with the paper's human MOS are about direction, not size. Several
# embedded reference photos (streets, parks, cats) hold no single ImageNet class; their top-1 on the
# reference is already a guess, so a changed top-1 there is not a classification error in the
# paper's sense. A class compared with itself has similarity 1 (`iqalib.semantic`).

# %%
report.verdicts(verdicts.quality_vs_accuracy(table1, pairs), "01", P);
