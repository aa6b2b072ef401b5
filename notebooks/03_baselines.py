# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
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
# # 03 · Baselines (Section IV, Table IV)
#
# Before the detector, two baselines on the five experiment groups of Section V-A:
#
# * **Original** — originals the classifier gets right (top-1);
# * **Distorted** — each original under Gaussian blur, white noise, JPEG and JPEG2000 at 5 levels
#   (applied to the classifier's 224×224 view, where ImageNet-C's level parameters are calibrated);
# * **Adversarial** — each original with the UAP of notebook 02 applied;
# * **Fool_EV**, **Fool_GD** — the fooling images of notebook 02.
#
# **Baseline-1** is the classifier alone: its accuracy per group, no quality awareness.
# **Baseline-2** rejects an image when its predicted quality is below a threshold (0.3 as in the
# paper, and 0.35): the share rejected per group (detection rate) and the accuracy on the images
# judged fit. Fooling images have no true class, so their accuracy is undefined (NaN).

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
import matplotlib.pyplot as plt

from iqalib import experiment, report, tables, verdicts

run = experiment.open_run(params_path)
P = run.params
report.use_style()

# %% [markdown]
# ## The per-image features table
# One row per image with the top-5 probabilities, top-1, predicted quality and correctness, written
# to `outputs/<run>/features.csv`. Everything is cached, so this reuses notebook 02's work.

# %%
features, counts = experiment.build_groups(run, run.quality)
for name, c in counts.items():
    report.save_counts(f"03_{name}", c, P)
features.groupby("group", sort=False).size().rename("images").to_frame().T

# %% [markdown]
# ## Table IV
#
# The paper's threshold 0.3 is on human MOS; on another quality scale it need not leave the same
# share of clean images below it. Beside the params' thresholds we also show the **matched**
# threshold: the one below which the paper's share of originals falls (2.44 % of ImageNet
# validation images are below 0.3, Section IV).

# %%
share = report.paper_claim("val_below_threshold")
matched = tables.matched_threshold(features, share)
thresholds = list(P.detector.thresholds) + ([matched] if matched not in P.detector.thresholds else [])
table4 = report.paper_vs_ours(tables.table4(features, thresholds), report.paper_values("table4")[0], on=["group"])
print(f"matched threshold: quality < {matched} ({share:.2%} of the originals below)")
caption = ("Table IV. Baseline-1: classifier accuracy per group. Baseline-2: share rejected at predicted quality "
           "< threshold (detection_rate_qT) and accuracy on images judged fit (fit_accuracy_qT). "
           + ("Quality model trained on the embedded pseudo-MOS set; originals: embedded labelled photos."
              if "embedded" in P.quality.train_sets else ""))
report.save_table(table4, "table4", P, caption)

# %% [markdown]
# ## Beyond the paper: Baseline-2 per distortion type and level
# A single threshold hides *which* distortions the quality model catches. Detection rate at the
# paper's threshold (first in the params), per distortion and level, next to the classifier's accuracy.

# %%
t0 = P.detector.thresholds[0]
dist = features[features["group"] == "distorted"].assign(rejected=lambda d: d["quality"] < t0)
by_level = dist.groupby(["distortion", "level"]).agg(detection_rate=("rejected", "mean"), accuracy=("correct", "mean"),
                                                     quality=("quality", "mean"), n=("rejected", "size")).reset_index()
report.save_table(by_level, "table4_distorted_by_level", P, f"Baseline-2 at quality < {t0} per distortion and level.")
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
for name, g in by_level.groupby("distortion"):
    axes[0].plot(g["level"], g["detection_rate"], marker="o", label=name)
    axes[1].plot(g["level"], g["accuracy"], marker="o", label=name)
axes[0].set(xlabel="level", ylabel=f"rejected (quality < {t0})", ylim=(-0.02, 1.02))
axes[1].set(xlabel="level", ylabel="classifier accuracy", ylim=(-0.02, 1.02))
axes[1].legend(fontsize=7)
fig.tight_layout()
report.save_figure(fig, "table4_distorted_by_level", P)

# %% [markdown]
# ## Ours vs the paper
# Baseline-2 is only as good as the quality model's calibration: a fixed threshold set on human MOS
# (0.3) need not mean the same on a quality model trained on a pseudo-MOS. The params' thresholds
# and the matched one are shown; the detector in notebook 04 learns its boundary instead.

# %%
report.verdicts(verdicts.baselines(table4, t0, matched, share), "03", P);
