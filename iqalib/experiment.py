"""The run: the ONE room that turns a params file into objects — the run folder, its embedding
store, classifier and quality model, the IQA sets and originals, the quality model's training
protocol (notebooks 00 and 05 share it), Table I's classified IQA pairs, the detector study's
settings and the deployable detector — and the captions that say what the data are.

``groups`` (the five experiment groups, ``features.csv``) and ``robust_experiment`` (notebook 05)
build on it; together they are the experiment floor, the only code that reads params sections.
Everything below takes plain values and paths. Paths in ``features.csv`` are portable:
``<root>:<relative path>`` with the roots of ``Run.roots`` (the run folder, the installed package
that ships the embedded photos, the real data folders).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalib import evaluation, features, images, metrics, quality, tables
from iqalib.cache import ShardStore
from iqalib.classifiers import Classifier, load_classifier
from iqalib.detector import FitForTaskDetector
from iqalib.feature_table import FEATURES
from iqalib.params import Frozen, data_path, detector_jobs, load, resolve_path, run_dir, workers
from iqalib.quality import QualityModel
from iqalib.report import paper_claim

QUALITY_FOLDER = "models/quality"
DETECTOR_FOLDER = "models/detector"

#: How captions name the full-reference metrics that can stand in for subjective scores.
METRIC_NAMES = {"haarpsi": "HaarPSI", "fsim": "FSIM", "ms_ssim": "MS-SSIM"}


@dataclass
class Run:
    """A run's params and what they name: its folder, embedding cache, classifier, quality model."""

    params: Frozen
    folder: Path
    progress: bool = True
    _quality: QualityModel | None = field(default=None, repr=False)
    #: The code paths this notebook's calls took (classifier, feature kind, IQA sets, UAP method ...),
    #: recorded by the functions that take them; ``report.save_code_paths`` puts them in the manifest.
    took: dict[str, Any] = field(default_factory=dict, repr=False)

    def record(self, **paths: Any) -> None:
        """Note code paths taken (``took``); a list value adds to what is there."""
        for key, value in paths.items():
            if isinstance(value, list):
                value = list(dict.fromkeys([*self.took.get(key, []), *value]))
            self.took[key] = value

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
        classifier = self.fresh_classifier()
        self.record(classifier=classifier.name, device=str(classifier.device))
        return classifier

    def fresh_classifier(self, fold_batchnorm: bool = True) -> Classifier:
        """A new copy of the run's classifier (``classifier`` is the run's own, loaded once);
        ``fold_batchnorm=False`` keeps its BatchNorm layers, for NT trained on batch statistics
        (``gradnorm.train_nt(batchnorm="train")``)."""
        p = self.params
        weights = resolve_path(p.classifier_weights)  # relative to the repository root, like every params path
        return load_classifier(p.classifier, p.device, None if weights is None else str(weights), fold_batchnorm)

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

    # ---- what the data are, for captions (one rule, used by every notebook)

    @property
    def name(self) -> str:
        return self.params.run_name

    @property
    def iqa_set_names(self) -> list[str]:
        return [entry["name"] for entry in self.params.iqa_sets]

    @property
    def table1_classifiers(self) -> list[str]:
        return list(self.params.classifiers_table1)

    @property
    def metric_name(self) -> str:
        """The embedded set's pseudo-MOS metric as captions name it (e.g. HaarPSI)."""
        metric = self.params.embedded_iqa.metric
        return METRIC_NAMES.get(metric, metric)

    @property
    def pseudo_mos(self) -> bool:
        """Whether the quality model is trained on the embedded set, i.e. on pseudo-MOS."""
        return "embedded" in self.params.quality.train_sets

    @property
    def target(self) -> str:
        """What the quality model's targets are: a pseudo-MOS on the embedded set alone, else MOS."""
        if list(self.params.quality.train_sets) == ["embedded"]:
            return f"pseudo-MOS ({self.params.embedded_iqa.metric})"
        return "MOS"

    @property
    def data_note(self) -> str:
        """The caption sentence that says a table rests on the embedded default (empty otherwise)."""
        if not self.pseudo_mos:
            return ""
        return "Quality model trained on the embedded pseudo-MOS set; originals: embedded labelled photos."

    @property
    def has_embedded_iqa(self) -> bool:
        """Whether the embedded pseudo-MOS set is among the run's IQA sets."""
        return "embedded" in self.iqa_set_names

    @property
    def thresholds(self) -> list[float]:
        """Baseline-2's quality thresholds (``detector.thresholds``; the paper's 0.3 and 0.35)."""
        return list(self.params.detector.thresholds)

    def score_label(self, dataset: str) -> str:
        """Axis label of an IQA set's subjective scores."""
        return f"pseudo-MOS ({self.metric_name})" if dataset == "embedded" else "MOS (normalised)"


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
# IQA sets and originals


