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
# # 05 · The quality half under attack — and three defences (beyond the paper)
#
# The paper's detector trusts its quality score. An attacker who knows the system attacks that
# score too. This notebook attacks the DTNIQ-f quality model and hardens it three ways, each after
# its authors (NT with two changes of ours, named), side by side on one model:
#
# * **NT** (Liu et al., CVPR 2024): under an ℓ∞ perturbation of size ε the score moves by at most
#   about ε·‖∇ₓf‖₁, so the *whole* quality model is trained with a penalty on that norm (λ =
#   `nt.lam`, h = `nt.h`, as in YangiD/DefenseIQA-NT; by default with two changes of ours, named
#   below). DTNIQ-f's input gradient is Jᵀ·∇heads, with J the frozen backbone's feature Jacobian;
#   heads alone cannot make J small, so the NT model gets its own copy of the backbone blocks its
#   heads read (stem and blocks 0–3), initialised from the classifier's weights and trained with the
#   heads. The classifier stays frozen and untouched.
# * **DMS** (DMS-IQA, Shumitskaya et al. 2024): the median of the score over Gaussian noise
#   (σ = `smoothing.sigma` on [0, 1] pixels) with a small DnCNN denoiser in front, trained with MSE and
#   then with a rank-preserving loss through the metric; its order statistics give a *certified*
#   interval for the score under any ℓ2 perturbation of radius r.
# * **FS** (the FS-IQA idea, arXiv 2508.05516): the same median, but the noise is added to the
#   features the heads read — one backbone pass, `feature_smoothing.n` cheap head passes.
#
# Then the detector of notebook 04 is given each quality model in turn and attacked *adaptively*,
# at the literature's strength: selective and orthogonal PGD (Bryniarski et al., ICLR 2022) through
# classifier, quality model and SVM, with expectation over the smoothing noise.
#
# Data: one content-disjoint split of the IQA set (by reference photo, the run's seed). The plain
# and NT models train on one side; every number below is measured on the held-out photos. With the
# embedded default the scores are a pseudo-MOS (HaarPSI), not human opinion, and the samples are
# small (`n_images` attacked images per model, `adaptive.n_images` originals per detector attack):
# read the ± of small samples into every rate.

# %% tags=["parameters"]
params_path = "../params/default.yaml"

# %%
import pandas as pd

from iqalib import experiment, figures, groups, report, robust_tables, verdicts
from iqalib import robust_experiment as rx

run = experiment.open_run(params_path)
figures.use_style()
data = rx.robust_data(run)
report.show_table(data.sizes(), "Training and held-out parts (content-disjoint).")

# %% [markdown]
# ## Four quality models and an ablation
# **plain**: `n_models` DTNIQ-f heads with the run's settings (notebook 00's recipe) on the training
# photos, reading the classifier's own pass. **NT**: a copy of plain with its own feature layers;
# layers (`nt.layer_lr`) and heads (`nt.lr`) trained with the authors' loss, L1(f(x), MOS) +
# λ·mean(dl²)/2 with dl = (f(x + h·sign(∇f)) − f(x))/h ≈ ‖∇f‖₁ in the normalised input space, on
# `nt.batch_size` training images per step. Two changes are ours (`nt.difference`, `nt.around_255`;
# `forward` and 0 give the authors' form): the backward difference is penalised too, and both are
# taken at a uniform random point within `nt.around_255`/255 of the image, where an attack goes,
# instead of at the image: on training photos the authors' form, over NT's training seeds, fell
# short of 30 % less change within 0.05 of plain's SROCC at every setting we measured (single runs
# came near it and did not hold when run again; README, "Notebook 05"). The copied
# convolutions carry the classifier's BatchNorm, folded into their weights and bias, and batch
# statistics are never used (the authors train HyperIQA with BatchNorm in training mode, on a GPU).
# **DMS**: the plain heads behind input noise and the denoiser, trained first with MSE on the
# training photos' crops, then fine-tuned with MSE + a pairwise hinge through the plain metric: two
# noisy-denoised training images must keep the order of their clean scores (`denoiser.rank`).
# **dms_mse**: the same without the rank fine-tuning — the ablation. **FS**: the plain heads on
# noisy features (σ in units of each feature's training std). Models are saved under `models/` and
# reused while their inputs are unchanged; DMS and FS are the plain heads behind noise, nothing more
# to save.

