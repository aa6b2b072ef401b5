"""Why DMS loses correlation, measured on TRAINING photos outside the rank fine-tuning's pool (the
held-out photos never seen; the DnCNNs' MSE training saw their clean reference photos): the plain
model's score of ``clamp(x + N(0, sigma^2))`` passed through each denoiser, its median over
``--draws`` draws (what DMS deploys) and one draw, against pseudo-MOS (SROCC), with each
denoiser's PSNR against the clean view. Every denoiser sees the same noise.

Denoisers: none (median smoothing alone); notebook 05's two DnCNNs (MSE-only, and fine-tuned with
the rank-preserving loss); with ``--bm3d``, BM3D at the known sigma (``bm3d`` package, Tampere
University, free for non-commercial use; ``pip install -e ".[diagnostics]"``): a classical
denoiser about as strong as the 17-layer DnCNN DMS-IQA's authors use (DnCNN's paper puts that about
0.6 dB above BM3D at sigma 15-50), so it tells whether a bigger denoiser than ours would recover the
correlation, without training one on 2 cores. BM3D takes about 4.5 s an image and draw here.

With ``--sigma``, the same at other smoothing noises: for each, no denoiser and a DnCNN trained with
MSE at that sigma as notebook 05 trains its ablation (``robust.denoiser``, the same photos and seed;
about a minute each), and BM3D with ``--bm3d``. The certified radius of median smoothing scales with
sigma, so this is the price in correlation of each radius.

    python scripts/check_dms.py [params/default.yaml] [--images 64] [--draws 4] [--bm3d] [--sigma S ...]

Needs notebook 05 rendered with those params (its models under outputs/<run>/models/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from iqalib import experiment, robust
from iqalib import robust_experiment as rx
from iqalib.denoiser import DnCNN, train_denoiser
from iqalib.quality import QualityModel

sys.path.insert(0, str(Path(__file__).parent))
from sweep_nt import scored_photos  # noqa: E402


def bm3d_denoiser(sigma: float):
    try:
        import bm3d
    except ImportError as error:
        raise SystemExit('--bm3d needs the bm3d package: pip install -e ".[diagnostics]"') from error

    def denoise(noisy: torch.Tensor) -> torch.Tensor:
        out = [bm3d.bm3d_rgb(image.permute(1, 2, 0).numpy().astype(np.float64), sigma) for image in noisy]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()

    return denoise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", nargs="?", default="params/default.yaml")
    ap.add_argument("--images", type=int, default=64, help="training photos scored (seeded sample)")
    ap.add_argument("--draws", type=int, default=4, help="noise draws per photo (notebook 05 deploys 16)")
    ap.add_argument("--bm3d", action="store_true", help="add BM3D at the known sigma (slow: ~4.5 s an image and draw)")
    ap.add_argument("--sigma", nargs="+", type=float, help="other smoothing noises, each with a DnCNN trained "
                                                            "with MSE at it (default: notebook 05's sigma and models)")
    args = ap.parse_args()
    run = experiment.open_run(args.params, progress=False)
    data = rx.robust_data(run)
    _, ranked = scored_photos(run, data, args.images)  # sweep_nt's: outside the pool NT and the rank fine-tuning see
    x, mos = rx.view_tensor(run, list(ranked["path"])), ranked["mos"].to_numpy()
    plain = QualityModel.load(run.folder / rx.ROBUST_PLAIN_FOLDER, device="cpu")
    score = robust.score_fn(plain, run.classifier)
    with torch.inference_mode():
        clean = score(x).numpy()
    print(f"{len(x)} training photos outside the pool, {args.draws} draws; plain on clean views: "
          f"SROCC {stats.spearmanr(clean, mos).statistic:.3f}, score std {clean.std(ddof=1):.3f}", flush=True)
    d = run.params.robust.denoiser
    photos = rx.denoiser_photos(data) if args.sigma else []  # what robust_denoiser trains on
    for sigma in args.sigma or [run.params.robust.smoothing.sigma]:
        denoisers = {"none": lambda noisy: noisy}
        if args.sigma:
            trained, _ = train_denoiser(photos, sigma, d.layers, d.channels, d.steps, d.batch_size, d.patch, d.lr,
                                        seed=run.params.seed, progress=False)
            denoisers[f"DnCNN, MSE, trained at sigma {sigma:g}"] = trained.folded()
        else:
            denoisers["DnCNN, MSE (notebook 05's ablation)"] = DnCNN.load(run.folder / rx.DENOISER_FOLDER).folded()
            denoisers["DnCNN, MSE + rank (notebook 05's DMS)"] = DnCNN.load(run.folder / rx.DENOISER_RANK_FOLDER).folded()
        if args.bm3d:
            denoisers["BM3D at the known sigma"] = bm3d_denoiser(sigma)
        compare(score, x, mos, clean, sigma, denoisers, args.draws, run.params.seed, ranked["distortion"].to_numpy())


def compare(score, x: torch.Tensor, mos: np.ndarray, clean: np.ndarray, sigma: float, denoisers: dict,
            draws: int, seed: int, distortion: np.ndarray) -> None:
    """Print each denoiser's SROCC (median of ``draws`` and one draw), PSNR, score spread and shift
    from the clean score (also per distortion type), every denoiser on the same noise."""
    generator = torch.Generator().manual_seed(seed)
    noises = [torch.randn(x.shape, generator=generator) * sigma for _ in range(draws)]
    for name, denoise in denoisers.items():
        start, scores, psnr = time.perf_counter(), [], []
        with torch.inference_mode():
            for noise in noises:
                out = denoise((x + noise).clamp(0, 1)).clamp(0, 1)
                psnr.append(10 * np.log10(1 / ((out - x) ** 2).flatten(1).mean(1).numpy()))
                scores.append(score(out).numpy())
        scores = np.stack(scores)
        median = np.sort(scores, axis=0)[(draws - 1) // 2]  # the lower middle one, as robust.Scorer takes
        one = np.mean([stats.spearmanr(s, mos).statistic for s in scores])
        print(f"sigma {sigma:g}, {name}: SROCC median of {draws} {stats.spearmanr(median, mos).statistic:.3f}, one draw {one:.3f}; "
              f"PSNR {np.mean(psnr):.2f} dB; median score std {median.std(ddof=1):.3f}, mean shift from clean "
              f"{np.mean(median - clean):+.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        shifts = {d: f"{np.mean((median - clean)[distortion == d]):+.3f}" for d in sorted(set(distortion))}
        print(f"    mean shift by distortion: {shifts}", flush=True)


if __name__ == "__main__":
    main()
