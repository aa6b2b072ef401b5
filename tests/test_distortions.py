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