# %%
models = rx.robust_quality_models(run, data)
denoisers = rx.robust_denoiser(run, data, models["plain"])
scorers = rx.robust_scorers(run, models["plain"], models["nt"], denoisers)
report.save_figure(figures.robust_training(models["nt_log"], denoisers["mse_log"], denoisers["rank_log"]),
                   "robust_training", run,
                   caption="Training: NT's input-gradient norm where its difference is taken, the denoiser's MSE "
                           "against doing nothing, and the share of pairs the rank fine-tuning leaves out of order, per step.")

# %% [markdown]
# ## Clean correlation and cost
# Each model on the same `n_srocc` held-out images: SROCC/PLCC against the target, and what a
# score costs — passes per image through the classifier's backbone (plain: the very pass that
# classifies), through NT's own feature layers (on top of the classifier's pass), through heads and
# denoiser, and seconds per image on this machine.

# %%
clean = rx.robust_clean(run, scorers, data)
report.save_table(clean, "robust_models", run, f"Quality models on {len(data.srocc)} held-out images: SROCC/PLCC against "
                  f"{run.target}, passes and seconds per image (2-core CPU unless the manifest says otherwise); "
                  "dms_mse is the ablation without the rank-preserving loss.")

# %% [markdown]
# ## Score attacks (the MSU and "Guardians of Image Quality" benchmarks' evaluation)
# I-FGSM that raises (`ifgsm_up`) or lowers (`ifgsm_down`) the score, ε ∈ `eps_255`/255, step 1/255,
# 10 iterations; `random_sign` is uniform ±ε noise, the attack-free reference. A smoothed model is
# attacked through expectation over its noise (`eot_draws` draws per step) and scored by its median.
# Per model and attack: mean |s − s′| (the Guardians benchmark's absolute gain on [0, 1] scores),
# its relative gain mean |s − s′|/s, SROCC/PLCC of the attacked scores, and the MSU benchmark's
# R = mean log10(max(1 − s, s)/(|s − s′| + 1e-6)) on [0, 1] scores (higher is more robust).
# The attack reports its last iterate, as I-FGSM is usually run, not its best: a sign step
# past the top of the score can carry an image back, so |Δs| need not grow with ε (at 8/255 ten
# steps of 1/255 end further from the clean image than at 4/255 and can end lower); the reach
# table below shows how far each model's scores went.

# %%
attacks, attacked_images = rx.robust_attack_table(run, scorers, data)
report.save_table(attacks, "robust_attacks", run, f"Score attacks on {len(data.attacked)} held-out images per model; "
                  f"mean score change |Δs| and SROCC after attack against {run.target}, per ε.",
                  view=robust_tables.by_eps(attacks, {"score_change_mean": "|Δs|", "srocc": "SROCC"}))
report.save_table(attacked_images, "robust_attack_images", run, "Every attacked image's score before and after, "
                  "per model, attack and ε (the numbers behind the table above).", show=False)

# %% [markdown]
# How much less each defence lets the score move than the plain model, on the same images: the
# cut 1 − |Δs| / plain's |Δs| per ε, per direction and for both together (the independent check's
# measure), with a 95 % bootstrap interval that resamples the attacked images (paired: an image's
# changes under both models travel together). With a couple of dozen images the interval is wide.
# It covers the choice of images only, not the luck of one training run: NT retrained with another
# seed moves its cut further (README, "Notebook 05"). The last row, `toward_middle`, is how NT's
# authors attack in their code (YangiD/DefenseIQA-NT): a score above the middle of the scale is
# lowered, one below it raised, each model's direction picked by its own clean score.

