"""Image distortions at five levels, deterministic given a seed: PIL RGB image in, PIL RGB out.

Owns the registry ``DISTORTIONS`` and the level parameters ``LEVEL_PARAMS`` with their sources.
Built on Pillow and NumPy directly: ``imagecorruptions`` (the ImageNet-C code) needs
``pkg_resources`` and its blur/fog fail on NumPy 2, so we take its published severities instead.
"""
from __future__ import annotations

import io
import zlib
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

LEVELS = (1, 2, 3, 4, 5)  # 1 = mildest

# Per distortion: the parameter at levels 1..5 and where the values come from.
LEVEL_PARAMS: dict[str, tuple[tuple[float, ...], str]] = {
    "gaussian_blur": ((1, 2, 3, 4, 6), "Gaussian sigma in pixels; ImageNet-C gaussian_blur severities"),
    "white_noise": ((0.08, 0.12, 0.18, 0.26, 0.38), "additive Gaussian sigma on [0,1] pixels; ImageNet-C gaussian_noise"),
    "jpeg": ((25, 18, 15, 10, 7), "JPEG quality (Pillow/libjpeg); ImageNet-C jpeg_compression"),
    "jpeg2000": ((0.4, 0.2, 0.1, 0.05, 0.025), "bits per pixel (rate = 24/bpp); within LIVE's jp2k range 0.03–3.2 bpp"),
    "contrast": ((0.4, 0.3, 0.2, 0.1, 0.05), "contrast factor about the mean; ImageNet-C contrast"),
    "pixelate": ((0.6, 0.5, 0.4, 0.3, 0.25), "down-scale factor, box down / nearest up; ImageNet-C pixelate"),
    "impulse_noise": ((0.03, 0.06, 0.09, 0.17, 0.27), "share of salt-and-pepper pixels; ImageNet-C impulse_noise"),
    "color_saturation": ((0.6, 0.4, 0.25, 0.1, 0.0), "Pillow colour-enhance factor (1 = unchanged); TID2013 #18 saturation change"),
    "color_quantization": ((64, 32, 16, 8, 4), "palette colours, no dither (Pillow median cut); TID2013 #23 quantisation"),
    "darken": ((0.8, 0.65, 0.5, 0.35, 0.2), "Pillow brightness factor (1 = unchanged); TID2013 #16 mean shift, downwards"),
}


def _as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def gaussian_blur(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))  # Pillow's radius is the sigma


def white_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    x = _as_float(image)
    return _to_image(x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32))


def jpeg(image: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def jpeg2000(image: Image.Image, bpp: float, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    # OpenJPEG's "rates" mode takes a compression ratio; 24 bits per pixel uncompressed.
    image.convert("RGB").save(buffer, format="JPEG2000", quality_mode="rates", quality_layers=[24.0 / bpp])
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def contrast(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    x = _as_float(image)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_image((x - mean) * factor + mean)


def pixelate(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    small = image.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.BOX)
    return small.resize((w, h), Image.NEAREST)


def impulse_noise(image: Image.Image, amount: float, rng: np.random.Generator) -> Image.Image:
    # Per channel salt and pepper, as skimage.util.random_noise('s&p') does; written out so the
    # result depends only on our Generator (random_noise reseeds from an int).
    x = _as_float(image).copy()
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return _to_image(x)


def color_saturation(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Color(image.convert("RGB")).enhance(factor)


def color_quantization(image: Image.Image, colors: float, rng: np.random.Generator) -> Image.Image:
    return image.convert("RGB").quantize(colors=int(colors), dither=Image.Dither.NONE).convert("RGB")


def darken(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(image.convert("RGB")).enhance(factor)


DISTORTIONS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "gaussian_blur": gaussian_blur,
    "white_noise": white_noise,
    "jpeg": jpeg,
    "jpeg2000": jpeg2000,
    "contrast": contrast,
    "pixelate": pixelate,
    "impulse_noise": impulse_noise,
    "color_saturation": color_saturation,
    "color_quantization": color_quantization,
    "darken": darken,
}


def distort(image: Image.Image, name: str, level: int, seed: int = 0, image_id: str = "") -> Image.Image:
    """Apply distortion ``name`` at ``level`` (1 = mildest .. 5) to an RGB image.

    Random distortions draw from a Generator seeded by (seed, name, level, image_id), so the same
    call always gives the same pixels and different images get independent noise.
    """
    if name not in DISTORTIONS:
        raise ValueError(f"unknown distortion {name!r}; choose from {', '.join(DISTORTIONS)}")
    if level not in LEVELS:
        raise ValueError(f"distortion level must be one of {LEVELS}, got {level!r}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), level, zlib.crc32(image_id.encode())])
    return DISTORTIONS[name](image.convert("RGB"), LEVEL_PARAMS[name][0][level - 1], rng)
