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
#
# Where the paper is silent we decide before looking at any test group:
# * **The operating point is the paper's**: its detector judges 91.43 % of originals fit (Sec. V-D),
#   so each split's threshold flags 8.57 % of *that split's training originals*, scored out of fold
#   (each by a detector fitted on the other folds, grouped by photo). No threshold ever sees a
#   held-out image; the false-alarm rate on held-out originals is then a measurement, not a setting.
#   5 % (Feature Squeezing's convention) and the SVM's own threshold are secondary columns.
# * **The kernel is linear**: the detector is judged on distorted and fooling images far below any
#   quality it saw in training, where an RBF decision function decays to its intercept (whether
#   such an image is flagged is then the sign of one number); a linear one is monotone there. The
#   argument is in `iqalib/detector.py`; RBF stays a row of the kernel ablation below.

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
import pandas as pd

from iqalib import experiment, figures, groups, peer_experiment, report, tables, takeaways, verdicts

run = experiment.open_run(params_path)
figures.use_style()
features = groups.load(run)  # written by notebook 02

# %% [markdown]
# ## Ten detectors on paired, leak-free splits

# %%
study = experiment.detector_study(run, features)
per_split, table5 = study.table5()
print(f"{len(study.splits)} splits over {study.n_sources} source images with an adversarial twin")

# %% [markdown]
# ## Table V
# At the paper's operating point. `detection_rate`: share judged *not fit* (for `original` that is
# the false-alarm rate on held-out originals, also in `false_alarm_rate`); `fit_accuracy`:
# classifier accuracy on the images judged fit. Each is the mean over the ten detectors ± their std,
# with a 95 % interval (`_ci_low`, `_ci_high`) from the same estimator: the mean over splits
# recomputed on photos drawn with replacement (percentile bootstrap). Secondary columns: detection at
# 5 % false alarms on training originals (`detection_rate_fpr05`) and at the SVM's own threshold
# (`_default`).

# %%
table5 = report.paper_vs_ours(table5, report.paper_values("table5")[0], on=["group"])
caption = (f"Table V. Detector (linear SVM on top-5 probabilities + predicted quality), trained on adversarial images "
           f"and their originals, {len(study.splits)} paired splits, at the paper's operating point ({study.paper_fpr:.2%} "
           "of each split's training originals flagged, out of fold); mean ± std over splits, 95 % CI: percentile "
           "bootstrap over photos of the same mean. " + run.data_note)
report.save_table(table5, "table5", run, caption, view_columns=[
    "group", "n", "detection_rate", "detection_rate_ci_low", "detection_rate_ci_high", "paper_detection_rate",
    "fit_accuracy", "paper_fit_accuracy", "detection_rate_fpr05", "detection_rate_default"],
                  takeaway=takeaways.table5(table5))
report.save_table(per_split, "table5_per_split", run, "Table V per split.", show=False)

# %% [markdown]
# ## Beyond the paper: ROC curves and detection at a fixed false-alarm rate
# One operating point hides the trade-off. Negatives are held-out originals; positives each group
# in turn (AUC needs no threshold).

# %%
roc_points, auc = study.roc()
report.save_figure(figures.roc(roc_points, auc=auc), "roc_per_group", run,
                   caption="ROC of the paper's detector per group, held-out originals as negatives, mean over splits.")
report.save_table(auc, "roc_auc", run, "AUC per group (held-out originals as negatives), mean ± std over splits.")
at_fpr = study.at_false_alarm()

# %% [markdown]
# ## Beyond the paper: does quality add detection power? (ablation)
# The paper's central claim is that the classifier's top-5 probabilities and predicted quality
# *together* tell unfit images apart better than quality alone (Baseline-2). Same splits, three
# feature sets: quality only, top-5 only, both.

# %%
ablation = study.ablation()
report.save_table(ablation, "ablation", run, "Ablation: AUC and detection rate per feature set, at the SVM's own "
                  f"threshold and at the paper's operating point ({study.paper_fpr:.2%} of training originals, out of "
                  "fold).", view_columns=["features", "group", "auc", "auc_std", "detection_rate", "detection_rate_at_fpr"])

# %% [markdown]
# ## Beyond the paper: which SVM? (kernel ablation)
# The paper says only "SVM". Ours is linear, decided from the argument above, not from this table.
# Same splits, each choice (RBF alone, or RBF vs linear picked by grouped cross-validation on
# adversarial images and originals — the only groups any of them trains on), every group: the
# groups never seen in training show how each kernel *extrapolates*.

