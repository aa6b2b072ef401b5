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
from IPython.display import Markdown, display

from iqalib import classifiers, features, iqa_datasets, params, report

P = params.load(params_path)
RUN = params.run_dir(P)
report.use_style()
print(f"run '{P.run_name}': classifiers {list(P.classifiers_table1)}, IQA sets {[s['name'] for s in P.iqa_sets]}")

# %% [markdown]
# ## The IQA data
# Each set is one table: reference, distorted image, distortion type, level, and a score in [0, 1]
# (higher = better). Real data sets are normalised as the paper does (TID2013 MOS/9, CSIQ 1 − DMOS,
# LIVE 1 − DMOS/100); the embedded set is built once and cached.

# %%
iqa = iqa_datasets.from_params(P, RUN)
overview = pd.concat(iqa.values()).groupby(["dataset", "distortion"]).agg(
    images=("path", "size"), references=("ref_id", "nunique"), mos_mean=("mos", "mean")).reset_index()
overview

# %% [markdown]
# ## Classify references and distorted images
# One backbone pass per image, cached on disk under `outputs/<run>/cache/`: a re-run recomputes
# nothing. Images that cannot be read are skipped and counted in the manifest.

# %%
pairs = []
for name in P.classifiers_table1:
    weights = P.classifier_weights if name == P.classifier else None
    clf = classifiers.load_classifier(name, P.device, weights)
    for dataset, table in iqa.items():
        scored, counts = features.iqa_predictions(clf, table, features.cache_for(RUN), P.batch_size)
        report.save_counts(f"01_{dataset}_{name}", counts, P)
        pairs.append(scored)
pairs = pd.concat(pairs, ignore_index=True)
pairs[["dataset", "classifier", "distortion", "level", "mos", "top1_ref", "top1", "wup"]].head()

# %% [markdown]
# ## The originals: how good is the classifier before any distortion?
# The run's original images (embedded: the 20 labelled ImageNet photos shipped in the foolbox
# wheel, with deterministic views) pass the paper's rules: grey-scale images and images under
# 90 px are excluded; unreadable files are skipped. Counts go to the manifest.

# %%
originals = features.load_originals(P)
report.save_counts("01_originals", originals.counts(), P)
clf = classifiers.load_classifier(P.classifier, P.device, P.classifier_weights)
clean = features.original_predictions(clf, originals, features.cache_for(RUN), P.batch_size)
print(f"{originals.counts()} -> top-1 accuracy of {clf.name} on {len(clean)} originals: {clean['correct'].mean():.3f}")

# %% [markdown]
# ## Table I
# Median, mean and standard deviation of the subjective score (`mos_*`) and of the Wu-Palmer
# similarity between top-1 on the reference and on the distorted image (`wup_*`), per data set and
# classifier; `top1_changed` is the share of distorted images whose top-1 differs from the
# reference's. The paper's values stand beside ours (`paper_*`).

# %%
paper, transcribed = report.paper_values("table1")
table1 = report.paper_vs_ours(features.table1(pairs), paper, on=["dataset", "classifier"])
caption = ("Table I. Subjective quality and Wu-Palmer similarity of top-1 (reference vs distorted). "
           + ("Embedded set: scores are pseudo-MOS (HaarPSI), not human opinions. " if "embedded" in iqa else "")
           + ("" if transcribed else "Paper columns are empty: the paper's values are not transcribed in iqalib/data/paper_values.yaml."))
report.save_table(table1, "table1", P, caption)
display(Markdown(caption))
table1

# %% [markdown]
# Per distortion type, the same similarity (mean) and how often the top-1 changes:

# %%
by_type = pairs.groupby(["dataset", "classifier", "distortion"]).agg(
    n=("wup", "size"), mos_mean=("mos", "mean"), wup_mean=("wup", "mean"),
    top1_changed=("top1", lambda s: float((s != pairs.loc[s.index, "top1_ref"]).mean()))).reset_index()
report.save_table(by_type, "table1_by_distortion", P, "Table I broken down by distortion type.")
by_type

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
from scipy.stats import spearmanr

rho = pairs.groupby(["dataset", "classifier", "distortion"]).apply(
    lambda g: spearmanr(g["mos"], g["wup"]).statistic if g["wup"].nunique() > 1 else float("nan"),
    include_groups=False).rename("spearman_mos_wup").reset_index()
report.save_table(rho, "table1_spearman", P, "Spearman correlation of quality score and Wu-Palmer similarity.")
rho

# %% [markdown]
# ## Reading the numbers
# * The paper's finding is that lower quality goes with lower similarity: distortions move the
#   top-1 to *semantically distant* classes, not only to near neighbours. Check the `wup_mean` and
#   `spearman_mos_wup` columns above for whether our data agree.
# * On the embedded set the score is a pseudo-MOS from a full-reference metric: it measures
#   signal fidelity, and it ranks distortion types differently than people do (e.g. contrast loss
#   scores low on HaarPSI). Comparisons with the paper's human MOS are about direction, not size.
# * The embedded set has 11 reference photos, several of them (astronaut, retina, micrographs)
#   outside ImageNet's classes; their top-1 on the reference is already a guess, so a change of
#   top-1 there is not a classification error in the paper's sense.
# * NLTK's Wu-Palmer similarity of a class with *itself* is below 1 for 107 ImageNet classes (mostly
#   dog breeds with two hypernym paths); we keep NLTK's values exactly, so an unchanged top-1 can
#   score e.g. 0.81 (chihuahua). `top1_changed` counts changes exactly.

# %%
summary = table1[["dataset", "classifier", "n_images", "mos_mean", "wup_mean", "top1_changed"]]
display(Markdown("**This run:** " + "; ".join(
    f"{r.dataset}/{r.classifier}: n={r.n_images}, mean score {r.mos_mean:.2f}, mean similarity {r.wup_mean:.2f}, "
    f"top-1 changed on {r.top1_changed:.0%}" for r in summary.itertuples())))
