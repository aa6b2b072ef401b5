"""The cached forward pass: the ONE place a classifier's backbone runs to score given images.
Each image is decoded once, distorted if its job says so, put through ONE backbone pass, and
turned into class probabilities (classifier head), early-layer statistics and the pooled
embedding (what quality heads read) and, given a quality model, predicted quality.

Two entry points, one pass underneath (``pixel_rows``):

* ``embed(classifier, jobs)``: image jobs (``ImageJob``: file, view, distortion, seed), cached on
  disk by content key; what every experiment group and IQA set goes through;
* ``predict(classifier, images)``: PIL images or paths given directly (a deployed detector, an
  image made in memory), uncached.

The other inference path, gradients through ``Classifier.logits_from_pixels`` (attacks,
generators, robust training), is documented in ``classifiers``. This module trains nothing and
reads no params: ``groups`` lists the jobs and builds ``features.csv`` from the rows.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from iqalib import distortions as _distortions
from iqalib.cache import ArrayCache, ShardStore, key_of
from iqalib.classifiers import Classifier
from iqalib.images import ImageSkip, apply_view, as_rgb, file_digest, open_image

EMBEDDING_VERSION = 4  # bump when what is cached for the same key changes (2: channels-last weights; 3: BatchNorm folded; 4: tap statistics in two passes over a channels-last view)

# Changing a distortion's level table changes its pixels, so the table is part of the key of every
# image distorted by it (that type's table only: adding or retuning one type keeps the others' rows).
_DISTORTION_VERSIONS = {name: key_of(levels)[:12] for name, (levels, _) in _distortions.LEVEL_PARAMS.items()}


@dataclass(frozen=True)
class ImageJob:
    """One image to put through the backbone: a file, a view of it, optionally a distortion.

    ``noise_id`` seeds the distortion's noise together with ``seed`` (the parent image's id, so a
    re-run draws the same noise). ``min_side``/``allow_grey`` are the skip rules for the file (the
    paper's 90 px and grey rules for originals; generated and IQA images are taken as they are).
    ``distort_in_view``: distort the classifier's view (e.g. 224×224) rather than the native image,
    because ImageNet-C's level parameters are calibrated on network-sized inputs and a later resize
    would hide the damage.
    """

    path: str
    view: str = "full"
    distortion: str | None = None
    level: int | None = None
    seed: int = 0
    noise_id: str = ""
    min_side: int = 90
    allow_grey: bool = False
    distort_in_view: bool = False

    def load(self, classifier: Classifier | None = None, memo: dict | None = None) -> Image.Image:
        """Decode the file once and apply view and distortion; raises ``ImageSkip``.

        ``memo`` (a dict the caller keeps, e.g. for one batch) shares the decoded view of a file,
        and its classifier view, between the jobs made from it: the Distorted group's 20 jobs of a
        photo decode it once. Pillow's operations return new images, so sharing changes no pixel."""
        memo = {} if memo is None else memo
        source = (self.path, self.min_side, self.allow_grey, self.view)
        if source not in memo:
            try:
                image = open_image(self.path, min_side=self.min_side, allow_grey=self.allow_grey)
                memo[source] = image if self.view == "full" else apply_view(image, self.view)
            except ImageSkip as skip:
                memo[source] = skip
        image = memo[source]
        if isinstance(image, ImageSkip):
            raise image
        if self.distortion is not None:
            if self.distort_in_view:
                if classifier is None:
                    raise ValueError("a job distorted in the classifier's view needs the classifier")
                if source + ("in_view",) not in memo:
                    memo[source + ("in_view",)] = classifier.view(image)
                image = memo[source + ("in_view",)]
            image = _distortions.distort(image, self.distortion, int(self.level), self.seed, self.noise_id or self.path)
        return image

    def key_fields(self, digest: str) -> dict:
        fields = {"file": digest, "view": self.view, "distortion": self.distortion, "level": self.level}
        if self.distortion is not None:
            fields.update(seed=self.seed, image_id=self.noise_id, distortion_version=_DISTORTION_VERSIONS[self.distortion],
                          in_classifier_view=self.distort_in_view)
        return fields


def cache_for(run_folder: str | Path) -> ShardStore:
    """The embedding store of a run: ``outputs/<run>/cache/embeddings/`` (shards of rows)."""
    return ShardStore(Path(run_folder) / "cache" / "embeddings")


def pixel_rows(classifier: Classifier, views: np.ndarray | torch.Tensor, amp: bool = False,
               pad_to: int | None = None) -> np.ndarray:
    """(N, D + S) float32 from (N, S, S, 3) uint8 arrays (or tensors) of the classifier's view: pooled
    embedding then early-layer statistics of ONE backbone pass (``Classifier.forward_with_stats``).
    Every inference pass of iqalib ends here.

    ``pad_to``: a batch of fewer views is padded with black views to that many, and only the
    views' rows are returned. The backend picks its kernels by batch shape, and other shapes give
    other last bits (EfficientNet-Lite0 on CPU: batches of 1-8 differ from 32 by up to 3.8e-6 at
    1 thread, a batch of 1 by 4.8e-7 at 2), so ``embed`` pads every pass to its batch size: a
    row is then the same whether its batch was full, the run's last, or what a resumed run had left.

    On CUDA the batch goes through pinned memory with a non-blocking copy; ``amp`` (CUDA, and CPU
    for tests) runs the pass under bf16 autocast with channels-last tensors: faster on tensor cores,
    not bitwise equal to fp32 (on the test photos the softmax stays within 0.05 and the top-1 the
    same: tests/test_pipeline.py).
    """
    x = views if isinstance(views, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(views))
    n = len(x)
    if pad_to is not None and 0 < n < pad_to:
        x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))])
    x = x.permute(0, 3, 1, 2)
    if classifier.device.type == "cuda":
        x = x.pin_memory().to(classifier.device, non_blocking=True)
    x = classifier.normalize(x.float())
    with torch.inference_mode():
        if amp:
            with torch.autocast(classifier.device.type, dtype=torch.bfloat16):
                pooled_part, stats_part = classifier.forward_with_stats(x.contiguous(memory_format=torch.channels_last))
        else:
            pooled_part, stats_part = classifier.forward_with_stats(x)
        return torch.cat([pooled_part.float(), stats_part.float()], 1)[:n].cpu().numpy()


