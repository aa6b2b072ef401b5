"""Throughput of classify-only vs classify + quality on the same images (issue 3's benchmark).

    .venv/bin/python benchmarks/bench_quality.py [--images 64] [--batch-size 16] [--repeats 3] [--device auto]

Images: the embedded originals (foolbox ImageNet samples, decoded once, outside the timing).
Classify-only: ``features.predict(classifier, images)``. Classify + quality: the same call with the
quality model (one backbone pass feeds both heads). The quality model is an untrained-but-initialised ensemble of
the default size: its cost does not depend on the weights' values. Reports the best of
``--repeats`` runs (images/second) after one warm-up, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from iqalib import features, quality
from iqalib.classifiers import load_classifier
from iqalib.images import embedded_folder, open_image


def _best_rate(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy imports
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-models", type=int, default=10, help="heads in the quality ensemble (default run: 10)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    clf = load_classifier("efficientnet_lite0", args.device)
    photos = [open_image(p) for p in sorted(embedded_folder().glob("imagenet_*.jpg"))]
    images = [photos[i % len(photos)] for i in range(args.images)]

    model = quality.QualityModel(clf, n_models=args.n_models, epochs=1, device=args.device)
    dim = clf.stats_dim
    rng = np.random.default_rng(0)  # initialise the heads: a tiny fit on random features and scores
    model.fit(rng.normal(size=(8, dim)).astype(np.float32), rng.uniform(size=8), progress=False)

    classify = _best_rate(lambda: features.predict(clf, images, batch_size=args.batch_size), len(images), args.repeats)
    both = _best_rate(lambda: features.predict(clf, images, model, args.batch_size), len(images), args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {clf.device}")
    print(f"images: {len(images)} (foolbox ImageNet samples), batch {args.batch_size}, best of {args.repeats}")
    print(f"classify only            : {classify:7.1f} images/s")
    print(f"classify + quality ({args.n_models:2d} heads): {both:7.1f} images/s")
    print(f"ratio (classify+quality / classify): {both / classify:.2f}")


if __name__ == "__main__":
    main()
