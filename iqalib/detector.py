"""The fit-for-task detector (paper Section V): an SVM on [top-5 softmax, predicted quality] as a
scikit-learn estimator, with image-level inference and safe persistence (skops, allow-listed types).

Why a LINEAR kernel by default (the paper says only "SVM"): the detector trains on originals and
their adversarial twins, and is then judged on groups it never saw — distorted and fooling images
whose quality lies far below anything in training (on the embedded default most lie over ten
training standard deviations below the lowest training quality). Far from its training data an
RBF decision function decays to its intercept, so whether such an image is flagged is the sign of
one number that changes from split to split; a linear decision function is monotone in every
input, so an image of lower quality than any seen is judged at least as unfit as the least-fit
image seen. That is the extrapolation the paper's claim needs, and it is decided here from that
argument, before any test group is looked at. RBF stays available (``kernels``) and is a row of
notebook 04's kernel ablation. The linear SVM is liblinear's (``LinearSVC``), whose training time
grows linearly with the rows: at the paper's ~19,000 training pairs a split an RBF grid search
(libsvm) would be quadratic.

Operating points are chosen on training data only: ``cross_decision_function`` gives the
out-of-fold scores of the training rows (folds grouped by photo, hyper-parameters fixed), from
which ``evaluation`` sets each split's threshold for a false-alarm rate.

Its evaluation on paired splits (Table V's scores, ROC, ablations) lives in ``evaluation``; the
tables in ``tables``; other detectors (Feature Squeezing) in ``peers``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC, SVC
from sklearn.utils.validation import check_is_fitted

from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.feature_table import FEATURES, TOP5
from iqalib.metrics import threshold_at_fpr


DETECTOR_FORMAT = 1
PIPELINE_FILE = "pipeline.skops"
META_FILE = "detector.json"

# Every type a fitted Pipeline(StandardScaler, LinearSVC or SVC) dump contains. skops trusts most of them by
# default today; listing them explicitly means a future skops that trusts less still loads our
# files, while anything else reported by get_untrusted_types (a function, a foreign class) is refused.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.svm._classes.SVC",
    "sklearn.svm._classes.LinearSVC",
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.NoneType",
})


class UntrustedModelError(ValueError):
    """A saved detector holds types outside ``ALLOWED_TYPES`` (or is not the expected pipeline)."""


# --------------------------------------------------------------------------------------------------
# folds

_FOLDS: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()  # (rows, folds, seed) -> fold of each row
_FOLDS_KEPT = 256  # a fold number per row (int8): under 48 KB a split at the paper's scale


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_folds: int,
                  seed: int | np.random.RandomState | None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``'s (train, test) row indices
    of (``y``, ``groups``), assigned once per distinct rows and kept for the next caller.

    scikit-learn assigns the groups to folds one at a time in Python: at the paper's ~19,000
    training pairs a split (38,000 rows) that takes 2.4 s on 2 cores, four times the rest of a
    linear detector's fitting (``benchmarks/bench_detector.py``). Every detector trained on a split's
    rows (the grid search, its out-of-fold scores, the ablations' column sets, the comparison
    variants) shares one assignment; the kept ones cover every split of notebook 04. The indices
    are scikit-learn's own (each sorted, as its splitter gives them), so no result changes. A
    ``seed`` that is not an integer draws other folds at every call, so those are not kept."""
    y, groups = np.asarray(y), np.asarray(groups, dtype=object)
    splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    if not isinstance(seed, (int, np.integer)):
        return tuple(splitter.split(np.zeros((len(y), 1)), y, groups))
    digest = hashlib.sha1(y.astype(np.int64).tobytes())
    digest.update("\x1f".join(map(repr, groups.tolist())).encode())  # repr: 1 and "1" fold apart
    key = (digest.hexdigest(), int(n_folds), int(seed))
    fold = _FOLDS.get(key)
    if fold is None:
        fold = np.full(len(y), -1, dtype=np.int8)
        for i, (_, test) in enumerate(splitter.split(np.zeros((len(y), 1)), y, groups)):
            fold[test] = i
        if (fold < 0).any():
            raise RuntimeError("StratifiedGroupKFold left rows without a test fold")
        _FOLDS[key] = fold
        if len(_FOLDS) > _FOLDS_KEPT:
            _FOLDS.popitem(last=False)
    else:
        _FOLDS.move_to_end(key)
    return tuple((np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(n_folds))


def _fold_scores(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, fit_rows: np.ndarray,
                 score_rows: np.ndarray) -> np.ndarray:
    return clone(pipeline).fit(X[fit_rows], y[fit_rows]).decision_function(X[score_rows])


# --------------------------------------------------------------------------------------------------
# the detector


def jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
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

    def __init__(self, columns: Sequence[str] = FEATURES, kernels: Sequence[str] = ("linear",),
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

    def _svm(self, kernel: str) -> LinearSVC | SVC:
        # liblinear for the linear kernel: its training time grows linearly with the rows, where
        # libsvm's (SVC(kernel="linear")) grows about quadratically, so paper.yaml's ~48,000 rows stay
        # seconds; the RBF kernel has only libsvm.
        if kernel == "linear":
            return LinearSVC(class_weight=self.class_weight, random_state=self.random_state, max_iter=10_000)
        if kernel == "rbf":
            return SVC(kernel="rbf", class_weight=self.class_weight, random_state=self.random_state)
        raise ValueError(f"kernels may hold 'rbf' and 'linear'; got {kernel!r}")

    def _pipeline(self) -> Pipeline:
        return Pipeline([("scale", StandardScaler()), ("svc", self._svm(self.kernels[0]))])

    def _param_grid(self) -> list[dict]:
        grid = []
        for kernel in self.kernels:
            cell = {"svc": [self._svm(kernel)], "svc__C": list(self.C_grid)}
            grid.append({**cell, "svc__gamma": list(self.gamma_grid)} if kernel == "rbf" else cell)
        return grid

    @staticmethod
    def _described(svm: LinearSVC | SVC) -> dict[str, Any]:
        """The chosen hyper-parameters as plain values (kernel, C, gamma for rbf)."""
        if isinstance(svm, LinearSVC):
            return {"kernel": "linear", "C": float(svm.C)}
        return {"kernel": svm.kernel, "C": float(svm.C), "gamma": svm.gamma}

    def fit(self, X: Any, y: Any, groups: Any = None) -> "FitForTaskDetector":
        """Grid-search C/gamma/kernel with grouped stratified CV on (X, y), refit the best on all of it.

        ``groups`` (source_id per row) keeps an original and its adversarial twin in one CV fold;
        without it folds are plain stratified. With too few samples for two folds the default
        SVC (the first of ``kernels``, C=1) is fitted and ``cv_score_`` is NaN.
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
                cv = (grouped_folds(y, g, k, self.random_state) if g is not None
                      else StratifiedKFold(k, shuffle=True, random_state=self.random_state))
        else:
            cv = self.cv
        if cv is None:
            kernel = self.kernels[0]
            warnings.warn(f"too few training samples for cross-validation; fitting SVC({kernel}, C=1)")
            pipe.fit(Xa, y)
            self.pipeline_ = pipe
            self.best_params_ = self._described(pipe.named_steps["svc"])
            self.cv_score_ = float("nan")
        else:
            search = GridSearchCV(pipe, self._param_grid(), scoring=self.scoring, cv=cv, n_jobs=self.n_jobs,
                                  refit=True, error_score="raise")
            search.fit(Xa, y, groups=g)
            self.pipeline_ = search.best_estimator_
            self.best_params_ = self._described(self.pipeline_.named_steps["svc"])
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

    def cross_decision_function(self, X: Any, y: Any, groups: Any, folds: int = 5) -> np.ndarray:
        """Out-of-fold ``decision_function`` of training rows: the fitted pipeline's
        hyper-parameters refitted on ``folds`` grouped stratified folds (an original and its twin
        in one fold), each row scored by the fit that did not see it. What a threshold for a
        false-alarm rate is set on without touching held-out data. NaN rows get +inf."""
        check_is_fitted(self, "pipeline_")
        Xa, y = self._matrix(X), np.asarray(y).astype(int).ravel()
        g = np.asarray(groups, dtype=object)
        out = np.full(len(Xa), np.inf)
        ok = np.flatnonzero(~np.isnan(Xa).any(axis=1))
        k = int(min(folds, np.bincount(y[ok]).min(), len(set(g[ok].tolist()))))
        if k < 2:
            raise ValueError("too few training photos per class for out-of-fold scores")
        folds = grouped_folds(y[ok], g[ok], k, self.random_state)
        scores = Parallel(n_jobs=self.n_jobs)(delayed(_fold_scores)(self.pipeline_, Xa[ok], y[ok], fit_rows, score_rows)
                                              for fit_rows, score_rows in folds)
        for (_, score_rows), values in zip(folds, scores):
            out[ok[score_rows]] = values
        return out

    def set_operating_point(self, X: Any, y: Any, groups: Any, false_alarm_rate: float, folds: int = 5) -> "FitForTaskDetector":
        """Move the decision threshold so that ``false_alarm_rate`` of the TRAINING fit rows (y = 0)
        are flagged by their out-of-fold scores (``cross_decision_function``); ``predict`` then
        flags ``decision_function > threshold_``. Without it the threshold is the SVM's own, 0."""
        y = np.asarray(y).astype(int).ravel()
        oof = self.cross_decision_function(X, y, groups, folds)
        negatives = oof[(y == 0) & np.isfinite(oof)]
        self.threshold_ = threshold_at_fpr(negatives, false_alarm_rate)
        self.false_alarm_rate_ = float(false_alarm_rate)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """1 = not fit, 0 = fit, per row: ``decision_function > threshold_`` (0 unless an operating
        point was set); NaN feature -> 1."""
        check_is_fitted(self, "pipeline_")
        return (self.decision_function(X) > getattr(self, "threshold_", 0.0)).astype(int)

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

    def _resolve_quality(self, quality: Any) -> Any:
        """The quality model given, kept, or loaded from ``quality_folder``. Whether it belongs to the
        classifier's backbone is checked where its features are read (``features.quality_input``)."""
        if quality is None:
            quality = getattr(self, "_quality", None)
        if quality is None:
            if self.quality_folder is None:
                raise ValueError("No quality model given and the detector records no quality_folder")
            from iqalib.quality import QualityModel  # imported late: the detector runs without it

            quality = QualityModel.load(self.quality_folder)
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
        from iqalib import features  # the one backbone pass; the detector itself reads six numbers

        check_is_fitted(self, "pipeline_")
        classifier = self._resolve_classifier(classifier)
        needs_quality = "quality" in self.columns
        if needs_quality:
            quality = self._resolve_quality(quality)
        seen = features.predict(classifier, images, quality if needs_quality else None, batch_size, min_side)
        frame = pd.DataFrame(np.nan, index=range(len(seen.reasons)), columns=list(FEATURES))
        frame[list(TOP5)] = -np.sort(-seen.proba, axis=1)[:, :5]
        frame["quality"] = seen.quality.astype(float)
        score = self.decision_function(frame)
        not_fit = self.predict(frame).astype(bool)
        reasons = list(seen.reasons)
        for i, reason in enumerate(reasons):
            if reason is not None:
                reasons[i] = f"unusable: {reason}"
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
        params["n_jobs"] = None  # the fitting machine's process count: no part of the model
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
            "params": jsonable(params),
            "best_params": jsonable(self.best_params_),
            "cv_score": jsonable(self.cv_score_),
            "n_train": self.n_train_,
            "threshold": float(getattr(self, "threshold_", 0.0)),
            "false_alarm_rate": getattr(self, "false_alarm_rate_", None),
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
        steps = [type(s) for _, s in pipeline.steps] if isinstance(pipeline, Pipeline) else []
        if steps not in ([StandardScaler, LinearSVC], [StandardScaler, SVC]):
            raise UntrustedModelError(f"{folder / PIPELINE_FILE} is not a Pipeline(StandardScaler, LinearSVC or SVC)")

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
        det.threshold_ = float(meta.get("threshold", 0.0))
        if meta.get("false_alarm_rate") is not None:
            det.false_alarm_rate_ = float(meta["false_alarm_rate"])
        det.n_dropped_ = 0
        return det


# --------------------------------------------------------------------------------------------------
# paired splits and per-split scores


# --------------------------------------------------------------------------------------------------
# beyond the paper: ROC per group


