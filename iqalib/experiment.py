"""The ONE place that reads params sections and turns them into objects: the run (folder, cache,
classifier, quality model), the IQA sets, the originals, the UAP pool, the quality model's
settings, and the paper's five experiment groups (Section V-A: Original, Distorted, Adversarial
(UAP), Fool_EV, Fool_GD) as image jobs and the one per-image table, ``features.csv``.

Everything below this module takes plain values and paths. Generated images are made once under
``outputs/<run>/attacks/`` (a re-run with the same params regenerates nothing). Paths in
``features.csv`` are portable: ``<root>:<relative path>`` with the roots of ``Run.roots`` (the
run folder, the installed package that ships the embedded photos, the real data folders).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from iqalib import attacks, features, fooling, images, probes
from iqalib.cache import ShardStore, atomic_write_text, cached_images
from iqalib.classifiers import Classifier, load_classifier
from iqalib.params import Frozen, data_path, load, resolve_path, run_dir, workers
from iqalib.quality import QualityModel

QUALITY_FOLDER = "models/quality"


@dataclass
class Run:
    """A run's params and what they name: its folder, embedding cache, classifier, quality model."""

    params: Frozen
    folder: Path
    progress: bool = True
    _quality: QualityModel | None = field(default=None, repr=False)

    @cached_property
    def cache(self) -> ShardStore:
        return features.cache_for(self.folder)

    @property
    def pass_options(self) -> dict[str, Any]:
        """How ``features`` runs a pass for this run: store, batch, progress, worker processes, precision."""
        p = self.params
        return {"cache": self.cache, "batch_size": p.batch_size, "progress": self.progress,
                "num_workers": workers(p), "amp": p.amp, "backbone_in_workers": p.backbone_in_workers}

    @cached_property
    def classifier(self) -> Classifier:
        p = self.params
        weights = resolve_path(p.classifier_weights)  # relative to the repository root, like every params path
        return load_classifier(p.classifier, p.device, None if weights is None else str(weights))

    def classifier_named(self, name: str) -> Classifier:
        """One of ``classifiers_table1``; the run's own classifier keeps its ``classifier_weights``."""
        if name == self.params.classifier:
            return self.classifier
        return load_classifier(name, self.params.device)

    @property
    def quality(self) -> QualityModel:
        """The quality model notebook 00 saved under ``models/quality``."""
        if self._quality is None:
            self._quality = QualityModel.load(self.folder / QUALITY_FOLDER, device=self.params.device)
        return self._quality

    @cached_property
    def roots(self) -> dict[str, Path]:
        """Named folders that ``features.csv`` paths are relative to."""
        roots = {"run": self.folder.resolve(), **{k: v.resolve() for k, v in images.embedded_roots().items()}}
        o = self.params.originals
        if o.source != "embedded":
            roots[o.source] = data_path(o.source, o.path, "originals.path").resolve()
        return roots

    def portable(self, path: str | Path) -> str:
        """``<root>:<relative path>`` for a path under one of ``roots``; ValueError otherwise (a
        machine path in ``features.csv`` would not survive a move of the run or the data)."""
        p = Path(path).resolve()
        for name, root in self.roots.items():
            if p.is_relative_to(root):
                return f"{name}:{p.relative_to(root).as_posix()}"
        raise ValueError(f"{path} lies under none of the run's roots ({', '.join(self.roots)}); "
                         "features.csv keeps only portable paths")

    def resolve(self, portable: str) -> Path:
        """The file behind a ``portable`` path."""
        name, _, rel = str(portable).partition(":")
        return self.roots[name] / rel if rel and name in self.roots else Path(portable)


def open_run(params_path: str | Path, progress: bool | None = None) -> Run:
    """Load and validate a params file and open its run folder (``outputs/<run_name>/``).

    ``progress`` (tqdm bars on long loops) defaults to on, and to off when the runner renders the
    notebooks headlessly (it sets ``IQALIB_PROGRESS=0``: progress belongs to its log, not the report).
    """
    params = load(params_path)
    if progress is None:
        progress = os.environ.get("IQALIB_PROGRESS", "1") != "0"
    return Run(params, run_dir(params), progress)


# ------------------------------------------------------------------------------------------------
# The quality model's data and settings


