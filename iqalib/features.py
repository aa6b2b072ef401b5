"""ONE backbone pass per image, cached: the classifier's pooled embedding of every image a run
touches, from which class probabilities (classifier head) and predicted quality (quality head)
are both derived. Also the per-image tables later steps read (Table I's pairs, features.csv).

Owns ``ImageJob`` (how to produce one image: file, view, distortion) and the embedding cache
keys; never trains anything.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from iqalib import distortions as _distortions
from iqalib.cache import ArrayCache, key_of
from iqalib.classifiers import Classifier
from iqalib.images import ImageSkip, apply_view, file_digest, open_image

EMBEDDING_VERSION = 1  # bump when what is cached for the same key changes


@dataclass(frozen=True)
class ImageJob:
    """One image to embed: a file, optionally a view of it and a distortion at a level."""

    path: str
    view: str = "full"
    distortion: str | None = None
    level: int | None = None
    seed: int = 0
    image_id: str = ""
    min_side: int = 90
    allow_grey: bool = False
    # Distort in the classifier's view (e.g. 224×224) rather than at native size: ImageNet-C's level
    # parameters are calibrated on network-sized inputs, and a later resize would hide the damage.
    # Part of the key as a flag; which view it is, is in the cache key's preprocessing id.
    classifier_view: object = field(default=None, compare=False, hash=False)

    def load(self) -> Image.Image:
        image = open_image(self.path, min_side=self.min_side, allow_grey=self.allow_grey)
        if self.view != "full":
            image = apply_view(image, self.view)
        if self.classifier_view is not None:
            image = self.classifier_view(image)
        if self.distortion is not None:
            image = _distortions.distort(image, self.distortion, int(self.level), self.seed, self.image_id or self.path)
        return image

    def key_fields(self, digest: str) -> dict:
        fields = {"file": digest, "view": self.view, "distortion": self.distortion, "level": self.level}
        if self.classifier_view is not None:
            fields["in_classifier_view"] = True
        if self.distortion is not None:
            fields.update(seed=self.seed, image_id=self.image_id, distortions_version=_DISTORTION_VERSION)
        return fields


# Changing a level table changes the pixels, so it is part of every distorted image's key.
_DISTORTION_VERSION = key_of({k: v[0] for k, v in _distortions.LEVEL_PARAMS.items()})[:12]


def cache_for(run_folder: str | Path) -> ArrayCache:
    """The embedding cache of a run: ``outputs/<run>/cache/embeddings``."""
    return ArrayCache(Path(run_folder) / "cache" / "embeddings")


def embed(classifier: Classifier, jobs: Sequence[ImageJob], cache: ArrayCache | None = None,
          batch_size: int = 16, progress: bool = True, desc: str = "backbone") -> tuple[np.ndarray, list[str | None]]:
    """(N, D + S) float32 for ``jobs`` — pooled embedding then early-layer statistics (see
    ``pooled``/``stats``) — one backbone pass per uncached image.

    Returns the array (rows of skipped images are NaN) and, per job, None or the skip reason.
    """
    from tqdm.auto import tqdm

    # Each entry holds the pooled embedding AND the early-layer statistics of the same pass
    # (``Classifier.embed_with_stats``): the classifier head reads the first, the quality head
    # either, so no image ever needs a second backbone pass.
    model_fields = {"model": classifier.weights_id, "prep": classifier.preprocessing_id, "v": EMBEDDING_VERSION,
                    "with_stats": True}
    digests: dict[str, str] = {}
    keys: list[str | None] = []
    reasons: list[str | None] = [None] * len(jobs)
    for i, job in enumerate(jobs):
        if job.path not in digests:
            try:
                digests[job.path] = file_digest(job.path)
            except OSError:
                digests[job.path] = ""
        if not digests[job.path]:
            reasons[i] = "missing"
            keys.append(None)
        else:
            keys.append(key_of({**model_fields, **job.key_fields(digests[job.path])}))

    dim = classifier.embedding_dim + classifier.stats_dim
    out = np.full((len(jobs), dim), np.nan, dtype=np.float32)
    todo = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit.shape == (dim,):
            out[i] = hit
        else:
            todo.append(i)

    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, leave=False)
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for i in todo[start : start + batch_size]:
            try:
                images.append(jobs[i].load())
                chunk.append(i)
            except ImageSkip as skip:
                reasons[i] = skip.reason
        if images:
            vectors = classifier.embed_with_stats(images, batch_size=len(images))
            for i, vector in zip(chunk, vectors):
                out[i] = vector
                if cache is not None:
                    cache.put(keys[i], vector)
        bar.update(len(todo[start : start + batch_size]))
    bar.close()
    return out, reasons


def quality_input(quality, classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The part of ``embed``'s rows a quality model reads: early-layer statistics for
    ``features == "multilevel"`` models, else the pooled embedding."""
    trained_on = getattr(quality, "weights_id", None)
    if trained_on is not None and trained_on != classifier.weights_id:
        # Same-width features from another backbone (e.g. ResNet-50 vs ResNet-152) would be scored
        # without complaint by the heads; only the weights' identity tells them apart.
        raise ValueError(f"the quality model was trained on backbone weights {trained_on}; these embeddings come "
                         f"from {classifier.name} ({classifier.weights_id})")
    return quality_features(classifier, embedded, getattr(quality, "features", "pooled"))


