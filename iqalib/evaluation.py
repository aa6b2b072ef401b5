"""How well a detector separates the groups: the paired leakage-free splits, one trained
detector per split and its scores, ROC curves per group, rates at a false-alarm rate, and the
experiments that train more detectors on the same splits (feature and kernel ablations, the
learning curve). Reads the features table; the tables it returns are shaped in ``tables``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import ShuffleSplit
from tqdm.auto import tqdm

from iqalib import tables
from iqalib.detector import FitForTaskDetector, jsonable
from iqalib import feature_table, metrics
from iqalib.feature_table import COLUMN_SETS, FEATURES


def paired_splits(features: pd.DataFrame, n_splits: int = 10, train_size: float = 0.5,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` random (train_source_ids, test_source_ids) halves of the sources that have both
    an original and an adversarial image; ids are strings, sorted, disjoint within a split."""
    src, group = feature_table.sources(features), features["group"]
    ids = np.array(sorted(set(src[group == "original"].dropna()) & set(src[group == "adversarial"].dropna())),
                   dtype=object)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 sources with an original and an adversarial image, found {len(ids)}")
    splitter = ShuffleSplit(n_splits=n_splits, train_size=train_size, random_state=seed)
    return [(np.sort(ids[tr]), np.sort(ids[te])) for tr, te in splitter.split(ids)]


def split_scores(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
                 n_splits: int = 10, seed: int = 0, columns: Sequence[str] = FEATURES, progress: bool = True,
                 fit_cap: int | None = None, **detector_kw: Any) -> pd.DataFrame:
    """Train one detector per split and score the rows it trained on and the rows it is judged on.

    Training: originals + adversarial images of the split's training sources (y = adversarial).
    Evaluation: every row, of any group, whose source_id is NOT a training source (fooling images
    have none, so they are always evaluated); thus held-out originals include those without a
    successful attack. Calibration: the training rows again, role ``oof``, each scored by a fit
    of the chosen hyper-parameters on the other folds (``cross_decision_function``, folds grouped
    by photo) — what operating points are set on, so no threshold ever sees a held-out row.
    Returns one row per (split, role, image): ``split, role ('train'|'oof'|'eval'), row (position
    in features), group, source_id, score (decision_function, +inf = unusable), flagged (bool, not
    fit at the SVM's own threshold), correct, labelled, best_params (JSON)``. ``progress``: a tqdm
    bar over splits. ``fit_cap``: fit on at most this many of the split's training sources (a seeded
    sample; roles ``train``/``oof`` are theirs), judged on the same held-out rows as without a cap.
    """
    if splits is None:
        splits = paired_splits(features, n_splits=n_splits, seed=seed)
    src, group = feature_table.sources(features), features["group"].to_numpy()
    correct, labelled = feature_table.correct(features), feature_table.labelled(features)
    X = features[list(columns)]
    frames = []
    bar = tqdm(splits, desc="detector splits", disable=not progress, leave=False)
    for k, (train_ids, _test_ids) in enumerate(bar):
        in_train = src.isin(set(train_ids)).to_numpy()
        fitted = in_train
        if fit_cap is not None and len(train_ids) > fit_cap:
            chosen = np.random.default_rng([seed, 6, k]).choice(sorted(map(str, train_ids)), fit_cap, replace=False)
            fitted = src.isin(set(chosen)).to_numpy()
        train = fitted & np.isin(group, ("original", "adversarial"))
        det = FitForTaskDetector(columns=tuple(columns), **{"random_state": seed, **detector_kw})
        det.fit(X[train], (group[train] == "adversarial").astype(int), groups=src[train].to_numpy())
        params = json.dumps(jsonable(det.best_params_), sort_keys=True)
        train_rows = np.flatnonzero(train)
        oof = det.cross_decision_function(X.iloc[train_rows], (group[train_rows] == "adversarial").astype(int),
                                          src.to_numpy()[train_rows])
        for role, mask in (("train", train), ("oof", train), ("eval", ~in_train)):
            rows = np.flatnonzero(mask)
            score = oof if role == "oof" else det.decision_function(X.iloc[rows])
            frames.append(pd.DataFrame({
                "split": k, "role": role, "row": rows, "group": group[rows], "source_id": src.to_numpy()[rows],
                "score": score, "flagged": score > 0 if role == "oof" else det.predict(X.iloc[rows]).astype(bool),
                "correct": correct[rows], "labelled": labelled[rows], "best_params": params}))
    return pd.concat(frames, ignore_index=True)


