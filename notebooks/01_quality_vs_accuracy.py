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
# the embedded default they are the **embedded IQA set** (photos that ship inside pip wheels,
# distorted as the params say) whose scores are a **pseudo-MOS** — a full-reference metric, not
# human opinions — classified by EfficientNet-Lite0. The run's own counts are printed below the
# first table.

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
from iqalib import experiment, figures, groups, report, tables, takeaways, verdicts

run = experiment.open_run(params_path)
figures.use_style()
print(f"run '{run.name}': classifiers {run.table1_classifiers}, IQA sets {run.iqa_set_names}")

# %% [markdown]
# ## The IQA data
# Each set is one table: reference, distorted image, distortion type, level, and a score in [0, 1]
# (higher = better). Real data sets are normalised as the paper does (TID2013 MOS/9, CSIQ 1 − DMOS,
# LIVE 1 − DMOS/100); the embedded set is built once and cached.

# %%
iqa = experiment.iqa_sets(run)
report.save_table(tables.iqa_overview(iqa), "iqa_sets", run, "The IQA data: images, reference photos and mean score "
                  "per distortion" + (f" (embedded set: pseudo-MOS, {run.metric_name})." if run.has_embedded_iqa else "."),
                  takeaway=takeaways.iqa_sets(iqa))

# %% [markdown]
# ## Classify references and distorted images
# One backbone pass per image, cached on disk under `outputs/<run>/cache/`: a re-run recomputes
# nothing. Images that cannot be read are skipped and counted in the manifest.

# %%
pairs, counts = experiment.iqa_pairs(run, iqa)
report.save_counts(counts, run, prefix="01_");

# %% [markdown]
# ## The originals: how good is the classifier before any distortion?
# The run's original images pass the paper's rules: grey-scale images and images under 90 px are
# excluded; unreadable files are skipped. Counts go to the manifest.

# %%
originals = experiment.originals(run)
report.save_counts({"originals": originals.counts()}, run, prefix="01_")
clean = groups.clean_predictions(run, originals)
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
table1 = report.paper_vs_ours(tables.table1(pairs), report.paper_values("table1")[0], on=["dataset", "classifier"],
                              keep_paper_rows=True)
caption = ("Table I. Subjective quality and Wu-Palmer similarity of top-1 (reference vs distorted). "
           + (f"Embedded set: scores are pseudo-MOS ({run.metric_name}), not human opinions." if run.has_embedded_iqa else ""))
report.save_table(table1, "table1", run, caption, view_columns=["dataset", "classifier", "n_images", "mos_mean",
                                                                "paper_mos_mean", "wup_median", "paper_wup_median",
                                                                "wup_mean", "paper_wup_mean", "wup_std", "top1_changed"],
                  takeaway=takeaways.table1(table1))

# %% [markdown]
# Per distortion type, the same similarity (mean) and how often the top-1 changes:

# %%
report.save_table(tables.table1_by_distortion(pairs), "table1_by_distortion", run, "Table I broken down by distortion type.")

# %% [markdown]
# ## Fig. 3 (right): similarity against quality, per distortion type
# A kernel density estimate of (score, Wu-Palmer similarity) for each distortion type, points on
# top. If quality drives failure, low-score images should sit low on the similarity axis.

# %%
one_panel = len(iqa) == 1 and len(run.table1_classifiers) == 1
for (dataset, name), g in pairs.groupby(["dataset", "classifier"]):
    fig = figures.kde_grid(g, x="mos", y="wup", by="distortion", xlabel=run.score_label(dataset),
                           ylabel="Wu-Palmer similarity", title=f"{dataset} · {name}: top-1 similarity vs quality")
    report.save_figure(fig, "fig3_quality_vs_similarity" + ("" if one_panel else f"_{dataset}_{name}"), run,
                       caption=f"Fig. 3 (right): density of (score, Wu-Palmer similarity) per distortion, {dataset} · {name}.",
                       takeaway=takeaways.quality_vs_similarity(g))

# %% [markdown]
# ## How strongly does quality predict the change? (beyond the paper)
# Spearman correlation between the score and the similarity, per data set, classifier and distortion.

# %%
report.save_table(tables.table1_spearman(pairs), "table1_spearman", run,
                  "Spearman correlation of quality score and Wu-Palmer similarity.")

# %% [markdown]
# ## Ours vs the paper
# On the embedded set the score is a pseudo-MOS from a full-reference metric: it measures signal
# fidelity and ranks distortion types differently than people do (contrast loss scores low on
# HaarPSI), so comparisons with the paper's human MOS are about direction, not size. Several
# embedded reference photos (streets, parks, cats) hold no single ImageNet class; their top-1 on the
# reference is already a guess, so a changed top-1 there is not a classification error in the
# paper's sense. A class compared with itself has similarity 1 (`iqalib.semantic`).

# %%
report.verdicts(verdicts.quality_vs_accuracy(table1, pairs), "01", run);
report.save_code_paths(run, "01");