# %%
kernels = study.kernel_ablation()
report.save_table(kernels, "kernel_ablation", run, "Detector (top-5 + quality) per kernel choice, same splits: AUC against "
                  "held-out originals and detection rates (the SVM's own threshold; the paper's operating point)."
                  + (f" RBF choices fitted on a seeded {study.rbf_fit_cap} training photos per split (detector.rbf_fit_cap)."
                     if study.rbf_fit_cap else ""),
                  view_columns=["kernel", "group", "auc", "detection_rate", "detection_rate_at_fpr"])

# %% [markdown]
# ## Beyond the paper: would more training pairs help? (learning curve)
# The paper's detectors train on about 19,000 pairs each; a run on a few hundred photos trains on
# far fewer. Same splits, the same held-out pairs; each detector trained on a seeded share of its
# split's training pairs. An AUC still rising at the full share says more photos would help; a flat
# one says the six inputs set the ceiling. `quality_auc`: the predicted quality alone as the score
# (low = not fit), untrained, on the same pairs.

# %%
report.save_table(study.learning_curve(), "learning_curve", run, "Detector AUC, adversarial vs held-out originals, by "
                  "training pairs per split (same splits and held-out pairs); quality_auc: predicted quality alone. "
                  + run.data_note)

# %% [markdown]
# ## Beyond the paper: Feature Squeezing (Xu et al., NDSS 2018) as a peer detector
# L1 distance between the softmax on an image and on its squeezed versions (5-bit colour depth,
# 2×2 median filter). It trains nothing, but its threshold follows our rule: set on the originals
# of each split's training half, for the same two false-alarm rates, judged on the same held-out
# images. It scores every original, adversarial and fooling image and a seeded sample of the
# distorted ones (`detector.peer_distorted`; the softmax of the unsqueezed image comes from the cache).

# %%
peer_rows = peer_experiment.peer_rows(run, features)
squeezed = peer_experiment.feature_squeezing(run, peer_rows)
comparison = pd.concat([at_fpr, study.peer_rates(squeezed, "feature_squeezing")], ignore_index=True)
report.save_table(comparison, "detectors_at_fixed_fpr", run,
                  f"Detection rate per group at {study.paper_fpr:.2%} and {study.target_fpr:.0%} false alarms, thresholds "
                  "set on training originals (ours: out of fold): our detector vs Feature Squeezing.",
                  view_columns=["group", "method", "target_fpr", "detection_rate", "detection_rate_ci_low",
                                "detection_rate_ci_high", "n"])

# %% [markdown]
# ## Beyond the paper: the field's detectors, and a quality-aware one
# What a reader would use instead. Failure detection on the logits: maximum softmax probability
# (MSP, the strongest overall in FD-Shifts), DOCTOR, energy, MaxLogit, entropy. OOD detection on the
# penultimate embedding: Mahalanobis, ViM, KNN (all but DOCTOR from `pytorch-ood`), fitted only on
# clean images outside each split's test photos: the IQA references and the split's training
# originals. Adversarial detection: Feature Squeezing. Ours: the paper's detector; the same SVM on
# [MSP, quality] (does quality add to confidence?); and `fit_for_task+`, the paper's features plus
# two cheap peers' scores from the same pass (energy, squeezing distance), trained exactly like the
# paper's. Every detector is scored on the same images (Feature Squeezing's rows) and splits, and
# every threshold is set on training originals (out of fold for the fitted ones). `auroc`: held-out
# originals vs the group; `detection_rate`: at the paper's operating point, with its photo-bootstrap
# interval; `detection_rate_fpr05`: at 5 %; `fpr_at_95tpr`: false alarms when 95 % are caught;
# `n_fit`: clean images a feature-space peer was fitted on per split.

# %%
peer_study = peer_experiment.detector_comparison(run, study, peer_rows, squeezed)
peer_table = peer_study.table()
report.save_table(peer_table, "peer_comparison", run, f"Detectors on the same images and splits, at {study.paper_fpr:.2%} "
                  f"and {study.target_fpr:.0%} false alarms (thresholds from training originals). " + run.data_note,
                  view_columns=["detector", "group", "auroc", "detection_rate", "detection_rate_ci_low",
                                "detection_rate_ci_high", "detection_rate_fpr05", "fpr_at_95tpr", "n_fit"])
report.save_table(pd.DataFrame(peer_study.sources.items(), columns=["detector", "source"]), "peer_sources", run,
                  "What each detector is and where its scores come from.")