def quality_features(classifier: Classifier, embedded: np.ndarray, kind: str) -> np.ndarray:
    """The part of ``embed``'s rows that quality features of ``kind`` (``multilevel`` | ``pooled``) are."""
    return stats(classifier, embedded) if kind == "multilevel" else pooled(classifier, embedded)


def pooled(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The classifier's pooled embedding part of ``embed``'s rows (what its head reads)."""
    return embedded[:, : classifier.embedding_dim]


def stats(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The early-layer statistics part of ``embed``'s rows."""
    return embedded[:, classifier.embedding_dim :]


def skip_counts(reasons: Sequence[str | None]) -> dict:
    """``{"used": n, "skipped": {reason: count}}`` for the manifest."""
    counted = Counter(r for r in reasons if r is not None)
    return {"used": sum(r is None for r in reasons), "skipped": dict(sorted(counted.items()))}


def top1_from_embeddings(classifier: Classifier, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class index (−1 where the row is NaN) and its probability."""
    ok = ~np.isnan(embeddings).any(axis=1)
    top1 = np.full(len(embeddings), -1, dtype=np.int64)
    conf = np.full(len(embeddings), np.nan, dtype=np.float32)
    if ok.any():
        proba = classifier.proba_from_embeddings(pooled(classifier, embeddings[ok]))
        top1[ok], conf[ok] = proba.argmax(1), proba.max(1)
    return top1, conf


def iqa_predictions(classifier: Classifier, table: pd.DataFrame, cache: ArrayCache | None = None,
                    batch_size: int = 16, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Classify every reference and distorted image of an IQA table (reader format).

    Adds ``classifier``, ``top1_ref``, ``top1``, ``conf`` and ``wup`` (Wu-Palmer similarity of the
    two top-1 classes, 1 = same class). Rows whose image or reference was skipped are dropped and
    counted in the returned counts.
    """
    from iqalib.semantic import wup_by_index

    refs = sorted(table["ref_path"].unique())
    # IQA images are used as given (a fully desaturated image is a distortion, not a grey photo):
    # the paper's grey/size exclusions are for ImageNet originals.
    ref_jobs = [ImageJob(p, min_side=1, allow_grey=True) for p in refs]
    dist_jobs = [ImageJob(p, min_side=1, allow_grey=True) for p in table["path"]]
    emb, reasons = embed(classifier, ref_jobs + dist_jobs, cache, batch_size, progress, desc=f"{classifier.name}")
    top1, conf = top1_from_embeddings(classifier, emb)
    ref_top1 = dict(zip(refs, top1[: len(refs)]))
    out = table.copy()
    out["classifier"] = classifier.name
    out["top1_ref"] = out["ref_path"].map(ref_top1).astype(int)
    out["top1"] = top1[len(refs):]
    out["conf"] = conf[len(refs):]
    ok = (out["top1"] >= 0) & (out["top1_ref"] >= 0)
    out = out[ok].reset_index(drop=True)
    out["wup"] = wup_by_index(out["top1_ref"].to_numpy(), out["top1"].to_numpy())
    return out, skip_counts(reasons)


def table1(pairs: pd.DataFrame) -> pd.DataFrame:
    """Paper Table I: per dataset and classifier, subjective MOS and Wu-Palmer similarity between
    the top-1 on the reference and on each distorted image (median / mean / std / count)."""
    rows = []
    for (dataset, classifier), g in pairs.groupby(["dataset", "classifier"], sort=False):
        rows.append({
            "dataset": dataset, "classifier": classifier, "n_images": len(g),
            "mos_median": g["mos"].median(), "mos_mean": g["mos"].mean(), "mos_std": g["mos"].std(ddof=1),
            "wup_median": g["wup"].median(), "wup_mean": g["wup"].mean(), "wup_std": g["wup"].std(ddof=1),
            "top1_changed": float((g["top1"] != g["top1_ref"]).mean()),
        })
    return pd.DataFrame(rows)


def load_originals(params, progress: bool = True):
    """The run's original images (``params.originals``) as an ``images.ImageSet``, skips counted.

    Real folders come from ``originals.path`` or the environment variable the error names.
    """
    from iqalib.images import originals
    from iqalib.params import data_path

    o = params.originals
    path = None if o.source == "embedded" else data_path(o.source, o.path, "originals.path")
    return originals(o.source, path, o.limit, o.views, progress)


def original_predictions(classifier: Classifier, image_set, cache: ArrayCache | None = None,
                         batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """Top-1 of the classifier on each original: one row per record with ``correct``."""
    records = image_set.records
    jobs = [ImageJob(r.path, view=r.view) for r in records]
    emb, reasons = embed(classifier, jobs, cache, batch_size, progress, desc=f"{classifier.name} originals")
    top1, conf = top1_from_embeddings(classifier, emb)
    frame = pd.DataFrame({"image_id": [r.image_id for r in records], "source_id": [r.source_id for r in records],
                          "view": [r.view for r in records], "label": [r.label for r in records],
                          "top1": top1, "conf": conf, "skipped": reasons})
    frame = frame[frame["skipped"].isna()].drop(columns="skipped").reset_index(drop=True)
    frame["correct"] = frame["label"].notna() & (frame["top1"] == frame["label"])
    return frame


GROUP_COLUMNS = ("group", "image_id", "source_id", "view", "distortion", "level", "label", "path",
                 "top1", "top2", "top3", "top4", "top5", "pred", "quality", "correct")


def original_jobs(records, distortion_types: Sequence[str] = (), levels: Sequence[int] = (),
                  seed: int = 0, classifier_view=None) -> tuple[list[ImageJob], pd.DataFrame]:
    """Jobs + metadata for the Original group and, when types/levels are given, the Distorted group
    (every original under every type at every level; the noise seed includes the image id).
    With ``classifier_view`` the distortion is applied to the classifier's view of the image."""
    jobs, meta = [], []
    for r in records:
        jobs.append(ImageJob(r.path, view=r.view))
        meta.append({"group": "original", "image_id": r.image_id, "source_id": r.source_id, "view": r.view, "distortion": None,
                     "level": None, "label": r.label})
        for name in distortion_types:
            for level in levels:
                jobs.append(ImageJob(r.path, view=r.view, distortion=name, level=int(level), seed=seed,
                                     image_id=r.image_id, classifier_view=classifier_view))
                meta.append({"group": "distorted", "image_id": f"{r.image_id}|{name}|{level}", "source_id": r.source_id, "view": r.view,
                             "distortion": name, "level": int(level), "label": r.label})
    return jobs, pd.DataFrame(meta)


def file_jobs(group: str, paths: Sequence[str | Path], meta: pd.DataFrame | None = None) -> tuple[list[ImageJob], pd.DataFrame]:
    """Jobs + metadata for generated images saved as files (adversarial and fooling groups).

    ``meta`` may carry ``image_id``, ``source_id`` and ``label`` per file (NaN for fooling images).
    """
    frame = pd.DataFrame(index=range(len(paths))) if meta is None else meta.reset_index(drop=True).copy()
    out = pd.DataFrame({"group": group,
                        "image_id": frame["image_id"] if "image_id" in frame else [Path(p).stem for p in paths],
                        "source_id": frame["source_id"] if "source_id" in frame else None,
                        "view": "full", "distortion": None, "level": None,
                        "label": frame["label"] if "label" in frame else None})
    # Generated images are 8-bit RGB at the network's input size; the grey/size rules are for photos.
    return [ImageJob(str(p), min_side=1, allow_grey=True) for p in paths], out


def features_table(classifier: Classifier, jobs: Sequence[ImageJob], meta: pd.DataFrame, quality=None,
                   cache: ArrayCache | None = None, batch_size: int = 16, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """The per-image table every later step reads (``features.csv``): for each job, the top-5
    sorted class probabilities, the top-1 index, predicted quality and whether top-1 is right.

    One backbone pass per image (cached): the classifier head and the quality head
    (``quality.predict_embeddings``) both read the same embedding. Skipped images are dropped and
    counted per group in the returned ``{group: {"used", "skipped"}}``.
    """
    emb, reasons = embed(classifier, jobs, cache, batch_size, progress, desc="features")
    ok = np.array([r is None for r in reasons], dtype=bool)
    table = meta.reset_index(drop=True).copy()
    table["path"] = [j.path for j in jobs]
    counts = {g: skip_counts([reasons[i] for i in np.flatnonzero(table["group"].to_numpy() == g)])
              for g in dict.fromkeys(table["group"])}
    table, emb = table[ok].reset_index(drop=True), emb[ok]
    proba = classifier.proba_from_embeddings(pooled(classifier, emb)) if len(emb) else np.zeros((0, 1000), np.float32)
    order = np.argsort(-proba, axis=1)[:, :5]
    top5 = np.take_along_axis(proba, order, axis=1)
    for k in range(5):
        table[f"top{k + 1}"] = top5[:, k] if len(top5) else []
    table["pred"] = order[:, 0] if len(order) else []
    table["quality"] = quality.predict_embeddings(quality_input(quality, classifier, emb)) \
        if quality is not None and len(emb) else np.nan
    label = pd.to_numeric(table["label"], errors="coerce")
    table["correct"] = label.notna() & (label == table["pred"])
    return table[list(GROUP_COLUMNS)], counts
