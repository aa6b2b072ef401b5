"""Why DMS loses correlation, measured on TRAINING photos outside the denoiser's pool (the held-out
photos never seen): the plain model's score of ``clamp(x + N(0, sigma^2))`` passed through each
denoiser, its median over ``--draws`` draws (what DMS deploys) and one draw, against pseudo-MOS
(SROCC), with each denoiser's PSNR against the clean view. Every denoiser sees the same noise.

Denoisers: none (median smoothing alone); notebook 05's two DnCNNs (MSE-only, and fine-tuned with
the rank-preserving loss); with ``--bm3d``, BM3D at the known sigma (``bm3d`` package, Tampere
University, free for non-commercial use; ``pip install -e ".[diagnostics]"``): a classical
denoiser about as strong as the 17-layer DnCNN DMS-IQA's authors use (DnCNN's paper puts that about
0.6 dB above BM3D at sigma 15-50), so it tells whether a bigger denoiser than ours would recover the
correlation, without training one on 2 cores. BM3D takes about 4.5 s an image and draw here.

    python scripts/check_dms.py [params/default.yaml] [--images 64] [--draws 4] [--bm3d]

Needs notebook 05 rendered with those params (its models under outputs/<run>/models/).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

from iqalib import experiment, robust
from iqalib import robust_experiment as rx
from iqalib.denoiser import DnCNN
from iqalib.quality import QualityModel


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
    ap.add_argument("--bm3d", action="store_true", help="add BM3D at the known sigma (slow: ~4.5 s a draw)")
    args = ap.parse_args()
    run = experiment.open_run(args.params, progress=False)
    data, sigma = rx.robust_data(run), run.params.robust.smoothing.sigma
    # the photos sweep_nt.py ranks: training rows outside the pool NT and the rank fine-tuning see
    rest = data.train.drop(rx.pixel_pool(run, data).index)
    ranked = rest.drop(rest.sample(n=24, random_state=7).index).sample(n=args.images, random_state=8)
    x, mos = rx.view_tensor(run, list(ranked["path"])), ranked["mos"].to_numpy()
    plain = QualityModel.load(run.folder / rx.ROBUST_PLAIN_FOLDER, device="cpu")
    score = robust.score_fn(plain, run.classifier)
    denoisers = {"none": lambda noisy: noisy,
                 "DnCNN, MSE (notebook 05's ablation)": DnCNN.load(run.folder / rx.DENOISER_FOLDER).folded().eval(),
                 "DnCNN, MSE + rank (notebook 05's DMS)": DnCNN.load(run.folder / rx.DENOISER_RANK_FOLDER).folded().eval()}
    if args.bm3d:
        denoisers["BM3D at the known sigma"] = bm3d_denoiser(sigma)
    with torch.inference_mode():
        clean = score(x).numpy()
    print(f"{len(x)} training photos outside the pool, sigma {sigma:g}, {args.draws} draws; plain on clean views: "
          f"SROCC {stats.spearmanr(clean, mos).statistic:.3f}, score std {clean.std(ddof=1):.3f}", flush=True)
    generator = torch.Generator().manual_seed(run.params.seed)
    noises = [torch.randn(x.shape, generator=generator) * sigma for _ in range(args.draws)]
    for name, denoise in denoisers.items():
        start, scores, psnr = time.perf_counter(), [], []
        with torch.inference_mode():
            for noise in noises:
                out = denoise((x + noise).clamp(0, 1)).clamp(0, 1)
                psnr.append(10 * np.log10(1 / ((out - x) ** 2).flatten(1).mean(1).numpy()))
                scores.append(score(out).numpy())
        scores = np.stack(scores)
        median = np.sort(scores, axis=0)[(args.draws - 1) // 2]  # the lower middle one, as robust.Scorer takes
        one = np.mean([stats.spearmanr(s, mos).statistic for s in scores])
        print(f"{name}: SROCC median of {args.draws} {stats.spearmanr(median, mos).statistic:.3f}, one draw {one:.3f}; "
              f"PSNR {np.mean(psnr):.2f} dB; median score std {median.std(ddof=1):.3f}, mean shift from clean "
              f"{np.mean(median - clean):+.3f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
