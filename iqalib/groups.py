"""The paper's five experiment groups (Section V-A: Original, Distorted, Adversarial (UAP),
Fool_EV, Fool_GD) as image jobs, and the one per-image table they make, ``features.csv``.

One job list per run: each row of the table is described once (``original_rows``,
``distorted_rows``, ...), and ``jobs`` turns description rows into image jobs — the same
function when the groups are built and when a later notebook needs a row's pixels or cached
embedding again, so the two can never disagree. The originals are decoded and classified once
(``clean_predictions``): that pass picks the evaluated originals, and its rows are their rows in
the table. Generated images are made once under ``outputs/<run>/attacks/``; ``build`` writes
``features.csv`` (portable paths, see ``experiment.Run.portable``) and ``load`` reads it back.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from iqalib import attacks, feature_table, features, fooling, images, probes, tables
from iqalib.cache import atomic_write_text, cached_images
from iqalib.experiment import Run, originals, originals_path, real_iqa_set
from iqalib.quality import QualityModel


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
    wider = images.originals(o.source, originals_path(run), (o.limit or 0) + u.pool_size, 1, run.progress)
    records = [r for r in wider.records if r.source_id not in exclude_sources][: u.pool_size]
    return [images.load(r) for r in records], [r.image_id for r in records]


def universal_perturbation(run: Run, evaluated: list[images.ImageRecord]) -> tuple[np.ndarray, dict]:
    """Fit the UAP on the pool (or reuse the saved one when nothing it depends on changed). Its
    fooling rate on the evaluated originals is read from the table (``tables.fooling_rate``: the
    saved 8-bit UAP images against their originals, in the one pass every row gets)."""
    folder, u, clf = _attacks_dir(run) / "uap", run.params.attacks.uap, run.classifier
    pool, pool_ids = uap_pool(run, {r.source_id for r in evaluated})
    if not pool:
        raise ValueError(f"the UAP's pool ({u.pool}) is empty: no images beyond the evaluated originals")
    run.record(uap_method=u.method, uap_pool=f"{u.pool} ({len(pool)} images)")
    key = {"uap": u.to_dict(), "classifier": clf.passes_id, "prep": clf.preprocessing_id, "pool": pool_ids,
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
    meta = {"xi": u.xi, "n_eval": len(evaluated), "classifier": clf.name,
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

    return cached_images(_attacks_dir(run) / "adversarial", {"uap": uap_meta["key"]}, generate)


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


#: Groups whose images are generated here (8-bit RGB at the network's input size): the photo
#: rules (the paper's 90 px floor, no grey images) are for originals and their distortions only.
GENERATED: tuple[str, ...] = ("adversarial", "fool_ev", "fool_gd")


def _row(group: str, image_id: str, path: str | Path, parent: images.ImageRecord | None = None,
         **kw: Any) -> dict:
    """One description row of ``features.csv`` (the columns before the classifier's outputs)."""
    return {"group": group, "image_id": image_id, "parent_id": kw.get("parent_id"),
            "source_id": parent.source_id if parent else None,
            "view": kw.get("view", parent.view if parent else "full"), "distortion": kw.get("distortion"),
            "level": kw.get("level"), "attack": kw.get("attack"), "seed": kw.get("seed"),
            "label": parent.label if parent else None, "path": str(path)}


def original_rows(records: list[images.ImageRecord]) -> list[dict]:
    """The Original group's description rows: one per record (photo and view)."""
    return [_row("original", r.image_id, r.path, r) for r in records]


def distorted_rows(run: Run, record: images.ImageRecord) -> list[dict]:
    """The Distorted group of one original: a row per type and level of ``distortions``, seeded by
    the run's seed and the original's id."""
    p = run.params
    return [_row("distorted", f"{record.image_id}|{name}|{level}", record.path, record, parent_id=record.image_id,
                 distortion=name, level=int(level), seed=p.seed)
            for name in p.distortions.types for level in p.distortions.levels]


def jobs(run: Run, rows: pd.DataFrame | list[dict]) -> list[features.ImageJob]:
    """The image job behind each description row (built here or read back from ``features.csv``):
    the file (portable paths resolved), its view and, for a distorted row, the distortion in the
    classifier's view seeded by the row's seed and its parent's id. The one job builder: a row
    read back gets the cache key of the row built, so ``features.embed`` on it runs no backbone."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    out = []
    for r in records:
        generated = r["group"] in GENERATED
        distortion = r["distortion"] if isinstance(r["distortion"], str) else None
        out.append(features.ImageJob(
            str(run.resolve(r["path"])), view=r["view"], distortion=distortion,
            level=int(r["level"]) if distortion else None, seed=int(r["seed"]) if distortion else 0,
            noise_id=str(r["parent_id"]) if distortion else "", min_side=1 if generated else 90,
            allow_grey=generated, distort_in_view=distortion is not None))
    return out


def scored(clf: Any, rows: pd.DataFrame, embedded: np.ndarray, reasons: list[str | None],
           quality: QualityModel | None = None) -> tuple[pd.DataFrame, dict]:
    """The features table from description ``rows`` and their pass rows (``features.embed``):
    ``rows`` plus each file's ``file_digest``, the top-5 sorted class probabilities, ``pred`` (top-1
    index), predicted ``quality``, ``correct`` (top-1 = true label) and ``correct_vs_clean`` (top-1 =
    the top-1 of the row's parent original; for images without a parent: NA). Skipped images are dropped and
    counted per group in the returned ``{group: {"used", "skipped"}}``. ``clf``: the classifier of the pass."""
    ok = np.array([r is None for r in reasons], dtype=bool)
    out = rows.reset_index(drop=True).copy()
    counts = {g: features.skip_counts([reasons[i] for i in np.flatnonzero(out["group"].to_numpy() == g)])
              for g in dict.fromkeys(out["group"])}
    out, embedded = out[ok].reset_index(drop=True), embedded[ok]
    digests = {path: images.file_digest(path) for path in dict.fromkeys(out["path"])}
    out["file_digest"] = out["path"].map(digests)
    proba = features.probabilities(clf, embedded)
    order = np.argsort(-proba, axis=1)[:, :5]
    top5 = np.take_along_axis(proba, order, axis=1)
    for k in range(5):
        out[f"top{k + 1}"] = top5[:, k]
    out["pred"] = order[:, 0]
    out["quality"] = features.scores(quality, clf, embedded) if quality is not None else np.nan
    label = pd.to_numeric(out["label"], errors="coerce")
    out["correct"] = label.notna() & (label == out["pred"])
    is_original = out["group"] == "original"
    parent_pred = out["parent_id"].map(dict(zip(out.loc[is_original, "image_id"], out.loc[is_original, "pred"])))
    vs_clean = pd.Series(pd.NA, index=out.index, dtype="boolean")
    has_parent = parent_pred.notna()
    vs_clean[has_parent] = parent_pred[has_parent] == out.loc[has_parent, "pred"]
    vs_clean[is_original] = True
    out["correct_vs_clean"] = vs_clean
    return out[list(feature_table.TABLE_COLUMNS)], counts


def _classified(run: Run, records: list[images.ImageRecord]) -> tuple[pd.DataFrame, np.ndarray, list]:
    """The originals' description rows, pass rows and skip reasons: the ONE pass over the clean
    originals, which picks the evaluated ones and gives their rows in the table."""
    rows = pd.DataFrame(original_rows(records), columns=list(feature_table.TABLE_COLUMNS[:11]))
    embedded, reasons = features.embed(run.classifier, jobs(run, rows), desc=f"{run.classifier.name} originals",
                                       **run.pass_options)
    return rows, embedded, reasons


def clean_predictions(run: Run, image_set: images.ImageSet) -> pd.DataFrame:
    """The run's classifier on each usable original: ``image_id, source_id, view, label, top1,
    conf, correct``."""
    rows, embedded, reasons = _classified(run, image_set.records)
    return _clean(run, rows, embedded, reasons)


def _clean(run: Run, rows: pd.DataFrame, embedded: np.ndarray, reasons: list) -> pd.DataFrame:
    top1, conf = features.top1_from_embeddings(run.classifier, embedded)
    frame = rows[["image_id", "source_id", "view", "label"]].assign(top1=top1, conf=conf, skipped=reasons)
    frame = frame[frame["skipped"].isna()].drop(columns="skipped").reset_index(drop=True)
    frame["correct"] = frame["label"].notna() & (frame["top1"] == frame["label"])
    return frame


@dataclass
class Groups:
    """What ``build`` made: the features table (as ``load`` reads it back), the image counts per
    group for the manifest, and the UAP's card (``attacks/uap/uap.json``)."""

    table: pd.DataFrame
    counts: dict
    uap: dict

    @property
    def fooling_rate(self) -> float:
        """Share of the UAP images whose top-1 left their original's (from the table)."""
        return tables.fooling_rate(self.table)

    def sizes(self) -> pd.DataFrame:
        """Images per group, one row."""
        return tables.group_sizes(self.table)

    def uap_sentence(self) -> str:
        """The UAP in one markdown sentence: variant, ξ, pool and its fooling rate."""
        u = self.uap
        return (f"UAP ({u['variant']}): ξ = {u['xi']:g}, pool of {u['pool_size']} images ({u['pool']}); it changes "
                f"the top-1 of **{self.fooling_rate:.0%}** of the {u['n_eval']} evaluated originals (from the "
                "table below: the saved 8-bit UAP images against their originals).")


def build(run: Run, quality: QualityModel | None = None) -> Groups:
    """All five groups, in the paper's order per original (its row, then its distorted rows; then
    the UAP images, Fool_GD, Fool_EV): generated once, passed once per image, written to
    ``features.csv`` (portable paths) with ``attacks/summary.json``, and returned as read back."""
    image_set = originals(run)
    orig_rows, orig_embedded, orig_reasons = _classified(run, image_set.records)
    clean = _clean(run, orig_rows, orig_embedded, orig_reasons)
    right = set(clean.loc[clean["correct"], "image_id"])
    evaluated = [r for r in image_set.records if r.image_id in right]
    if not evaluated:
        raise RuntimeError("the classifier gets none of the originals right: no Original group to attack")
    v, uap = universal_perturbation(run, evaluated)
    rows = [row for r in evaluated for row in (original_rows([r])[0], *distorted_rows(run, r))]
    by_id = {r.image_id: r for r in evaluated}
    paths, meta = _adversarial(run, evaluated, v, uap)
    rows += [_row("adversarial", f"{parent}|uap", path, by_id[parent], parent_id=parent, attack="uap", view="full")
             for path, parent in zip(paths, meta["parent_id"])]
    for name, (paths, _) in {"fool_gd": _fool_gd(run), "fool_ev": _fool_ev(run)}.items():
        rows += [_row(name, f"{name}_{Path(path).stem}", path, attack=name, seed=run.params.seed) for path in paths]
    rows = pd.DataFrame(rows)
    # The originals' rows come from the pass that picked them; every other row takes its own pass.
    index_of = {image_id: i for i, image_id in enumerate(orig_rows["image_id"])}
    is_original = (rows["group"] == "original").to_numpy()
    embedded = np.full((len(rows), orig_embedded.shape[1]), np.nan, np.float32)
    reasons: list[str | None] = [None] * len(rows)
    taken = [index_of[i] for i in rows.loc[is_original, "image_id"]]
    embedded[is_original] = orig_embedded[taken]
    rest = np.flatnonzero(~is_original)
    rest_embedded, rest_reasons = features.embed(run.classifier, jobs(run, rows.iloc[rest]), desc="features",
                                                 **run.pass_options)
    embedded[rest] = rest_embedded
    for i, reason in zip(rest, rest_reasons):
        reasons[i] = reason
    table, counts = scored(run.classifier, rows, embedded, reasons, quality)
    table["path"] = [run.portable(p) for p in table["path"]]
    feature_table.write(table, run.folder / FEATURES_FILE)
    table = load(run)
    atomic_write_text(_attacks_dir(run) / "summary.json", json.dumps(
        {"uap": {"xi": uap["xi"], "fooling_rate": tables.fooling_rate(table), "n_eval": len(evaluated),
                 "classifier": uap["classifier"], "input_size": uap["input_size"]},
         "originals_correct": len(evaluated), "originals_total": len(image_set.records)}, indent=2) + "\n")
    return Groups(table, {"originals_all": image_set.counts(), **counts}, uap)


FEATURES_FILE = "features.csv"


def load(run: Run) -> pd.DataFrame:
    """``features.csv`` of the run, as ``build`` wrote it (notebook 02 builds it; 03–05 read it),
    checked against the files it describes (``changed_files``): a table whose images were made
    again since (other attack settings, a regenerated fooling group, an edited dataset folder)
    would pair its scores with other pixels, so it raises and asks for notebook 02 again. A
    missing file is left to the step that needs it, which counts it as a skip."""
    table = feature_table.read(run.folder / FEATURES_FILE)
    changed = changed_files(run, table)
    if changed:
        raise ValueError(f"{run.folder / FEATURES_FILE} no longer matches the images it describes: {len(changed)} "
                         f"of its files changed since it was built (e.g. {changed[0]}); run notebook 02 "
                         "(02_adversarial_quality, groups.build) again to rebuild the table from them")
    return table


def changed_files(run: Run, table: pd.DataFrame) -> list[str]:
    """The (portable) paths of ``table`` whose file's content hash is no longer its ``file_digest``
    (a row without one counts as changed); missing files are not counted here."""
    changed = []
    for path, digest in table[["path", "file_digest"]].drop_duplicates().itertuples(index=False):
        try:
            if images.file_digest(run.resolve(path)) != digest:
                changed.append(path)
        except OSError:
            continue
    return changed


def row_images(run: Run, table: pd.DataFrame) -> list[Image.Image]:
    """The exact image behind each ``features.csv`` row, rebuilt by its job (distortions re-applied
    deterministically), e.g. for a peer detector that needs pixels or for examples."""
    return [job.load(run.classifier) for job in jobs(run, table)]


def row_embeddings(run: Run, table: pd.DataFrame, progress: bool | None = None) -> np.ndarray:
    """The cached pass rows of ``features.csv`` rows (no backbone runs for rows the groups made)."""
    options = {**run.pass_options, **({} if progress is None else {"progress": progress})}
    return features.embed(run.classifier, jobs(run, table), **options)[0]


def uap_probe(run: Run, table: pd.DataFrame, limit: int | None = 1000) -> dict[str, Any]:
    """The run's UAP and its ``probes.controls`` on the Original group of ``table`` (``features.csv``):
    ``maps`` (name -> map), and per name (``probes.CLEAN`` for the originals) the images' predicted
    ``quality``, ``top1`` and early-layer ``stats``, rows in the originals' order. Originals and
    their UAP twins come from the cache (the rows of ``table``); only the controls take new passes,
    through ``features.predict`` at the full batch shape like every cached row. ``limit``: at most
    that many originals, a seeded sample (paper scale has ~38k; the standard error of a mean over
    a thousand is std/√1000, e.g. 0.003 at the std 0.106 of the paper's Table II)."""
    clf = run.classifier
    originals_ = table[table["group"] == "original"]
    if limit is not None and len(originals_) > limit:
        originals_ = originals_.sample(limit, random_state=run.params.seed).sort_index()
    originals_ = originals_.reset_index(drop=True)
    twins = table[table["group"] == "adversarial"].set_index("parent_id")
    missing = set(originals_["image_id"]) - set(twins.index)
    if missing:
        raise ValueError(f"{len(missing)} originals have no UAP image in the table (e.g. {sorted(missing)[0]}); "
                         "build the groups with groups.build first")
    twins = twins.loc[originals_["image_id"]].reset_index()
    v, _ = attacks.load_uap(_attacks_dir(run) / "uap")
    maps = probes.controls(v, seed=run.params.seed)
    rows = {probes.CLEAN: row_embeddings(run, originals_), probes.UAP: row_embeddings(run, twins)}
    base = row_images(run, originals_)
    for name, m in maps.items():
        if name not in rows:
            perturbed = [attacks.apply_perturbation(im, m, clf.view) for im in base]
            rows[name] = features.predict(clf, perturbed, batch_size=run.params.batch_size, amp=run.params.amp,
                                          pad=True).embedded
    return {"maps": maps,
            "quality": {k: features.scores(run.quality, clf, r) for k, r in rows.items()},
            "top1": {k: features.top1_from_embeddings(clf, r)[0] for k, r in rows.items()},
            "stats": {k: features.stats(clf, r) for k, r in rows.items()}}


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
        table = real_iqa_set(entry)
        paths = [q for q in dict.fromkeys([*table["ref_path"], *table["path"]]) if in_share(q, shard, of)]
        iqa_jobs = [features.ImageJob(q, min_side=1, allow_grey=True) for q in paths]
        for name in dict.fromkeys([*p.classifiers_table1, p.classifier]):
            features.embed(run.classifier_named(name), iqa_jobs, desc=f"{entry['name']} {name}", **run.pass_options)
        counts[entry["name"]] = len(iqa_jobs)
    mine = images.ImageSet([r for r in originals(run).records if in_share(r.source_id, shard, of)])
    clean = clean_predictions(run, mine)
    right = set(clean.loc[clean["correct"], "image_id"])
    distorted = [row for r in mine.records if r.image_id in right for row in distorted_rows(run, r)]
    features.embed(run.classifier, jobs(run, distorted), desc="distorted", **run.pass_options)
    counts.update(originals=len(mine.records), distorted=len(distorted))
    return counts


def gallery_rows(run: Run, table: pd.DataFrame, n: int = 5) -> tuple[list[list[tuple[Any, str]]], list[str]]:
    """Fig. 1's gallery: the first ``n`` originals and their UAP images, and the ``n`` most confident
    Fool_EV and Fool_GD images, each captioned with its top-1 class (confidence) and quality."""
    from iqalib.classifiers import imagenet_names

    names = imagenet_names()

    def caption(r: Any) -> str:
        return f"{names[int(r.pred)][:18]} ({r.top1:.2f})\nq={r.quality:.2f}"

    pick = table[table["group"] == "original"].set_index("image_id").head(n)
    twins = table[table["group"] == "adversarial"].set_index("parent_id")
    rows = [[(run.resolve(r.path), caption(r)) for r in pick.itertuples()],
            [(run.resolve(twins.loc[i, "path"]), caption(twins.loc[i])) for i in pick.index]]
    for g in ("fool_ev", "fool_gd"):
        top = table[table["group"] == g].nlargest(n, "top1")
        rows.append([(run.resolve(r.path), caption(r)) for r in top.itertuples()])
    return rows, ["original", "UAP", "Fool_EV", "Fool_GD"]


def distinct_images(table: pd.DataFrame) -> pd.Series:
    """Per group, how many of its images are distinct (by the content hash of the file, the table's
    ``file_digest``, and, for a distorted row, its distortion and level): a generator that returns
    one image twice counts once."""
    # fillna before astype(str): pandas' string dtype keeps NaN missing, and a missing key part
    # would make nunique skip every row without a distortion
    level = table["level"].astype(float).fillna(0.0).astype(str)
    distortion = table["distortion"].astype(object).fillna("").astype(str)
    key = table["file_digest"].astype(str) + "|" + distortion + "|" + level
    return key.groupby(table["group"], sort=False).nunique()
