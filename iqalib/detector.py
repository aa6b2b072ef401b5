"""Fit-for-task detection (paper Sections IV–V): quality-threshold baselines, an SVM on [top-5 softmax,
predicted quality], leakage-free paired evaluation (Table V), and ROC / ablation / feature squeezing."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, ShuffleSplit, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from iqalib.cache import atomic_write_bytes, atomic_write_text

GROUPS: tuple[str, ...] = ("original", "distorted", "adversarial", "fool_ev", "fool_gd")
FOOLING: tuple[str, ...] = ("fool_ev", "fool_gd")
TOP5: tuple[str, ...] = ("top1", "top2", "top3", "top4", "top5")
FEATURES: tuple[str, ...] = TOP5 + ("quality",)
COLUMN_SETS: dict[str, tuple[str, ...]] = {"quality": ("quality",), "top5": TOP5, "top5+quality": FEATURES}

DETECTOR_FORMAT = 1
PIPELINE_FILE = "pipeline.skops"
META_FILE = "detector.json"

# Every type a fitted Pipeline(StandardScaler, SVC) dump contains. skops trusts most of them by
# default today; listing them explicitly means a future skops that trusts less still loads our
# files, while anything else reported by get_untrusted_types (a function, a foreign class) is refused.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.svm._classes.SVC",
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.NoneType",
})


class UntrustedModelError(ValueError):
    """A saved detector holds types outside ``ALLOWED_TYPES`` (or is not the expected pipeline)."""


# --------------------------------------------------------------------------------------------------
# small helpers on the features table


def _ordered_groups(groups: Iterable[str]) -> list[str]:
    """Paper order first (original, distorted, adversarial, fool_ev, fool_gd), then any others."""
    present = {g for g in groups if isinstance(g, str)}
    return [g for g in GROUPS if g in present] + sorted(present - set(GROUPS))


def _sources(features: pd.DataFrame) -> pd.Series:
    """source_id as strings (None where missing) so ids compare equal however the CSV was parsed."""
    s = features["source_id"]
    return s.map(lambda v: None if pd.isna(v) or v == "" else str(v)).astype(object)


def _labelled(features: pd.DataFrame) -> np.ndarray:
    """True where the true class is known (fooling images have none: accuracy is undefined)."""
    if "label" not in features:
        return ~features["group"].isin(FOOLING).to_numpy()
    return features["label"].notna().to_numpy()


def _correct(features: pd.DataFrame) -> np.ndarray:
    """Classifier correct per row (False where no label); tolerant of CSV round trips."""
    if "correct" in features:
        mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False,
                   1: True, 0: False, 1.0: True, 0.0: False}
        c = features["correct"].map(lambda v: mapping.get(v, False) if not pd.isna(v) else False)
        return c.to_numpy(bool) & _labelled(features)
    return (features["pred"].to_numpy() == features["label"].to_numpy()) & _labelled(features)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _std(values: Sequence[float]) -> float:
    """Sample std (ddof=1) over splits, ignoring NaN; NaN with fewer than two values."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


# --------------------------------------------------------------------------------------------------
# Table IV baselines


def baseline1(features: pd.DataFrame) -> pd.DataFrame:
    """Baseline 1 (Table IV): classifier accuracy per group, every image accepted.

    Columns: ``group, n, n_labelled, accuracy`` (accuracy in [0, 1]). Fooling images have no true
    class, so their accuracy is undefined and reported as NaN.
    """
    labelled, correct = _labelled(features), _correct(features)
    rows = []
    for group in _ordered_groups(features["group"]):
        m = (features["group"] == group).to_numpy()
        lab = m & labelled
        rows.append({"group": group, "n": int(m.sum()), "n_labelled": int(lab.sum()),
                     "accuracy": _mean_or_nan(correct[lab])})
    return pd.DataFrame(rows)


