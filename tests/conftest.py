"""Shared fixtures: tiny images written by the tests, one per kind of bad input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def colourful(size=(120, 100), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    return Image.fromarray(((base + rng.integers(0, 60, base.shape)) % 256).astype(np.uint8), "RGB")


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """A folder with two good images and one of every bad kind, in one WordNet-id sub-folder."""
    root = tmp_path / "images"
    d = root / "n02123045"  # tabby cat
    d.mkdir(parents=True)
    colourful().save(d / "good.jpg")
    colourful(seed=1).convert("CMYK").save(d / "cmyk.jpg")  # converted, kept
    rgba = colourful(seed=2).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")  # converted, kept
    colourful(seed=3).convert("P").save(d / "palette.png")  # converted, kept
    Image.fromarray((np.arange(120 * 100).reshape(100, 120) * 5).astype(np.uint16)).save(d / "sixteen_bit.png")  # grey
    colourful().convert("L").save(d / "grey.jpg")
    colourful((60, 200)).save(d / "tiny.jpg")
    buffer = io.BytesIO()
    colourful().save(buffer, format="JPEG")
    (d / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (d / "not_image.jpg").write_text("this is not an image")
    (d / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def foolbox_images() -> list[tuple[Path, int]]:
    from iqalib.images import embedded_folder

    files = sorted(embedded_folder().glob("imagenet_*_*.jpg"))
    return [(f, int(f.stem.split("_")[-1])) for f in files]