# %%
cuts = rx.robust_change_cut(run, attacked_images)
report.save_table(cuts, "robust_change_cut", run, f"Less score change than plain under I-FGSM, on {len(data.attacked)} "
                  "held-out images; 95 % paired bootstrap interval over the images; toward_middle: "
                  "NT's authors' direction rule (lower a score above 0.5, raise one below).",
                  view=robust_tables.cut_view(cuts))

# %% [markdown]
# A defence can move its scores less in absolute terms by squeezing them together, which ranks
# images no more stably. Below, the same cut with each model's mean change in units of the spread
# (sample std) of its own clean scores on these attacked images: a uniform squeeze earns nothing
# there. Its interval resamples the images in the same paired way as the cut's above, the spreads
# recomputed on each resample. The project's goal and NT's verdict stay on the cut above; this one
# is to be read beside it.

# %%
report.save_table(cuts[list(robust_tables.PER_SPREAD_COLUMNS)], "robust_change_cut_per_spread", run,
                  f"Less score change than plain under I-FGSM, on {len(data.attacked)} held-out images, each "
                  "model's mean change divided by the sample std of its own clean scores on those images; 95 % "
                  "paired bootstrap interval over the images.", view=robust_tables.cut_view(cuts, "cut_per_spread"))

# %% [markdown]
# A change can also shrink because the attack stops sooner on a model. Per model and attack: the
# highest score the raising attack reached on that model at any ε (the lowest, for the lowering
# one; the attack's own best, not a proven end of the scale), and per ε the share of the room from
# the clean scores to it that the attack's progress used, a move against the attack's direction
# counting as none. The CSV adds the share of images within 0.05 of the extreme and `wrong_way`,
# the images a sign step carried against the attack's direction, which |Δs| above counts as change
# all the same. Where the room is nearly all used, a smaller change says more about where the
# attack stops on a model than about how hard its score is to move.

# %%
reach = robust_tables.attack_reach(attacked_images)
report.save_table(reach, "robust_attack_reach", run, f"How far I-FGSM takes each model's scores, on {len(data.attacked)} "
                  "held-out images: the extreme the attack reached on the model at any ε and the share of the room "
                  "from the clean scores to it that the attack's progress used, per ε (the CSV adds the share of "
                  "images within 0.05 of the extreme and of images moved the wrong way).",
                  view=robust_tables.by_eps(reach, {"room_used": "room used"}, ("quality_model", "attack", "extreme")))

# %%
report.save_figure(figures.vs_eps(attacks, "score_change_mean", "mean |s − s′|", "Score change under attack"),
                   "robust_score_change", run, caption="Mean score change under I-FGSM (up, down) and random sign "
                   "noise against ε, per quality model.")

# %% [markdown]
# ### What NT's penalty measures
# NT's loss estimates ‖∇f‖₁ by a finite difference: the rise of the score over one step of `h`
# (network-input units; the authors' 1e-2) along sign(∇f) at each training image (with `nt.around_255`
# above 0, at a random point near it; `two_sided` adds the fall over the step back), divided by `h`.
# That is the gradient only where the score is about linear over the step. Below, at the attacked
# held-out images themselves, the mean rise along sign(∇f) over steps from far shorter than `h` to
# longer than the attack's ε, for plain and NT: `quotient_share` is the difference quotient over
# ‖∇f‖₁ (1 where the score is linear over the step). The figure sets beside it what the ten-step
# attack finds at each ε: a model flattened along the directions its penalty probes can still be
# moved along others.

# %%
slopes = rx.robust_nt_slopes(run, models, data)
report.save_table(slopes, "robust_nt_slopes", run, f"What NT's finite difference measures, on {len(data.attacked)} "
                  "held-out images (steps in network-input units; `step_255` in pixels).", floatfmt=".4g", digits=4)

