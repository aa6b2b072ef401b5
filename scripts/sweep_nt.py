"""NT's settings against its two goals, measured on TRAINING photos only: for each (λ, head lr, layer
lr, steps) in the grid, NT is trained from notebook 05's saved plain model on its pool and scored
on training photos outside the pool (24 attacked by ``check_nt.score_changes``' I-FGSM at 4/255, 64 for SROCC),
never on the held-out photos. Prints the reduction of the mean score change against plain and the
SROCC of each (also per direction). About 65 s per 120 steps of 8 images on 2 cores in the authors' form,
85-90 s in the default's (two-sided, around 4/255).

    python scripts/sweep_nt.py [params/default.yaml] [--grid LAM:LR:LAYER_LR:STEPS ...] [--seeds S ...]
        [--difference forward|two_sided] [--around-255 R] [--batchnorm frozen|train] [--h H ...] [--pixel-pool N ...]
        [--heads plain|fresh] [--slopes]

``--slopes`` prints, instead of training, what NT's finite difference sees on the plain model and on
the run's saved NT model: on 32 images of NT's pool, ||grad f||_1 and the forward difference
(f(x + h sign(grad)) - f(x)) / h at several h, both in the network's input space as
``gradnorm.train_nt`` takes them (seconds).

Needs notebook 05 rendered with those params (its plain model under outputs/<run>/models/).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from iqalib import experiment, gradnorm, robust
from iqalib import robust_experiment as rx
from iqalib.quality import QualityModel

sys.path.insert(0, str(Path(__file__).parent))
from check_nt import score_changes  # noqa: E402

# (lam, head lr, layer lr, steps): the authors' lambda and 10:1 ratio first, then stronger settings
GRID = [(1e-3, 1e-4, 1e-5, 60), (1e-3, 1e-4, 1e-4, 60), (1e-2, 1e-4, 1e-5, 60), (1e-2, 1e-4, 1e-4, 60),
        (1e-1, 1e-4, 1e-4, 60), (1e-2, 1e-3, 1e-4, 60), (1e-2, 1e-3, 1e-4, 120), (1e-3, 1e-3, 1e-4, 120),
        (1e-3, 1e-4, 1e-5, 240), (1e-1, 1e-4, 1e-5, 120)]


def scored_photos(run: Any, data: rx.RobustData, n_ranked: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows the sweeps score, outside NT's pool (the params' ``pixel_pool``): 24 to attack
    and ``n_ranked`` for SROCC, seeded draws (``scripts/check_dms.py`` ranks the same ones)."""
    rest = data.train.drop(rx.pixel_pool(run, data).index)
    attacked = rest.sample(n=24, random_state=7)
    return attacked, rest.drop(attacked.index).sample(n=n_ranked, random_state=8)


SLOPE_STEPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3.1e-2)  # network-input units; 1e-2 is the authors' h


