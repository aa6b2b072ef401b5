import numpy as np
import pytest

from iqalib import distortions
from tests.conftest import colourful


@pytest.mark.parametrize("name", list(distortions.DISTORTIONS))
def test_every_distortion_is_deterministic_rgb_same_size(name):
    image = colourful((160, 120))
    a = distortions.distort(image, name, 3, seed=7, image_id="x")
    b = distortions.distort(image, name, 3, seed=7, image_id="x")
    assert a.mode == "RGB" and a.size == image.size
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", list(distortions.DISTORTIONS))
def test_stronger_level_moves_further_from_the_original(name):
    image = colourful((160, 120))
    x = np.asarray(image, dtype=np.float64)
    err = [np.abs(np.asarray(distortions.distort(image, name, lv), dtype=np.float64) - x).mean() for lv in (1, 5)]
    assert err[1] > err[0] > 0


def test_noise_differs_between_images_and_seeds():
    image = colourful((100, 100))
    a, b, c = (np.asarray(distortions.distort(image, "white_noise", 2, seed=s, image_id=i)) for s, i in
               [(0, "a"), (0, "b"), (1, "a")])
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_distortion_documents_its_levels():
    assert set(distortions.LEVEL_PARAMS) == set(distortions.DISTORTIONS)
    for values, source in distortions.LEVEL_PARAMS.values():
        assert len(values) == 5 and source


def test_bad_names_and_levels_are_clear():
    with pytest.raises(ValueError, match="unknown distortion"):
        distortions.distort(colourful(), "blurr", 1)
    with pytest.raises(ValueError, match="level"):
        distortions.distort(colourful(), "jpeg", 0)


# --- TID2013-like structured noises -------------------------------------------------------------

NEW_TYPES = ["high_frequency_noise", "spatially_correlated_noise", "masked_noise", "quantization_noise",
             "pattern_noise"]
RANDOM_NEW_TYPES = [n for n in NEW_TYPES if n != "quantization_noise"]  # quantisation is deterministic


def _psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def shipped_photo():
    from PIL import Image

    from iqalib.images import embedded_folder

    path = embedded_folder() / "imagenet_02_438.jpg"
    with Image.open(path) as raw:
        image = raw.convert("RGB")
    scale = 288 / min(image.size)  # as the embedded IQA set resizes its references
    return image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.LANCZOS)


def test_the_new_types_are_registered():
    assert set(NEW_TYPES) <= set(distortions.DISTORTIONS)


@pytest.mark.parametrize("name", RANDOM_NEW_TYPES)
def test_new_random_types_are_deterministic_and_follow_the_seed(name):
    image = colourful((96, 80))
    a, b, c, d = (np.asarray(distortions.distort(image, name, 4, seed=s, image_id=i)) for s, i in
                  [(3, "x"), (3, "x"), (4, "x"), (3, "y")])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_quantization_noise_is_deterministic_and_keeps_few_levels():
    image = colourful((96, 80))
    a, b = (np.asarray(distortions.distort(image, "quantization_noise", 5, seed=s)) for s in (0, 1))
    assert np.array_equal(a, b)  # no randomness without dither
    n = distortions.LEVEL_PARAMS["quantization_noise"][0][4]
    assert len(np.unique(a)) <= n
    dithered = [np.asarray(distortions.quantization_noise(image, n, np.random.default_rng(s), dither=True))
                for s in (0, 1)]
    assert not np.array_equal(*dithered) and len(np.unique(dithered[0])) <= n


@pytest.mark.parametrize("name", NEW_TYPES)
def test_new_types_are_mild_and_monotone_on_a_shipped_photo(name, shipped_photo):
    psnr = [_psnr(shipped_photo, distortions.distort(shipped_photo, name, lv, seed=0, image_id="p"))
            for lv in distortions.LEVELS]
    assert min(psnr) >= 30, psnr
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr


@pytest.mark.parametrize("name", NEW_TYPES)
@pytest.mark.parametrize("size", [(37, 23), (5, 6)])
def test_new_types_keep_size_and_mode_even_on_small_images(name, size):
    image = colourful(size)
    out = distortions.distort(image, name, 5, seed=1, image_id="s")
    assert out.mode == "RGB" and out.size == image.size


def test_masked_noise_spares_flat_regions():
    from PIL import Image

    flat = Image.new("RGB", (64, 48), (120, 80, 200))
    assert np.array_equal(np.asarray(distortions.distort(flat, "masked_noise", 5)), np.asarray(flat))
