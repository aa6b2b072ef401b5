"""The embedded IQA set: colour photos shipped inside installed wheels, distorted with every
``distortions`` type and level, scored by a full-reference **pseudo-MOS** (piq), built once under a
folder and returned as a reader table (``iqa_datasets.IQA_COLUMNS``). Not a human opinion score.

The readers of real subjective sets (TID2013, CSIQ, LIVE) live in ``iqa_datasets``.
"""
from __future__ import annotations

import importlib.util
import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.distortions import DISTORTIONS, LEVELS, distort
from iqalib.iqa_datasets import IQA_COLUMNS

__all__ = ["EMBEDDED_PHOTOS", "PSEUDO_MOS_METRICS", "EMBEDDED_VERSION", "embedded_photo_path",
           "build_embedded_iqa"]

#: Natural colour photos shipped in installed wheels: name -> (package, path inside it).
#: Content-disjoint from the embedded originals (foolbox's ImageNet samples and ai-benchmark's
#: ``classification`` photos): 11 photos of scikit-image, scikit-learn and matplotlib, the 100 street,
#: park and lake photos of ai-benchmark's ``enhancement`` folder (1024×682 camera photos) and its 30
#: cat photos (``segmentation/N.jpg``; the ``N_segmented.jpg`` mask overlays are left out).
EMBEDDED_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "retina": ("skimage", "data/retina.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    **{f"street_{k:02d}": ("ai_benchmark", f"data/enhancement/{k}.jpg") for k in range(100)},
    **{f"cat_{k:02d}": ("ai_benchmark", f"data/segmentation/{k}.jpg") for k in range(30)},
}

#: Full-reference metrics (piq) that can stand in for subjective scores; all lie in [0, 1].
PSEUDO_MOS_METRICS = ("haarpsi", "fsim", "ms_ssim")
EMBEDDED_VERSION = 1  # bump when the builder's output for the same params changes


def embedded_photo_path(name: str) -> Path:
    """Where an embedded reference photo lies in its installed package."""
    if name not in EMBEDDED_PHOTOS:
        raise ValueError(f"unknown embedded photo {name!r}; choose from {', '.join(EMBEDDED_PHOTOS)}")
    package, rel = EMBEDDED_PHOTOS[name]
    spec = importlib.util.find_spec(package)  # found, never imported (ai-benchmark imports TensorFlow)
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / rel if folders else None
    if path is None or not path.exists():
        raise FileNotFoundError(f"embedded photo {name!r}: {rel} not found in the installed package {package!r}")
    return path


def _pseudo_mos(metric: str, reference: Image.Image, distorted: list[Image.Image]) -> np.ndarray:
    """Full-reference scores of every distorted version of one reference, in one batched call."""
    import piq  # imported late: torch-heavy, needed only when the set is (re)built
    import torch

    def tensor(images):
        return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images])).permute(0, 3, 1, 2) / 255.0

    fn = {"haarpsi": piq.haarpsi, "fsim": piq.fsim, "ms_ssim": piq.multi_scale_ssim}[metric]
    with torch.inference_mode():
        return fn(tensor([reference] * len(distorted)), tensor(distorted), data_range=1.0, reduction="none").clamp(0, 1).numpy()


def _save_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; low effort keeps the build fast
    atomic_write_bytes(path, buffer.getvalue())


def _absolute(table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The stored table keeps paths relative to ``folder`` (the set can move); callers get absolute ones."""
    table["path"] = [str(folder / p) for p in table["path"]]
    table["ref_path"] = [str(folder / p) for p in table["ref_path"]]
    return table


def _reusable(folder: Path, key: dict) -> pd.DataFrame | None:
    """The table already built under ``folder`` with the same ``key``, if every image is still there."""
    table_path, key_path = folder / "table.csv", folder / "key.json"
    if not (key_path.exists() and table_path.exists() and json.loads(key_path.read_text()) == key):
        return None
    table = _absolute(pd.read_csv(table_path), folder)
    return table if all(Path(p).exists() for p in table["path"]) else None


def _build_photo(folder: Path, photo: str, distortions: list[str], levels: list[int], short_side: int,
                 metric: str, seed: int) -> list[dict]:
    """Reference + every (distortion, level) version of one photo written as PNG; their table rows.
    Deterministic per photo (distortion noise is seeded by ``seed`` and the photo's name), so the
    set is the same whichever worker builds which photo."""
    with Image.open(embedded_photo_path(photo)) as raw:
        image = raw.convert("RGB")
    scale = short_side / min(image.size)
    reference = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.LANCZOS)
    ref_rel = f"reference/{photo}.png"
    _save_png(folder / ref_rel, reference)
    versions = []
    for name in distortions:
        for level in levels:
            distorted = distort(reference, name, level, seed=seed, image_id=photo)
            rel = f"distorted/{photo}_{name}_{level}.png"
            _save_png(folder / rel, distorted)
            versions.append((name, level, rel, distorted))
    scores = _pseudo_mos(metric, reference, [v[3] for v in versions])
    return [{"dataset": "embedded", "ref_id": photo, "ref_path": ref_rel, "path": rel, "distortion": name,
             "level": int(level), "mos_raw": float(score), "mos": float(score)}
            for (name, level, rel, _), score in zip(versions, scores)]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def build_embedded_iqa(folder: str | Path, photos: list[str] | None = None, distortions: list[str] | None = None,
                       levels: list[int] | None = None, short_side: int = 288, metric: str = "haarpsi",
                       seed: int = 0, progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """Build (or reuse) the embedded IQA set under ``folder``; returns the reader table.

    Each shipped photo is resized so its short side is ``short_side`` px (the reference), then
    distorted with every type at every level and written losslessly as PNG. ``mos`` is a
    **pseudo-MOS**: the full-reference ``metric`` (piq, data range [0, 1]) between reference and
    distorted image, clipped to [0, 1]; ``mos_raw`` holds the same value. It is not a human score.
    Re-running with the same arguments reuses the files (``key.json`` records the arguments).
    ``workers`` > 1 builds photos in that many processes; the set is the same for any number.
    """
    photos = list(photos or EMBEDDED_PHOTOS)
    distortions = list(distortions or DISTORTIONS)
    levels = list(levels or LEVELS)
    if metric not in PSEUDO_MOS_METRICS:
        raise ValueError(f"unknown pseudo-MOS metric {metric!r}; choose from {', '.join(PSEUDO_MOS_METRICS)}")
    folder = Path(folder)
    key = {"photos": photos, "distortions": distortions, "levels": levels, "short_side": short_side,
           "metric": metric, "seed": seed, "version": EMBEDDED_VERSION}
    table = _reusable(folder, key)
    if table is not None:
        return table
    jobs = [(folder, photo, distortions, levels, short_side, metric, seed) for photo in photos]
    rows = []
    with tqdm(total=len(photos), desc="embedded IQA set (photos)", disable=not progress, leave=False) as bar:
        if workers <= 1:
            for job in jobs:
                rows += _build_photo(*job)
                bar.update()
        else:
            # Each photo is an independent job (the piq metric dominates: ~10 ms an image); spawned
            # workers with one torch thread each use the cores without fork-after-OpenMP hazards.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
                for part in pool.map(_build_photo, *zip(*jobs), chunksize=4):
                    rows += part
                    bar.update()
    table = pd.DataFrame(rows, columns=list(IQA_COLUMNS))
    atomic_write_text(folder / "table.csv", table.to_csv(index=False))
    atomic_write_text(folder / "key.json", json.dumps(key))  # last: its presence marks a complete set
    return _absolute(table, folder)