def print_slopes(model: QualityModel, classifier: Any, x: torch.Tensor) -> None:
    """The first-order slope NT's penalty estimates, against its finite-difference estimate at each of
    ``SLOPE_STEPS`` (``gradnorm.sign_step_rises``): where they part, the score is not linear over the
    step and the penalty weighs the rise over it rather than the gradient."""
    unit = gradnorm.input_unit(classifier)
    norms, rises = gradnorm.sign_step_rises(robust.score_fn(model, classifier), x, SLOPE_STEPS, unit)
    print(f"||grad f||_1 in the network's input space: {norms.mean():.2f} (mean over {len(x)} images of NT's pool)")
    for h, rise in zip(SLOPE_STEPS, rises.mean(0)):
        print(f"h {h:g} ({h * float(unit.mean()) * 255:.2f}/255 in pixels): forward difference {rise / h:.2f}, "
              f"score rise {rise:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", nargs="?", default="params/default.yaml")
    parser.add_argument("--grid", nargs="+", metavar="LAM:LR:LAYER_LR:STEPS",
                        help="settings to measure instead of GRID")
    parser.add_argument("--seeds", nargs="+", type=int, help="NT's training seeds (default: the run's seed)")
    parser.add_argument("--difference", choices=("forward", "two_sided"),
                        help="NT's finite difference: the authors' forward one, or also the backward one (ours); "
                             "default: params' robust.nt.difference")
    parser.add_argument("--around-255", type=float, dest="around_255",
                        help="take the difference at a uniform random point within this l-inf radius (in /255) "
                             "of each image (ours; 0: at the image, as the authors); default: params' "
                             "robust.nt.around_255")
    parser.add_argument("--batchnorm", choices=("frozen", "train"), default="frozen",
                        help="the copy's BatchNorm: folded and frozen (ours), or trained on batch statistics "
                             "as the authors train HyperIQA (from an unfolded copy of the classifier)")
    parser.add_argument("--heads", choices=("plain", "fresh"), default="plain",
                        help="NT fine-tunes the plain model's trained heads (ours), or draws them afresh and "
                             "trains them with the layers under the penalty from the start, as the authors train")
    parser.add_argument("--h", nargs="+", type=float, dest="h_values", metavar="H",
                        help="NT's finite-difference steps in the network's input space (default: params, the "
                             "authors' 1e-2: about 1.3/255 in pixels through EfficientNet-Lite's (x - 127) / 128, "
                             "where 4/255 is 0.031; the authors' own 1e-2, behind ResNet-50's ImageNet "
                             "normalisation (std about 0.226), is 0.58/255 in pixels: 4.5e-3 here)")
    parser.add_argument("--pixel-pool", nargs="+", type=int, dest="pool_sizes", metavar="N",
                        help="NT's training pools of N training images each (default: params' pixel_pool). The "
                             "scored photos stay those outside the params' pool; each pool is a fresh seeded draw "
                             "from the other training rows (not the params' pool grown), so no pool holds a "
                             "scored image")
    parser.add_argument("--slopes", action="store_true",
                        help="print the plain and saved NT models' gradient l1 norm and NT's finite difference at several h, then stop")
    args = parser.parse_args()
    grid = [tuple(float(v) if i < 3 else int(v) for i, v in enumerate(g.split(":"))) for g in args.grid] \
        if args.grid else GRID
    run = experiment.open_run(args.params, progress=False)
    p, data = run.params, rx.robust_data(run)
    plain = QualityModel.load(run.folder / rx.ROBUST_PLAIN_FOLDER, device="cpu")
    pool = rx.pixel_pool(run, data)
    if args.slopes:
        x = rx.view_tensor(run, list(pool.sample(n=32, random_state=0)["path"]))
        for name, folder in (("plain", rx.ROBUST_PLAIN_FOLDER), ("NT (the run's)", rx.ROBUST_NT_FOLDER)):
            print(f"{name}:")
            print_slopes(plain if name == "plain" else QualityModel.load(run.folder / folder, device="cpu"),
                         run.classifier, x)
        return
    difference = args.difference or p.robust.nt.difference
    around_255 = p.robust.nt.around_255 if args.around_255 is None else args.around_255
    attacked, ranked = scored_photos(run, data)
    unscored = data.train.drop(attacked.index).drop(ranked.index)
    if args.pool_sizes and max(args.pool_sizes) > len(unscored):
        parser.error(f"--pixel-pool: at most {len(unscored)} training rows lie outside the scored photos")
    pools = {f"params' {len(pool)}": pool} if not args.pool_sizes else {
        f"drawn {n}": unscored.sample(n=n, random_state=p.seed) for n in args.pool_sizes}
    source = run.classifier if args.batchnorm == "frozen" else run.fresh_classifier(fold_batchnorm=False)
    x, xs = rx.view_tensor(run, list(attacked["path"])), rx.view_tensor(run, list(ranked["path"]))

    def measure(model: QualityModel) -> tuple[np.ndarray, float, float]:
        """(mean |Δs| up and down averaged, up, down), clean SROCC, and the spread (std) of the clean
        scores on the ranked photos: a score squeezed towards one value moves less for that alone."""
        score = robust.score_fn(model, run.classifier)
        with torch.no_grad():
            clean = score(xs).numpy()
        up, down = (c.mean() for c in score_changes(score, x))
        return (np.array([(up + down) / 2, up, down]), float(stats.spearmanr(clean, ranked["mos"]).statistic),
                float(clean.std()))

    base, base_srocc, base_spread = measure(plain)
    print(f"plain: mean |Δs| {base[0]:.4f} (up {base[1]:.4f}, down {base[2]:.4f}), SROCC {base_srocc:.3f}, "
          f"score std {base_spread:.3f}", flush=True)
    for n, rows in pools.items():
        views = rx.view_tensor(run, list(rows["path"]))  # one pool's pixels in memory at a time
        for (lam, lr, layer_lr, steps), h, seed in itertools.product(grid, args.h_values or [p.robust.nt.h],
                                                                      args.seeds or [p.seed]):
            start = time.perf_counter()
            nt, _ = gradnorm.train_nt(plain, source, views, rows["mos"].to_numpy(), lam=lam, h=h, steps=steps,
                                      batch_size=p.robust.nt.batch_size, lr=lr, layer_lr=layer_lr, seed=seed,
                                      progress=False, difference=difference, batchnorm=args.batchnorm,
                                      heads=args.heads, around=around_255 / 255.0)
            change, srocc, spread = measure(nt)
            cut = 1 - change / base
            print(f"pool {n} {difference} around {around_255:g}/255 batchnorm {args.batchnorm} heads {args.heads} lam {lam:g} h {h:g} lr {lr:g} layer_lr {layer_lr:g} "
                  f"steps {steps} seed {seed}: {cut[0]:.1%} less change (up {cut[1]:.1%}, down {cut[2]:.1%}), "
                  f"SROCC {srocc:.3f}, score std {spread:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