def iqa_sets(run: Run, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The IQA sets the run names (``iqa_sets``; ``names``: only these), as reader tables keyed by
    name. Real sets come from their folder (``path`` or the environment variable the error names);
    the embedded set is built once under ``<run>/cache/embedded_iqa``."""
    from iqalib import embedded_iqa

    p, out = run.params, {}
    for entry in p.iqa_sets:
        name = entry["name"]
        if names is not None and name not in names:
            continue
        if name == "embedded":
            e = p.embedded_iqa
            out[name] = embedded_iqa.build_embedded_iqa(
                run.folder / "cache" / "embedded_iqa", photos=list(e.photos) if e.photos else None,
                distortions=list(e.distortions), levels=list(e.levels), short_side=e.short_side,
                metric=e.metric, seed=p.seed, progress=run.progress, workers=workers(p))
        else:
            out[name] = real_iqa_set(entry)
    run.record(iqa_sets=list(out))
    return out


def real_iqa_set(entry: Any) -> pd.DataFrame:
    """One real IQA set's reader table, from its ``path`` or its environment variable."""
    from iqalib import iqa_datasets

    name = entry["name"]
    return iqa_datasets.read_iqa_dataset(name, data_path(name, entry["path"], f"iqa_sets[{name}].path"))


def iqa_features(run: Run, sets: dict[str, pd.DataFrame]) -> dict[str, tuple[pd.DataFrame, np.ndarray, dict]]:
    """Per IQA set: (usable rows of its table, their backbone rows from ``features.embed``, skip counts)."""
    out = {}
    for name, table in sets.items():
        jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in table["path"]]
        embedded, reasons = features.embed(run.classifier, jobs, desc=name, **run.pass_options)
        ok = ~np.isnan(embedded).any(axis=1)
        out[name] = (table[ok].reset_index(drop=True), embedded[ok], features.skip_counts(reasons))
    return out


def clean_references(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Logits and pooled embedding of the reference photos of the quality model's training sets
    (``quality.train_sets``): clean images disjoint from every evaluated original, on which the
    feature-space peers are fitted. The same jobs as Table I's references, so the cache has them."""
    sets = iqa_sets(run, list(run.params.quality.train_sets))
    refs = sorted(set().union(*(set(t["ref_path"]) for t in sets.values())))
    jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in refs]
    embedded, _ = features.embed(run.classifier, jobs, desc="references", **run.pass_options)
    embedded = embedded[~np.isnan(embedded).any(axis=1)]
    return features.logits(run.classifier, embedded), features.pooled(run.classifier, embedded)


def originals_path(run: Run) -> Path | None:
    """The originals' folder (None for the embedded photos)."""
    o = run.params.originals
    return None if o.source == "embedded" else data_path(o.source, o.path, "originals.path")


def originals(run: Run) -> images.ImageSet:
    """The run's original images (``params.originals``), skips counted."""
    o = run.params.originals
    found = images.originals(o.source, originals_path(run), o.limit, o.views, run.progress)
    layout = "one folder per WordNet id" if any("/" in r.image_id for r in found.records) else "flat"
    run.record(originals=o.source, originals_layout=layout if o.source != "embedded" else "shipped photos")
    return found


