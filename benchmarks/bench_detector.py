"""Training time of the fit-for-task detector at the paper's scale, linear (the default) vs RBF.

    .venv/bin/python benchmarks/bench_detector.py [--pairs 38000] [--rbf-pairs 2000 4000 8000]

Rows: ``--pairs`` originals and as many adversarial twins (the paper's ~38,000 training pairs per
split give ~76,000 rows), six features drawn like ours (five sorted softmax values, one quality);
groups by pair, as notebook 04 trains. Times ``FitForTaskDetector.fit`` (grouped 5-fold grid over
C) plus ``set_operating_point`` (5 out-of-fold refits) — everything one split costs. RBF is timed on
smaller sizes only (``--rbf-pairs``), to show its growth; the numbers are wall seconds on this
machine, one run each.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from iqalib.detector import FitForTaskDetector


def synthetic(pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], pairs)
    logits = rng.normal(0, 1, (2 * pairs, 20)) + np.where(y[:, None] == 0, 2.0, 0.8) * (np.arange(20) == 0)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top5 = -np.sort(-proba, axis=1)[:, :5]
    quality = rng.normal(np.where(y == 0, 0.45, 0.40), 0.1)
    return np.column_stack([top5, quality]), y, np.tile(np.arange(pairs), 2)


def seconds(kernels: tuple[str, ...], pairs: int) -> float:
    X, y, groups = synthetic(pairs)
    start = time.perf_counter()
    det = FitForTaskDetector(kernels=kernels, random_state=0).fit(X, y, groups=groups)
    det.set_operating_point(X, y, groups, 0.0857)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=38_000)
    ap.add_argument("--rbf-pairs", type=int, nargs="*", default=[2_000, 4_000])
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)")
    for pairs in [*args.rbf_pairs, args.pairs]:
        print(f"linear, {2 * pairs:>6} rows: {seconds(('linear',), pairs):7.1f} s")
    for pairs in args.rbf_pairs:
        print(f"rbf,    {2 * pairs:>6} rows: {seconds(('rbf',), pairs):7.1f} s")


if __name__ == "__main__":
    main()