def eval_rows(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["role"] == "eval"]


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
    ev = eval_rows(scores)
    grid = np.linspace(0.0, 1.0, n_points)
    curves: dict[str, list[np.ndarray]] = {}
    aucs: dict[str, list[tuple[float, int, int]]] = {}
    for k, e in ev.groupby("split", sort=True):
        s = metrics.finite(e["score"].to_numpy())
        neg = (e["group"] == "original").to_numpy()
        if not neg.any():
            continue
        for group in feature_table.ordered_groups(e["group"]):
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
        table.append({"group": group, "auc": float(a[:, 0].mean()), "auc_std": metrics.sample_std(a[:, 0]),
                      "n_splits": len(a), "n_pos": int(round(a[:, 1].mean())), "n_neg": int(round(a[:, 2].mean()))})
    points_df = pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=["group", "fpr", "tpr", "tpr_std"])
    return points_df, pd.DataFrame(table, columns=["group", "auc", "auc_std", "n_splits", "n_pos", "n_neg"])


def rates_at_false_alarm(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                         *, target_fpr: float = 0.05, columns: Sequence[str] = FEATURES, seed: int = 0,
                         scores: pd.DataFrame | None = None, n_boot: int = 1000, ci: bool = True,
                         **detector_kw: Any) -> pd.DataFrame:
    """Detection rate per group when each split's threshold gives ``target_fpr`` false alarms on the
    out-of-fold scores of its TRAINING originals (``original``'s detection_rate is then the realised
    false-alarm rate on held-out originals, near the target but not forced to it).

    Columns as ``rates_from_scores`` with method 'fit_for_task' — the same as
    ``peers.feature_squeezing_rates``, so ``pd.concat`` of both is one comparison table. Pass
    ``scores`` (from ``split_scores``) to reuse trained detectors.
    """
    if scores is None:
        scores = split_scores(features, splits, seed=seed, columns=columns, **detector_kw)
    return tables.rates_from_scores(eval_rows(scores), scores[scores["role"] == "oof"], target_fpr, "fit_for_task",
                                    n_boot=n_boot, seed=seed, ci=ci)


