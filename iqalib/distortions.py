"""Image distortions at five levels, deterministic given a seed: PIL RGB image in, PIL RGB out.

Owns the registry ``DISTORTIONS`` and the level parameters ``LEVEL_PARAMS`` with their sources.
Built on Pillow and NumPy directly: ``imagecorruptions`` (the ImageNet-C code) needs
``pkg_resources`` and its blur/fog fail on NumPy 2, so we take its published severities instead.
The TID2013-like structured noises (high-frequency, spatially correlated, masked, quantisation and
pattern noise) use ``scipy.ndimage``, imported when first used so that importing the registry stays light.
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
    "jpeg2000": ((0.4, 0.2, 0.1, 0.05, 0.025),
                 "bits per pixel of the image it is applied to (rate = 24/bpp); LIVE's jp2k spans 0.03–3.2 bpp on "
                 "768×512 images, and on the 224-px classifier view the same rate leaves less (PSNR on six foolbox "
                 "photos: 24.8, 22.8, 20.6, 17.5, 13.7 dB; at 768×512: 29.1 to 21.7 dB); level 5 stops at OpenJPEG's "
                 "smallest codestream, about 0.04 bpp there, and little of the photo is left (level 5 at 224 px on the "
                 "same photos: white noise 10.5 dB, Gaussian blur 20.3, JPEG 24.1)"),
    "contrast": ((0.4, 0.3, 0.2, 0.1, 0.05), "contrast factor about the mean; ImageNet-C contrast"),
    "pixelate": ((0.6, 0.5, 0.4, 0.3, 0.25), "down-scale factor, box down / nearest up; ImageNet-C pixelate"),
    "impulse_noise": ((0.03, 0.06, 0.09, 0.17, 0.27), "share of salt-and-pepper pixels; ImageNet-C impulse_noise"),
    "color_saturation": ((0.6, 0.4, 0.25, 0.1, 0.0), "Pillow colour-enhance factor (1 = unchanged); TID2013 #18 saturation change"),
    "color_quantization": ((64, 32, 16, 8, 4), "palette colours, no dither (Pillow median cut); TID2013 #23 quantisation"),
    "darken": ((0.8, 0.65, 0.5, 0.35, 0.2), "Pillow brightness factor (1 = unchanged); TID2013 #16 mean shift, downwards"),
    # TID2013-like structured noises, kept mild (PSNR >= 30 dB at every level); measured on the 20
    # foolbox photos resized to a 288 px short side (seed 0, image id = file name), min-max over photos.
    "high_frequency_noise": ((0.008, 0.012, 0.017, 0.023, 0.03),
                             "std on [0,1] pixels of Gaussian noise minus its Gaussian blur (sigma 1 px); "
                             "TID2013 #5 high frequency noise; levels 1–5 give 42.3–30.5 dB PSNR on the foolbox photos at 288 px"),
    "spatially_correlated_noise": ((0.008, 0.012, 0.017, 0.023, 0.03),
                                   "std on [0,1] pixels of Gaussian noise blurred with sigma 1.5 px (renormalised); "
                                   "TID2013 #3 spatially correlated noise; levels 1–5 give 42.3–30.5 dB PSNR on the foolbox photos at 288 px"),
    "masked_noise": ((0.008, 0.012, 0.017, 0.023, 0.03),
                     "rms std on [0,1] pixels of Gaussian noise scaled by the local luminance std (Gaussian window, "
                     "sigma 2 px); TID2013 #4 masked noise; levels 1–5 give 42.1–30.5 dB PSNR on the foolbox photos at 288 px"),
    "quantization_noise": ((40, 27, 20, 15, 13),
                           "uniform levels per RGB channel (step 1/(n-1)), no dither; TID2013 #7 quantization noise; "
                           "levels 1–5 give 43.5–32.2 dB PSNR on the foolbox photos at 288 px"),
    "pattern_noise": ((42, 39, 36, 33, 30.5),
                      "target PSNR in dB: 8x8 patches copied from 1-4 px away at random positions, skipping any that "
                      "would go below it (patches for half the image area tried); TID2013 #14 non "
                      "eccentricity pattern noise; levels 1–5 give 42.1–30.5 dB PSNR on the foolbox photos at 288 px"),
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


def _gaussian_filter(array: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage  # lazy: the registry is imported by the params schema

    spatial = (sigma, sigma) + (0,) * (array.ndim - 2)  # blur rows and columns, never across channels
    return ndimage.gaussian_filter(array, spatial, mode="reflect")


def _with_std(noise: np.ndarray, sigma: float) -> np.ndarray:
    return noise * (sigma / max(float(noise.std()), 1e-12))


def high_frequency_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    # TID2013 #5: white noise with its low frequencies removed (noise minus its blur), per channel.
    x = _as_float(image)
    noise = rng.normal(0.0, 1.0, size=x.shape)
    return _to_image(x + _with_std(noise - _gaussian_filter(noise, 1.0), sigma).astype(np.float32))


def spatially_correlated_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    # TID2013 #3: low-pass (blurred) white noise, renormalised so its std is ``sigma``.
    x = _as_float(image)
    noise = _gaussian_filter(rng.normal(0.0, 1.0, size=x.shape), 1.5)
    return _to_image(x + _with_std(noise, sigma).astype(np.float32))


def masked_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    # TID2013 #4: noise that hides in texture. Its local amplitude follows the local std of the
    # luminance, scaled so its rms over the image is ``sigma`` (flat images get none).
    x = _as_float(image).astype(np.float64)
    luma = x @ np.array([0.299, 0.587, 0.114])
    mean = _gaussian_filter(luma, 2.0)
    activity = np.sqrt(np.maximum(_gaussian_filter(luma * luma, 2.0) - mean * mean, 0.0))
    rms = float(np.sqrt(np.mean(activity * activity)))
    amplitude = activity / rms if rms > 1e-6 else np.zeros_like(activity)
    noise = rng.normal(0.0, sigma, size=x.shape) * amplitude[..., None]
    return _to_image((x + noise).astype(np.float32))


def quantization_noise(image: Image.Image, levels: float, rng: np.random.Generator,
                       dither: bool = False) -> Image.Image:
    # TID2013 #7: every RGB channel rounded to ``levels`` evenly spaced values in [0, 1]. The
    # registry uses no dither (deterministic); ``dither=True`` adds uniform noise of one step first.
    x = _as_float(image).astype(np.float64)
    steps = int(levels) - 1
    if dither:
        x = x + rng.uniform(-0.5, 0.5, size=x.shape) / steps
    return _to_image((np.round(np.clip(x, 0.0, 1.0) * steps) / steps).astype(np.float32))


def pattern_noise(image: Image.Image, target_psnr: float, rng: np.random.Generator, patch: int = 8,
                  max_shift: int = 4, max_share: float = 0.5) -> Image.Image:
    # TID2013 #14 (non eccentricity pattern noise): ``patch``x``patch`` pieces of the original copied
    # onto random positions 1..``max_shift`` px away (random direction). As TID2013 sets its levels by
    # PSNR, a patch that would take the PSNR below ``target_psnr`` dB is left out, so the level does
    # not depend on how textured the photo is; ``max_share`` of the image's area in patches are tried.
    source = np.asarray(image.convert("RGB")).astype(np.float64)
    x = source.copy()
    h, w = x.shape[:2]
    p = min(patch, h, w)
    budget = x.size * 255.0 ** 2 / 10.0 ** (target_psnr / 10.0)  # the largest total squared error
    error = 0.0
    for _ in range(int(max_share * h * w / (p * p))):
        top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        dy, dx = 0, 0
        while dy == 0 and dx == 0:
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        sy, sx = min(max(top + dy, 0), h - p), min(max(left + dx, 0), w - p)
        here = (slice(top, top + p), slice(left, left + p))
        piece = source[sy:sy + p, sx:sx + p]
        change = float(np.sum((piece - source[here]) ** 2) - np.sum((x[here] - source[here]) ** 2))
        if error + change > budget:
            continue
        x[here] = piece
        error += change
    return Image.fromarray(x.astype(np.uint8), "RGB")


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
    "high_frequency_noise": high_frequency_noise,
    "spatially_correlated_noise": spatially_correlated_noise,
    "masked_noise": masked_noise,
    "quantization_noise": quantization_noise,
    "pattern_noise": pattern_noise,
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