def _view_array(classifier: Classifier, image: Image.Image) -> np.ndarray:
    return np.asarray(classifier.view(image), dtype=np.uint8)


def backbone_rows(classifier: Classifier, images: Sequence[Image.Image], batch_size: int = 32,
                  amp: bool = False, pad: bool = False) -> np.ndarray:
    """``pixel_rows`` for PIL images of any size (the classifier's view is taken), in batches;
    ``pad``: every pass at the full batch shape, as ``embed`` runs it (see ``pixel_rows``)."""
    dim = classifier.embedding_dim + classifier.stats_dim
    out = [np.zeros((0, dim), np.float32)]
    for start in range(0, len(images), batch_size):
        views = np.stack([_view_array(classifier, im) for im in images[start : start + batch_size]])
        out.append(pixel_rows(classifier, views, amp, pad_to=batch_size if pad else None))
    return np.concatenate(out)


@dataclass(frozen=True)
class _ViewOnly:
    """What ``ImageJob.load`` needs of a classifier (its view) without the network, so workers
    never touch the model or the device."""

    view: Any


class _JobViews(torch.utils.data.Dataset):
    """A batch of job indices -> (the usable jobs' views as ONE (n, S, S, 3) uint8 tensor, each job's
    skip reason or None): the CPU side of a pass (decode each file once, view, distortion), run in
    ``DataLoader`` workers when there are any. One tensor per batch, because DataLoader hands
    tensors over in shared memory and each hand-over has a fixed cost."""

    def __init__(self, classifier: Classifier, jobs: Sequence[ImageJob]):
        self.view, self.jobs = classifier.view, list(jobs)
        self._classifier = _ViewOnly(classifier.view)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, list[str | None]]:
        views, reasons, memo = [], [], {}
        for i in indices:
            try:
                views.append(np.asarray(self.view(self.jobs[i].load(self._classifier, memo)), dtype=np.uint8))
                reasons.append(None)
            except ImageSkip as skip:
                reasons.append(skip.reason)
        side = (len(views[0]), len(views[0][0])) if views else (0, 0)
        stacked = np.stack(views) if views else np.zeros((0, *side, 3), np.uint8)
        return torch.from_numpy(stacked), reasons