def iqa_sets(run: Run) -> dict[str, pd.DataFrame]:
    """Every IQA set the run names (``iqa_sets``), as reader tables keyed by name. Real sets come
    from their folder (``path`` or the environment variable the error names); the embedded set is
    built once under ``<run>/cache/embedded_iqa``."""
    from iqalib import embedded_iqa

    p, tables = run.params, {}
    for entry in p.iqa_sets:
        name = entry["name"]
        if name == "embedded":
            e = p.embedded_iqa
            tables[name] = embedded_iqa.build_embedded_iqa(
                run.folder / "cache" / "embedded_iqa", photos=list(e.photos) if e.photos else None,
                distortions=list(e.distortions), levels=list(e.levels), short_side=e.short_side,
                metric=e.metric, seed=p.seed, progress=run.progress, workers=workers(p))
        else:
            tables[name] = _real_iqa_set(entry)
    return tables


def _real_iqa_set(entry: Any) -> pd.DataFrame:
    """One real IQA set's reader table, from its ``path`` or its environment variable."""
    from iqalib import iqa_datasets

    name = entry["name"]
    return iqa_datasets.read_iqa_dataset(name, data_path(name, entry["path"], f"iqa_sets[{name}].path"))


def iqa_features(run: Run, tables: dict[str, pd.DataFrame]) -> dict[str, tuple[pd.DataFrame, np.ndarray, dict]]:
    """Per IQA set: (usable rows of its table, their backbone rows from ``features.embed``, skip counts)."""
    out = {}
    for name, table in tables.items():
        jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in table["path"]]
        embedded, reasons = features.embed(run.classifier, jobs, desc=name, **run.pass_options)
        ok = ~np.isnan(embedded).any(axis=1)
        out[name] = (table[ok].reset_index(drop=True), embedded[ok], features.skip_counts(reasons))
    return out


def quality_settings(run: Run) -> dict[str, Any]:
    """Keyword arguments of ``quality.evaluate_splits`` from ``params.quality``: the paper's ten heads
    on content-disjoint splits (``n_splits``, ``test_size``, ``seed``) and the heads' settings."""
    q = run.params.quality
    return dict(n_splits=q.n_models, test_size=q.test_size, seed=run.params.seed, progress=run.progress,
                classifier=run.classifier,
                hidden=q.hidden, bins=q.bins, epochs=q.epochs, lr=q.lr, weight_decay=q.weight_decay,
                batch_size=q.batch_size, features=q.features, label_sigma=q.label_sigma, dropout=q.dropout,
                device=run.params.device)


def training_label(run: Run) -> str:
    """What the quality model's targets are: a pseudo-MOS on the embedded set, else MOS."""
    if list(run.params.quality.train_sets) == ["embedded"]:
        return f"pseudo-MOS ({run.params.embedded_iqa.metric})"
    return "MOS"


# ------------------------------------------------------------------------------------------------
# Originals


def originals(run: Run) -> images.ImageSet:
    """The run's original images (``params.originals``), skips counted."""
    o = run.params.originals
    path = None if o.source == "embedded" else data_path(o.source, o.path, "originals.path")
    return images.originals(o.source, path, o.limit, o.views, run.progress)


def clean_predictions(run: Run, image_set: images.ImageSet) -> pd.DataFrame:
    """The run's classifier on each original: one row per record with ``top1``, ``conf``, ``correct``."""
    records = image_set.records
    jobs = [features.ImageJob(r.path, view=r.view) for r in records]
    emb, reasons = features.embed(run.classifier, jobs, desc=f"{run.classifier.name} originals", **run.pass_options)
    top1, conf = features.top1_from_embeddings(run.classifier, emb)
    frame = pd.DataFrame({"image_id": [r.image_id for r in records], "source_id": [r.source_id for r in records],
                          "view": [r.view for r in records], "label": [r.label for r in records],
                          "top1": top1, "conf": conf, "skipped": reasons})
    frame = frame[frame["skipped"].isna()].drop(columns="skipped").reset_index(drop=True)
    frame["correct"] = frame["label"].notna() & (frame["top1"] == frame["label"])
    return frame


# ------------------------------------------------------------------------------------------------
# The five groups


def _attacks_dir(run: Run) -> Path:
    return run.folder / "attacks"


def uap_pool(run: Run, exclude_sources: set[str]) -> tuple[list[Image.Image], list[str]]:
    """Images the UAP is computed on, disjoint from the evaluated originals.

    ``iqa_references``: the embedded IQA set's reference photos (not ImageNet-labelled; the UAP is
    untargeted, so labels are the classifier's own predictions). ``originals_rest``: the next
    ``pool_size`` originals of the same source, beyond those evaluated.
    """
    from iqalib.embedded_iqa import EMBEDDED_PHOTOS, embedded_photo_path

    p, u = run.params, run.params.attacks.uap
    if u.pool == "iqa_references":
        pool, ids = [], []
        for name in list(p.embedded_iqa.photos or EMBEDDED_PHOTOS):
            base = images.open_image(embedded_photo_path(name), allow_grey=True)
            for view in images.VIEWS[: u.pool_views]:
                pool.append(images.apply_view(base, view))
                ids.append(f"{name}:{view}")
        return pool, ids
    o = p.originals
    path = None if o.source == "embedded" else data_path(o.source, o.path, "originals.path")
    wider = images.originals(o.source, path, (o.limit or 0) + u.pool_size, 1, run.progress)
    records = [r for r in wider.records if r.source_id not in exclude_sources][: u.pool_size]
    return [images.load(r) for r in records], [r.image_id for r in records]


