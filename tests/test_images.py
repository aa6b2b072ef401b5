import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from iqalib import images
from tests.conftest import REPO, colourful


def test_bad_inputs_are_converted_or_counted(bad_folder):
    result = images.originals("folder", bad_folder, progress=False)
    kept = sorted(r.path.rsplit("/", 1)[1] for r in result.records)
    assert kept == ["cmyk.jpg", "good.jpg", "palette.png", "rgba.png"]
    assert all(r.label == 281 for r in result.records)  # n02123045 = tabby cat
    assert result.skipped == {"greyscale": 2, "too_small": 1, "truncated": 1, "not_an_image": 2}


def test_every_kept_image_is_rgb_8bit(bad_folder):
    for record in images.originals("folder", bad_folder, progress=False).records:
        image = images.load(record)
        assert image.mode == "RGB" and np.asarray(image).dtype == np.uint8


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (100, 100), (255, 0, 0, 128)).save(tmp_path / "half_red.png")
    r, g, b = images.open_image(tmp_path / "half_red.png").getpixel((5, 5))
    assert r == 255 and 125 <= g <= 129 and g == b  # half-transparent red over white = pink
    Image.new("RGBA", (100, 100), (255, 0, 0, 0)).save(tmp_path / "invisible.png")
    with pytest.raises(images.ImageSkip) as info:  # all white once composited: the grey rule applies
        images.open_image(tmp_path / "invisible.png")
    assert info.value.reason == "greyscale"