class _JobRows(_JobViews):
    """A batch of job indices -> (the usable jobs' rows as ONE (n, D + S) float32 tensor, reasons):
    the CPU side AND the backbone pass of a batch in one process, single-threaded
    (``backbone_in_workers``). On a CPU-only machine one single-threaded pass per core does more
    work than one pass spread over all cores, whose threads wait on each other (and on the image
    work) at every layer."""

    def __init__(self, classifier: Classifier, jobs: Sequence[ImageJob], amp: bool, batch_size: int):
        super().__init__(classifier, jobs)
        self.classifier, self.amp, self.batch_size = classifier, amp, batch_size

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, list[str | None]]:
        views, reasons = super().__getitem__(indices)
        if not len(views):
            return torch.zeros((0, self.classifier.embedding_dim + self.classifier.stats_dim), dtype=torch.float32), reasons
        threads = torch.get_num_threads()
        # Already 1 in a DataLoader worker, where more would also be unsafe: the parent's OpenMP
        # pool does not survive the fork. The main process (0 workers) drops to 1 for the pass.
        torch.set_num_threads(1)
        if torch.get_num_threads() != 1:  # e.g. a native thread pool that has already started
            raise RuntimeError("backbone_in_workers needs single-threaded passes, but torch kept "
                               f"{torch.get_num_threads()} threads; set backbone_in_workers: false")
        try:
            return torch.from_numpy(pixel_rows(self.classifier, views, self.amp, pad_to=self.batch_size)), reasons
        finally:
            torch.set_num_threads(threads)


def runs_backbone_in_workers(classifier: Classifier, backbone_in_workers: bool) -> bool:
    """Whether the ``backbone_in_workers`` switch acts for this classifier: on CPU only, since a
    device pass stays in the main process, which owns the device."""
    return backbone_in_workers and classifier.device.type == "cpu"


def _worker_init(_worker_id: int) -> None:
    # Below the main process: where the cores are shared, the backbone's threads keep the cores and
    # the workers fill the time those threads leave idle (prefetching keeps the next batches ready).
    os.nice(5)


def prepared(classifier: Classifier, jobs: Sequence[ImageJob], batch_size: int, num_workers: int = 0,
             backbone_in_workers: bool = False, amp: bool = False):
    """Batches ``(views: (n, S, S, 3) uint8 tensor of the usable jobs, reasons: per job None or its
    skip reason)`` for ``jobs``, in job order: decoded, viewed and distorted in ``num_workers``
    worker processes (0: in this process). Each job is seeded by itself, so the views are the same
    for any number of workers. With ``backbone_in_workers`` (CPU) the batches hold the jobs'
    ``pixel_rows`` instead of their views, each computed single-threaded where it was prepared."""
    import multiprocessing

    in_workers = runs_backbone_in_workers(classifier, backbone_in_workers)
    kwargs = {}
    if num_workers > 0:
        methods = multiprocessing.get_all_start_methods()
        kwargs = {"multiprocessing_context": "fork" if "fork" in methods else None, "prefetch_factor": 4,
                  # workers that run the backbone do the main work: not below the main process
                  "worker_init_fn": None if in_workers else _worker_init}
    batches = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(len(jobs))), batch_size, False)
    dataset = _JobRows(classifier, jobs, amp, batch_size) if in_workers else _JobViews(classifier, jobs)
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=batches, num_workers=num_workers, **kwargs)


