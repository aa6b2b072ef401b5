"""Does a UAP computed on a small pool transfer to held-out originals? (embedded default)

    .venv/bin/python benchmarks/uap_pool_transfer.py [--views 6] [--delta 0.2] [--passes 3]

Pool: the embedded IQA reference photos, ``--views`` deterministic views each (as
``attacks.uap.pool: iqa_references`` builds it). Held out: the default run's originals. Prints the
pool fooling rate per pass, the held-out fooling rate (``attacks.fooling_rate``, the 8-bit images),
and, as a control, the held-out fooling rate of random ±xi sign noise of the same ℓ∞ size.
Minutes on 2 CPU cores (one DeepFool per pool image and pass).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from iqalib import attacks, experiment, images
from iqalib.embedded_iqa import EMBEDDED_PHOTOS, embedded_photo_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--delta", type=float, default=0.2)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--xi", type=float, default=10.0)
    args = parser.parse_args()

    run = experiment.open_run(args.params, progress=False)
    P, clf = run.params, run.classifier
    pool = [images.apply_view(images.open_image(embedded_photo_path(name)), view)
            for name in EMBEDDED_PHOTOS for view in images.VIEWS[: args.views]]
    held_out = [images.load(r) for r in experiment.originals(run).records]

    start = time.perf_counter()
    uap = attacks.UniversalPerturbation(clf, xi=args.xi, delta=args.delta, max_passes=args.passes, seed=P.seed,
                                        progress=False)
    v = uap.fit(pool)
    noise = np.random.default_rng(P.seed).choice([-args.xi, args.xi], size=v.shape).astype(np.float32)
    print(f"pool {len(pool)} images, fooling rate per pass {[round(r, 3) for r in uap.history_]}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"held-out fooling rate: UAP {attacks.fooling_rate(clf, held_out, v):.3f}, "
          f"random ±{args.xi:g} sign noise {attacks.fooling_rate(clf, held_out, noise):.3f} ({len(held_out)} images)")


if __name__ == "__main__":
    main()
