"""Throughput of classify-only vs classify + quality on the same images, in the same run.

    .venv/bin/python benchmarks/bench_quality.py [--params params/default.yaml] [--images 64]
        [--batch-size 32] [--repeats 3] [--device auto]

Images: the embedded originals (foolbox ImageNet samples, decoded once, outside the timing).
Classify-only: ``features.predict(classifier, images)``. Classify + quality: the same call with the
quality model (one backbone pass feeds both heads). The quality model is an initialised ensemble of
the size the params file gives (``quality.n_models``, ``quality.hidden``, ``quality.bins``; the
embedded default: 10 heads of 512, ``paper.yaml``: 10 of 2048): its cost does not depend on the
weights' values. The heads run as one stacked computation; ``--looped`` adds the one-head-at-a-time
loop for comparison. Reports the best of ``--repeats`` rounds (images/second) after one warm-up;
each round times every variant once, in turn.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from iqalib import experiment, features, quality
from iqalib.classifiers import load_classifier
from iqalib.images import embedded_folder, open_image


def _best_rates(fns: dict, n_images: int, repeats: int) -> dict[str, float]:
    """Images/second of each callable, best of ``repeats`` rounds. Each round times every callable
    once, in turn, so a slow phase of the machine falls on all of them rather than on one."""
    for fn in fns.values():
        fn()  # warm-up: allocator, kernels, lazy imports
    best = dict.fromkeys(fns, float("inf"))
    for round_ in range(repeats):
        for name in (list(fns) if round_ % 2 == 0 else list(fns)[::-1]):  # order effects cancel
            fn = fns[name]
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n_images / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml", help="the quality heads' size comes from here")
    parser.add_argument("--hidden", type=int, default=None, help="override quality.hidden")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--looped", action="store_true", help="also time the heads one at a time")
    args = parser.parse_args()
    q = experiment.open_run(args.params, progress=False).params.quality
    hidden = args.hidden or q.hidden

    clf = load_classifier("efficientnet_lite0", args.device)
    photos = [open_image(p) for p in sorted(embedded_folder().glob("imagenet_*.jpg"))]
    images = [photos[i % len(photos)] for i in range(args.images)]

    model = quality.QualityModel(clf, n_models=q.n_models, hidden=hidden, bins=q.bins, epochs=1, device=args.device)
    dim = clf.stats_dim
    rng = np.random.default_rng(0)  # initialise the heads: a tiny fit on random features and scores
    model.fit(rng.normal(size=(8, dim)).astype(np.float32), rng.uniform(size=8), progress=False)

    def one_at_a_time(x):
        rows = torch.from_numpy(np.asarray(x, np.float32)).to(model.device)
        with torch.inference_mode():
            return np.stack([head(rows).cpu().numpy() for head in model.heads])

    def looped_predict():
        stacked = model.member_scores
        model.member_scores = one_at_a_time
        try:
            return features.predict(clf, images, model, args.batch_size)
        finally:
            model.member_scores = stacked

    runs = {"classify": lambda: features.predict(clf, images, batch_size=args.batch_size),
            "both": lambda: features.predict(clf, images, model, args.batch_size)}
    if args.looped:
        runs["looped"] = looped_predict
    rates = _best_rates(runs, len(images), args.repeats)
    classify, both, looped = rates["classify"], rates["both"], rates.get("looped")
    # The heads alone on one batch of feature rows: what quality adds to a pass, without the
    # backbone's run-to-run spread (a few per cent on this machine) around it.
    rows = rng.normal(size=(args.batch_size, model.feature_dim)).astype(np.float32)
    heads = {"stacked": lambda: model.member_scores(rows), "one by one": lambda: one_at_a_time(rows)}
    heads_ms = {k: 1e3 / r for k, r in _best_rates({k: (lambda f=f: [f() for _ in range(20)]) for k, f in heads.items()},
                                                    20 * args.batch_size, args.repeats).items()}

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {clf.device}")
    print(f"images: {len(images)} (foolbox ImageNet samples), batch {args.batch_size}, best of {args.repeats}")
    print(f"quality heads: {q.n_models} x ({model.feature_dim} -> {hidden} -> {hidden} -> {q.bins}), from {args.params}")
    print(f"classify only                 : {classify:7.1f} images/s")
    print(f"classify + quality (stacked)  : {both:7.1f} images/s, ratio {both / classify:.2f}")
    if looped is not None:
        print(f"classify + quality (one by one): {looped:7.1f} images/s, ratio {looped / classify:.2f}")
    print(f"quality heads alone, ms/image  : stacked {heads_ms['stacked']:.3f}, one by one {heads_ms['one by one']:.3f} "
          f"(the whole classify pass: {1e3 / classify:.1f})")


if __name__ == "__main__":
    main()