def job_keys(classifier: Classifier, jobs: Sequence[ImageJob], amp: bool = False,
             backbone_in_workers: bool = False) -> list[str | None]:
    """The content key of each job's row (None: the file is missing): backbone weights,
    preprocessing, the file's content hash and the job's view, distortion, level and seed."""
    model_fields = {"model": classifier.weights_id, "prep": classifier.preprocessing_id, "v": EMBEDDING_VERSION,
                    "with_stats": True}
    if amp:
        model_fields["amp"] = "bf16"  # another precision gives other numbers: never mix them in one key
    if not classifier.batchnorm_folded:
        model_fields["batchnorm"] = "unfolded"  # another summation order, as above
    if runs_backbone_in_workers(classifier, backbone_in_workers):
        # One thread sums in another order than several for some batch shapes (last float bits,
        # measured up to 5e-6 on EfficientNet-Lite0): its rows get their own keys, as bf16's do,
        # so switching it off again finds the rows the shared pass made. (Like the device, the
        # machine's thread count is not in the key.)
        model_fields["threads"] = 1
    digests: dict[str, str] = {}
    keys: list[str | None] = []
    for job in jobs:
        if job.path not in digests:
            try:
                digests[job.path] = file_digest(job.path)
            except OSError:
                digests[job.path] = ""
        keys.append(key_of({**model_fields, **job.key_fields(digests[job.path])}) if digests[job.path] else None)
    return keys


def embed(classifier: Classifier, jobs: Sequence[ImageJob], cache: ShardStore | ArrayCache | None = None,
          batch_size: int = 16, progress: bool = True, desc: str = "backbone", num_workers: int = 0,
          amp: bool = False, backbone_in_workers: bool = False) -> tuple[np.ndarray, list[str | None]]:
    """``pixel_rows`` for image jobs, one pass per image not yet in ``cache``.

    Returns the (N, D + S) array (rows of skipped images are NaN) and, per job, None or the skip
    reason. Each entry holds the pooled embedding AND the early-layer statistics of the same pass,
    so neither the classifier head nor a quality head ever needs a second pass over an image.
    The CPU side (decode, view, distortion) streams through ``num_workers`` worker processes while
    this process runs the batched passes; the rows are the same for any number of workers.
    ``backbone_in_workers`` (CPU only; ignored on a device): each worker also runs the backbone on
    the batches it prepared, single-threaded (the main process does the same with 0 workers), so
    the rows are again the same for any number of workers, under keys of their own.
    """
    from tqdm.auto import tqdm

    keys = job_keys(classifier, jobs, amp, backbone_in_workers)
    in_workers = runs_backbone_in_workers(classifier, backbone_in_workers)
    reasons: list[str | None] = [None if key is not None else "missing" if not os.path.exists(job.path) else "unreadable"
                                 for key, job in zip(keys, jobs)]
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

    if not todo:
        return out, reasons
    bar = tqdm(total=len(todo), desc=desc, disable=not progress, leave=False)
    done = 0
    for batch, batch_reasons in prepared(classifier, [jobs[i] for i in todo], batch_size, num_workers,
                                         backbone_in_workers, amp):
        chunk = todo[done : done + len(batch_reasons)]
        done += len(batch_reasons)
        ok = [i for i, reason in zip(chunk, batch_reasons) if reason is None]
        for i, reason in zip(chunk, batch_reasons):
            reasons[i] = reason
        if ok:
            # A worker's rows arrive in shared memory: copied, so the store does not keep one open
            # segment (and file descriptor) per batch until it flushes.
            rows = batch.numpy().copy() if in_workers else pixel_rows(classifier, batch, amp, pad_to=batch_size)
            for i, vector in zip(ok, rows):
                out[i] = vector
                if cache is not None:
                    cache.put(keys[i], vector)
        bar.update(len(batch_reasons))
    bar.close()
    if cache is not None:
        cache.flush()
        cache.compact()
    return out, reasons