def universal_perturbation(run: Run, evaluated: list[images.ImageRecord]) -> tuple[np.ndarray, dict]:
    """Fit the UAP on the pool (or reuse the saved one when nothing it depends on changed) and
    report its fooling rate on the evaluated originals, through ``attacks.apply_perturbation``."""
    folder, u, clf = _attacks_dir(run) / "uap", run.params.attacks.uap, run.classifier
    pool, pool_ids = uap_pool(run, {r.source_id for r in evaluated})
    key = {"uap": u.to_dict(), "classifier": clf.weights_id, "prep": clf.preprocessing_id, "pool": pool_ids,
           "seed": run.params.seed, "version": attacks.ATTACKS_VERSION, "evaluated": [r.image_id for r in evaluated]}
    if (folder / "uap.json").exists():
        v, meta = attacks.load_uap(folder)
        if meta.get("key") == key:
            return v, meta
    if u.method == "sgd":
        fitter = attacks.StochasticUniversalPerturbation(clf, xi=u.xi, steps=u.steps, batch_size=u.batch_size, lr=u.lr,
                                                         min_scale=u.min_scale, seed=run.params.seed,
                                                         progress=run.progress)
        variant = "untargeted, stochastic gradient on random crops of the pool (Shafahi et al. 2020, sgd-uap)"
    else:
        fitter = attacks.UniversalPerturbation(clf, xi=u.xi, delta=u.delta, max_passes=u.max_passes,
                                               num_candidates=u.num_candidates, seed=run.params.seed,
                                               progress=run.progress)
        variant = "untargeted (Moosavi-Dezfooli et al. 2017, Alg. 1, DeepFool inner step)"
    v = fitter.fit(pool)
    held_out = [images.load(r) for r in evaluated]
    rate = attacks.fooling_rate(clf, held_out, v, batch_size=run.params.batch_size)
    meta = {"xi": u.xi, "fooling_rate": rate, "n_eval": len(held_out), "classifier": clf.name,
            "input_size": clf.input_size, "method": u.method, "variant": variant, "params": fitter.params(),
            "pool": u.pool, "pool_size": len(pool), "pool_ids": pool_ids,
            ("pool_fooling_rate_per_pass" if u.method == "deepfool" else "batch_fooling_rate_per_step"): fitter.history_,
            "key": key}
    attacks.save_uap(folder, v, meta)
    return v, meta


def _adversarial(run: Run, evaluated: list[images.ImageRecord], v: np.ndarray, uap_meta: dict) -> tuple[list[Path], pd.DataFrame]:
    """Each evaluated original with the UAP applied (8-bit PNG at the network's input size)."""
    def generate():
        out = [attacks.apply_perturbation(images.load(r), v, run.classifier.view) for r in evaluated]
        return out, pd.DataFrame({"parent_id": [r.image_id for r in evaluated]})

    key = {"uap": uap_meta["key"], "fooling_rate": uap_meta["fooling_rate"]}
    return cached_images(_attacks_dir(run) / "adversarial", key, generate)


def _fool_gd(run: Run) -> tuple[list[Path], pd.DataFrame]:
    """Gradient-ascent fooling images (Nguyen et al. 2015), one random target class each."""
    p, g = run.params, run.params.attacks.fool_gd
    targets = np.random.default_rng([p.seed, 1]).choice(1000, size=g.n, replace=g.n > 1000).tolist()
    maker = fooling.GradientAscentFooling(run.classifier, steps=g.steps, lr=g.lr, l2_decay=g.l2_decay,
                                          batch_size=p.batch_size, seed=p.seed, progress=run.progress)

    def generate():
        out, conf = maker(targets)
        return out, pd.DataFrame({"target": targets, "confidence": conf})

    return cached_images(_attacks_dir(run) / "fool_gd", {"params": maker.params(), "targets": targets}, generate)


