"""Cost of the quality half's robustness machinery, in one run on the same images.

    .venv/bin/python benchmarks/bench_robust.py [--params params/default.yaml] [--images 16]
        [--repeats 3] [--device auto] [--json]

1. The stats-only backbone pass (``Classifier.forward_with_stats(stats_only=True)``: the pass
   stops after the last early layer the quality heads read) against the whole pass, forward and
   forward + backward (what score attacks and NT training run), images/second; each also with the
   backbone's weights in the contiguous layout instead of the classifier's channels-last one, and
   with its BatchNorms unfolded (the classifier folds them into the convolutions,
   ``folding.fold_batchnorm``); the same for the DMS denoiser (forward and forward + backward;
   folded: ``DnCNN.folded``, what scoring and attacks run).
   The early-layer statistics alone (``classifiers.tap_statistics``, on the classifier's own tap
   maps) against ``Tensor.mean``/``Tensor.std`` over (H, W), forward and forward + backward.
2. Seconds per image of each deployed quality score at the params' sizes: plain heads, NT (the
   same heads on the model's own copy of the early layers: what it adds to a classifier's pass is
   this whole time, where the plain heads share the classifier's pass), feature-space
   median smoothing (1 backbone pass + ``robust.feature_smoothing.n`` head passes) and input-space
   median smoothing behind the denoiser (``robust.smoothing.n`` denoiser + backbone passes).

Images: the embedded originals (foolbox ImageNet samples, decoded once, outside the timing). The
quality heads are fitted for a few epochs on random rows of the right width and the denoiser is
initialised, not trained: their cost does not depend on their weights. Best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from bench_pipeline import _timed  # benchmarks/ is on sys.path when run as a script
from iqalib import classifiers, experiment, quality, robust
from iqalib.classifiers import load_classifier
from iqalib.denoiser import DnCNN
from iqalib.images import embedded_folder, open_image


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    return _timed(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    p = experiment.open_run(args.params, progress=False).params
    clf = load_classifier(p.classifier, args.device)
    files = sorted(embedded_folder().glob("*.jpg"))[: args.images]
    x = clf.pixels([open_image(f) for f in files]) / 255.0
    n = len(x)
    z = clf.normalize(x * 255.0)

    def forward(net, stats_only: bool, backward: bool):
        def run():
            inp = z.clone().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                _, stats = net.forward_with_stats(inp, stats_only=stats_only)
                if backward:
                    stats.sum().backward()
        return run

    q, r = p.quality, p.robust
    trainable = DnCNN(r.denoiser.layers, r.denoiser.channels).eval().requires_grad_(False).to(clf.device)
    for m in trainable.modules():  # running statistics as a trained one has: folding is then not a no-op
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0)
    denoiser = trainable.folded()
    # The same classifier with its BatchNorms left in place (as it ran up to EMBEDDING_VERSION 2).
    unfolded = load_classifier(p.classifier, args.device, fold_batchnorm=False)

    def denoise(net, backward: bool):
        def run():
            inp = x.clone().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                out = net(inp)
                if backward:
                    out.sum().backward()
        return run

    def variant_rates(net, den, layout: torch.memory_format, prefix: str) -> dict[str, float]:
        net.backbone.to(memory_format=layout)
        den.to(memory_format=layout)
        passes = {**{f"{'stats_only' if s else 'full'}_{'fwd_bwd' if b else 'fwd'}": forward(net, s, b)
                     for s in (False, True) for b in (False, True)},
                  **{f"denoiser_{'fwd_bwd' if b else 'fwd'}": denoise(den, b) for b in (False, True)}}
        return {f"{prefix}{name}_img_per_s": n / _best_seconds(fn, args.repeats) for name, fn in passes.items()}

    # The classifier and denoiser as they run (folded, channels-last) against contiguous weights and
    # against BatchNorm unfolded, alternated twice so that none always runs on a cold cache; the
    # best of each.
    variants = ((clf, denoiser, torch.contiguous_format, "contiguous_weights_"),
                (unfolded, trainable, torch.channels_last, "unfolded_"), (clf, denoiser, torch.channels_last, ""))
    best: dict[str, float] = {}
    for _ in range(2):
        for net, den, layout, prefix in variants:
            for k, v in variant_rates(net, den, layout, prefix).items():
                best[k] = max(best.get(k, 0.0), v)
    rates = {k: v for k, v in best.items() if not k.startswith(("contiguous_weights_", "unfolded_"))}
    others = {k: v for k, v in best.items() if k.startswith(("contiguous_weights_", "unfolded_"))}
    # The early-layer statistics on the classifier's own tap maps: ours against Tensor.std over (H, W).
    maps: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: maps.append(out.detach())) for m in clf.stat_taps()]
    with torch.no_grad():
        clf.forward_with_stats(z, stats_only=True)
    for h in handles:
        h.remove()

    def by_std(fs):
        return torch.cat([t for f in fs for t in (f.mean((2, 3)), torch.log(f.std((2, 3), correction=0) + 1e-3))], 1)

    def statistics(fn, backward: bool):
        def run():
            fs = [m.clone().requires_grad_(backward) for m in maps]
            with torch.set_grad_enabled(backward):
                out = fn(fs)
                if backward:
                    out.sum().backward()
        return run

    for name, fn in (("tap_statistics", classifiers.tap_statistics), ("tensor_std", by_std)):
        for backward in (False, True):
            rates[f"{name}_{'fwd_bwd' if backward else 'fwd'}_img_per_s"] = \
                n / _best_seconds(statistics(fn, backward), args.repeats)
    rng = np.random.default_rng(0)
    model = quality.QualityModel(clf, n_models=r.n_models, hidden=q.hidden, bins=q.bins, epochs=1, seed=0,
                                 features=q.features, device=args.device).fit(
        rng.normal(size=(64, clf.stats_dim if q.features == "multilevel" else clf.embedding_dim)).astype(np.float32),
        rng.uniform(0, 1, 64), progress=False)
    nt = model.copy()
    nt.attach_own_layers(clf).requires_grad_(False)  # NT's own copy of the early layers: its cost, not its weights
    scorers = {"plain": robust.Scorer("plain", model, clf), "nt": robust.Scorer("nt", nt, clf),
               "fs": robust.Scorer("fs", model, clf, "feature", r.feature_smoothing.sigma, r.feature_smoothing.n),
               "dms": robust.Scorer("dms", model, clf, "input", r.smoothing.sigma, r.smoothing.n, denoiser)}
    seconds = {f"{name}_seconds_per_image": _best_seconds(lambda s=s: s.scores(x), max(1, args.repeats - 1)) / n
               for name, s in scorers.items()}
    result = {**{k: round(v, 2) for k, v in {**rates, **others}.items()}, **{k: round(v, 4) for k, v in seconds.items()},
              "stats_only_fwd_speedup": round(rates["stats_only_fwd_img_per_s"] / rates["full_fwd_img_per_s"], 2),
              "stats_only_fwd_bwd_speedup": round(rates["stats_only_fwd_bwd_img_per_s"] / rates["full_fwd_bwd_img_per_s"], 2),
              **{f"channels_last_speedup_{k.removesuffix('_img_per_s')}":
                 round(v / others[f"contiguous_weights_{k}"], 2) for k, v in rates.items()
                 if f"contiguous_weights_{k}" in others},
              **{f"batchnorm_folded_speedup_{k.removesuffix('_img_per_s')}":
                 round(v / others[f"unfolded_{k}"], 2) for k, v in rates.items() if f"unfolded_{k}" in others},
              **{f"tap_statistics_speedup_{d}": round(rates[f"tap_statistics_{d}_img_per_s"]
                                                     / rates[f"tensor_std_{d}_img_per_s"], 2) for d in ("fwd", "fwd_bwd")},
              "fs_vs_dms_time": round(seconds["fs_seconds_per_image"] / seconds["dms_seconds_per_image"], 4),
              "images": n, "threads": torch.get_num_threads(), "device": str(clf.device),
              "machine": platform.machine(), "smoothing_n": r.smoothing.n, "feature_smoothing_n": r.feature_smoothing.n}
    for k, v in result.items():
        print(f"{k:34s} {v}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