# ------------------------------------------------------------------------------------------------
# Reading the rows: classifier head and quality heads on the same pass


def pooled(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The classifier's pooled embedding part of ``embed``'s rows (what its head reads)."""
    return embedded[:, : classifier.embedding_dim]


def stats(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The early-layer statistics part of ``embed``'s rows."""
    return embedded[:, classifier.embedding_dim :]


def quality_features(classifier: Classifier, embedded: np.ndarray, kind: str) -> np.ndarray:
    """The part of ``embed``'s rows that quality features of ``kind`` (``multilevel`` | ``pooled``) are."""
    if kind == "multilevel":
        if classifier.stats_dim == 0:
            raise ValueError(f"features='multilevel' needs the early layers of the backbone (known for timm "
                             f"EfficientNet and torchvision ResNet), which {classifier.name!r} does not expose; "
                             "use features='pooled' for it.")
        return stats(classifier, embedded)
    if kind == "pooled":
        return pooled(classifier, embedded)
    raise ValueError(f"unknown quality feature kind {kind!r}; choose multilevel or pooled")


def quality_input(quality: Any, classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """The part of ``embed``'s rows a quality model reads — after checking that the model was
    trained on this backbone (the ONE backbone-compatibility check: same-width features of another
    backbone, e.g. ResNet-50 vs ResNet-152, would otherwise be scored without complaint)."""
    trained_on = (getattr(quality, "weights_id", None), getattr(quality, "preprocessing_id", None))
    here = (classifier.weights_id, classifier.preprocessing_id)
    if trained_on[0] is not None and trained_on != here:
        raise ValueError(f"the quality model was trained on backbone weights {trained_on[0]} with preprocessing "
                         f"{trained_on[1]}; these features come from {classifier.name} ({here[0]}, {here[1]}). "
                         "Pass the classifier the quality model was trained on.")
    return quality_features(classifier, embedded, getattr(quality, "features", "pooled"))


def skip_counts(reasons: Sequence[str | None]) -> dict:
    """``{"used": n, "skipped": {reason: count}}`` for the manifest."""
    counted = Counter(r for r in reasons if r is not None)
    return {"used": sum(r is None for r in reasons), "skipped": dict(sorted(counted.items()))}


def _head_rows(head: Any, classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(embedded).any(axis=1)
    out = np.full((len(embedded), len(classifier.wnids)), np.nan, dtype=np.float32)
    if ok.any():
        out[ok] = head(pooled(classifier, embedded[ok]))
    return out


def probabilities(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """(N, 1000) softmax from ``embed``'s rows; NaN rows stay NaN."""
    return _head_rows(classifier.proba_from_embeddings, classifier, embedded)


def logits(classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """(N, 1000) logits from ``embed``'s rows (head only, no backbone pass); NaN rows stay NaN."""
    return _head_rows(classifier.logits_from_embeddings, classifier, embedded)


def scores(quality: Any, classifier: Classifier, embedded: np.ndarray) -> np.ndarray:
    """(N,) predicted quality from ``embed``'s rows (NaN rows stay NaN)."""
    if getattr(quality, "has_own_layers", False):
        raise ValueError("this quality model reads its own feature layers, not the shared pass's rows: "
                         "score images with QualityModel.predict or robust.score_fn")
    if not len(embedded):
        return np.zeros(0, np.float32)
    return np.asarray(quality.predict_embeddings(quality_input(quality, classifier, embedded)), np.float32)


def top1_from_embeddings(classifier: Classifier, embedded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class index (−1 where the row is NaN) and its probability."""
    proba = probabilities(classifier, embedded)
    ok = ~np.isnan(proba).any(axis=1)
    top1 = np.full(len(embedded), -1, dtype=np.int64)
    conf = np.full(len(embedded), np.nan, dtype=np.float32)
    top1[ok], conf[ok] = proba[ok].argmax(1), proba[ok].max(1)
    return top1, conf


# ------------------------------------------------------------------------------------------------
# Images given directly (PIL images or paths): what QualityModel.predict and the detector use


class Prediction(NamedTuple):
    """What one pass over images gives: (N, 1000) probabilities, (N,) quality (NaN without a quality
    model), the raw (N, D + S) rows, and per input None or the skip reason (rows NaN)."""

    proba: np.ndarray
    quality: np.ndarray
    embedded: np.ndarray
    reasons: list[str | None]


def _as_image(item: Any, min_side: int) -> Image.Image:
    if isinstance(item, Image.Image):
        image = as_rgb(item)  # same conversion as a decoded file: EXIF, alpha on white, 16-bit scaled
        if min(image.size) < min_side:
            raise ImageSkip("too_small", f"{image.size}")
        return image
    if isinstance(item, (str, Path)):
        # Inputs are scored as given: grey images kept (a desaturated photo is a distortion, not a
        # photo to exclude); the size floor is the caller's (1 = none: the view resizes anything).
        return open_image(item, min_side=min_side, allow_grey=True)
    raise TypeError(f"expected PIL images or paths, got {type(item).__name__}")


def load_inputs(images: Sequence[Any], min_side: int = 1) -> tuple[list[Image.Image | None], list[str | None]]:
    """PIL images or paths -> (RGB image or None, None or the skip reason) per input, each file
    decoded once (``images.open_image`` rules, a side under ``min_side`` skipped, grey kept)."""
    loaded: list[Image.Image | None] = []
    reasons: list[str | None] = []
    for item in images:
        try:
            loaded.append(_as_image(item, min_side))
            reasons.append(None)
        except ImageSkip as skip:
            loaded.append(None)
            reasons.append(skip.reason)
    return loaded, reasons


def predict(classifier: Classifier, images: Sequence[Any], quality: Any = None, batch_size: int = 32,
            min_side: int = 1, amp: bool = False, pad: bool = False) -> Prediction:
    """Probabilities and (with ``quality``) predicted quality of PIL images or image paths, from
    ONE backbone pass per image, each decoded once. Unusable inputs (``images.open_image`` rules,
    a side under ``min_side``) are NaN rows with their reason; nothing raises for a bad image.
    ``amp``/``pad`` as in ``pixel_rows``: ``pad`` runs every batch at ``batch_size``, the shape
    ``embed`` runs, so the rows equal the cached rows of the same images to the last bit."""
    loaded, reasons = load_inputs(images, min_side)
    idx = [i for i, image in enumerate(loaded) if image is not None]
    embedded = np.full((len(loaded), classifier.embedding_dim + classifier.stats_dim), np.nan, np.float32)
    if idx:
        embedded[idx] = backbone_rows(classifier, [loaded[i] for i in idx], batch_size, amp, pad)
    proba = probabilities(classifier, embedded)
    if quality is not None and getattr(quality, "has_own_layers", False):
        q = np.full(len(loaded), np.nan, np.float32)
        if idx:
            q[idx] = _own_layer_scores(quality, classifier, [loaded[i] for i in idx], batch_size)
    elif quality is not None:
        q = scores(quality, classifier, embedded)
    else:
        q = np.full(len(loaded), np.nan, np.float32)
    return Prediction(proba, q, embedded, reasons)


def _own_layer_scores(quality: Any, classifier: Classifier, images: Sequence[Image.Image],
                      batch_size: int) -> np.ndarray:
    """Scores of a quality model with its own feature layers: one more pass, through those layers."""
    quality.classifier(classifier)  # the one backbone-compatibility check
    layers, out = quality.own_layers(classifier), []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            z = classifier.normalize(classifier.pixels(images[i:i + batch_size]))
            out.append(quality.score_tensor(layers(z)).float().cpu().numpy())
    return np.concatenate(out)
