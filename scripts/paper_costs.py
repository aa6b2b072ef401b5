"""What ``params/paper.yaml`` costs, per notebook and stage: counts from the file times unit costs
measured here (``make rehearse`` prints it; also on its own).

    .venv/bin/python scripts/paper_costs.py [--device cpu|cuda] [--amp] [--json FILE]

Unit costs are measured on this machine's device for the paper's networks at 224 px (ResNet-152,
VGG16, AlexNet, the 17-layer DnCNN): seconds per image forward and forward + backward (to the
input, as attacks run), a quality head's training step per row, the detector's fold assignment and
SVM fits (on as many processes as the machine has cores, ``detector.n_jobs``' default), and the
CPU side (JPEG decode + view, a distortion in the view). Counts follow paper.yaml (e.g. Fool_GD
n x steps forward + backward passes). Two columns: this machine, and one H100-class GPU with 16
cores, where the GPU's time is MEASURED when ``--device cuda`` runs on one, else ASSUMED from the
networks' multiply-adds at 30 % of an H100's 989 TFLOPS dense bf16 (no GPU was lent to measure;
a quality head's step is taken as launch-bound, 1 ms);
the CPU side runs on 15 worker cores beside it, and the larger of the two counts for a pass. A
projection, not a measurement of the whole run: it says which stage would dominate.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iqalib.params import cpus_available  # noqa: E402  (after the path; imports no torch)

# Official sizes (images + references) of the IQA sets paper.yaml reads.
IQA_IMAGES = {"tid2013": 3000 + 25, "csiq": 866 + 30, "live": 779 + 29}
# Multiply-adds per 224 px image (torchvision's model cards; DnCNN: 15 3x3 64->64 convolutions and
# two 3->64 / 64->3 ones over 224 x 224 pixels).
GMACS = {"resnet152": 11.5, "vgg16": 15.5, "alexnet": 0.71, "dncnn17": 27.9}
H100_ASSUMED = 0.30 * 989e12  # FLOP/s: 30 % of dense bf16 peak
IMAGENET_CLASSES = 1000
WORKER_CORES = 15
MACHINE_CORES = WORKER_CORES + 1  # the GPU machine's cores: the SVM fits use them all
# One RBF detector of the kernel ablation: its grid (16 settings x 5 folds; the "rbf or linear"
# choice adds 4 linear settings, milliseconds each), the refit of the best, 5 out-of-fold fits.
RBF_GRID_FITS, RBF_REFITS, RBF_OOF_FITS = 16 * 5, 1, 5
# What each measured unit is per (printed beside it).
UNIT_OF = {"head_row": "s a row and epoch", "fold_row": "s a row", "linear_row": "s a row and detector",
           "rbf_detector": "s a detector at rbf_rows rows"}
DEEPFOOL_STEPS = 3  # DeepFool steps per pool image and pass (Moosavi-Dezfooli et al. report 2-3 on ImageNet)


def measure_networks(device: str, amp: bool, batch: int) -> dict[str, float]:
    """Seconds per image: ``<net>_fwd`` and ``<net>_bwd`` (forward + backward to the input)."""
    import torch

    from iqalib.classifiers import torchvision_architecture
    from iqalib.denoiser import DnCNN

    nets = {name: torchvision_architecture(name) for name in ("resnet152", "vgg16", "alexnet")}
    nets["dncnn17"] = DnCNN(layers=17, channels=64)
    out = {}
    for name, net in nets.items():
        net = net.eval().to(device).requires_grad_(False)
        x = torch.rand(batch, 3, 224, 224, device=device)

        def run(backward: bool) -> float:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
                if backward:
                    z = x.clone().requires_grad_(True)
                    net(z).float().sum().backward()
                else:
                    with torch.inference_mode():
                        net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            return 0.0

        for backward, key in ((False, "fwd"), (True, "bwd")):
            run(backward)  # warm-up
            start = time.perf_counter()
            repeats = 3 if device == "cuda" else 1
            for _ in range(repeats):
                run(backward)
            out[f"{name}_{key}"] = (time.perf_counter() - start) / (repeats * batch)
        del net
    return out


STEP_OVERHEAD = 1e-3  # s per optimiser step of a small head on a GPU (kernel launches, not FLOPs), assumed


def assumed_gpu(units: dict[str, float], hidden: int, batch: int) -> dict[str, float]:
    """Per-image seconds on an H100 from multiply-adds (forward 2 FLOP per MAC, backward twice that);
    a quality head's step is launch-bound (``STEP_OVERHEAD`` per batch of ``batch`` rows). The SVM
    fits and the CPU side keep this machine's measured costs per core."""
    out = dict(units)
    for name, gmacs in GMACS.items():
        out[f"{name}_fwd"] = 2 * gmacs * 1e9 / H100_ASSUMED
        out[f"{name}_bwd"] = 3 * out[f"{name}_fwd"]
    head_macs = 2048 * hidden + hidden * hidden + hidden * 70
    out["head_row"] = max(6 * head_macs / H100_ASSUMED, STEP_OVERHEAD / batch)
    return out