def baseline2(features: pd.DataFrame, thresholds: Sequence[float] = (0.3, 0.35)) -> pd.DataFrame:
    """Baseline 2 (Table IV): reject an image when its predicted quality < threshold.

    One row per (group, threshold): ``group, threshold, n, detection_rate, n_fit, fit_accuracy``.
    ``detection_rate`` in [0, 1] is the share flagged not fit (NaN quality counts as not fit);
    ``fit_accuracy`` in [0, 1] is the classifier's accuracy on images judged fit (NaN when no image
    is judged fit or the group has no labels, i.e. fooling images).
    """
    quality = features["quality"].to_numpy(float)
    labelled, correct = _labelled(features), _correct(features)
    rows = []
    for group in _ordered_groups(features["group"]):
        m = (features["group"] == group).to_numpy()
        for t in thresholds:
            flagged = ~(quality >= t)  # NaN quality -> flagged
            fit = m & ~flagged & labelled
            rows.append({"group": group, "threshold": float(t), "n": int(m.sum()),
                         "detection_rate": _mean_or_nan(flagged[m]), "n_fit": int((m & ~flagged).sum()),
                         "fit_accuracy": _mean_or_nan(correct[fit])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# the detector


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    return value


class FitForTaskDetector(ClassifierMixin, BaseEstimator):
    """Is an image fit for the classifier? SVM on [top1..top5 softmax, predicted quality].

    ``y``: 1 = not fit (trained on adversarial images), 0 = fit (their originals). ``X`` is a
    DataFrame holding ``columns`` or an array whose columns are ``columns`` in order. Rows with a
    NaN feature (unusable image, no quality) are dropped when fitting and judged not fit when
    predicting (``decision_function`` = +inf), because a first-line check should not pass what it
    cannot assess.

    Hyper-parameters: ``kernels`` / ``C_grid`` / ``gamma_grid`` span the grid searched by
    ``GridSearchCV`` (gamma only for rbf) with ``cv`` stratified folds that keep each ``groups``
    value (source_id) inside one fold; ``scoring`` picks the best candidate; ``class_weight`` is
    passed to SVC. ``classifier_name``, ``classifier_weights_id`` and ``quality_folder`` describe
    where the features come from; they do not affect learning and are what ``predict_fit`` uses
    when no classifier / quality model is passed.
    """

    def __init__(self, columns: Sequence[str] = FEATURES, kernels: Sequence[str] = ("rbf", "linear"),
                 C_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
                 gamma_grid: Sequence[float | str] = ("scale", 0.01, 0.1, 1.0), cv: int = 5,
                 scoring: str = "balanced_accuracy", class_weight: str | None = "balanced",
                 random_state: int = 0, n_jobs: int | None = None, classifier_name: str | None = None,
                 classifier_weights_id: str | None = None, quality_folder: str | None = None):
        self.columns = columns
        self.kernels = kernels
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.cv = cv
        self.scoring = scoring
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.classifier_name = classifier_name
        self.classifier_weights_id = classifier_weights_id
        self.quality_folder = quality_folder

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN rows are a documented outcome (not fit), not an error
        return tags

    # -- learning ---------------------------------------------------------------------------------

    def _matrix(self, X: Any) -> np.ndarray:
        columns = list(self.columns)
        if isinstance(X, pd.DataFrame):
            missing = [c for c in columns if c not in X.columns]
            if missing:
                raise KeyError(f"FitForTaskDetector needs feature columns {missing}; X has {list(X.columns)}")
            return X[columns].to_numpy(dtype=float)
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(columns):
            raise ValueError(f"X must be 2-d with {len(columns)} columns {columns}; got shape {arr.shape}")
        return arr

    def _pipeline(self) -> Pipeline:
        return Pipeline([("scale", StandardScaler()),
                         ("svc", SVC(class_weight=self.class_weight, random_state=self.random_state))])

    def _param_grid(self) -> list[dict]:
        grid = []
        for kernel in self.kernels:
            if kernel == "rbf":
                grid.append({"svc__kernel": ["rbf"], "svc__C": list(self.C_grid), "svc__gamma": list(self.gamma_grid)})
            elif kernel == "linear":
                grid.append({"svc__kernel": ["linear"], "svc__C": list(self.C_grid)})
            else:
                raise ValueError(f"kernels may hold 'rbf' and 'linear'; got {kernel!r}")
        return grid

    def fit(self, X: Any, y: Any, groups: Any = None) -> "FitForTaskDetector":
        """Grid-search C/gamma/kernel with grouped stratified CV on (X, y), refit the best on all of it.

        ``groups`` (source_id per row) keeps an original and its adversarial twin in one CV fold;
        without it folds are plain stratified. With too few samples for two folds the default
        SVC (rbf, C=1, gamma='scale') is fitted and ``cv_score_`` is NaN.
        """
        Xa = self._matrix(X)
        y = np.asarray(y).astype(int).ravel()
        if len(y) != len(Xa):
            raise ValueError(f"X has {len(Xa)} rows, y has {len(y)}")
        if not set(np.unique(y)) <= {0, 1}:
            raise ValueError("y must be 1 (not fit) / 0 (fit)")
        keep = ~np.isnan(Xa).any(axis=1)
        self.n_dropped_ = int((~keep).sum())
        Xa, y = Xa[keep], y[keep]
        g = None if groups is None else np.asarray(groups, dtype=object)[keep]
        if len(np.unique(y)) < 2:
            raise ValueError("FitForTaskDetector needs both classes (fit and not fit) to train")

        pipe = self._pipeline()
        if isinstance(self.cv, (int, np.integer)):
            counts = np.bincount(y)
            n_units = len(set(g.tolist())) if g is not None else len(y)
            k = int(min(self.cv, counts.min(), n_units))
            cv = None
            if k >= 2:
                cv = (StratifiedGroupKFold(k, shuffle=True, random_state=self.random_state) if g is not None
                      else StratifiedKFold(k, shuffle=True, random_state=self.random_state))
        else:
            cv = self.cv
        if cv is None:
            warnings.warn("too few training samples for cross-validation; fitting SVC(rbf, C=1, gamma='scale')")
            pipe.set_params(svc__kernel="rbf", svc__C=1.0, svc__gamma="scale").fit(Xa, y)
            self.pipeline_ = pipe
            self.best_params_ = {"kernel": "rbf", "C": 1.0, "gamma": "scale"}
            self.cv_score_ = float("nan")
        else:
            search = GridSearchCV(pipe, self._param_grid(), scoring=self.scoring, cv=cv, n_jobs=self.n_jobs,
                                  refit=True, error_score="raise")
            search.fit(Xa, y, groups=g)
            self.pipeline_ = search.best_estimator_
            self.best_params_ = {k.removeprefix("svc__"): v for k, v in search.best_params_.items()}
            self.cv_score_ = float(search.best_score_)
            self.cv_results_ = search.cv_results_
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = len(self.columns)
        self.n_train_ = int(len(y))
        return self

    # -- prediction on features -------------------------------------------------------------------

    def decision_function(self, X: Any) -> np.ndarray:
        """Signed distance to the SVM boundary; higher = more likely not fit, > 0 predicts not fit.

        Rows with a NaN feature get +inf (always not fit).
        """
        check_is_fitted(self, "pipeline_")
        Xa = self._matrix(X)
        ok = ~np.isnan(Xa).any(axis=1)
        out = np.full(len(Xa), np.inf)
        if ok.any():
            out[ok] = self.pipeline_.decision_function(Xa[ok])
        return out

    def predict(self, X: Any) -> np.ndarray:
        """1 = not fit, 0 = fit, per row (NaN feature -> 1)."""
        check_is_fitted(self, "pipeline_")
        Xa = self._matrix(X)
        ok = ~np.isnan(Xa).any(axis=1)
        out = np.ones(len(Xa), dtype=int)
        if ok.any():
            out[ok] = self.pipeline_.predict(Xa[ok]).astype(int)
        return out

    # -- prediction on images ---------------------------------------------------------------------

    def _resolve_classifier(self, classifier: Any) -> Any:
        if classifier is None:
            classifier = getattr(self, "_classifier", None)
        if classifier is None:
            if self.classifier_name is None:
                raise ValueError("No classifier given and the detector records no classifier_name")
            from iqalib.classifiers import load_classifier

            classifier = load_classifier(self.classifier_name)
        if self.classifier_weights_id is not None and classifier.weights_id != self.classifier_weights_id:
            # top-5 softmax of other weights is a different feature space than the one trained on
            raise ValueError(f"detector was trained on features of '{self.classifier_weights_id}', "
                             f"got classifier '{classifier.weights_id}'")
        self._classifier = classifier
        return classifier

    def _resolve_quality(self, quality: Any, classifier: Any) -> Any:
        if quality is None:
            quality = getattr(self, "_quality", None)
        if quality is None:
            if self.quality_folder is None:
                raise ValueError("No quality model given and the detector records no quality_folder")
            from iqalib.quality import QualityModel  # imported late: the detector runs without it

            quality = QualityModel.load(self.quality_folder)
        backbone = _quality_backbone(quality)
        if backbone is not None and backbone not in (classifier.name, classifier.weights_id):
            # the quality head reads the classifier's embedding: another backbone's is meaningless
            raise ValueError(f"quality model reads '{backbone}' embeddings, classifier is '{classifier.name}'")
        self._quality = quality
        return quality

    def fit_report(self, images: Sequence[Any], classifier: Any = None, quality: Any = None,
                   batch_size: int = 32, min_side: int = 90) -> pd.DataFrame:
        """Per image: ``fit`` (bool), ``reason``, ``score`` and the features, from ONE backbone pass.

        ``images``: PIL images or paths. ``classifier``/``quality`` default to those recorded in
        the detector (loaded once and kept). ``reason`` is None for fit images, ``"detector"`` when
        the SVM says not fit, ``"unusable: <why>"`` for inputs that cannot be decoded or have a side
        under ``min_side`` px (the paper's 90 px rule; the detector never saw smaller inputs), and
        ``"no_quality"`` when the quality model returns NaN. The last two are not fit.
        """
        check_is_fitted(self, "pipeline_")
        classifier = self._resolve_classifier(classifier)
        needs_quality = "quality" in self.columns
        if needs_quality:
            quality = self._resolve_quality(quality, classifier)
        loaded, reasons = _load_images(images, min_side)
        frame = pd.DataFrame(np.nan, index=range(len(loaded)), columns=list(FEATURES))
        ok = [i for i, im in enumerate(loaded) if im is not None]
        if ok:
            from iqalib.features import pooled, quality_input

            # One pass gives the pooled embedding (classifier head) and the early-layer statistics
            # a multilevel quality head reads.
            emb = classifier.embed_with_stats([loaded[i] for i in ok], batch_size=batch_size)
            proba = classifier.proba_from_embeddings(pooled(classifier, emb))
            frame.loc[ok, list(TOP5)] = -np.sort(-proba, axis=1)[:, :5]
            if needs_quality:
                x = quality_input(quality, classifier, emb)
                frame.loc[ok, "quality"] = np.asarray(quality.predict_embeddings(x), float).reshape(-1)
        score = self.decision_function(frame)
        not_fit = self.predict(frame).astype(bool)
        for i in range(len(loaded)):
            if reasons[i] is not None:
                reasons[i] = f"unusable: {reasons[i]}"
            elif needs_quality and np.isnan(frame.at[i, "quality"]):
                reasons[i] = "no_quality"
            elif not_fit[i]:
                reasons[i] = "detector"
        return pd.concat([pd.DataFrame({"fit": ~not_fit, "reason": reasons, "score": score}), frame], axis=1)

    def predict_fit(self, images: Sequence[Any], classifier: Any = None, quality: Any = None,
                    batch_size: int = 32) -> np.ndarray:
        """True = fit for classification, per PIL image or path (see ``fit_report`` for reasons)."""
        return self.fit_report(images, classifier, quality, batch_size)["fit"].to_numpy(bool)

    # -- persistence ------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, run_folder: str | os.PathLike | None = None) -> Path:
        """Write ``pipeline.skops`` (skops, no pickle) and ``detector.json`` into ``folder``.

        The quality folder is stored relative to ``folder`` when it lies inside ``run_folder``
        (default: ``folder``'s parent, i.e. the run's output folder), so a run folder can be moved.
        """
        import skops.io as sio
        import sklearn
        import skops

        check_is_fitted(self, "pipeline_")
        if not isinstance(self.cv, (int, np.integer)):
            raise ValueError("save() stores cv as a number of folds; refit with an integer cv")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = sio.dumps(self.pipeline_)
        params = self.get_params()
        quality_folder = params.pop("quality_folder")
        if quality_folder is not None:
            q = Path(quality_folder).resolve()
            run = Path(run_folder).resolve() if run_folder is not None else folder.resolve().parent
            quality_folder = os.path.relpath(q, folder.resolve()) if q.is_relative_to(run) else str(q)
        meta = {
            "format": DETECTOR_FORMAT,
            "columns": list(self.columns),
            "classifier": {"name": params.pop("classifier_name"), "weights_id": params.pop("classifier_weights_id")},
            "quality_model": quality_folder,
            "params": _jsonable(params),
            "best_params": _jsonable(self.best_params_),
            "cv_score": _jsonable(self.cv_score_),
            "n_train": self.n_train_,
            "pipeline_sha256": hashlib.sha256(data).hexdigest(),
            "versions": {"scikit-learn": sklearn.__version__, "skops": skops.__version__},
        }
        # pipeline first, metadata last: detector.json names the pipeline's hash, so a half-written
        # pair is detected on load rather than silently mixing two detectors.
        atomic_write_bytes(folder / PIPELINE_FILE, data)
        atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, allow_nan=False))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike,
             allowed_types: Iterable[str] = ALLOWED_TYPES) -> "FitForTaskDetector":
        """Read a detector written by ``save``; refuses (``UntrustedModelError``) any dump holding a
        type skops does not trust that is not in ``allowed_types``, and anything but the pipeline."""
        import skops.io as sio

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format") != DETECTOR_FORMAT:
            raise ValueError(f"{folder / META_FILE}: format {meta.get('format')}, expected {DETECTOR_FORMAT}")
        data = (folder / PIPELINE_FILE).read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("pipeline_sha256"):
            raise UntrustedModelError(f"{folder / PIPELINE_FILE} does not match the hash in {META_FILE}")
        untrusted = sio.get_untrusted_types(data=data)
        refused = sorted(set(untrusted) - set(allowed_types))
        if refused:
            raise UntrustedModelError(f"{folder / PIPELINE_FILE} holds types not on the allow-list: "
                                      f"{', '.join(refused)}; refusing to load it")
        pipeline = sio.loads(data, trusted=sorted(set(untrusted)))
        if not (isinstance(pipeline, Pipeline) and [type(s) for _, s in pipeline.steps] == [StandardScaler, SVC]):
            raise UntrustedModelError(f"{folder / PIPELINE_FILE} is not a Pipeline(StandardScaler, SVC)")

        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        quality = meta.get("quality_model")
        if quality is not None and not Path(quality).is_absolute():
            quality = str((folder / quality).resolve())
        det = cls(**params, classifier_name=meta["classifier"]["name"],
                  classifier_weights_id=meta["classifier"]["weights_id"], quality_folder=quality)
        det.columns = tuple(meta["columns"])
        det.pipeline_ = pipeline
        det.best_params_ = meta["best_params"]
        det.cv_score_ = float("nan") if meta["cv_score"] is None else float(meta["cv_score"])
        det.classes_ = np.array([0, 1])
        det.n_features_in_ = len(det.columns)
        det.n_train_ = int(meta["n_train"])
        det.n_dropped_ = 0
        return det