def iqa_pairs(run: Run, sets: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Table I's pairs: every classifier of ``classifiers_table1`` on every reference and distorted
    image of each IQA set, with ``classifier``, ``top1_ref``, ``top1``, ``conf`` and ``wup``
    (Wu-Palmer similarity of the two top-1 classes, 1 = same class). Rows whose image or reference
    was skipped are dropped; their counts are returned per ``<set>_<classifier>``."""
    from iqalib.semantic import wup_by_index

    pairs, counts = [], {}
    for name in run.table1_classifiers:
        clf = run.classifier_named(name)
        for dataset, table in sets.items():
            refs = sorted(table["ref_path"].unique())
            # IQA images are used as given (a fully desaturated image is a distortion, not a grey
            # photo): the paper's grey/size exclusions are for ImageNet originals.
            jobs = [features.ImageJob(p, min_side=1, allow_grey=True) for p in [*refs, *table["path"]]]
            embedded, reasons = features.embed(clf, jobs, desc=clf.name, **run.pass_options)
            top1, conf = features.top1_from_embeddings(clf, embedded)
            out = table.copy()
            out["classifier"] = clf.name
            out["top1_ref"] = out["ref_path"].map(dict(zip(refs, top1[: len(refs)]))).astype(int)
            out["top1"], out["conf"] = top1[len(refs):], conf[len(refs):]
            out = out[(out["top1"] >= 0) & (out["top1_ref"] >= 0)].reset_index(drop=True)
            out["wup"] = wup_by_index(out["top1_ref"].to_numpy(), out["top1"].to_numpy())
            pairs.append(out)
            counts[f"{dataset}_{name}"] = features.skip_counts(reasons)
        run.record(table1_classifiers=[clf.name])
    return pd.concat(pairs, ignore_index=True), counts


# ------------------------------------------------------------------------------------------------
# The quality model's training protocol (notebook 00; notebook 05 trains on the same data)


def quality_settings(run: Run) -> dict[str, Any]:
    """Keyword arguments of ``quality.evaluate_splits`` from ``params.quality``: the paper's ten heads
    on content-disjoint splits (``n_splits``, ``test_size``, ``seed``) and the heads' settings."""
    q = run.params.quality
    return dict(n_splits=q.n_models, test_size=q.test_size, seed=run.params.seed, progress=run.progress,
                classifier=run.classifier,
                hidden=q.hidden, bins=q.bins, epochs=q.epochs, lr=q.lr, weight_decay=q.weight_decay,
                batch_size=q.batch_size, features=q.features, label_sigma=q.label_sigma, dropout=q.dropout,
                device=run.params.device)


@dataclass
class QualityData:
    """The quality model's data: the training sets' usable rows (``quality.train_sets``, one table),
    their pass rows and quality features, the content groups the splits keep apart
    (``dataset/ref_id``), and every IQA set's (rows, pass rows, skip counts) for the cross-dataset
    test and the manifest."""

    train: pd.DataFrame
    rows: np.ndarray
    x: np.ndarray
    groups: np.ndarray
    sets: dict[str, tuple[pd.DataFrame, np.ndarray, dict]]

    @property
    def mos(self) -> np.ndarray:
        return self.train["mos"].to_numpy()

    def sizes(self) -> pd.DataFrame:
        """Images and reference photos per IQA set."""
        return pd.DataFrame({name: {"images": len(t), "references": t["ref_id"].nunique()}
                             for name, (t, _, _) in self.sets.items()})


def quality_data(run: Run, train_only: bool = False) -> QualityData:
    """``QualityData`` of the run (``train_only``: skip the IQA sets it does not train on)."""
    q = run.params.quality
    sets = iqa_features(run, iqa_sets(run, list(q.train_sets) if train_only else None))
    train = pd.concat([sets[n][0] for n in q.train_sets], ignore_index=True)
    rows = np.concatenate([sets[n][1] for n in q.train_sets])
    groups = (train["dataset"] + "/" + train["ref_id"].astype(str)).to_numpy()
    return QualityData(train, rows, features.quality_features(run.classifier, rows, q.features), groups, sets)


def train_quality(run: Run, data: QualityData, kind: str | None = None) -> tuple[pd.DataFrame, QualityModel]:
    """The paper's protocol: ``quality.n_models`` heads, each trained on one content-disjoint split
    of the training data and tested on its held-out references; together the deployed ensemble.
    ``kind``: another feature kind than the run's, on the same splits."""
    x = data.x if kind in (None, run.params.quality.features) else features.quality_features(run.classifier, data.rows, kind)
    settings = {**quality_settings(run), **({"features": kind} if kind else {})}
    per_split, model = quality.evaluate_splits(x, data.mos, data.groups, **settings)
    if kind in (None, run.params.quality.features):
        run.record(quality_features=model.features, quality_hidden=model.hidden, quality_heads=len(model.heads),
                   quality_trained_on=list(run.params.quality.train_sets))
    return per_split, model


def compare_feature_kinds(run: Run, data: QualityData, per_split: pd.DataFrame) -> pd.DataFrame:
    """The paper's pooled features vs early-layer statistics, same splits, same heads (the run's
    own kind is ``per_split``, not trained again)."""
    rows = []
    for kind in ("multilevel", "pooled"):
        used = kind == run.params.quality.features
        scores = per_split if used else train_quality(run, data, kind)[0]
        rows.append({"features": kind, "used_by_this_run": used, **metrics.mean_std(scores, ["srocc", "plcc"])})
    return pd.DataFrame(rows)


def iqa_performance(run: Run, data: QualityData, per_split: pd.DataFrame,
                    model: QualityModel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``tables.iqa_performance``: the splits' SROCC/PLCC, then each IQA set the model did not
    train on scored by the ensemble — the paper's cross-dataset test; the held-out rows scored by
    the head that did not see them, from ``quality.heldout_predictions``)."""
    q = run.params.quality
    held = quality.heldout_predictions(model, data.x, data.train, data.groups)
    cross = {name: (model.predict_embeddings(features.quality_features(run.classifier, r, q.features)), t["mos"])
             for name, (t, r, _) in data.sets.items() if name not in q.train_sets}
    return tables.iqa_performance(per_split, "+".join(q.train_sets), run.target, cross), held


def save_quality(run: Run, model: QualityModel, data: QualityData, performance: pd.DataFrame) -> Path:
    """Save the deployed ensemble under ``models/quality`` (what notebooks 02–05 load) and check
    that the saved heads score as the trained ones."""
    q = run.params.quality
    folder = model.save(run.folder / QUALITY_FOLDER,
                        training_data={"sets": list(q.train_sets), "target": run.target, "images": len(data.train),
                                       "references": int(pd.Series(data.groups).nunique())},
                        metrics=performance.iloc[0][["srocc", "srocc_std", "plcc", "plcc_std"]].to_dict())
    reloaded = QualityModel.load(folder)
    if not np.allclose(reloaded.predict_embeddings(data.x[:8]), model.predict_embeddings(data.x[:8])):
        raise RuntimeError(f"the quality model saved under {folder} does not score as the trained one")
    return folder


# ------------------------------------------------------------------------------------------------
# The detector: the study's settings, and one detector to deploy


def baseline_thresholds(run: Run, table: pd.DataFrame, share_below: float) -> tuple[list[float], float]:
    """Baseline-2's thresholds: the run's (``thresholds``) and the matched one below which
    ``share_below`` of the originals fall (``tables.matched_threshold``), added when new."""
    matched = tables.matched_threshold(table, share_below)
    thresholds = run.thresholds + ([matched] if matched not in run.thresholds else [])
    run.record(baseline_thresholds=thresholds)
    return thresholds, matched


def detector_study(run: Run, table: pd.DataFrame) -> evaluation.DetectorStudy:
    """Notebook 04's study on ``table`` with ``params.detector``: the paired splits and one trained
    detector per split (the scores every table of the study reads), Table V at the paper's
    operating point and ``detector.target_fpr`` as the second one."""
    d, p = run.params.detector, run.params
    run.record(detector_splits=d.n_splits, detector_operating_point=f"{paper_false_alarm_rate():.4f} of originals flagged")
    return evaluation.DetectorStudy.train(table, n_splits=d.n_splits, train_size=d.train_size, seed=p.seed,
                                          n_boot=d.n_boot, paper_fpr=paper_false_alarm_rate(),
                                          target_fpr=d.target_fpr, progress=run.progress, rbf_fit_cap=d.rbf_fit_cap,
                                          n_jobs=detector_jobs(p))


def paper_false_alarm_rate() -> float:
    """The paper's operating point: the share of originals its detector flags (1 − 91.43 %, Sec. V-D,
    from ``paper_values.yaml``)."""
    return round(1.0 - paper_claim("originals_judged_fit"), 6)


def deploy_detector(run: Run, table: pd.DataFrame) -> FitForTaskDetector:
    """One detector trained on ALL adversarial images and their originals, its threshold set at the
    paper's operating point on their out-of-fold scores, saved under ``models/detector`` with a
    reference to the quality model, and loaded back from there: what
    ``FitForTaskDetector.load(path).predict_fit(images)`` puts in front of the classifier."""
    has_twin = table["source_id"].isin(table.loc[table["group"] == "adversarial", "source_id"])
    train = table[table["group"].isin(["original", "adversarial"]) & has_twin]
    det = FitForTaskDetector(random_state=run.params.seed, n_jobs=detector_jobs(run.params),
                             classifier_name=run.classifier.name,
                             classifier_weights_id=run.classifier.weights_id,
                             quality_folder=str(run.folder / QUALITY_FOLDER))
    y = (train["group"] == "adversarial").astype(int)
    det.fit(train[list(FEATURES)], y, groups=train["source_id"])
    det.set_operating_point(train[list(FEATURES)], y, train["source_id"], paper_false_alarm_rate())
    return FitForTaskDetector.load(det.save(run.folder / DETECTOR_FOLDER, run_folder=run.folder))
