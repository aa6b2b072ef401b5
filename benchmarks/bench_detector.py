"""Training time of the fit-for-task detector at the paper's scale: the grouped fold assignment,
the linear fits (the default), RBF, and what ``n_jobs`` processes buy.

    .venv/bin/python benchmarks/bench_detector.py [--pairs 19000] [--rbf-pairs 2000 4000] [--jobs 1 2]

Rows: ``--pairs`` originals and as many adversarial twins (the paper's 37,962 adversarial images,
half of them and their originals per split, give ~19,000 pairs, ~38,000 rows), six features drawn
like ours (five sorted softmax values, one quality); groups by pair, as notebook 04 trains. One
detector costs ``FitForTaskDetector.fit`` (grouped 5-fold grid over C) plus
``set_operating_point`` (5 out-of-fold refits). Timed apart, best of 3 for the linear kernel:

* ``folds``: scikit-learn's ``StratifiedGroupKFold`` assignment of the rows (``grouped_folds``),
  which every detector trained on the same rows of a split shares;
* ``first detector``: fit + operating point with the folds not yet assigned (what one detector
  cost before the folds were shared);
* ``next detector``: the same once the folds are kept, per ``--jobs`` (processes for the fits);
* RBF on the smaller sizes only (``--rbf-pairs``), folds kept, per ``--jobs``, one run each, to
  show its growth.

Wall seconds on this machine (a process pool's start-up falls on its first use: a small fit per
``--jobs`` value above 1 is run first, untimed).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np

from iqalib import detector
from iqalib.detector import FitForTaskDetector


def synthetic(pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], pairs)
    logits = rng.normal(0, 1, (2 * pairs, 20)) + np.where(y[:, None] == 0, 2.0, 0.8) * (np.arange(20) == 0)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top5 = -np.sort(-proba, axis=1)[:, :5]
    quality = rng.normal(np.where(y == 0, 0.45, 0.40), 0.1)
    return np.column_stack([top5, quality]), y, np.tile(np.arange(pairs), 2).astype(object)


def best_of(repeats: int, work: Callable[[], object], forget_folds: bool) -> float:
    """The shortest of ``repeats`` timings of ``work`` (the kept folds forgotten before each, when asked)."""
    best = np.inf
    for _ in range(repeats):
        if forget_folds:
            detector._FOLDS.clear()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def seconds(kernels: tuple[str, ...], pairs: int, n_jobs: int, forget_folds: bool = False, repeats: int = 1) -> float:
    """Best of ``repeats``: one detector's fit + operating point (the folds assigned anew when ``forget_folds``)."""
    X, y, groups = synthetic(pairs)

    def detector_fit() -> None:
        det = FitForTaskDetector(kernels=kernels, random_state=0, n_jobs=n_jobs).fit(X, y, groups=groups)
        det.set_operating_point(X, y, groups, 0.0857)

    return best_of(repeats, detector_fit, forget_folds)


def fold_seconds(pairs: int, repeats: int) -> float:
    """Best of ``repeats``: the grouped fold assignment alone."""
    _, y, groups = synthetic(pairs)
    return best_of(repeats, lambda: detector.grouped_folds(y, groups, 5, 0), forget_folds=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=19_000)
    ap.add_argument("--rbf-pairs", type=int, nargs="*", default=[2_000, 4_000])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many, linear kernel")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)")
    for n_jobs in args.jobs:
        if n_jobs > 1:
            seconds(("linear",), 200, n_jobs)  # start the process pool
    for pairs in [*args.rbf_pairs, args.pairs]:
        folds = fold_seconds(pairs, args.repeats)
        first = seconds(("linear",), pairs, args.jobs[0], forget_folds=True, repeats=args.repeats)
        nexts = ", ".join(f"{seconds(('linear',), pairs, j, repeats=args.repeats):5.2f} s ({j} job{'s' * (j > 1)})"
                          for j in args.jobs)
        print(f"linear, {2 * pairs:>6} rows: folds {folds:6.2f} s, first detector {first:6.2f} s, next detector {nexts}",
              flush=True)
    for pairs in args.rbf_pairs:
        seconds(("linear",), pairs, 1)  # the folds assigned and kept before the RBF timings
        print(f"rbf,    {2 * pairs:>6} rows: "
              + ", ".join(f"{seconds(('rbf',), pairs, j):6.1f} s ({j} job{'s' * (j > 1)})" for j in args.jobs),
              flush=True)


if __name__ == "__main__":
    main()