def _quality_backbone(quality: Any) -> str | None:
    """The backbone a quality model reads, if it says (attribute or card entry); None if unknown."""
    for attr in ("backbone", "classifier_name", "classifier"):
        value = getattr(quality, attr, None)
        if isinstance(value, str):
            return value
    card = getattr(quality, "card", None)
    if isinstance(card, Mapping):
        for key in ("backbone", "classifier", "classifier_name"):
            if isinstance(card.get(key), str):
                return card[key]
    return None


def _load_images(images: Sequence[Any], min_side: int) -> tuple[list[Any], list[str | None]]:
    """PIL images or paths -> (image or None, skip reason or None) per input."""
    from PIL import Image

    from iqalib.images import ImageSkip, open_image

    loaded: list[Any] = []
    reasons: list[str | None] = []
    for item in images:
        try:
            if isinstance(item, Image.Image):
                image = item
                if min(image.size) < min_side:
                    raise ImageSkip("too_small", f"{image.size}")
            else:
                # grey inputs are valid classifier inputs; the paper's grey rule curates data sets
                image = open_image(item, min_side=min_side, allow_grey=True)
            loaded.append(image)
            reasons.append(None)
        except ImageSkip as skip:
            loaded.append(None)
            reasons.append(skip.reason)
    return loaded, reasons