def test_exif_orientation_is_applied(tmp_path):
    image = colourful((160, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert images.open_image(tmp_path / "rotated.jpg").size == (100, 160)


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    colourful((200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(images.ImageSkip) as info:
        images.open_image(tmp_path / "big.png")
    assert info.value.reason == "too_large"


def test_embedded_pool_views_share_source_id():
    result = images.originals("embedded", views=3, progress=False)
    # 20 foolbox photos + the 89 ai-benchmark photos with an unambiguous ImageNet class (11 excluded)
    assert result.counts() == {"used": 327, "skipped": {"ambiguous_label": 11}}
    by_source = {}
    for r in result.records:
        by_source.setdefault(r.source_id, set()).add(r.view)
    assert len(by_source) == 109 and all(v == {"full", "hflip", "crop80_center"} for v in by_source.values())
    assert len({r.image_id for r in result.records}) == 327


def test_ai_benchmark_labels_are_complete_and_valid():
    from iqalib.classifiers import imagenet_wnids

    rows = images.ai_benchmark_labels()
    assert [name for name, _, _ in rows] == [f"{k}.jpg" for k in range(100)]
    wnids = imagenet_wnids()
    for name, label, how in rows:
        assert (images.ai_benchmark_folder() / name).is_file()
        assert (label is None) == how.startswith("excluded:"), (name, how)
        assert label is None or 0 <= label < 1000 and wnids[label].startswith("n")


def test_limit_counts_photos_not_views():
    result = images.originals("embedded", limit=4, views=2, progress=False)
    assert len({r.source_id for r in result.records}) == 4 and len(result.records) == 8


def test_views_are_deterministic_crops():
    image = colourful((200, 100))
    assert images.apply_view(image, "crop80_center").size == (160, 80)
    assert np.array_equal(np.asarray(images.apply_view(image, "hflip")), np.asarray(image)[:, ::-1])


def test_imagenet_val_flat_layout_uses_package_labels(tmp_path):
    colourful().save(tmp_path / "ILSVRC2012_val_00000001.JPEG", format="JPEG")
    colourful().save(tmp_path / "holiday.jpg")
    result = images.originals("imagenet_val", tmp_path, progress=False)
    assert [r.label for r in result.records] == [65]  # the official label of val image 1
    assert result.skipped == {"unlabelled": 1}


def test_check_images_cli_json(bad_folder):
    out = subprocess.run([sys.executable, "-m", "iqalib", "check-images", str(bad_folder), "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(out.stdout) == {"used": 4, "skipped": {"greyscale": 2, "not_an_image": 2, "too_small": 1, "truncated": 1}}


def test_check_images_cli_missing_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "iqalib", "check-images", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "is not a folder" in out.stderr and "Traceback" not in out.stderr


def test_a_hidden_folder_does_not_turn_a_flat_val_folder_into_class_folders(tmp_path):
    colourful().save(tmp_path / "ILSVRC2012_val_00000001.JPEG", format="JPEG")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    colourful().save(tmp_path / ".ipynb_checkpoints" / "ILSVRC2012_val_00000002.JPEG", format="JPEG")
    result = images.originals("imagenet_val", tmp_path, progress=False)
    assert [r.label for r in result.records] == [65] and not result.skipped


def test_unreadable_and_dangling_files_are_counted_by_their_own_reason(tmp_path, monkeypatch):
    colourful().save(tmp_path / "fine.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    colourful().save(tmp_path / "locked.png")
    real_open = images.Image.open

    def refuse(path, *args, **kwargs):  # chmod 000 does not stop root, which CI may be
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images.Image, "open", refuse)
    result = images.collect(images.unlabelled_candidates(tmp_path), progress=False)
    assert len(result.records) == 1 and result.skipped == {"missing": 1, "unreadable": 1}


def _refuse_listing(monkeypatch, folder_name: str) -> None:
    """``os.walk`` as if ``folder_name`` could not be listed (chmod does not stop root, which CI may be)."""
    real_walk = images.os.walk

    def walk(top, onerror=None, **kwargs):
        for root, dirs, names in real_walk(top, onerror=onerror, **kwargs):
            if root.endswith(folder_name):
                onerror(PermissionError(13, "Permission denied", root))
                continue
            yield root, dirs, names

    monkeypatch.setattr(images.os, "walk", walk)


def test_a_sub_folder_that_cannot_be_listed_is_counted(tmp_path, monkeypatch):
    (tmp_path / "n01440764").mkdir()
    colourful().save(tmp_path / "n01440764" / "a.png")
    _refuse_listing(monkeypatch, "n01440764")
    assert images.folder_candidates(tmp_path) == [(None, "unreadable")]


def test_a_thin_coloured_band_is_not_grey_and_8_bit_values_in_a_32_bit_image_stay_bright():
    photo = np.full((1280, 1280, 3), 128, dtype=np.uint8)
    photo[601:615, :, 0] = 255  # a 14-px red band between the rows the old 64 x 64 sample grid read
    assert not images._is_grey(Image.fromarray(photo))
    assert images._is_grey(Image.fromarray(np.full((1280, 1280, 3), 128, dtype=np.uint8)))
    eight_bit = Image.fromarray(np.full((100, 100), 127, dtype=np.int32), mode="I")
    assert np.asarray(images._to_rgb(eight_bit)).mean() == 127
    sixteen_bit = Image.fromarray(np.full((100, 100), 127 * 257, dtype=np.int32), mode="I")
    assert np.asarray(images._to_rgb(sixteen_bit)).mean() == 127


def test_a_flat_val_folder_beside_an_unlistable_lost_and_found_stays_flat(tmp_path, monkeypatch):
    colourful().save(tmp_path / "ILSVRC2012_val_00000001.JPEG", format="JPEG")
    (tmp_path / "lost+found").mkdir()
    _refuse_listing(monkeypatch, "lost+found")  # root-only, as on every ext4 volume
    result = images.originals("imagenet_val", tmp_path, progress=False)
    assert [r.label for r in result.records] == [65] and result.skipped == {"unreadable": 1}


def test_a_linked_folder_is_counted_not_followed(tmp_path):
    real = tmp_path / "elsewhere" / "n01440764"
    real.mkdir(parents=True)
    colourful().save(real / "a.png")
    root = tmp_path / "classes"
    (root / "n01443537").mkdir(parents=True)
    colourful().save(root / "n01443537" / "b.png")
    (root / "n01440764").symlink_to(real, target_is_directory=True)
    result = images.originals("folder", root, progress=False)
    assert [r.label for r in result.records] == [1] and result.skipped == {"linked_folder": 1}
