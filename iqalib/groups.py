"""The paper's experiment groups (Section V-A) from a run's params: Original, Distorted,
Adversarial (UAP), Fool_EV and Fool_GD — generated once under ``outputs/<run>/attacks/`` (a re-run
with the same params regenerates nothing) and turned into the one per-image features table.

Owns which images form each group and where they are stored; the generators live in ``attacks``,
the backbone pass and the table's columns in ``features``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from iqalib import attacks, features, images
from iqalib.cache import atomic_write_text
from iqalib.classifiers import Classifier
from iqalib.params import Frozen, run_dir


def attacks_dir(params: Frozen) -> Path:
    return run_dir(params) / "attacks"


def evaluation_originals(params: Frozen, classifier: Classifier, progress: bool = True) -> tuple[images.ImageSet, pd.DataFrame]:
    """The run's originals and, per record, the classifier's top-1; the Original group is the
    records it gets right (paper: only correctly classified originals enter the experiments)."""
    image_set = features.load_originals(params, progress)
    clean = features.original_predictions(classifier, image_set, features.cache_for(run_dir(params)),
                                          params.batch_size, progress)
    return image_set, clean


def correct_records(image_set: images.ImageSet, clean: pd.DataFrame) -> list[images.ImageRecord]:
    right = set(clean.loc[clean["correct"], "image_id"])
    return [r for r in image_set.records if r.image_id in right]


def uap_pool(params: Frozen, exclude_sources: set[str], progress: bool = True) -> tuple[list[Image.Image], list[str]]:
    """Images the UAP is computed on, disjoint from the evaluated originals.

    ``iqa_references``: the embedded IQA set's reference photos (not ImageNet-labelled; the UAP is
    untargeted, so labels are the classifier's own predictions). ``originals_rest``: the next
    ``pool_size`` originals of the same source, beyond those evaluated.
    """
    u = params.attacks.uap
    if u.pool == "iqa_references":
        from iqalib.iqa_datasets import EMBEDDED_PHOTOS, embedded_photo_path

        names = list(params.embedded_iqa.photos or EMBEDDED_PHOTOS)
        pool, ids = [], []
        for name in names:
            base = images.open_image(embedded_photo_path(name), allow_grey=True)
            for view in images.VIEWS[: u.pool_views]:
                pool.append(images.apply_view(base, view))
                ids.append(f"{name}:{view}")
        return pool, ids
    o = params.originals
    from iqalib.params import data_path

    path = None if o.source == "embedded" else data_path(o.source, o.path, "originals.path")
    wider = images.originals(o.source, path, (o.limit or 0) + u.pool_size, 1, progress)
    records = [r for r in wider.records if r.source_id not in exclude_sources][: u.pool_size]
    return [images.load(r) for r in records], [r.image_id for r in records]


def universal_perturbation(params: Frozen, classifier: Classifier, evaluated: list[images.ImageRecord],
                           progress: bool = True) -> tuple[np.ndarray, dict]:
    """Fit the UAP on the pool (or reuse the saved one when nothing it depends on changed) and
    report its fooling rate on the evaluated originals, through ``attacks.apply_perturbation``."""
    folder = attacks_dir(params) / "uap"
    u = params.attacks.uap
    pool, pool_ids = uap_pool(params, {r.source_id for r in evaluated}, progress)
    key = {"uap": u.to_dict(), "classifier": classifier.weights_id, "prep": classifier.preprocessing_id,
           "pool": pool_ids, "seed": params.seed, "version": attacks.ATTACKS_VERSION,
           "evaluated": [r.image_id for r in evaluated]}
    if (folder / "uap.json").exists():
        v, meta = attacks.load_uap(folder)
        if meta.get("key") == key:
            return v, meta
    fitter = attacks.UniversalPerturbation(classifier, xi=u.xi, delta=u.delta, max_passes=u.max_passes,
                                           num_candidates=u.num_candidates, seed=params.seed, progress=progress)
    v = fitter.fit(pool)
    held_out = [images.load(r) for r in evaluated]
    rate = attacks.fooling_rate(classifier, held_out, v, batch_size=params.batch_size)
    meta = {"xi": u.xi, "fooling_rate": rate, "n_eval": len(held_out), "classifier": classifier.name,
            "input_size": classifier.input_size, "pool_size": len(pool), "pool_fooling_rate_per_pass": fitter.history_,
            "variant": "untargeted (Moosavi-Dezfooli et al. 2017, Alg. 1, DeepFool inner step)", "key": key}
    attacks.save_uap(folder, v, meta)
    return v, meta


def adversarial_group(params: Frozen, classifier: Classifier, evaluated: list[images.ImageRecord], v: np.ndarray,
                      uap_meta: dict) -> tuple[list[Path], pd.DataFrame]:
    """Each evaluated original with the UAP applied (8-bit PNG at the network's input size)."""
    def generate():
        out = [attacks.apply_perturbation(images.load(r), v, classifier.view) for r in evaluated]
        meta = pd.DataFrame({"image_id": [f"{r.image_id}|uap" for r in evaluated],
                             "source_id": [r.source_id for r in evaluated], "label": [r.label for r in evaluated]})
        return out, meta

    key = {"uap": uap_meta["key"], "fooling_rate": uap_meta["fooling_rate"]}
    return attacks.cached_group(attacks_dir(params) / "adversarial", key, generate)


def fool_gd_group(params: Frozen, classifier: Classifier, progress: bool = True) -> tuple[list[Path], pd.DataFrame]:
    """Gradient-ascent fooling images (Nguyen et al. 2015), one random target class each."""
    g = params.attacks.fool_gd
    targets = np.random.default_rng([params.seed, 1]).choice(1000, size=g.n, replace=g.n > 1000).tolist()
    maker = attacks.GradientAscentFooling(classifier, steps=g.steps, lr=g.lr, l2_decay=g.l2_decay,
                                          batch_size=params.batch_size, seed=params.seed, progress=progress)

    def generate():
        out, conf = maker(targets)
        return out, pd.DataFrame({"target": targets, "confidence": conf})

    return attacks.cached_group(attacks_dir(params) / "fool_gd", {"params": maker.params(), "targets": targets}, generate)


def fool_ev_group(params: Frozen, classifier: Classifier, progress: bool = True) -> tuple[list[Path], pd.DataFrame]:
    """Evolutionary fooling images (MAP-Elites over all 1000 classes); the ``keep`` most confident elites."""
    e = params.attacks.fool_ev
    maker = attacks.EvolutionaryFooling(classifier, population=e.population, generations=e.generations,
                                        encoding=e.encoding, batch_size=max(params.batch_size, 32),
                                        seed=params.seed, progress=progress)

    def generate():
        out, classes, conf = maker(None)
        best = np.argsort(-np.asarray(conf), kind="stable")[: e.keep]
        return [out[i] for i in best], pd.DataFrame({"target": np.asarray(classes)[best], "confidence": np.asarray(conf)[best]})

    return attacks.cached_group(attacks_dir(params) / "fool_ev", {"params": maker.params(), "keep": e.keep}, generate)


def build(params: Frozen, classifier: Classifier, quality=None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """All five groups' features (``features.csv`` columns) and image counts per group.

    Writes ``outputs/<run>/features.csv`` and ``attacks/uap.json`` as side effects; everything is
    cached, so calling it from several notebooks costs one generation and one backbone pass per image.
    """
    run = run_dir(params)
    image_set, clean = evaluation_originals(params, classifier, progress)
    evaluated = correct_records(image_set, clean)
    if not evaluated:
        raise RuntimeError("the classifier gets none of the originals right: no Original group to attack")
    jobs, meta = features.original_jobs(evaluated, params.distortions.types, params.distortions.levels,
                                        params.seed, classifier.view)
    v, uap_meta = universal_perturbation(params, classifier, evaluated, progress)
    for name, (paths, frame) in {
        "adversarial": adversarial_group(params, classifier, evaluated, v, uap_meta),
        "fool_gd": fool_gd_group(params, classifier, progress),
        "fool_ev": fool_ev_group(params, classifier, progress),
    }.items():
        if name != "adversarial":
            frame = frame.assign(image_id=[f"{name}_{Path(p).stem}" for p in paths], source_id=None, label=None)
        more_jobs, more_meta = features.file_jobs(name, paths, frame)
        more_meta["target"] = frame["target"].to_numpy() if "target" in frame else None
        jobs += more_jobs
        meta = pd.concat([meta, more_meta], ignore_index=True)
    table, counts = features.features_table(classifier, jobs, meta.drop(columns="target", errors="ignore"), quality,
                                            features.cache_for(run), params.batch_size, progress)
    counts = {"originals_all": image_set.counts(), **counts}
    atomic_write_text(run / "features.csv", table.to_csv(index=False))
    atomic_write_text(run / "attacks" / "summary.json", json.dumps(
        {"uap": {k: uap_meta[k] for k in ("xi", "fooling_rate", "n_eval", "classifier", "input_size")},
         "originals_correct": len(evaluated), "originals_total": len(image_set.records)}, indent=2))
    return table, counts


def row_images(params: Frozen, classifier: Classifier, table: pd.DataFrame) -> list[Image.Image]:
    """The exact image behind each features row (distortions re-applied deterministically), e.g.
    for a peer detector that needs pixels or for showing examples."""
    out = []
    for r in table.itertuples():
        if r.group in ("original", "distorted"):
            distorted = r.group == "distorted"
            job = features.ImageJob(r.path, view=r.view, distortion=r.distortion if distorted else None,
                                    level=int(r.level) if distorted else None, seed=params.seed,
                                    image_id=r.image_id.split("|")[0], classifier_view=classifier.view if distorted else None)
        else:
            job = features.ImageJob(r.path, min_side=1, allow_grey=True)
        out.append(job.load())
    return out