# %%
report.save_figure(figures.nt_slopes(slopes, attacked_images), "robust_nt_slopes", run, caption="Mean score rise "
                   "along sign(∇f) over one step (solid), its first-order prediction (dashed), ten-step I-FGSM (dotted).")

# %% [markdown]
# ## Certified intervals
# DMS: for ℓ2 radius r (on [0, 1] pixels, whole image), the order statistics of `n_certify` noisy
# scores bound the smoothed median of *any* image within r, with confidence `conf`. Beside it, what
# the certificate guarantees against what an attack achieves: the largest rise it allows
# (high − median) and the rise an ℓ2 PGD inside r (raising the score, EOT over the noise) reached,
# on the first `certificate_attack.n_images` images. FS: the same bound at feature radius L·r, with L
# the largest singular value of the (scaled) feature Jacobian at each image by power iteration — a
# **local** estimate, so FS's interval is not a global certificate in input space. Where
# `n_certify` draws cannot certify a radius, the interval is the whole range (width 1).

# %%
certified, lipschitz = rx.robust_certificates(run, scorers, data)
report.save_table(certified, "robust_certified", run, f"Certified intervals on {len(data.certified)} held-out images; "
                  f"FS: local Lipschitz estimate, median L = {pd.Series(lipschitz).median():.1f} (feature std units per "
                  "unit ℓ2).")

# %%
report.save_figure(figures.certified_widths(certified), "robust_certified", run,
                   caption="Mean width of the certified interval of the smoothed scores against the ℓ2 radius.")

# %% [markdown]
# ## The detector under adaptive attack
# Per quality model, one detector (notebook 04's SVM on [top-5, quality]) trained on the first paired
# split's originals and UAP images, with that model's quality, at the paper's false-alarm rate on
# its training originals. Attacked: `adaptive.n_images` held-out originals the classifier gets
# right, at ε ∈ `adaptive.eps_255`/255. **oblivious**: ℓ∞ PGD on the classifier alone.
# **selective**: PGD through classifier, quality model and the SVM's decision function (written in
# torch from its weights; exact, see the tests) — per image, lower the true class's logit margin
# until the top-1 has changed, then lower the detector's decision until it says "fit".
# **strong**: selective, then orthogonal PGD (each goal's gradient stripped of its component along
# the other's) on every image selective did not get through; at least as strong by construction.
# A smoothed model is followed through fresh noise draws the deployed median never uses.
# Selective and strong run smallest ε first: an image already through (fooled and judged fit) at a
# smaller ε is through at every larger one — its perturbation lies in each larger ball — so it is
# counted through there without another attack (`carried`); the oblivious attack starts afresh at
# every ε. `attack_success_rate`: share fooled AND judged fit; `detection_rate`: share flagged among those
# fooled; `false_alarm_rate`: the same originals, clean.

# %%
detected = rx.robust_detection(run, scorers, groups.load(run))
report.save_table(detected, "robust_detector", run, f"Detector under attack, {detected['n'].max()} held-out originals per "
                  "model and ε: attack success (fooled and judged fit) per ε; selective and strong carry an image "
                  "through at a smaller ε to the larger ones.",
                  view=robust_tables.by_eps(detected, {"attack_success_rate": "success"}))

# %%
report.save_figure(figures.vs_eps(detected, "attack_success_rate", "attack success (fooled and judged fit)",
                                  "Attack success against the detector", ylim=(-0.02, 1.02), facet="attack", dodge=0.15),
                   "robust_attack_success", run,
                   caption="Share of attacked originals fooled and judged fit, against ε, per attack and quality model "
                           "(each model's points side by side at each ε, so that equal rates stay visible).")

# %% [markdown]
# ## Ours vs the seed papers' claims
# The seed papers report on their own models and data; these verdicts put each claim, as its
# authors state it, beside our numbers, with the rule that holds one against the other.

# %%
report.verdicts(verdicts.robust(clean, attacks, certified, detected, cuts, reach=reach, slopes=slopes,
                                nt_form=models["nt_form"]), "05", run);
report.save_code_paths(run, "05");
