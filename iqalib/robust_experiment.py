"""Notebook 05's experiment: the quality half of the detector under attack and its defences —
the split of the training IQA set, the plain and NT heads, DMS-IQA's denoiser, the four scorers,
and the tables of clean correlations, score attacks, certificates and the detector under attack.
Models are saved under ``outputs/<run>/models/`` and reused while nothing they depend on changed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalib import (adaptive, evaluation, experiment, feature_table, features, gradnorm, groups, images, metrics,
                    robust, robust_tables)
from iqalib.cache import atomic_write_text
from iqalib.detector import FitForTaskDetector
from iqalib.experiment import Run
from iqalib.params import detector_jobs
from iqalib.quality import QualityModel


ROBUST_PLAIN_FOLDER = "models/quality_plain05"


ROBUST_NT_FOLDER = "models/quality_nt"


DENOISER_FOLDER = "models/denoiser"


DENOISER_RANK_FOLDER = "models/denoiser_rank"


@dataclass
class RobustData:
    """Notebook 05's images, from the first training IQA set split once by reference photo
    (``quality.test_size`` held out, the run's seed): the rows the plain and NT heads train on and
    seeded random samples of the held-out rows for clean correlations, attacks and certificates."""

    train: pd.DataFrame
    train_features: np.ndarray
    held: pd.DataFrame
    srocc: pd.DataFrame
    attacked: pd.DataFrame
    certified: pd.DataFrame

    def sizes(self) -> pd.DataFrame:
        """Rows and reference photos of the training and held-out parts."""
        return pd.DataFrame({"rows": [len(self.train), len(self.held)],
                             "reference photos": [self.train["ref_id"].nunique(), self.held["ref_id"].nunique()]},
                            index=["train", "held out"])


def robust_data(run: Run) -> RobustData:
    """The split and samples of ``RobustData`` (``robust.n_srocc``, ``n_images``, ``n_certified_images``),
    on notebook 00's training data (``experiment.quality_data``), split by its content groups."""
    from sklearn.model_selection import GroupShuffleSplit

    p, r = run.params, run.params.robust
    data = experiment.quality_data(run, train_only=True)
    table, x = data.train, data.x
    train, held = next(GroupShuffleSplit(1, test_size=p.quality.test_size, random_state=p.seed).split(
        x, groups=data.groups))
    held_rows = table.iloc[held].reset_index(drop=True)

    def sample(n: int, salt: int) -> pd.DataFrame:
        return held_rows.sample(n=min(n, len(held_rows)), random_state=p.seed + salt).reset_index(drop=True)

    return RobustData(table.iloc[train].reset_index(drop=True), x[train], held_rows,
                      sample(r.n_srocc, 1), sample(r.n_images, 2), sample(r.n_certified_images, 3))


def pixel_pool(run: Run, data: RobustData) -> pd.DataFrame:
    """The training images NT and the rank-preserving denoiser train on in pixels: a seeded sample
    of ``robust.nt.pixel_pool`` rows of ``data.train`` (both the same rows)."""
    return data.train.sample(n=min(run.params.robust.nt.pixel_pool, len(data.train)), random_state=run.params.seed)


def view_tensor(run: Run, items: list[Any]) -> Any:
    """(N, 3, S, S) float tensor in [0, 1] of the classifier's view of each image file or PIL image."""
    pics = [images.open_image(item, allow_grey=True, min_side=1) if isinstance(item, (str, Path)) else item
            for item in items]
    return run.classifier.pixels(pics) / 255.0


def _key_paths(run: Run, paths: Any) -> list[str]:
    """Sorted paths for a cache key, portable where they lie under the run's roots (the embedded
    set's cache is under the run folder): a copied or cloned run reuses its models instead of
    retraining them because its checkout moved."""

    def one(path: Any) -> str:
        try:
            return run.portable(path)
        except ValueError:  # a dataset folder outside the run's roots: its own path is its identity
            return str(path)

    return sorted(one(path) for path in paths)


def _reuse_or_build(folder: Path, key: dict, build: Any) -> bool:
    """Whether ``folder`` already holds what ``key`` describes (``folder/key.json`` equals it); if
    not, ``build(folder)`` saves it there and ``key.json`` is written last, so an interrupted
    build is never reused. Callers then load from ``folder``: one state, fresh or reused."""
    marker = folder / "key.json"
    text = json.dumps(key, sort_keys=True, default=str)
    if marker.is_file() and marker.read_text() == text:
        return True
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not pass for the old state
    build(folder)
    atomic_write_text(marker, text)
    return False


def robust_quality_models(run: Run, data: RobustData) -> dict[str, Any]:
    """The plain heads (``robust.n_models``, the run's quality settings, trained on ``data.train``)
    and their NT fine-tuning (``robust.nt``), saved under ``models/quality_plain05`` and
    ``models/quality_nt`` and reused while nothing they depend on changed. Returns
    ``{"plain": model, "nt": model, "nt_log": DataFrame, "nt_form": str}`` (``nt_form``: how the saved
    NT model was trained, in words)."""

    p, r = run.params, run.params.robust
    settings = {k: v for k, v in experiment.quality_settings(run).items() if k not in ("n_splits", "test_size", "progress")}
    key = {"quality": p.quality.to_dict(), "n_models": r.n_models, "seed": p.seed,
           "classifier": run.classifier.passes_id, "embedding": features.EMBEDDING_VERSION, "amp": p.amp,
           **({"backbone_in_workers": True} if features.runs_backbone_in_workers(run.classifier, p.backbone_in_workers)
              else {}),
           "iqa_sets": [dict(e) for e in p.iqa_sets], "embedded_iqa": p.embedded_iqa.to_dict(),
           "train_refs": sorted(set(data.train["ref_id"].astype(str)))}
    mos = data.train["mos"].to_numpy()

    def build_plain(folder: Path) -> None:
        model = QualityModel(n_models=r.n_models, **settings).fit(data.train_features, mos, progress=run.progress)
        model.save(folder, training_data={"rows": len(mos), "references": data.train["ref_id"].nunique(),
                                          "target": run.target, "use": "notebook 05 (plain)"})

    def load(folder: Path) -> QualityModel:
        return QualityModel.load(folder, device=p.device)

    _reuse_or_build(run.folder / ROBUST_PLAIN_FOLDER, key, build_plain)
    plain = load(run.folder / ROBUST_PLAIN_FOLDER)

    def build_nt(folder: Path) -> None:
        pool = pixel_pool(run, data)
        n = r.nt
        # a folded, frozen-statistics copy; the card says so, since scripts/sweep_nt.py trains the other forms too
        form = {"difference": n.difference, "batchnorm": "frozen"}
        model, steps = gradnorm.train_nt(plain, run.classifier, view_tensor(run, list(pool["path"])),
                                         pool["mos"].to_numpy(), lam=n.lam, h=n.h, steps=n.steps,
                                         batch_size=n.batch_size, lr=n.lr, layer_lr=n.layer_lr, seed=p.seed,
                                         progress=run.progress, around=n.around_255 / 255.0, **form)
        model.save(folder, training_data={"rows": len(pool), "target": run.target,
                                          "nt": {**n.to_dict(), **form, "from": ROBUST_PLAIN_FOLDER, "log": steps}})

    _reuse_or_build(run.folder / ROBUST_NT_FOLDER, {**key, "nt": r.nt.to_dict()}, build_nt)
    nt = load(run.folder / ROBUST_NT_FOLDER)
    layers = nt.own_layers(run.classifier)
    run.record(quality_features=plain.features, nt_own_layers=f"{layers.features}: {len(layers.layers)} module(s) copied")
    trained = nt.card["training_data"]["nt"]
    return {"plain": plain, "nt": nt, "nt_log": pd.DataFrame(trained["log"]), "nt_form": nt_form(trained)}


def nt_form(trained: dict) -> str:
    """How a saved NT model was trained (its card's ``training_data.nt``), in words for the verdicts,
    naming what departs from the authors' loss (one-sided difference at the image)."""
    difference, around = trained.get("difference", "forward"), float(trained.get("around_255", 0.0))
    ours = [*(["the difference two-sided"] if difference == "two_sided" else []),
            *([f"taken at a uniform random point within {around:g}/255 of each image"] if around > 0 else [])]
    loss = f"λ = {trained['lam']:g}, h = {trained['h']:g}"
    if not ours:
        return f"NT's loss in the authors' form ({loss}, one-sided difference at the image)"
    return f"NT's loss ({loss}) with {' and '.join(ours)} (ours; the authors take it one-sided, at the image)"


# Steps of NT's finite difference probed besides the params' h, in the network's input units (on
# EfficientNet-Lite one is 128/255 of a pixel: 1e-4 to 6e-2 is 0.013/255 to 7.7/255).
NT_PROBE_STEPS = (1e-4, 1e-3, 3e-3, 3e-2, 6e-2)


def robust_nt_slopes(run: Run, models: dict[str, Any], data: RobustData) -> pd.DataFrame:
    """``robust_nt_slopes``: what NT's penalty measures, for the plain and NT models on
    ``data.attacked``: per step of NT's finite difference (``robust.nt.h`` and ``NT_PROBE_STEPS``, in
    the network's input units as ``gradnorm.train_nt`` takes them; ``step_255`` the same in pixels, the
    channels' mean), the mean rise of the score along sign(∇f) over it, the difference quotient
    rise / step, ‖∇f‖₁ and ``quotient_share``, the quotient over ‖∇f‖₁ (1 where the score is linear
    over the step) (``gradnorm.sign_step_rises``)."""
    h = float(run.params.robust.nt.h)
    steps = sorted({*NT_PROBE_STEPS, h})
    unit = gradnorm.input_unit(run.classifier)
    x = view_tensor(run, list(data.attacked["path"]))
    rows = []
    for name in ("plain", "nt"):
        norms, rises = gradnorm.sign_step_rises(robust.score_fn(models[name], run.classifier), x, steps, unit)
        grad_l1 = float(np.mean(norms))
        for step, rise in zip(steps, (float(np.mean(column)) for column in rises.T)):
            rows.append({"quality_model": name, "step": step, "step_255": step * float(unit.mean()) * 255.0,
                         "nt_h": step == h, "n": len(x), "rise": rise, "quotient": rise / step,
                         "grad_l1": grad_l1, "quotient_share": rise / step / grad_l1})
    return pd.DataFrame(rows)


def denoiser_refs(data: RobustData) -> list[str]:
    """The photos DMS's denoisers train on with MSE: the reference photos of ``data.train``, sorted."""
    return sorted(set(data.train["ref_path"]))


def denoiser_photos(data: RobustData) -> list[np.ndarray]:
    """``denoiser_refs`` opened as uint8 H×W×3 arrays, what ``denoiser.train_denoiser`` takes."""
    return [np.asarray(images.open_image(path, allow_grey=True, min_side=1), np.uint8) for path in denoiser_refs(data)]


def robust_denoiser(run: Run, data: RobustData, plain: QualityModel) -> dict[str, Any]:
    """DMS-IQA's denoiser (``robust.denoiser``, noise ``robust.smoothing.sigma``): trained with MSE on
    the reference photos of ``data.train`` only (``models/denoiser``, the ablation), then fine-tuned
    with the rank-preserving loss through ``plain``'s score on ``robust.nt.pixel_pool`` training
    images (``robust.denoiser.rank``, ``models/denoiser_rank``). Returns ``{"mse": net, "rank":
    net, "mse_log": DataFrame, "rank_log": DataFrame}``."""
    from iqalib.denoiser import DnCNN, train_denoiser, train_rank_preserving

    p, d = run.params, run.params.robust.denoiser
    sigma, device = p.robust.smoothing.sigma, str(run.classifier.device)
    refs = denoiser_refs(data)
    key = {"denoiser": {k: v for k, v in d.to_dict().items() if k != "rank"}, "sigma": sigma, "seed": p.seed,
           "refs": _key_paths(run, refs)}

    def build(folder: Path) -> None:
        net, log = train_denoiser(denoiser_photos(data), sigma, d.layers, d.channels, d.steps, d.batch_size, d.patch,
                                  d.lr, seed=p.seed, device=device, progress=run.progress)
        net.save(folder, {"sigma": sigma, "photos": len(refs), "loss": "mse", "log": log})

    _reuse_or_build(run.folder / DENOISER_FOLDER, key, build)
    mse = DnCNN.load(run.folder / DENOISER_FOLDER).to(device)
    pool = pixel_pool(run, data)
    rank_key = {**key, "rank": d.rank.to_dict(), "pool": _key_paths(run, pool["path"]),
                "metric": plain.card.get("created") if plain.card else None}

    def build_rank(folder: Path) -> None:
        r = d.rank
        net, log = train_rank_preserving(mse, denoiser_photos(data), view_tensor(run, list(pool["path"])),
                                         robust.score_fn(plain, run.classifier), sigma, steps=r.steps,
                                         batch_size=r.batch_size, rank_weight=r.weight, margin=r.margin,
                                         patch=d.patch, patch_batch=d.batch_size, lr=r.lr, seed=p.seed,
                                         progress=run.progress)
        net.save(folder, {"sigma": sigma, "photos": len(refs), "loss": "mse + rank", "from": DENOISER_FOLDER,
                          "rank": r.to_dict(), "log": log})

    _reuse_or_build(run.folder / DENOISER_RANK_FOLDER, rank_key, build_rank)
    rank = DnCNN.load(run.folder / DENOISER_RANK_FOLDER).to(device)
    run.record(denoiser=f"DnCNN, {rank.layers} layers of {rank.channels} channels")
    return {"mse": mse, "rank": rank, "mse_log": pd.DataFrame(mse.card["log"]),
            "rank_log": pd.DataFrame(rank.card["log"])}


def robust_scorers(run: Run, plain: QualityModel, nt: QualityModel, denoisers: dict[str, Any]) -> dict[str, Any]:
    """The quality models notebook 05 compares, as ``robust.Scorer``: plain, NT, DMS (input-space
    median smoothing behind the rank-preserving denoiser), FS (feature-space median smoothing of the
    plain heads), and ``dms_mse``, DMS behind the MSE-only denoiser (the ablation, clean table only)."""

    p, s, f = run.params, run.params.robust.smoothing, run.params.robust.feature_smoothing
    clf = run.classifier
    return {"plain": robust.Scorer("plain", plain, clf), "nt": robust.Scorer("nt", nt, clf),
            "dms": robust.Scorer("dms", plain, clf, "input", s.sigma, s.n, denoisers["rank"].folded(), p.seed),
            "fs": robust.Scorer("fs", plain, clf, "feature", f.sigma, f.n, None, p.seed),
            "dms_mse": robust.Scorer("dms_mse", plain, clf, "input", s.sigma, s.n, denoisers["mse"].folded(), p.seed)}


ABLATIONS = ("dms_mse",)


def compared(scorers: dict[str, Any]) -> dict[str, Any]:
    """The scorers every attack runs on (the ablations are in the clean table only)."""
    return {name: scorer for name, scorer in scorers.items() if name not in ABLATIONS}


def robust_detector_data(run: Run, table: pd.DataFrame) -> dict[str, Any]:
    """For the detector under attack: the first paired split's training rows (originals and UAP
    images of its training sources, as in notebook 04; at most ``robust.adaptive.fit_cap`` sources,
    a seeded sample) with their views, and the first
    ``robust.adaptive.n_images`` held-out originals the classifier gets right, with views and labels."""
    import torch


    p = run.params
    train_ids, test_ids = evaluation.paired_splits(table, p.detector.n_splits, p.detector.train_size, p.seed)[0]
    cap = p.robust.adaptive.fit_cap
    if cap is not None and len(train_ids) > cap:  # every scorer scores each training image: DMS 'n' passes each
        train_ids = np.random.default_rng([p.seed, 5]).choice(sorted(map(str, train_ids)), size=cap, replace=False)
    src = table["source_id"].astype(str)
    train = table[src.isin(set(train_ids)) & table["group"].isin(["original", "adversarial"])].reset_index(drop=True)
    held = table[(table["group"] == "original") & src.isin(set(test_ids)) & table["correct"].astype(bool)]
    held = held.head(p.robust.adaptive.n_images).reset_index(drop=True)
    return {"train": train, "train_x": view_tensor(run, groups.row_images(run, train)),
            "y": (train["group"] == "adversarial").astype(int).to_numpy(),
            "held": held, "held_x": view_tensor(run, groups.row_images(run, held)),
            "labels": torch.tensor(held["label"].astype(int).to_numpy(), device=run.classifier.device)}


def robust_clean(run: Run, scorers: dict[str, Any], data: RobustData) -> pd.DataFrame:
    """``robust_models``: each scorer on ``data.srocc`` — SROCC/PLCC against the target, passes per
    image and measured seconds per image of the deployed score (wall clock, this machine)."""
    x = view_tensor(run, list(data.srocc["path"]))
    rows = []
    for name, scorer in scorers.items():
        start = time.perf_counter()
        scores = scorer.scores(x)
        seconds = (time.perf_counter() - start) / len(x)
        rows.append({"quality_model": name, "space": scorer.space, "n": len(scores),
                     **dict(zip(("srocc", "plcc"), metrics.correlations(scores, data.srocc["mos"]))),
                     **scorer.passes_per_image(), "seconds_per_image": seconds})
    return pd.DataFrame(rows)


def robust_attack_table(run: Run, scorers: dict[str, Any], data: RobustData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``robust_attacks`` and the per-image ``robust_attack_images`` behind it: every scorer under
    ``robust.attack_scores`` (``robust.eps_255``, step, iterations, EOT draws) on ``data.attacked``,
    against its target scores."""

    r = run.params.robust
    x = view_tensor(run, list(data.attacked["path"]))
    summaries, images = [], []
    for name, scorer in compared(scorers).items():
        rows = robust.attack_scores(scorer, x, r.eps_255, r.step_255, r.iters, r.eot_draws, run.params.seed, run.progress)
        summaries.append(robust_tables.robust_attacks(name, rows, data.attacked["mos"]))
        images.append(robust_tables.robust_attack_images(name, rows))
    return pd.concat(summaries, ignore_index=True), pd.concat(images, ignore_index=True)


def robust_change_cut(run: Run, attacked_images: pd.DataFrame) -> pd.DataFrame:
    """``robust_change_cut``: each defence's cut in score change against plain on the same images,
    with its paired bootstrap interval (``robust_tables.robust_change_cut``, seeded by the run)."""
    return robust_tables.robust_change_cut(attacked_images, seed=run.params.seed)


def robust_certificates(run: Run, scorers: dict[str, Any], data: RobustData) -> tuple[pd.DataFrame, np.ndarray]:
    """``robust_certified`` on ``data.certified``: DMS's certificate (``robust.smoothing``) and FS's
    local one (``robust.feature_smoothing``, with its per-image Lipschitz estimate, also returned),
    each with its measured seconds per image (FS's include the Lipschitz estimate). For DMS, beside
    the certified interval: the largest rise it allows (high − median) and the rise an ℓ2 PGD of
    that radius achieved on the first ``robust.certificate_attack.n_images`` (``robust.pgd_l2``
    raising the EOT score; a row of its own, ``dms (l2 PGD inside r)``)."""
    r, seed = run.params.robust, run.params.seed
    f, s, a = r.feature_smoothing, r.smoothing, r.certificate_attack
    x = view_tensor(run, list(data.certified["path"]))
    x_attacked = x[:a.n_images]
    start = time.perf_counter()
    lipschitz = robust.local_lipschitz(scorers["fs"].scaled_features(), x, iters=f.lipschitz_iters, seed=seed)
    fs = scorers["fs"].certify(x, s.radii, f.n_certify, s.conf, lipschitz)
    fs_seconds = (time.perf_counter() - start) / len(x)
    start = time.perf_counter()
    dms = scorers["dms"].certify(x, s.radii, s.n_certify, s.conf)
    run.record(certificate_draws={"dms": s.n_certify, "fs": f.n_certify})
    dms_seconds = (time.perf_counter() - start) / len(x)
    # The attacked median is the same order statistic of as many draws as the certified one.
    attacked = {radius: scorers["dms"].certify(robust.pgd_l2(scorers["dms"], x_attacked, radius, a.steps, a.draws,
                                                             seed=seed + 1), (), s.n_certify)["median"]
                for radius in s.radii}
    dms_first = {k: v[:a.n_images] for k, v in dms.items()}
    return pd.concat([robust_tables.robust_certified("dms", "input", s.sigma, s.n_certify, dms, s.radii, dms_seconds),
                      robust_tables.robust_certified("dms", "input", s.sigma, s.n_certify, dms_first, s.radii,
                                                     dms_seconds, attacked).assign(quality_model="dms (l2 PGD inside r)"),
                      robust_tables.robust_certified("fs", "feature", f.sigma, f.n_certify, fs, s.radii, fs_seconds)],
                     ignore_index=True), lipschitz


ATTACKS = ("oblivious", "selective", "strong")


def robust_detection(run: Run, scorers: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """``robust_detector``: per scorer, a detector (notebook 04's SVM) trained on the first paired
    split with that scorer's quality, its threshold at the paper's false-alarm rate on the training
    originals' out-of-fold scores (notebook 04's rule), then, per ``robust.adaptive.eps_255``, three
    ℓ∞ PGD attacks (``robust.adaptive.steps``) judged on ``robust_detector_data``'s held-out
    originals: ``oblivious`` (the classifier only, the same images for every scorer),
    ``selective`` and ``strong`` (``adaptive.strong``: selective, then orthogonal PGD where it
    failed), both through the whole system with EOT over a smoothed scorer's noise, smallest radius
    first, an image through at a smaller radius counted through at the larger ones without
    another attack (``adaptive.curve``; ``carried`` counts them)."""

    p, r = run.params, run.params.robust
    a = r.adaptive
    d = robust_detector_data(run, table)
    clf, x, labels = run.classifier, d["held_x"], d["labels"]
    oblivious = {e: adaptive.pgd(clf, x, labels, e / 255, steps=a.steps, seed=p.seed) for e in a.eps_255}
    rows = []
    for name, scorer in compared(scorers).items():
        train = d["train"][list(feature_table.TOP5)].assign(quality=scorer.scores(d["train_x"]))
        det = FitForTaskDetector(random_state=p.seed, n_jobs=detector_jobs(p)).fit(
            train, d["y"], groups=d["train"]["source_id"])
        det.set_operating_point(train, d["y"], d["train"]["source_id"], experiment.paper_false_alarm_rate())
        clean_flagged = adaptive.judge(clf, scorer, det, x, labels)["flagged"]
        adapted = adaptive.curve(clf, scorer, det, x, labels, [e / 255 for e in a.eps_255], a.steps, r.eot_draws,
                                 p.seed)
        for e in a.eps_255:
            judged = {"oblivious": adaptive.judge(clf, scorer, det, oblivious[e], labels),
                      **{attack: judgement for attack, (_, judgement) in adapted[e / 255].items()}}
            for attack in ATTACKS:
                rows.append(robust_tables.robust_detector(name, attack, e, judged[attack], clean_flagged))
    return pd.DataFrame(rows)