def measure_cpu_side() -> dict[str, float]:
    """Seconds per image on one core: JPEG decode + view of a 500x375 photo; a distortion (mean of
    the four types at five levels) in the 224 view."""
    from PIL import Image

    from iqalib import distortions, images

    photo = images.open_image(str(images.embedded_folder() / "imagenet_00_243.jpg")).resize((500, 375))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    start = time.perf_counter()
    for _ in range(20):
        view = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR)
        np.asarray(view)
    decode = (time.perf_counter() - start) / 20
    start, n = time.perf_counter(), 0
    for name in ("gaussian_blur", "white_noise", "jpeg", "jpeg2000"):
        for level in (1, 2, 3, 4, 5):
            distortions.distort(view, name, level)
            n += 1
    return {"decode": decode, "distort": (time.perf_counter() - start) / n}


def measure_fits(hidden: int, rbf_rows: int) -> dict[str, float]:
    """A quality head's training per row and epoch (2048-d pooled features, ``hidden`` units), the
    grouped fold assignment per row (``fold_row``: once per distinct training rows, shared by the
    detectors trained on them), the linear detector's fits once the folds are assigned (grid +
    out-of-fold, one process) per row — at 4,000 rows, where a row costs more than at the paper's
    tens of thousands (benchmarks/bench_detector.py), so the linear stage is an upper bound — and
    one RBF detector at ``rbf_rows`` rows (its whole grid,
    refit and out-of-fold fits, one process: ``rbf_detector``; libsvm's time depends on C and
    gamma, so one fit of one setting would not stand for the grid)."""
    import pandas as pd

    from iqalib.detector import FitForTaskDetector, grouped_folds
    from iqalib.feature_table import FEATURES
    from iqalib.quality import QualityModel

    rng = np.random.default_rng(0)
    x, mos = rng.normal(size=(2000, 2048)).astype(np.float32), rng.uniform(size=2000)
    start = time.perf_counter()
    QualityModel(n_models=1, hidden=hidden, epochs=1, batch_size=64, features="pooled", device="cpu").fit(x, mos, progress=False)
    head = (time.perf_counter() - start) / 2000

    def table(n: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        X = pd.DataFrame(rng.uniform(size=(n, len(FEATURES))), columns=list(FEATURES))
        y = (X["quality"] + rng.normal(0, 0.3, n) < 0.5).astype(int).to_numpy()
        return X, y, np.repeat(np.arange(n // 2), 2)

    X, y, g = table(4000)
    start = time.perf_counter()
    grouped_folds(y, g, 5, 0)
    folds = (time.perf_counter() - start) / 4000
    start = time.perf_counter()
    det = FitForTaskDetector().fit(X, y, groups=g)
    det.cross_decision_function(X, y, g)
    linear = (time.perf_counter() - start) / 4000
    X, y, g = table(rbf_rows)
    start = time.perf_counter()
    det = FitForTaskDetector(kernels=("rbf",)).fit(X, y, groups=g)
    det.cross_decision_function(X, y, g)
    rbf = time.perf_counter() - start
    return {"head_row": head, "fold_row": folds, "linear_row": linear, "rbf_detector": rbf}


def rbf_share(cores: int) -> float:
    """The share of one RBF detector's time left on ``cores`` processes: its fits in sequence (the
    grid's, the refit, the out-of-fold ones) over all of them, taking the fits as equally long —
    a best case: large-C fits and the refit on all rows take longer than the rest."""
    waves = -(-RBF_GRID_FITS // cores) + RBF_REFITS + -(-RBF_OOF_FITS // cores)
    return waves / (RBF_GRID_FITS + RBF_REFITS + RBF_OOF_FITS)


def stages(p, u: dict[str, float], cores: int) -> list[dict]:
    """One row per stage: notebook, stage, the count's arithmetic, device seconds, CPU-side seconds
    (``cores``: processes for the SVM fits)."""
    N, T = p.originals.limit, len(p.distortions.types) * len(p.distortions.levels)
    iqa = sum(IQA_IMAGES[e["name"]] for e in p.iqa_sets)
    train_rows = IQA_IMAGES[p.quality.train_sets[0]] - 25
    a, d, r = p.attacks, p.detector, p.robust
    # the authors' form: ~3 (the L1 pass, its input gradient, the forward step); one more for the backward
    # step when two-sided, one more for the point off the image when around > 0
    nt_passes = 3 + (r.nt.difference == "two_sided") + (r.nt.around_255 > 0)
    fwd, bwd = u["resnet152_fwd"], u["resnet152_bwd"]
    dms_score = r.smoothing.n * (u["dncnn17_fwd"] + fwd)
    score = {"plain": fwd, "nt": fwd, "dms": dms_score, "fs": fwd}
    grad = {"plain": bwd, "nt": bwd, "dms": r.eot_draws * (u["dncnn17_bwd"] + bwd), "fs": bwd}
    rows_v = 2 * N * d.train_size
    fooling = a.fool_gd.n + min(a.fool_ev.keep, IMAGENET_CLASSES)  # Fool_EV: one distinct elite per class at most
    rows = [
        ("00", "IQA sets, one ResNet-152 pass", f"{iqa:,} images", iqa * fwd, iqa * u["decode"]),
        ("00", "quality heads (the run's and the other feature kind)",
         f"2 x {p.quality.n_models} heads x {p.quality.epochs} epochs x {train_rows:,} rows",
         2 * p.quality.n_models * p.quality.epochs * train_rows * u["head_row"], 0.0),
        ("01", "Table I: AlexNet + VGG16 on the IQA sets", f"{iqa:,} images x 2 networks",
         iqa * (u["alexnet_fwd"] + u["vgg16_fwd"]), 2 * iqa * u["decode"]),
        ("01", "originals, one pass", f"{N:,} images", N * fwd, N * u["decode"]),
        ("02", "UAP (DeepFool inner step)",
         f"{a.uap.pool_size:,} pool x {a.uap.max_passes} passes x {DEEPFOOL_STEPS} steps x (1 + {a.uap.num_candidates}) gradients",
         a.uap.pool_size * a.uap.max_passes * DEEPFOOL_STEPS * (1 + a.uap.num_candidates) * bwd, 0.0),
        ("02", "Distorted and adversarial groups, one pass", f"{N:,} x ({T} + 1) images",
         N * (T + 1) * fwd, N * (u["decode"] + T * u["distort"])),
        ("02", "Fool_GD", f"{a.fool_gd.n:,} x {a.fool_gd.steps} steps, forward + backward",
         a.fool_gd.n * a.fool_gd.steps * bwd, 0.0),
        ("02", "Fool_EV", f"{a.fool_ev.population} x {a.fool_ev.generations} generations",
         a.fool_ev.population * a.fool_ev.generations * fwd, 0.0),
        ("03", "Baselines 1 and 2: thresholds on the features table (no passes)", "none", 0.0, 0.0),
        # fits: Table V, 2 more column sets (ablation), 1.5 (learning curve at 1/4, 1/2, 3/4), 2 (comparison
        # variants); folds: Table V's training rows once (its detectors share them), each learning-curve share once
        ("04", "linear SVM per split (folds, then grid + out-of-fold): Table V, ablations, learning curve, "
               "comparison variants",
         f"{d.n_splits} splits x {rows_v:,.0f} rows x (2.5 fold assignments + 6.5 detectors' fits)",
         d.n_splits * rows_v * (2.5 * u["fold_row"] + 6.5 * u["linear_row"]), 0.0),
        ("04", "kernel ablation: RBF grid (16 settings x 5 folds + refit + 5 out-of-fold), "
               "fits spread over the cores",
         f"2 choices x {d.n_splits} splits x 86 fits at {2 * (d.rbf_fit_cap or N * d.train_size):,.0f} rows",
         2 * d.n_splits * rbf_share(cores) * u["rbf_detector"]
         * ((2 * (d.rbf_fit_cap or N * d.train_size)) / u["rbf_rows"]) ** 2.1, 0.0),
        ("04", "Feature Squeezing: two squeezed passes",
         f"2 x ({2 * N:,} + {fooling:,} fooling + {d.peer_distorted or N * T:,} distorted)",
         2 * (2 * N + fooling + (d.peer_distorted or N * T)) * fwd,
         (2 * N + fooling) * u["decode"] + (d.peer_distorted or N * T) * (u["decode"] + u["distort"])),
        ("05", f"NT training (finite-difference penalty: ~{nt_passes} passes a step)",
         f"{r.nt.steps} steps x {r.nt.batch_size} images x {nt_passes}", nt_passes * r.nt.steps * r.nt.batch_size * bwd,
         0.0),
        ("05", "denoisers: MSE on 64 px crops, then rank-preserving through the metric",
         f"{r.denoiser.steps} x {r.denoiser.batch_size} crops + {r.denoiser.rank.steps} x {r.denoiser.rank.batch_size} x 2",
         r.denoiser.steps * r.denoiser.batch_size * u["dncnn17_bwd"] * (r.denoiser.patch / 224) ** 2
         + r.denoiser.rank.steps * r.denoiser.rank.batch_size * 2 * (u["dncnn17_bwd"] + bwd), 0.0),
        ("05", "clean SROCC, five scorers (DMS: n noisy passes)", f"{r.n_srocc:,} images, DMS n = {r.smoothing.n}",
         r.n_srocc * (sum(score.values()) + dms_score), 0.0),
        ("05", "score attacks (I-FGSM up/down per eps, then scoring)",
         f"{r.n_images} images x {len(r.eps_255)} eps x (2 x {r.iters} steps + 3 scores), 4 scorers",
         r.n_images * sum(len(r.eps_255) * 2 * r.iters * grad[k] + (1 + 3 * len(r.eps_255)) * score[k] for k in score), 0.0),
        ("05", "certificates (DMS n_certify draws; FS Lipschitz) and l2 PGD inside r",
         f"{r.n_certified_images} x {r.smoothing.n_certify} draws + {r.certificate_attack.n_images} x "
         f"{len(r.smoothing.radii)} radii x ({r.certificate_attack.steps} x {r.certificate_attack.draws} + {r.smoothing.n_certify})",
         r.n_certified_images * (r.smoothing.n_certify * (u["dncnn17_fwd"] + fwd) + r.feature_smoothing.lipschitz_iters * bwd)
         + r.certificate_attack.n_images * len(r.smoothing.radii) * (
             r.certificate_attack.steps * r.certificate_attack.draws * (u["dncnn17_bwd"] + bwd)
             + r.smoothing.n_certify * (u["dncnn17_fwd"] + fwd)), 0.0),
        ("05", "detector under attack: scoring its training images",
         f"2 x {r.adaptive.fit_cap or N * d.train_size:,.0f} images x 4 scorers",
         2 * (r.adaptive.fit_cap or N * d.train_size) * sum(score.values()), 0.0),
        ("05", "detector under attack: oblivious, selective and orthogonal PGD",
         f"{r.adaptive.n_images} images x {len(r.adaptive.eps_255)} eps x {r.adaptive.steps} steps",
         r.adaptive.n_images * len(r.adaptive.eps_255) * (
             r.adaptive.steps * bwd + sum(2 * r.adaptive.steps * (bwd + grad[k]) + 4 * score[k] for k in score)), 0.0),
    ]
    return [{"notebook": nb, "stage": stage, "count": count, "device_s": dev, "cpu_s": cpu}
            for nb, stage, count, dev, cpu in rows]


def sheet(p, here: dict[str, float], gpu: dict[str, float], gpu_measured: bool) -> list[dict]:
    """Stages with seconds on this machine (device + CPU side in turn, its cores for the SVM fits)
    and on the GPU machine (this one, when its GPU was measured; else ``MACHINE_CORES``)."""
    out = []
    gpu_cores = cpus_available() if gpu_measured else MACHINE_CORES
    for h, g in zip(stages(p, here, cpus_available()), stages(p, gpu, gpu_cores)):
        out.append({**{k: h[k] for k in ("notebook", "stage", "count")},
                    "here_s": h["device_s"] + h["cpu_s"],
                    "gpu_machine_s": max(g["device_s"], g["cpu_s"] / WORKER_CORES),
                    "gpu": "measured" if gpu_measured else "assumed"})
    return out


def _hms(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_sheet(rows: list[dict], units: dict[str, float], file=sys.stdout) -> list[str]:
    """The sheet with its arithmetic; returns the stages over 30 minutes on the GPU machine."""
    shown = (f"{k} {v:.3g} {UNIT_OF.get(k, 's an image')}" for k, v in sorted(units.items()))
    print("unit costs here: " + ", ".join(shown), file=file)
    over = []
    for nb in dict.fromkeys(r["notebook"] for r in rows):
        part = [r for r in rows if r["notebook"] == nb]
        print(f"\nnotebook {nb}: here {_hms(sum(r['here_s'] for r in part))}, "
              f"GPU machine {_hms(sum(r['gpu_machine_s'] for r in part))} ({part[0]['gpu']})", file=file)
        for r in part:
            flag = "  <-- over 30 min" if r["gpu_machine_s"] > 1800 else ""
            print(f"  {r['stage']}: {r['count']}; here {_hms(r['here_s'])}, GPU machine {_hms(r['gpu_machine_s'])}{flag}",
                  file=file)
            if flag:
                over.append(f"{nb}: {r['stage']}")
    total = sum(r["gpu_machine_s"] for r in rows)
    print(f"\nall notebooks on the GPU machine: {_hms(total)} ({rows[0]['gpu']}); here: {_hms(sum(r['here_s'] for r in rows))}",
          file=file)
    return over


def main(argv: list[str] | None = None) -> int:
    import torch

    from iqalib import params, rehearsal

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the sheet and unit costs here")
    args = parser.parse_args(argv)
    p = params.validate(rehearsal.paper_params(), "paper")
    units = {**measure_networks(args.device, args.amp, 64 if args.device == "cuda" else 4), **measure_cpu_side()}
    rbf_rows = 2000
    units.update(measure_fits(p.quality.hidden, rbf_rows), rbf_rows=rbf_rows)
    measured_gpu = args.device == "cuda"
    rows = sheet(p, units, units if measured_gpu else assumed_gpu(units, p.quality.hidden, p.quality.batch_size),
                 measured_gpu)
    over = print_sheet(rows, {k: v for k, v in units.items() if k != "rbf_rows"})
    if args.json:
        args.json.write_text(json.dumps({"units": units, "device": args.device, "amp": args.amp, "stages": rows}, indent=2))
    for stage in over:
        print(f"over 30 minutes on the GPU machine without a cap: {stage}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
