"""The embedded pseudo-MOS IQA set: reader contract, pseudo-MOS direction, reuse, disjointness."""
import pandas as pd
import pytest
from scipy.stats import spearmanr

from iqalib import embedded_iqa, iqa_datasets


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emb")
    table = embedded_iqa.build_embedded_iqa(folder, photos=["chelsea", "coffee"], distortions=["gaussian_blur", "jpeg"],
                                            levels=[1, 3, 5], short_side=224, progress=False)
    return folder, table


def test_table_follows_the_reader_contract(small_set):
    _, table = small_set
    assert tuple(table.columns) == iqa_datasets.IQA_COLUMNS and len(table) == 12
    assert table["mos"].between(0, 1).all() and (table["mos"] == table["mos_raw"]).all()
    assert set(table["ref_id"]) == {"chelsea", "coffee"} and (table["dataset"] == "embedded").all()


def test_pseudo_mos_falls_with_level(small_set):
    _, table = small_set
    for _, g in table.groupby(["ref_id", "distortion"]):
        assert spearmanr(g["level"], g["mos"]).statistic == pytest.approx(-1.0)


def test_second_build_reuses_files_and_a_new_key_rebuilds(small_set):
    folder, table = small_set
    stamp = (folder / "table.csv").stat().st_mtime_ns
    again = embedded_iqa.build_embedded_iqa(folder, photos=["chelsea", "coffee"], distortions=["gaussian_blur", "jpeg"],
                                            levels=[1, 3, 5], short_side=224, progress=False)
    assert (folder / "table.csv").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again, table)
    other = embedded_iqa.build_embedded_iqa(folder, photos=["chelsea"], distortions=["jpeg"], levels=[5],
                                            short_side=224, progress=False)
    assert len(other) == 1


def test_embedded_photos_are_content_disjoint_from_originals():
    from iqalib.images import embedded_folder

    originals = {p.name for p in embedded_folder().glob("*")}
    assert all(embedded_iqa.embedded_photo_path(n).name not in originals for n in embedded_iqa.EMBEDDED_PHOTOS)


def test_two_workers_build_the_same_set(small_set, tmp_path):
    folder, table = small_set
    parallel = embedded_iqa.build_embedded_iqa(tmp_path, photos=["chelsea", "coffee"],
                                               distortions=["gaussian_blur", "jpeg"], levels=[1, 3, 5],
                                               short_side=224, progress=False, workers=2)
    relative = [c for c in table.columns if c not in ("path", "ref_path")]
    pd.testing.assert_frame_equal(parallel[relative], table[relative])
    for a, b in zip(parallel["path"], table["path"]):
        assert open(a, "rb").read() == open(b, "rb").read()
