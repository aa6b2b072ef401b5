"""Notebook 04's comparison run on the run's rows: which rows the peers that need pixels score
(``peer_rows``), Feature Squeezing on them, and every detector's split scores on the same rows and
splits (``detector_comparison``). The glue between a run (``experiment``, ``groups``: the cached
pass rows and the rebuilt images of ``features.csv`` rows) and the plain-value modules that score
and compare (``peers``, ``evaluation``, ``comparison``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalib import comparison, evaluation, features, groups, peers
from iqalib.experiment import Run, clean_references
from iqalib.feature_table import FEATURES


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


def peer_inputs(run: Run, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Logits and pooled (penultimate) embedding of ``features.csv`` rows, from the cached pass rows:
    what the logit- and feature-space peers read, with no second backbone pass."""
    embedded = groups.row_embeddings(run, table, progress=False)
    return features.logits(run.classifier, embedded), features.pooled(run.classifier, embedded)


def feature_squeezing(run: Run, rows: pd.DataFrame) -> pd.DataFrame:
    """Feature Squeezing's score (``peers.feature_squeezing_scores``) of each of ``rows``, with the
    columns a peer's rates need; the unsqueezed softmax comes from the cache."""
    plain = features.probabilities(run.classifier, groups.row_embeddings(run, rows, progress=False))
    return rows[["group", "source_id", "label", "correct"]].assign(score=peers.feature_squeezing_scores(
        run.classifier, groups.row_images(run, rows), plain_proba=plain, progress=run.progress))


#: What each detector of notebook 04's comparison is, beside the peers' own ``source``.
OUR_DETECTORS = {"fit_for_task": "the paper's detector (ours: linear SVM on top-5 + quality)",
                 "msp+quality": "ours: the same SVM on [top-1 (MSP), quality]",
                 "fit_for_task+": "ours: the paper's features + energy + squeezing distance"}


def detector_comparison(run: Run, study: evaluation.DetectorStudy, rows: pd.DataFrame,
                        squeezed: pd.DataFrame) -> comparison.Comparison:
    """Every detector of notebook 04's comparison on ``rows`` (``peer_rows``) and ``study``'s splits:
    ours and two quality-aware variants trained as the paper's detector (``evaluation.split_scores``),
    the peers of ``peers.standard_peers`` (feature-space ones fitted on the IQA references plus each
    split's training originals, at most ``detector.peer_fit_cap`` of them) and Feature Squeezing
    (``squeezed``'s scores, from ``feature_squeezing`` on the same rows)."""
    seed, cap = run.params.seed, run.params.detector.peer_fit_cap
    logits, embedding = peer_inputs(run, rows)
    ref_logits, ref_embedding = clean_references(run)
    standard = peers.standard_peers(*run.classifier.head_weights())
    energy = next(p for p in standard if p.name == "energy").score(logits, embedding)
    plus = rows.assign(energy=energy, squeeze=squeezed["score"].to_numpy(float))
    # the paper's detector is the study's (its training rows, originals and UAP images, are all in
    # ``rows``): only its evaluated rows are cut down to ``rows``
    ours = study.scores
    scores = {"fit_for_task": ours[(ours["role"] != "eval") | ours["row"].isin(rows.index)].reset_index(drop=True),
              "msp+quality": evaluation.split_scores(rows, study.splits, seed=seed, columns=("top1", "quality"),
                                                     n_jobs=study.n_jobs),
              "fit_for_task+": evaluation.split_scores(plus, study.splits, seed=seed, n_jobs=study.n_jobs,
                                                       columns=(*FEATURES, "energy", "squeeze"))}
    sources = dict(OUR_DETECTORS)
    for peer in tqdm(standard, desc="peers", disable=not run.progress, leave=False):
        scores[peer.name] = peers.split_scores(peer, rows, logits, embedding, study.splits, ref_logits,
                                               ref_embedding, cap=cap, seed=seed)
        sources[peer.name] = peer.source
    scores["feature_squeezing"] = evaluation.untrained_split_scores(squeezed["score"].to_numpy(float), rows,
                                                                    study.splits)
    sources["feature_squeezing"] = "hand-written (squeezed pixels; pytorch-ood has none)"
    return comparison.Comparison(scores, sources, study.paper_fpr, study.target_fpr, study.n_boot, seed)
