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
# # 04 · The fit-for-task detector (Section V, Table V, Fig. 4, Appendix C — and beyond)
#
# The paper's contribution: a detector that needs no re-training of the classifier. Each image is
# described by six numbers — its top-5 class probabilities and its predicted quality — and an SVM
# learns to tell *adversarial* images from their originals. It is then asked about images it never
# saw in training: distorted images and fooling images.
#
# Protocol (Section V-B): train only on Adversarial images and their originals; split 50/50 **by
# source image**, so an original and its adversarial version always fall on the same side; repeat
# 10 times → 10 detectors; report mean ± std. SVM scaling and hyper-parameters are chosen by
# cross-validation on the training part only (grouped by source image as well).

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from sklearn.manifold import TSNE

from iqalib import classifiers, detector, groups, params, report
from iqalib.quality import QualityModel

P = params.load(params_path)
RUN = params.run_dir(P)
D = P.detector
report.use_style()
clf = classifiers.load_classifier(P.classifier, P.device, P.classifier_weights)
quality = QualityModel.load(RUN / "models" / "quality")
features, counts = groups.build(P, clf, quality)  # cached: the table of notebook 03

# %% [markdown]
# ## Ten detectors on paired, leak-free splits

# %%
splits = detector.paired_splits(features, D.n_splits, D.train_size, P.seed)
scores = detector.split_scores(features, splits, seed=P.seed)
per_split, table5 = detector.evaluate(features, splits=splits, scores=scores, n_boot=D.n_boot, seed=P.seed)
print(f"{len(splits)} splits over {len(splits[0][0]) + len(splits[0][1])} source images with an adversarial twin")

# %% [markdown]
# ## Table V
# `detection_rate`: share judged *not fit* (for `original` that is the false-alarm rate);
# `fit_accuracy`: classifier accuracy on the images judged fit; mean ± std over the detectors, with
# bootstrap 95 % intervals (`_ci_low`, `_ci_high`) over images.

# %%
paper5, transcribed = report.paper_values("table5")
table5_out = report.paper_vs_ours(table5, paper5, on=["group"])
caption = ("Table V. Detector (SVM on top-5 probabilities + predicted quality), trained on adversarial images and "
           f"their originals, {len(splits)} paired splits. "
           + ("Quality model trained on the embedded pseudo-MOS set; embedded originals (20 photos). " if "embedded" in P.quality.train_sets else "")
           + ("" if transcribed else "Paper columns empty: paper values not transcribed."))
report.save_table(table5_out, "table5", P, caption)
report.save_table(per_split, "table5_per_split", P, "Table V per split.")
table5_out

# %% [markdown]
# ## Beyond the paper: ROC curves and detection at a fixed false-alarm rate
# One operating point hides the trade-off. Negatives are held-out originals; positives each group
# in turn. Detection rates at a false-alarm rate of `target_fpr` on held-out originals.

# %%
roc_points, auc = detector.roc_per_group(features, splits, scores=scores, seed=P.seed)
fig = detector.plot_roc(roc_points, auc=auc)
report.save_figure(fig, "roc_per_group", P)
at_fpr = detector.rates_at_false_alarm(features, splits, target_fpr=D.target_fpr, scores=scores, n_boot=D.n_boot, seed=P.seed)
report.save_table(auc, "roc_auc", P, "AUC per group (held-out originals as negatives), mean ± std over splits.")
auc

# %% [markdown]
# ## Beyond the paper: does quality add detection power? (ablation)
# The paper's central claim is that predicted quality helps. Same splits, three feature sets:
# quality only, top-5 only, both.

# %%
ablation = detector.ablation(features, splits, seed=P.seed, target_fpr=D.target_fpr, scores={"top5+quality": scores})
report.save_table(ablation, "ablation", P, f"Ablation: AUC and detection rate at {D.target_fpr:.0%} false alarms per feature set.")
ablation.pivot(index="group", columns="features", values="auc").round(3)

# %% [markdown]
# ## Beyond the paper: Feature Squeezing (Xu et al., NDSS 2018) as a peer detector
# L1 distance between the softmax on an image and on its squeezed versions (5-bit colour depth,
# 2×2 median filter), thresholded at the same false-alarm rate on the same held-out originals.

# %%
fs = features[["group", "source_id", "label", "correct"]].assign(
    score=detector.feature_squeezing_scores(clf, groups.row_images(P, clf, features)))
peers = detector.feature_squeezing_rates(fs, D.target_fpr, splits=splits, n_boot=D.n_boot, seed=P.seed)
comparison = pd.concat([at_fpr, peers], ignore_index=True)
report.save_table(comparison, "detectors_at_fixed_fpr", P,
                  f"Detection rate per group at {D.target_fpr:.0%} false alarms on held-out originals: our detector vs Feature Squeezing.")