# --------------------------------------------------------------------------------------------------
# paired splits and per-split scores


def paired_splits(features: pd.DataFrame, n_splits: int = 10, train_size: float = 0.5,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` random (train_source_ids, test_source_ids) halves of the sources that have both
    an original and an adversarial image; ids are strings, sorted, disjoint within a split."""
    src, group = _sources(features), features["group"]
    ids = np.array(sorted(set(src[group == "original"].dropna()) & set(src[group == "adversarial"].dropna())),
                   dtype=object)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 sources with an original and an adversarial image, found {len(ids)}")
    splitter = ShuffleSplit(n_splits=n_splits, train_size=train_size, random_state=seed)
    return [(np.sort(ids[tr]), np.sort(ids[te])) for tr, te in splitter.split(ids)]


def split_scores(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
                 n_splits: int = 10, seed: int = 0, columns: Sequence[str] = FEATURES,
                 **detector_kw: Any) -> pd.DataFrame:
    """Train one detector per split and score the rows it trained on and the rows it is judged on.

    Training: originals + adversarial images of the split's training sources (y = adversarial).
    Evaluation: every row, of any group, whose source_id is NOT a training source (fooling images
    have none, so they are always evaluated); thus held-out originals include those without a
    successful attack. Returns one row per (split, role, image): ``split, role ('train'|'eval'),
    row (position in features), group, source_id, score (decision_function, +inf = unusable),
    flagged (bool, not fit), correct, labelled, best_params (JSON)``.
    """
    if splits is None:
        splits = paired_splits(features, n_splits=n_splits, seed=seed)
    src, group = _sources(features), features["group"].to_numpy()
    correct, labelled = _correct(features), _labelled(features)
    X = features[list(columns)]
    frames = []
    for k, (train_ids, _test_ids) in enumerate(splits):
        in_train = src.isin(set(train_ids)).to_numpy()
        train = in_train & np.isin(group, ("original", "adversarial"))
        det = FitForTaskDetector(columns=tuple(columns), **{"random_state": seed, **detector_kw})
        det.fit(X[train], (group[train] == "adversarial").astype(int), groups=src[train].to_numpy())
        params = json.dumps(_jsonable(det.best_params_), sort_keys=True)
        for role, mask in (("train", train), ("eval", ~in_train)):
            rows = np.flatnonzero(mask)
            frames.append(pd.DataFrame({
                "split": k, "role": role, "row": rows, "group": group[rows], "source_id": src.to_numpy()[rows],
                "score": det.decision_function(X.iloc[rows]), "flagged": det.predict(X.iloc[rows]).astype(bool),
                "correct": correct[rows], "labelled": labelled[rows], "best_params": params}))
    return pd.concat(frames, ignore_index=True)


def _eval_rows(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["role"] == "eval"]


# --------------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_ci(data: Any, statistic: Callable[..., float] | None = None, *, paired: bool = True,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval at level 1 − ``alpha`` (seeded, so reproducible).

    ``data``: a 1-d array (``statistic`` defaults to the mean) or a tuple of 1-d arrays passed to
    ``statistic(*samples)``; with ``paired`` (default) one index resample is shared by all of them
    (e.g. the fit weight and the correctness of one image), else each is resampled on its own.
    Resamples whose statistic is NaN (e.g. no image judged fit) are left out. Returns (low, high);
    (NaN, NaN) with fewer than two observations.
    """
    samples = tuple(np.asarray(d, float) for d in data) if isinstance(data, tuple) else (np.asarray(data, float),)
    sizes = [len(x) for x in samples]
    if paired and len(set(sizes)) > 1:
        raise ValueError(f"paired samples must have one length; got {sizes}")
    if min(sizes) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_boot, 100):  # batches keep the index matrix small for large samples
        b = min(100, n_boot - start)
        if paired:
            idx = rng.integers(0, sizes[0], (b, sizes[0]))
            draws = [x[idx] for x in samples]
        else:
            draws = [x[rng.integers(0, len(x), (b, len(x)))] for x in samples]
        if statistic is None:
            stats.append(draws[0].mean(axis=1))
        else:
            stats.append(np.array([statistic(*(d[i] for d in draws)) for i in range(b)], float))
    stats = np.concatenate(stats)
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _ratio(w: np.ndarray, c: np.ndarray) -> float:
    total = np.sum(w)
    return float(np.sum(w * c) / total) if total > 0 else float("nan")


def _image_level_ci(ev: pd.DataFrame, flag: str, n_boot: int, seed: int, alpha: float = 0.05) -> dict[str, float]:
    """CIs that resample images (the independent unit); each image's outcome is averaged over the
    splits that held it out, thresholds/models held fixed."""
    per_image = ev.assign(_flag=ev[flag].astype(float)).groupby("row").agg(
        flag=("_flag", "mean"), correct=("correct", "first"), labelled=("labelled", "first"))
    out = dict(zip(("detection_rate_ci_low", "detection_rate_ci_high"),
                   bootstrap_ci(per_image["flag"].to_numpy(), n_boot=n_boot, alpha=alpha, seed=seed)))
    lab = per_image[per_image["labelled"]]
    fit_weight, corr = 1.0 - lab["flag"].to_numpy(), lab["correct"].to_numpy(float)
    ci = (bootstrap_ci((fit_weight, corr), _ratio, paired=True, n_boot=n_boot, alpha=alpha, seed=seed)
          if fit_weight.sum() > 0 else (float("nan"), float("nan")))
    out.update(fit_accuracy_ci_low=ci[0], fit_accuracy_ci_high=ci[1])
    return out


# --------------------------------------------------------------------------------------------------
# Table V


def _split_rates(ev: pd.DataFrame, flag: str = "flagged") -> pd.DataFrame:
    rows = []
    for (k, group), g in ev.groupby(["split", "group"], sort=False):
        flagged = g[flag].to_numpy(bool)
        fit_lab = ~flagged & g["labelled"].to_numpy(bool)
        rows.append({"split": k, "group": group, "n": len(g), "n_flagged": int(flagged.sum()),
                     "detection_rate": float(flagged.mean()), "n_fit": int((~flagged).sum()),
                     "fit_accuracy": _mean_or_nan(g["correct"].to_numpy(bool)[fit_lab])})
    out = pd.DataFrame(rows)
    order = {g: i for i, g in enumerate(_ordered_groups(out["group"]))}
    return out.sort_values(["split", "group"], key=lambda s: s.map(order) if s.name == "group" else s,
                           ignore_index=True)


def _summarise(per_split: pd.DataFrame, ev: pd.DataFrame, flag: str, ci: bool, n_boot: int,
               seed: int) -> pd.DataFrame:
    rows = []
    for group in _ordered_groups(per_split["group"]):
        g = per_split[per_split["group"] == group]
        row = {"group": group, "detection_rate": float(g["detection_rate"].mean()),
               "detection_rate_std": _std(g["detection_rate"]),
               "fit_accuracy": float(g["fit_accuracy"].mean()) if g["fit_accuracy"].notna().any() else float("nan"),
               "fit_accuracy_std": _std(g["fit_accuracy"]), "n": int(round(g["n"].mean()))}
        if ci:
            row.update(_image_level_ci(ev[ev["group"] == group], flag, n_boot, seed))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(features: pd.DataFrame, n_splits: int = 10, seed: int = 0, columns: Sequence[str] = FEATURES, *,
             splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, scores: pd.DataFrame | None = None,
             ci: bool = True, n_boot: int = 1000, **detector_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paper Table V over ``n_splits`` paired 50/50 splits (see ``split_scores`` for who is evaluated).

    Returns ``per_split`` (``split, group, n, n_flagged, detection_rate, n_fit, fit_accuracy,
    best_params``) and ``table5`` (one row per group: ``group, detection_rate, detection_rate_std,
    fit_accuracy, fit_accuracy_std, n`` and, with ``ci``, ``detection_rate_ci_low/_high,
    fit_accuracy_ci_low/_high``). Rates are fractions in [0, 1], mean and sample std over splits;
    for ``original`` the detection rate is the false-alarm rate (1 − share judged fit);
    ``fit_accuracy`` is the classifier's accuracy on images judged fit (NaN for fooling images:
    no true class); ``n`` is the mean number of images evaluated per split. CIs resample images.
    Pass ``scores`` (from ``split_scores``) to reuse trained detectors.
    """
    if scores is None:
        scores = split_scores(features, splits, n_splits=n_splits, seed=seed, columns=columns, **detector_kw)
    ev = _eval_rows(scores)
    per_split = _split_rates(ev)
    params = ev.groupby("split")["best_params"].first()
    per_split["best_params"] = per_split["split"].map(params)
    return per_split, _summarise(per_split, ev, "flagged", ci, n_boot, seed)


# --------------------------------------------------------------------------------------------------
# beyond the paper: ROC, fixed false-alarm rates, ablation, feature squeezing


def _finite(scores: np.ndarray) -> np.ndarray:
    """+inf / NaN (unusable -> surely not fit) become one above the largest finite score."""
    s = np.asarray(scores, float)
    bad = ~np.isfinite(s)
    if bad.any():
        top = np.max(s[~bad]) if (~bad).any() else 0.0
        s = np.where(bad, top + 1.0, s)
    return s


def roc_per_group(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
                  columns: Sequence[str] = FEATURES, seed: int = 0, scores: pd.DataFrame | None = None,
                  n_points: int = 101, **detector_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC of the detector score: negatives = held-out originals, positives = one group at a time.

    Returns (points, auc). ``points``: ``group, fpr, tpr, tpr_std`` on a common fpr grid of
    ``n_points`` in [0, 1], tpr averaged over splits (vertical averaging; the score scale differs
    between split models, so scores are never pooled). ``auc``: ``group, auc, auc_std, n_splits,
    n_pos, n_neg`` (ROC AUC in [0, 1], mean and sample std over splits; counts are per-split means).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if scores is None:
        scores = split_scores(features, splits, seed=seed, columns=columns, **detector_kw)
    ev = _eval_rows(scores)
    grid = np.linspace(0.0, 1.0, n_points)
    curves: dict[str, list[np.ndarray]] = {}
    aucs: dict[str, list[tuple[float, int, int]]] = {}
    for k, e in ev.groupby("split", sort=True):
        s = _finite(e["score"].to_numpy())
        neg = (e["group"] == "original").to_numpy()
        if not neg.any():
            continue
        for group in _ordered_groups(e["group"]):
            if group == "original":
                continue
            pos = (e["group"] == group).to_numpy()
            y = np.r_[np.zeros(neg.sum()), np.ones(pos.sum())]
            sc = np.r_[s[neg], s[pos]]
            fpr, tpr, _ = roc_curve(y, sc)
            # best tpr reachable at false-alarm <= x: a step curve, well defined at repeated fpr
            curves.setdefault(group, []).append(tpr[np.searchsorted(fpr, grid, side="right") - 1])
            aucs.setdefault(group, []).append((roc_auc_score(y, sc), int(pos.sum()), int(neg.sum())))
    points, table = [], []
    for group, c in curves.items():
        c = np.vstack(c)
        points.append(pd.DataFrame({"group": group, "fpr": grid, "tpr": c.mean(0),
                                    "tpr_std": c.std(0, ddof=1) if len(c) > 1 else np.nan}))
        a = np.array(aucs[group], float)
        table.append({"group": group, "auc": float(a[:, 0].mean()), "auc_std": _std(a[:, 0]),
                      "n_splits": len(a), "n_pos": int(round(a[:, 1].mean())), "n_neg": int(round(a[:, 2].mean()))})
    points_df = pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=["group", "fpr", "tpr", "tpr_std"])
    return points_df, pd.DataFrame(table, columns=["group", "auc", "auc_std", "n_splits", "n_pos", "n_neg"])


def _threshold_at_fpr(negatives: np.ndarray, target_fpr: float) -> float:
    """Smallest sample threshold t with share(negatives > t) <= target_fpr."""
    return float(np.quantile(negatives, 1.0 - target_fpr, method="higher"))


def _rates_at_fpr(ev: pd.DataFrame, target_fpr: float, n_boot: int, seed: int, method: str,
                  ci: bool = True) -> pd.DataFrame:
    """Per split: threshold on that split's evaluated originals, then detection rates per group."""
    parts = []
    thresholds = {}
    for k, e in ev.groupby("split", sort=True):
        s = e["score"].to_numpy(float)
        neg = (e["group"] == "original").to_numpy()
        if not neg.any():
            raise ValueError(f"split {k}: no evaluated originals to set the false-alarm threshold on")
        finite = _finite(s)
        t = _threshold_at_fpr(finite[neg], target_fpr)
        thresholds[k] = t
        parts.append(e.assign(at_fpr=(finite > t) | ~np.isfinite(s)))
    ev = pd.concat(parts)
    per_split = _split_rates(ev, "at_fpr")
    table = _summarise(per_split, ev, "at_fpr", ci, n_boot, seed)
    if not ci:
        table = table.assign(detection_rate_ci_low=np.nan, detection_rate_ci_high=np.nan)
    table = table[["group", "detection_rate", "detection_rate_std", "detection_rate_ci_low",
                   "detection_rate_ci_high", "n"]]
    table.insert(1, "method", method)
    table.insert(2, "target_fpr", float(target_fpr))
    table.insert(3, "threshold", float(np.mean(list(thresholds.values()))))
    return table


def rates_at_false_alarm(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                         *, target_fpr: float = 0.05, columns: Sequence[str] = FEATURES, seed: int = 0,
                         scores: pd.DataFrame | None = None, n_boot: int = 1000, ci: bool = True,
                         **detector_kw: Any) -> pd.DataFrame:
    """Detection rate per group when each split's threshold gives ``target_fpr`` false alarms on its
    held-out originals (so ``original``'s detection_rate is the realised false-alarm rate <= target).

    Columns: ``group, method ('fit_for_task'), target_fpr, threshold (mean over splits),
    detection_rate, detection_rate_std, detection_rate_ci_low, detection_rate_ci_high, n`` —
    the same as ``feature_squeezing_rates``, so ``pd.concat`` of both is one comparison table.
    """
    if scores is None:
        scores = split_scores(features, splits, seed=seed, columns=columns, **detector_kw)
    return _rates_at_fpr(_eval_rows(scores), target_fpr, n_boot, seed, "fit_for_task", ci)


def ablation(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
             n_splits: int = 10, seed: int = 0, column_sets: Mapping[str, Sequence[str]] | None = None,
             target_fpr: float = 0.05, scores: Mapping[str, pd.DataFrame] | None = None,
             **detector_kw: Any) -> pd.DataFrame:
    """Which inputs carry the signal: the detector trained on each column set (default: quality
    only, top-5 only, both) on the same splits.

    One row per (feature set, group): ``features, group, auc, auc_std, detection_rate,
    detection_rate_std, detection_rate_at_fpr, detection_rate_at_fpr_std`` (AUC against held-out
    originals, NaN for ``original`` itself; rates in [0, 1]). ``scores`` may hold precomputed
    ``split_scores`` per set name.
    """
    column_sets = dict(COLUMN_SETS if column_sets is None else column_sets)
    if splits is None:
        splits = paired_splits(features, n_splits=n_splits, seed=seed)
    scores = dict(scores or {})
    out = []
    for name, columns in column_sets.items():
        sc = scores.get(name)
        if sc is None:
            sc = split_scores(features, splits, seed=seed, columns=columns, **detector_kw)
        _, table5 = evaluate(features, scores=sc, ci=False)
        _, auc = roc_per_group(features, scores=sc)
        at = rates_at_false_alarm(features, scores=sc, target_fpr=target_fpr, ci=False)
        t = table5[["group", "detection_rate", "detection_rate_std"]].merge(auc[["group", "auc", "auc_std"]],
                                                                          on="group", how="left")
        t = t.merge(at[["group", "detection_rate", "detection_rate_std"]].rename(columns={
            "detection_rate": "detection_rate_at_fpr", "detection_rate_std": "detection_rate_at_fpr_std"}),
            on="group", how="left")
        t.insert(0, "features", name)
        out.append(t[["features", "group", "auc", "auc_std", "detection_rate", "detection_rate_std",
                      "detection_rate_at_fpr", "detection_rate_at_fpr_std"]])
    return pd.concat(out, ignore_index=True)


def feature_squeezing_scores(classifier: Any, images: Sequence[Any], *, bit_depth: int = 5,
                             median_size: int = 2, batch_size: int = 32, min_side: int = 1) -> np.ndarray:
    """Feature squeezing (Xu et al., NDSS 2018) score per image, in [0, 2]; NaN for unusable inputs.

    max over squeezers of the L1 distance between the classifier's softmax on its view of the
    image and on the squeezed view: colour depth reduced to ``bit_depth`` bits, and a
    ``median_size``×``median_size`` median filter (scipy, reflect padding as in Xu et al.; Pillow's
    MedianFilter only takes odd sizes). Squeezing acts on the network's input pixels.
    """
    import torch
    from scipy.ndimage import median_filter

    loaded, _ = _load_images(images, min_side)
    out = np.full(len(loaded), np.nan)
    ok = [i for i, im in enumerate(loaded) if im is not None]
    levels = 2 ** bit_depth - 1
    for start in range(0, len(ok), batch_size):
        idx = ok[start : start + batch_size]
        with torch.inference_mode():
            x = classifier.pixels([loaded[i] for i in idx])  # (N, 3, S, S), 0-255
            depth = torch.round(x / 255.0 * levels) / levels * 255.0
            arr = x.to(torch.uint8).cpu().numpy()
            median = torch.from_numpy(median_filter(arr, size=(1, 1, median_size, median_size), mode="reflect"))
            median = median.float().to(x.device)
            p = [classifier.logits_from_pixels(v).softmax(1).float().cpu().numpy() for v in (x, depth, median)]
        out[idx] = np.maximum(np.abs(p[0] - p[1]).sum(1), np.abs(p[0] - p[2]).sum(1))
    return out


def feature_squeezing_rates(scores_df: pd.DataFrame, target_fpr: float = 0.05, *,
                            splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Detection rate per group of feature squeezing at ``target_fpr`` false alarms on originals.

    ``scores_df``: ``group`` and ``score`` (NaN = unusable = flagged), plus ``source_id`` when
    ``splits`` is given: then, exactly like ``rates_at_false_alarm``, each split sets its threshold
    on the originals not in its training half and is judged on the rows not in it (feature squeezing
    trains nothing; this only makes the two methods see the same images). Without ``splits`` all
    originals set one threshold. Columns as ``rates_at_false_alarm`` with method 'feature_squeezing'.
    """
    base = pd.DataFrame({"group": scores_df["group"].to_numpy(), "score": scores_df["score"].to_numpy(float),
                         "row": np.arange(len(scores_df)),
                         "correct": _correct(scores_df) if "correct" in scores_df or {"pred", "label"} <= set(scores_df)
                         else False,
                         "labelled": _labelled(scores_df) if "label" in scores_df else False})
    base["score"] = base["score"].fillna(np.inf)
    if splits is None:
        ev = base.assign(split=0)
    else:
        src = _sources(scores_df)
        ev = pd.concat([base[~src.isin(set(tr)).to_numpy()].assign(split=k) for k, (tr, _) in enumerate(splits)])
    return _rates_at_fpr(ev, target_fpr, n_boot, seed, "feature_squeezing")


def plot_roc(roc_points: pd.DataFrame, ax: Any = None, auc: pd.DataFrame | None = None) -> Any:
    """One ROC curve per group (from ``roc_per_group``) plus the chance diagonal; returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    aucs = {} if auc is None else dict(zip(auc["group"], auc["auc"]))
    for group in _ordered_groups(roc_points["group"]):
        g = roc_points[roc_points["group"] == group]
        label = f"{group} (AUC {aucs[group]:.3f})" if group in aucs else group
        ax.plot(g["fpr"], g["tpr"], label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false-alarm rate (held-out originals)")
    ax.set_ylabel("detection rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    return fig