def ablation(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
             n_splits: int = 10, seed: int = 0, column_sets: Mapping[str, Sequence[str]] | None = None,
             target_fpr: float = 0.05, scores: Mapping[str, pd.DataFrame] | None = None,
             **detector_kw: Any) -> pd.DataFrame:
    """Which inputs carry the signal: the detector trained on each column set (default: quality
    only, top-5 only, both) on the same splits.

    One row per (feature set, group): ``features, group, auc, auc_std, detection_rate,
    detection_rate_std`` (at the SVM's own threshold), ``detection_rate_at_fpr,
    detection_rate_at_fpr_std`` (at ``target_fpr`` false alarms, thresholds from training data
    as in ``table5``), with AUC against held-out originals (NaN for ``original`` itself; rates in
    [0, 1]). ``scores`` may hold precomputed ``split_scores`` per set name; the others are trained here.
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
        own = tables.rates_at_default(sc)[["group", "detection_rate", "detection_rate_std"]]
        _, auc = roc_per_group(features, scores=sc)
        at = rates_at_false_alarm(features, scores=sc, target_fpr=target_fpr, ci=False)
        t = own.merge(auc[["group", "auc", "auc_std"]], on="group", how="left")
        t = t.merge(at[["group", "detection_rate", "detection_rate_std"]].rename(columns={
            "detection_rate": "detection_rate_at_fpr", "detection_rate_std": "detection_rate_at_fpr_std"}),
            on="group", how="left")
        t.insert(0, "features", name)
        out.append(t[["features", "group", "auc", "auc_std", "detection_rate", "detection_rate_std",
                      "detection_rate_at_fpr", "detection_rate_at_fpr_std"]])
    return pd.concat(out, ignore_index=True)


#: The detector's kernel choices compared by ``kernel_ablation``: the paper says only "SVM"; ours is
#: linear by default (argued in ``detector``); RBF, alone or picked by grouped cross-validation on
#: adversarial vs originals, is kept for comparison.
KERNEL_CHOICES: dict[str, tuple[str, ...]] = {"linear (default)": ("linear",),
                                              "rbf or linear (chosen by CV)": ("rbf", "linear"),
                                              "rbf only": ("rbf",)}


def kernel_ablation(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]], *, seed: int = 0,
                    target_fpr: float = 0.05, choices: Mapping[str, Sequence[str]] | None = None,
                    scores: Mapping[str, pd.DataFrame] | None = None, rbf_fit_cap: int | None = None,
                    **detector_kw: Any) -> pd.DataFrame:
    """The detector (top-5 + quality) with each kernel choice on the same splits: rows as
    ``ablation`` with ``kernel`` in place of ``features``. Cross-validation only ever sees
    adversarial images and originals; this table shows what the choice does to the groups it never
    sees (an RBF SVM's decision far from its training data falls back to its intercept).
    ``rbf_fit_cap``: choices with an RBF kernel fit on at most this many training sources per split
    (libsvm's time grows about quadratically with the rows; ``split_scores``'s ``fit_cap``)."""
    parts = []
    for name, kernels in dict(KERNEL_CHOICES if choices is None else choices).items():
        given = (scores or {}).get(name)
        t = ablation(features, splits, seed=seed, column_sets={"top5+quality": FEATURES}, target_fpr=target_fpr,
                     scores={"top5+quality": given} if given is not None else None, kernels=tuple(kernels),
                     progress=False, fit_cap=rbf_fit_cap if "rbf" in kernels else None, **detector_kw)
        parts.append(t.rename(columns={"features": "kernel"}).assign(kernel=name))
    return pd.concat(parts, ignore_index=True)


def learning_curve(features: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
                   fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), seed: int = 0,
                   scores: pd.DataFrame | None = None, **detector_kw: Any) -> pd.DataFrame:
    """Would more training pairs help? The detector (top-5 + quality) trained on a seeded share of
    each split's training sources, judged on the split's SAME held-out pairs whatever the share (the
    sources left out of training are not added to the test side). One row per share:
    ``fraction, train_pairs`` (mean over splits), ``test_pairs, auc, auc_std`` (adversarial vs
    held-out originals, mean ± std over splits) and ``quality_auc`` (the predicted quality alone as
    the score on the same pairs, untrained: low quality = not fit). ``scores``: the ``split_scores``
    of the same splits (Table V's), reused for the full share instead of training it again."""
    from sklearn.metrics import roc_auc_score

    src, group = features["source_id"].astype(str), features["group"]
    rows = []
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"learning_curve fractions must lie in (0, 1], got {fraction!r}")
        aucs, q_aucs, n_train, n_test = [], [], [], []
        for k, (train_ids, test_ids) in enumerate(splits):
            rng = np.random.default_rng([seed, k])
            size = max(2, round(fraction * len(train_ids)))
            kept = np.sort(rng.choice(np.asarray(train_ids, dtype=object), size=min(size, len(train_ids)), replace=False))
            if scores is not None and len(kept) == len(train_ids):
                sc = scores[scores["split"] == k]
            else:
                sc = split_scores(features, [(kept, test_ids)], seed=seed, progress=False, **detector_kw)
            ev = sc[(sc["role"] == "eval") & sc["source_id"].astype(str).isin(set(map(str, test_ids)))
                    & sc["group"].isin(["original", "adversarial"])]
            y = (ev["group"] == "adversarial").to_numpy()
            test = features.iloc[ev["row"].to_numpy()]
            aucs.append(roc_auc_score(y, metrics.finite(ev["score"].to_numpy())))
            q_aucs.append(roc_auc_score(y, metrics.finite(-test["quality"].to_numpy())))
            n_train.append(len(kept))
            n_test.append(int(((group == "adversarial") & src.isin(set(map(str, test_ids)))).sum()))
        rows.append({"fraction": float(fraction), "train_pairs": float(np.mean(n_train)), "test_pairs": float(np.mean(n_test)),
                     "auc": float(np.mean(aucs)), "auc_std": metrics.sample_std(aucs), "quality_auc": float(np.mean(q_aucs))})
    return pd.DataFrame(rows)


def score_frame(table: pd.DataFrame, split: int, role: str, mask: np.ndarray, score: np.ndarray,
                n_fit: int = 0) -> pd.DataFrame:
    """Rows ``mask`` of ``table`` with their ``score`` in ``split_scores``'s layout (``row`` = the
    table's index), for detectors trained elsewhere or not at all; ``n_fit``: the clean images a
    fitted one saw. ``correct``/``labelled`` are False where ``table`` has no labels."""
    rows = np.flatnonzero(mask)
    has_labels = "correct" in table or {"pred", "label"} <= set(table)
    return pd.DataFrame({
        "split": split, "role": role, "row": table.index.to_numpy()[rows], "group": table["group"].to_numpy()[rows],
        "source_id": feature_table.sources(table).to_numpy()[rows], "score": np.asarray(score, float),
        "correct": feature_table.correct(table)[rows] if has_labels else False,
        "labelled": feature_table.labelled(table)[rows] if "label" in table else False, "n_fit": n_fit})


def untrained_split_scores(values: np.ndarray, table: pd.DataFrame,
                           splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """A detector that trains nothing (its ``values``, one per row of ``table``; NaN = unusable =
    flagged) in ``split_scores``'s layout: per split, role ``oof`` = the training half's originals
    (what its threshold is set on: the peer trains nothing, but those are the photos the split may
    look at), ``eval`` = every row whose photo is not a training photo."""
    values = np.asarray(values, float)
    src, original = feature_table.sources(table), (table["group"] == "original").to_numpy()
    frames = []
    for k, (train_ids, _) in enumerate(splits):
        in_train = src.isin(set(train_ids)).to_numpy()
        frames += [score_frame(table, k, "oof", in_train & original, values[in_train & original]),
                   score_frame(table, k, "eval", ~in_train, values[~in_train])]
    return pd.concat(frames, ignore_index=True)


def peer_rates(scores_df: pd.DataFrame, method: str, target_fpr: float,
               splits: Sequence[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000, seed: int = 0,
               ci: bool = True) -> pd.DataFrame:
    """Detection rate per group of an untrained peer detector's scores at ``target_fpr`` false
    alarms, by the rule ours follows (``untrained_split_scores``). ``scores_df``: ``group``,
    ``source_id`` and ``score`` (higher = more likely not fit; NaN = unusable = flagged),
    ``label``/``correct`` when known. Columns as ``rates_at_false_alarm`` with ``method``."""
    s = untrained_split_scores(scores_df["score"].to_numpy(float), scores_df, splits)
    return tables.rates_from_scores(s[s["role"] == "eval"], s[s["role"] == "oof"], target_fpr, method,
                                    n_boot=n_boot, seed=seed, ci=ci)


def _each_group_in_turn(scores: pd.DataFrame, most_flagged: bool) -> pd.DataFrame:
    """``scores`` ordered by the image of each group most (or least) likely flagged, then each
    group's second, and so on: ordered by score alone, Appendix C's rows would show one kind of
    image only (the most extreme distortion)."""
    ordered = scores.sort_values("score", ascending=not most_flagged, kind="stable")
    return ordered.assign(turn=ordered.groupby("group").cumcount()).sort_values("turn", kind="stable")


@dataclass
class DetectorStudy:
    """Notebook 04's study: the features ``table``, its paired ``splits`` and the ``scores`` of one
    detector trained per split, with the settings every table of the study shares. Each method
    returns one table (or figure data) of the study from these scores, training more detectors
    on the same splits only where the table is about other detectors (ablations, learning curve)."""

    table: pd.DataFrame
    splits: list[tuple[np.ndarray, np.ndarray]]
    scores: pd.DataFrame
    seed: int = 0
    n_boot: int = 1000
    #: The paper's operating point (8.57 % of originals flagged, Sec. V-D): Table V's main columns.
    paper_fpr: float = 0.0857
    #: A second operating point, Feature Squeezing's convention (5 %).
    target_fpr: float = 0.05
    #: Training sources an RBF fit of the kernel ablation may use per split (None: all).
    rbf_fit_cap: int | None = None
    #: Processes for each detector's SVM fits (``FitForTaskDetector.n_jobs``; None: one).
    n_jobs: int | None = None

    @classmethod
    def train(cls, table: pd.DataFrame, *, n_splits: int = 10, train_size: float = 0.5, seed: int = 0,
              n_boot: int = 1000, paper_fpr: float = 0.0857, target_fpr: float = 0.05,
              progress: bool = True, rbf_fit_cap: int | None = None, n_jobs: int | None = None) -> "DetectorStudy":
        splits = paired_splits(table, n_splits, train_size, seed)
        return cls(table, splits, split_scores(table, splits, seed=seed, progress=progress, n_jobs=n_jobs), seed,
                   n_boot, paper_fpr, target_fpr, rbf_fit_cap, n_jobs)

    @property
    def operating_points(self) -> tuple[float, float]:
        return self.paper_fpr, self.target_fpr

    @property
    def n_sources(self) -> int:
        """Source photos with an adversarial twin (both halves of a split)."""
        return len(self.splits[0][0]) + len(self.splits[0][1])

    def table5(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return tables.table5(self.scores, self.paper_fpr, secondary_fpr=(self.target_fpr,), n_boot=self.n_boot,
                             seed=self.seed)

    def roc(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return roc_per_group(self.table, self.splits, scores=self.scores, seed=self.seed)

    def at_false_alarm(self) -> pd.DataFrame:
        """Ours at both operating points (thresholds from the training originals' out-of-fold scores)."""
        return pd.concat([rates_at_false_alarm(self.table, self.splits, target_fpr=fpr, scores=self.scores,
                                               n_boot=self.n_boot, seed=self.seed) for fpr in self.operating_points],
                         ignore_index=True)

    def peer_rates(self, scores_df: pd.DataFrame, method: str) -> pd.DataFrame:
        """A peer's rates at both operating points, on the same splits, threshold rule and intervals."""
        return pd.concat([peer_rates(scores_df, method, fpr, self.splits, n_boot=self.n_boot, seed=self.seed)
                          for fpr in self.operating_points], ignore_index=True)

    def ablation(self) -> pd.DataFrame:
        return ablation(self.table, self.splits, seed=self.seed, target_fpr=self.paper_fpr,
                        scores={"top5+quality": self.scores}, n_jobs=self.n_jobs)

    def kernel_ablation(self) -> pd.DataFrame:
        return kernel_ablation(self.table, self.splits, seed=self.seed, target_fpr=self.paper_fpr,
                               scores={next(iter(KERNEL_CHOICES)): self.scores}, rbf_fit_cap=self.rbf_fit_cap,
                               n_jobs=self.n_jobs)

    def learning_curve(self) -> pd.DataFrame:
        return learning_curve(self.table, self.splits, seed=self.seed, scores=self.scores, n_jobs=self.n_jobs)

    def tsne(self) -> np.ndarray:
        """(N, 2) t-SNE (scikit-learn) of the six detector inputs of every row (paper Fig. 4)."""
        from sklearn.manifold import TSNE

        perplexity = min(30, max(5, len(self.table) // 10))
        return TSNE(n_components=2, perplexity=perplexity, random_state=self.seed,
                    init="pca").fit_transform(self.table[list(FEATURES)].to_numpy())

    def examples(self, per_kind: int = 5) -> dict[str, pd.DataFrame]:
        """Appendix C from the first split's detector at the paper's operating point: rows of
        ``table`` it flags among held-out images of other groups (detected: the most confidently
        flagged image of each group in turn), held-out originals it flags (false alarms), and
        adversarial or distorted images it lets through (missed: the most confidently passed of
        each group in turn)."""
        first = self.scores[self.scores["split"] == 0]
        threshold = tables.thresholds_at_fpr(first[first["role"] == "oof"], self.paper_fpr)
        ev = first[first["role"] == "eval"]
        ev = ev.assign(flagged=tables.flag_at(ev, threshold))
        picked = {
            "detected": _each_group_in_turn(ev[ev["flagged"] & (ev["group"] != "original")], most_flagged=True),
            "false alarm": ev[ev["flagged"] & (ev["group"] == "original")],
            "missed": _each_group_in_turn(ev[~ev["flagged"] & ev["group"].isin(["adversarial", "distorted"])],
                                          most_flagged=False),
        }
        return {kind: self.table.iloc[rows.head(per_kind)["row"].to_numpy()] for kind, rows in picked.items()
                if len(rows)}