def _fool_ev(run: Run) -> tuple[list[Path], pd.DataFrame]:
    """Evolutionary fooling images (MAP-Elites over all 1000 classes); the ``keep`` most confident elites."""
    p, e = run.params, run.params.attacks.fool_ev
    maker = fooling.EvolutionaryFooling(run.classifier, population=e.population, generations=e.generations,
                                        encoding=e.encoding, batch_size=max(p.batch_size, 32), seed=p.seed,
                                        progress=run.progress)

    def generate():
        out, classes, conf = maker(None)
        best = np.argsort(-np.asarray(conf), kind="stable")[: e.keep]
        return [out[i] for i in best], pd.DataFrame({"target": np.asarray(classes)[best],
                                                     "confidence": np.asarray(conf)[best]})

    return cached_images(_attacks_dir(run) / "fool_ev", {"params": maker.params(), "keep": e.keep}, generate)


def _row(group: str, image_id: str, parent: images.ImageRecord | None = None, **kw: Any) -> dict:
    """One ``features.csv`` description row (see ``features.TABLE_COLUMNS``)."""
    return {"group": group, "image_id": image_id, "parent_id": kw.get("parent_id"),
            "source_id": parent.source_id if parent else None, "view": parent.view if parent else "full",
            "distortion": kw.get("distortion"), "level": kw.get("level"), "attack": kw.get("attack"),
            "seed": kw.get("seed"), "label": parent.label if parent else None}


def distorted_jobs(run: Run, record: images.ImageRecord) -> list[tuple[features.ImageJob, dict]]:
    """The Distorted group of one original: (job, description row) per type and level, distorted in
    the classifier's view and seeded by the original's id."""
    p = run.params
    return [(features.ImageJob(record.path, view=record.view, distortion=name, level=int(level), seed=p.seed,
                               noise_id=record.image_id, distort_in_view=True),
             _row("distorted", f"{record.image_id}|{name}|{level}", record, parent_id=record.image_id,
                  distortion=name, level=int(level), seed=p.seed))
            for name in p.distortions.types for level in p.distortions.levels]


def group_jobs(run: Run, evaluated: list[images.ImageRecord], uap: tuple[np.ndarray, dict]) -> tuple[list, pd.DataFrame]:
    """Image jobs and description rows of the five groups, in the paper's order per original."""
    p = run.params
    jobs, rows = [], []
    for r in evaluated:
        jobs.append(features.ImageJob(r.path, view=r.view))
        rows.append(_row("original", r.image_id, r))
        for job, row in distorted_jobs(run, r):
            jobs.append(job)
            rows.append(row)
    by_id = {r.image_id: r for r in evaluated}
    paths, meta = _adversarial(run, evaluated, *uap)
    for path, parent_id in zip(paths, meta["parent_id"]):
        # Generated images are 8-bit RGB at the network's input size; the grey/size rules are for photos.
        jobs.append(features.ImageJob(str(path), min_side=1, allow_grey=True))
        rows.append({**_row("adversarial", f"{parent_id}|uap", by_id[parent_id], parent_id=parent_id, attack="uap"),
                     "view": "full"})
    for name, (paths, _) in {"fool_gd": _fool_gd(run), "fool_ev": _fool_ev(run)}.items():
        for path in paths:
            jobs.append(features.ImageJob(str(path), min_side=1, allow_grey=True))
            rows.append(_row(name, f"{name}_{Path(path).stem}", attack=name, seed=p.seed))
    return jobs, pd.DataFrame(rows)


def build_groups(run: Run, quality: QualityModel | None = None) -> tuple[pd.DataFrame, dict]:
    """All five groups' rows (``features.TABLE_COLUMNS``) and image counts per group.

    Writes ``features.csv`` (portable paths) and ``attacks/summary.json``; everything is cached, so
    calling it from several notebooks costs one generation and one backbone pass per image.
    """
    image_set = originals(run)
    clean = clean_predictions(run, image_set)
    right = set(clean.loc[clean["correct"], "image_id"])
    evaluated = [r for r in image_set.records if r.image_id in right]
    if not evaluated:
        raise RuntimeError("the classifier gets none of the originals right: no Original group to attack")
    uap = universal_perturbation(run, evaluated)
    jobs, meta = group_jobs(run, evaluated, uap)
    table, counts = features.table(run.classifier, jobs, meta, quality, **run.pass_options)
    table["path"] = [run.portable(p) for p in table["path"]]
    atomic_write_text(run.folder / "features.csv", table.to_csv(index=False))
    atomic_write_text(_attacks_dir(run) / "summary.json", json.dumps(
        {"uap": {k: uap[1][k] for k in ("xi", "fooling_rate", "n_eval", "classifier", "input_size")},
         "originals_correct": len(evaluated), "originals_total": len(image_set.records)}, indent=2) + "\n")
    return table, {"originals_all": image_set.counts(), **counts}