comparison.pivot(index="group", columns="method", values="detection_rate").round(3)

# %% [markdown]
# ## Fig. 4: t-SNE of the six-dimensional features
# The paper shows originals and Fool_EV images separating in the 6-d feature space; we show all groups.

# %%
cols = list(detector.FEATURES)
emb2 = TSNE(n_components=2, perplexity=min(30, max(5, len(features) // 10)), random_state=P.seed,
            init="pca").fit_transform(features[cols].to_numpy())
fig, ax = plt.subplots(figsize=(5.5, 4.5))
for g in detector.GROUPS:
    m = (features["group"] == g).to_numpy()
    ax.scatter(emb2[m, 0], emb2[m, 1], s=8, alpha=0.7, label=f"{g} ({m.sum()})")
ax.legend(fontsize=7)
ax.set(title="t-SNE of [top-1..top-5, quality]", xticks=[], yticks=[])
report.save_figure(fig, "fig4_tsne", P)

# %% [markdown]
# ## Appendix C: examples detected, false alarms, and misses
# From the first split's detector: held-out images it flags (detected), held-out originals it
# flags (false alarms), and adversarial or distorted images it lets through (missed).

# %%
ev = scores[(scores["split"] == 0) & (scores["role"] == "eval")]
rows_by_kind = {
    "detected": ev[ev["flagged"] & (ev["group"] != "original")].sort_values("score", ascending=False).head(5),
    "false alarm": ev[ev["flagged"] & (ev["group"] == "original")].head(5),
    "missed": ev[~ev["flagged"] & ev["group"].isin(["adversarial", "distorted"])].sort_values("score").head(5),
}
rows, titles = [], []
for kind, picked in rows_by_kind.items():
    if len(picked):
        sub = features.iloc[picked["row"].to_numpy()]
        pics = groups.row_images(P, clf, sub)
        rows.append([(im, f"{r.group}\nq={r.quality:.2f} top1={r.top1:.2f}") for im, r in zip(pics, sub.itertuples())])
        titles.append(kind)
fig = report.gallery(rows, titles, "Appendix C: detector decisions (split 0) with predicted quality")
report.save_figure(fig, "appendixC_examples", P)

# %% [markdown]
# ## A detector to deploy
# One detector trained on *all* adversarial images and their originals, saved with a reference to
# the quality model, and used the way the paper proposes — as a first line of defence in front of
# the classifier: `FitForTaskDetector.load(path).predict_fit(images)`.

# %%
train = features[features["group"].isin(["original", "adversarial"]) & features["source_id"].isin(
    features.loc[features["group"] == "adversarial", "source_id"])]
final = detector.FitForTaskDetector(random_state=P.seed, classifier_name=clf.name, classifier_weights_id=clf.weights_id,
                                    quality_folder=str(RUN / "models" / "quality"))
final.fit(train[cols], (train["group"] == "adversarial").astype(int), groups=train["source_id"])
folder = final.save(RUN / "models" / "detector", run_folder=RUN)
loaded = detector.FitForTaskDetector.load(folder)
sample = features.groupby("group").head(2)
sample.assign(fit=loaded.predict_fit(groups.row_images(P, clf, sample), classifier=clf, quality=quality))[
    ["group", "image_id", "top1", "quality", "fit"]]

# %% [markdown]
# ## What agrees with the paper and what does not
# * Table V's structure follows the paper; its size does not: 20 embedded photos give few source
#   images per split, so the ± columns are wide. The paper used thousands of ImageNet images.
# * The ablation answers the paper's central claim on *our* data: if `top5+quality` does not beat
#   `top5` on a group, quality added nothing there.
# * Feature Squeezing is compared at the same false-alarm rate on the same held-out originals.
# * The detector learns only what separates adversarial images from their originals. Where the UAP
#   changes few top-1 labels (a pool of a few dozen images, as in the embedded default, does not
#   give a perturbation that transfers), the two training classes are nearly the same images, the
#   SVM has no signal, and its rates — false alarms on originals included — are not a finding
#   about the method. The line below says which case this run is.

# %%
t5 = table5.set_index("group")
changed = json.loads((RUN / "attacks" / "uap" / "uap.json").read_text())["fooling_rate"]  # on these originals
display(Markdown("**This run:** detection rate " + ", ".join(
    f"{g} {t5.loc[g, 'detection_rate']:.2f} ± {t5.loc[g, 'detection_rate_std']:.2f}" for g in t5.index)
    + f". The UAP changed the top-1 class of {changed:.0%} of the adversarial images"
    + (" — too few for the adversarial-vs-original training to carry signal: read Table V as a run of the "
       "pipeline, not as evidence for or against the detector." if changed < 0.5 else ".")))