report.save_figure(figures.roc_grid(peer_study.roc()[0], "ROC per group, every detector (held-out originals as "
                                    "negatives, mean over splits)"), "roc_all_detectors", run,
                   caption="ROC per group of every detector: ours, the field's failure and OOD detectors, Feature "
                           "Squeezing.")

# %% [markdown]
# ## Beyond the paper: what the gate keeps (risk–coverage)
# The user's question: if I reject what a detector flags, how accurate is what I keep? Held-out
# labelled images are accepted in order of the detector's score; the curve is the accuracy of the
# accepted images against the share accepted (coverage), and AURC the mean risk over coverages
# (Geifman & El-Yaniv 2017; lower is better; `no detector` accepts in arbitrary order). The star is
# the paper's detector at its operating point (Table V: its accuracy on the images it passes, at the
# share it passes; 55 % → 85 % on adversarial images is its own example).

# %%
curves, aurc = peer_study.risk_coverage()
paper_points = peer_study.paper_points(report.paper_values("table5")[0])
report.save_figure(figures.risk_coverage(curves, paper_points, "Accuracy of accepted images vs coverage, per detector "
                                         "(mean over splits)"), "risk_coverage", run,
                   caption="Accuracy of the images a detector accepts against the share it accepts (risk–coverage); "
                           "the star is the paper's operating point.")
report.save_table(aurc, "aurc", run, "AURC (mean risk over coverage; lower is better) per detector and group, mean ± "
                  "std over splits. " + run.data_note)

# %% [markdown]
# ## Fig. 4: t-SNE of the six-dimensional features
# The paper shows originals and Fool_EV images separating in the 6-d feature space; we show all groups.

# %%
report.save_figure(figures.tsne(study.tsne(), features["group"]), "fig4_tsne", run,
                   caption="Fig. 4: t-SNE of the detector's six inputs [top-1..top-5, quality], one colour per group.")

# %% [markdown]
# ## Appendix C: examples detected, false alarms, and misses
# From the first split's detector at the paper's operating point: held-out images it flags
# (detected), held-out originals it flags (false alarms), and adversarial or distorted images it
# lets through (missed). Level 5 of JPEG 2000 and of white noise leaves little of the photo (JPEG
# 2000 at 0.025 bits per pixel on a 224-px image is a few hundred bytes: grey with blobs; PSNR on
# six foolbox photos 13.7 and 10.5 dB, where level-5 JPEG keeps 24.1), so the most confidently
# flagged distorted images need not look like photos.

# %%
picked = study.examples()
pictures = {kind: groups.row_images(run, rows) for kind, rows in picked.items()}
report.save_figure(figures.examples(picked, pictures, "Appendix C: detector decisions (split 0) with predicted quality"),
                   "appendixC_examples", run, caption="Appendix C: what the first split's detector flags, flags "
                   "wrongly and misses (the most confident of each group in turn; a distorted image named by its "
                   "distortion and level); q: predicted quality. " + run.data_note)

# %% [markdown]
# ## A detector to deploy
# One detector trained on *all* adversarial images and their originals, its threshold at the
# paper's operating point on their out-of-fold scores, saved with a reference to the quality model,
# and used the way the paper proposes — as a first line of defence in front of the classifier:
# `FitForTaskDetector.load(path).predict_fit(images)`.

# %%
deployed = experiment.deploy_detector(run, features)
sample = features.groupby("group").head(2)
decided = sample.assign(fit=deployed.predict_fit(groups.row_images(run, sample), classifier=run.classifier,
                                                 quality=run.quality))
report.show_table(decided[["group", "image_id", "top1", "quality", "fit"]].reset_index(drop=True),
                  "The deployed detector, reloaded from disk, on two images per group.")

# %% [markdown]
# ## Ours vs the paper
# Table V's structure follows the paper; its size does not: the embedded default has about a hundred
# labelled photos, the paper thousands of ImageNet images, so the ± columns are wide. The detector
# learns only what separates adversarial images from their originals: where the UAP changes few
# top-1 labels, the two training classes are nearly the same images and its rates are not a finding
# about the method — the verdicts below say so when that is the case. The last rows go beyond the
# paper: the paper's detector against the best of the field's detectors on each group, the
# quality-aware `fit_for_task+` against its goal, and MSP with and without quality.

# %%
table4 = report.paper_vs_ours(tables.table4(features, run.thresholds), report.paper_values("table4")[0], on=["group"])
report.verdicts(verdicts.detector(table5, table4, ablation, run.thresholds[0], tables.fooling_rate(features))
                + verdicts.peers(peer_table), "04", run);
report.save_code_paths(run, "04");