def row_jobs(run: Run, table: pd.DataFrame) -> list[features.ImageJob]:
    """The image job behind each ``features.csv`` row, from its columns (no id parsing): the same
    cache keys as the jobs that made the row, so ``features.embed`` on them runs no backbone."""
    jobs = []
    for r in table.itertuples():
        path = str(run.resolve(r.path))
        if isinstance(r.distortion, str):
            jobs.append(features.ImageJob(path, view=r.view, distortion=r.distortion, level=int(r.level),
                                          seed=int(r.seed), noise_id=r.parent_id, min_side=1, allow_grey=True,
                                          distort_in_view=True))
        else:
            jobs.append(features.ImageJob(path, view=r.view, min_side=1, allow_grey=True))
    return jobs


def uap_probe(run: Run, table: pd.DataFrame, limit: int | None = 1000) -> dict[str, Any]:
    """The run's UAP and its ``probes.controls`` on the Original group of ``table`` (``features.csv``):
    ``maps`` (name -> map), and per name (``probes.CLEAN`` for the originals) the images' predicted
    ``quality``, ``top1`` and early-layer ``stats``, rows in the originals' order. Originals and
    their UAP twins come from the cache (the rows of ``table``); only the controls take new passes,
    at the full batch shape like every cached row. ``limit``: at most that many originals, a seeded
    sample (paper scale has ~38k; the standard error of a mean over a thousand is std/√1000, e.g.
    0.003 at the std 0.106 of the paper's Table II)."""
    clf = run.classifier
    originals_ = table[table["group"] == "original"]
    if limit is not None and len(originals_) > limit:
        originals_ = originals_.sample(limit, random_state=run.params.seed).sort_index()
    originals_ = originals_.reset_index(drop=True)
    twins = table[table["group"] == "adversarial"].set_index("parent_id")
    missing = set(originals_["image_id"]) - set(twins.index)
    if missing:
        raise ValueError(f"{len(missing)} originals have no UAP image in the table (e.g. {sorted(missing)[0]}); "
                         "build the groups with experiment.build_groups first")
    twins = twins.loc[originals_["image_id"]].reset_index()
    v, _ = attacks.load_uap(_attacks_dir(run) / "uap")
    maps = probes.controls(v, seed=run.params.seed)
    rows = {probes.CLEAN: features.embed(clf, row_jobs(run, originals_), **run.pass_options)[0],
            probes.UAP: features.embed(clf, row_jobs(run, twins), **run.pass_options)[0]}
    base = row_images(run, originals_)
    for name, m in maps.items():
        if name not in rows:
            perturbed = [attacks.apply_perturbation(im, m, clf.view) for im in base]
            rows[name] = features.backbone_rows(clf, perturbed, run.params.batch_size, run.params.amp, pad=True)
    return {"maps": maps,
            "quality": {k: features.scores(run.quality, clf, r) for k, r in rows.items()},
            "top1": {k: features.top1_from_embeddings(clf, r)[0] for k, r in rows.items()},
            "stats": {k: features.stats(clf, r) for k, r in rows.items()}}


def row_images(run: Run, table: pd.DataFrame) -> list[Image.Image]:
    """The exact image behind each ``features.csv`` row, rebuilt from its columns (distortions
    re-applied deterministically), e.g. for a peer detector that needs pixels or for examples."""
    return [job.load(run.classifier) for job in row_jobs(run, table)]


def peer_rows(run: Run, table: pd.DataFrame) -> pd.DataFrame:
    """The rows a peer detector that needs pixels scores: every row but the distorted ones, and a
    seeded sample of ``detector.peer_distorted`` distorted rows (null: all of them), so its cost
    stays a fraction of the run's while every group is represented."""
    n = run.params.detector.peer_distorted
    distorted = table["group"] == "distorted"
    if n is None or n >= int(distorted.sum()):
        return table
    keep = table[distorted].sample(n=n, random_state=run.params.seed).index
    return table[~distorted | table.index.isin(keep)]


def peer_probabilities(run: Run, table: pd.DataFrame) -> np.ndarray:
    """(N, 1000) softmax of each row's image, from the embedding cache (no second backbone pass)."""
    emb, _ = features.embed(run.classifier, row_jobs(run, table), **{**run.pass_options, "progress": False})
    return features.probabilities(run.classifier, emb)


# ------------------------------------------------------------------------------------------------
# Filling the store from several machines


def in_share(text: str, shard: int, of: int) -> bool:
    """Whether ``text`` (a file path or a photo's source id) falls in share ``shard`` of ``of``: a hash,
    so the shares partition the work with no coordination and the same on every machine."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) % of == shard


def prefill(run: Run, shard: int, of: int) -> dict[str, int]:
    """Put share ``shard`` of ``of`` of the run's bulk passes into its embedding store, with no
    notebook: every classifier of ``classifiers_table1`` (and ``classifier``) on each real IQA set's
    references and distorted images, and the run's classifier on the originals and, for those it
    gets right, their Distorted group. IQA images are shared out by path, originals by photo (with
    all their views and distortions). The UAP, fooling images and the notebooks run afterwards, on
    the merged store. The embedded IQA set is left to notebook 00 (it is built in the run folder).
    Returns how many passes this share ran or found cached, per kind."""
    counts: dict[str, int] = {}
    p = run.params
    for entry in p.iqa_sets:
        if entry["name"] == "embedded":
            continue
        table = _real_iqa_set(entry)
        paths = [q for q in dict.fromkeys([*table["ref_path"], *table["path"]]) if in_share(q, shard, of)]
        jobs = [features.ImageJob(q, min_side=1, allow_grey=True) for q in paths]
        for name in dict.fromkeys([*p.classifiers_table1, p.classifier]):
            features.embed(run.classifier_named(name), jobs, desc=f"{entry['name']} {name}", **run.pass_options)
        counts[entry["name"]] = len(jobs)
    image_set = originals(run)
    mine = images.ImageSet([r for r in image_set.records if in_share(r.source_id, shard, of)])
    clean = clean_predictions(run, mine)
    right = set(clean.loc[clean["correct"], "image_id"])
    jobs = [job for r in mine.records if r.image_id in right for job, _ in distorted_jobs(run, r)]
    features.embed(run.classifier, jobs, desc="distorted", **run.pass_options)
    counts.update(originals=len(mine.records), distorted=len(jobs))
    return counts


# ------------------------------------------------------------------------------------------------
# Notebook 05: the quality half under attack, and its defences

ROBUST_PLAIN_FOLDER = "models/quality_plain05"
ROBUST_NT_FOLDER = "models/quality_nt"
DENOISER_FOLDER = "models/denoiser"


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


def robust_data(run: Run) -> RobustData:
    """The split and samples of ``RobustData`` (``robust.n_srocc``, ``n_images``, ``n_certified_images``)."""
    from sklearn.model_selection import GroupShuffleSplit

    p, r = run.params, run.params.robust
    name = p.quality.train_sets[0]
    table, emb, _ = iqa_features(run, {name: iqa_sets(run)[name]})[name]
    x = features.quality_features(run.classifier, emb, p.quality.features)
    groups = table["ref_id"].astype(str).to_numpy()
    train, held = next(GroupShuffleSplit(1, test_size=p.quality.test_size, random_state=p.seed).split(x, groups=groups))
    held_rows = table.iloc[held].reset_index(drop=True)

    def sample(n: int, salt: int) -> pd.DataFrame:
        return held_rows.sample(n=min(n, len(held_rows)), random_state=p.seed + salt).reset_index(drop=True)

    return RobustData(table.iloc[train].reset_index(drop=True), x[train], held_rows,
                      sample(r.n_srocc, 1), sample(r.n_images, 2), sample(r.n_certified_images, 3))


def view_tensor(run: Run, items: list[Any]) -> Any:
    """(N, 3, S, S) float tensor in [0, 1] of the classifier's view of each image file or PIL image."""
    pics = [images.open_image(item, allow_grey=True, min_side=1) if isinstance(item, (str, Path)) else item
            for item in items]
    return run.classifier.pixels(pics) / 255.0


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
    ``{"plain": model, "nt": model, "nt_log": DataFrame}``."""
    from iqalib import robust

    p, r = run.params, run.params.robust
    settings = {k: v for k, v in quality_settings(run).items() if k not in ("n_splits", "test_size", "progress")}
    key = {"quality": p.quality.to_dict(), "n_models": r.n_models, "seed": p.seed,
           "classifier": run.classifier.weights_id, "amp": p.amp,
           **({"backbone_in_workers": True} if features.runs_backbone_in_workers(run.classifier, p.backbone_in_workers)
              else {}),
           "iqa_sets": [dict(e) for e in p.iqa_sets], "embedded_iqa": p.embedded_iqa.to_dict(),
           "train_refs": sorted(set(data.train["ref_id"].astype(str)))}
    mos = data.train["mos"].to_numpy()

    def build_plain(folder: Path) -> None:
        model = QualityModel(n_models=r.n_models, **settings).fit(data.train_features, mos, progress=run.progress)
        model.save(folder, training_data={"rows": len(mos), "references": data.train["ref_id"].nunique(),
                                          "target": training_label(run), "use": "notebook 05 (plain)"})

    def load(folder: Path) -> QualityModel:
        return QualityModel.load(folder, device=p.device)

    _reuse_or_build(run.folder / ROBUST_PLAIN_FOLDER, key, build_plain)
    plain = load(run.folder / ROBUST_PLAIN_FOLDER)

    def build_nt(folder: Path) -> None:
        pool = data.train.sample(n=min(r.nt.pixel_pool, len(data.train)), random_state=p.seed)
        n = r.nt
        model, steps = robust.train_nt(plain, run.classifier, view_tensor(run, list(pool["path"])), data.train_features,
                                       mos, lam=n.lam, h=n.h, steps=n.steps, batch_size=n.batch_size,
                                       pixel_batch=n.pixel_batch, lr=n.lr, seed=p.seed, progress=run.progress)
        model.save(folder, training_data={"rows": len(mos), "target": training_label(run),
                                          "nt": {**n.to_dict(), "from": ROBUST_PLAIN_FOLDER, "log": steps}})

    _reuse_or_build(run.folder / ROBUST_NT_FOLDER, {**key, "nt": r.nt.to_dict()}, build_nt)
    nt = load(run.folder / ROBUST_NT_FOLDER)
    return {"plain": plain, "nt": nt, "nt_log": pd.DataFrame(nt.card["training_data"]["nt"]["log"])}


def robust_denoiser(run: Run, data: RobustData) -> tuple[Any, pd.DataFrame]:
    """DMS-IQA's denoiser (``robust.denoiser``, noise ``robust.smoothing.sigma``), trained on the
    reference photos of ``data.train`` only, saved under ``models/denoiser``; and its training log."""
    from iqalib.denoiser import DnCNN, train_denoiser

    p, d = run.params, run.params.robust.denoiser
    refs = sorted(set(data.train["ref_path"]))
    key = {"denoiser": d.to_dict(), "sigma": p.robust.smoothing.sigma, "seed": p.seed, "refs": refs}

    def build(folder: Path) -> None:
        photos = [np.asarray(images.open_image(path, allow_grey=True, min_side=1), np.uint8) for path in refs]
        net, log = train_denoiser(photos, p.robust.smoothing.sigma, d.layers, d.channels, d.steps, d.batch_size,
                                  d.patch, d.lr, seed=p.seed, device=str(run.classifier.device), progress=run.progress)
        net.save(folder, {"sigma": p.robust.smoothing.sigma, "photos": len(photos), "log": log})

    _reuse_or_build(run.folder / DENOISER_FOLDER, key, build)
    net = DnCNN.load(run.folder / DENOISER_FOLDER)
    return net.to(run.classifier.device), pd.DataFrame(net.card["log"])


def robust_scorers(run: Run, plain: QualityModel, nt: QualityModel, denoiser: Any) -> dict[str, Any]:
    """The four quality models notebook 05 compares, as ``robust.Scorer``: plain, NT, DMS (input-space
    median smoothing behind the denoiser) and FS (feature-space median smoothing of the plain heads)."""
    from iqalib.robust import Scorer

    p, s, f = run.params, run.params.robust.smoothing, run.params.robust.feature_smoothing
    clf = run.classifier
    return {"plain": Scorer("plain", plain, clf), "nt": Scorer("nt", nt, clf),
            "dms": Scorer("dms", plain, clf, "input", s.sigma, s.n, denoiser, p.seed),
            "fs": Scorer("fs", plain, clf, "feature", f.sigma, f.n, None, p.seed)}


def robust_detector_data(run: Run, table: pd.DataFrame) -> dict[str, Any]:
    """For the detector under attack: the first paired split's training rows (originals and UAP
    images of its training sources, as in notebook 04) with their views, and the first
    ``robust.n_images`` held-out originals the classifier gets right, with views and labels."""
    import torch

    from iqalib import detector

    p = run.params
    train_ids, test_ids = detector.paired_splits(table, p.detector.n_splits, p.detector.train_size, p.seed)[0]
    src = table["source_id"].astype(str)
    train = table[src.isin(set(train_ids)) & table["group"].isin(["original", "adversarial"])].reset_index(drop=True)
    held = table[(table["group"] == "original") & src.isin(set(test_ids)) & table["correct"].astype(bool)]
    held = held.head(p.robust.n_images).reset_index(drop=True)
    return {"train": train, "train_x": view_tensor(run, row_images(run, train)),
            "y": (train["group"] == "adversarial").astype(int).to_numpy(),
            "held": held, "held_x": view_tensor(run, row_images(run, held)),
            "labels": torch.tensor(held["label"].astype(int).to_numpy(), device=run.classifier.device)}


def robust_clean(run: Run, scorers: dict[str, Any], data: RobustData) -> pd.DataFrame:
    """``robust_models``: each scorer on ``data.srocc`` — SROCC/PLCC against the target, passes per
    image and measured seconds per image of the deployed score (wall clock, this machine)."""
    import time

    from iqalib import tables

    x = view_tensor(run, list(data.srocc["path"]))
    rows = []
    for name, scorer in scorers.items():
        start = time.perf_counter()
        scores = scorer.scores(x)
        seconds = (time.perf_counter() - start) / len(x)
        rows.append({"quality_model": name, "space": scorer.space, "n": len(scores),
                     **dict(zip(("srocc", "plcc"), tables.correlations(scores, data.srocc["mos"]))),
                     **scorer.passes_per_image(), "seconds_per_image": seconds})
    return pd.DataFrame(rows)


def robust_attack_table(run: Run, scorers: dict[str, Any], data: RobustData) -> pd.DataFrame:
    """``robust_attacks``: every scorer under ``robust.attack_scores`` (``robust.eps_255``, step,
    iterations, EOT draws) on ``data.attacked``, against its target scores."""
    from iqalib import robust, tables

    r = run.params.robust
    x = view_tensor(run, list(data.attacked["path"]))
    return pd.concat([tables.robust_attacks(name, robust.attack_scores(
        scorer, x, r.eps_255, r.step_255, r.iters, r.eot_draws, run.params.seed, run.progress), data.attacked["mos"])
        for name, scorer in scorers.items()], ignore_index=True)


def robust_certificates(run: Run, scorers: dict[str, Any], data: RobustData) -> tuple[pd.DataFrame, np.ndarray]:
    """``robust_certified`` on ``data.certified``: DMS's certificate (``robust.smoothing``) and FS's
    local one (``robust.feature_smoothing``, with its per-image Lipschitz estimate, also returned),
    each with its measured seconds per image (FS's include the Lipschitz estimate)."""
    import time

    from iqalib import robust, tables

    r, seed = run.params.robust, run.params.seed
    f, s = r.feature_smoothing, r.smoothing
    x = view_tensor(run, list(data.certified["path"]))
    start = time.perf_counter()
    lipschitz = robust.local_lipschitz(scorers["fs"].scaled_features(), x, iters=f.lipschitz_iters, seed=seed)
    fs = scorers["fs"].certify(x, s.radii, f.n_certify, s.conf, lipschitz)
    fs_seconds = (time.perf_counter() - start) / len(x)
    start = time.perf_counter()
    dms = scorers["dms"].certify(x, s.radii, s.n_certify, s.conf)
    dms_seconds = (time.perf_counter() - start) / len(x)
    return pd.concat([tables.robust_certified("dms", "input", s.sigma, s.n_certify, dms, s.radii, dms_seconds),
                      tables.robust_certified("fs", "feature", f.sigma, f.n_certify, fs, s.radii, fs_seconds)],
                     ignore_index=True), lipschitz


def robust_detection(run: Run, scorers: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """``robust_detector``: per scorer, a detector (notebook 04's SVM) trained on the first paired
    split with that scorer's quality, then, per ``robust.eps_255``, the oblivious PGD (classifier
    only, the same images for every scorer) and the adaptive PGD through the whole system, judged
    on ``robust_detector_data``'s held-out originals."""
    from iqalib import adaptive, detector, tables

    p, r = run.params, run.params.robust
    d = robust_detector_data(run, table)
    clf, x, labels = run.classifier, d["held_x"], d["labels"]
    oblivious = {e: adaptive.pgd(clf, x, labels, e / 255, steps=r.iters, seed=p.seed) for e in r.eps_255}
    rows = []
    for name, scorer in scorers.items():
        train = d["train"][list(detector.TOP5)].assign(quality=scorer.scores(d["train_x"]))
        det = detector.FitForTaskDetector(random_state=p.seed).fit(train, d["y"], groups=d["train"]["source_id"])
        decision = adaptive.svm_decision(det)
        clean_flagged = adaptive.judge(clf, scorer, det, x, labels)["flagged"]
        for e in r.eps_255:
            adv = adaptive.pgd(clf, x, labels, e / 255, scorer, decision, steps=r.iters, draws=r.eot_draws, seed=p.seed)
            for attack, attacked in (("oblivious", oblivious[e]), ("adaptive", adv)):
                judged = adaptive.judge(clf, scorer, det, attacked, labels)
                rows.append(tables.robust_detector(name, attack, e, judged, clean_flagged))
    return pd.DataFrame(rows)
