"""The embedded pseudo-MOS IQA set and the Table I aggregation built on it."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from iqalib import features, iqa_datasets


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emb")
    table = iqa_datasets.build_embedded_iqa(folder, photos=["chelsea", "coffee"], distortions=["gaussian_blur", "jpeg"],
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
    again = iqa_datasets.build_embedded_iqa(folder, photos=["chelsea", "coffee"], distortions=["gaussian_blur", "jpeg"],
                                            levels=[1, 3, 5], short_side=224, progress=False)
    assert (folder / "table.csv").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again, table)
    other = iqa_datasets.build_embedded_iqa(folder, photos=["chelsea"], distortions=["jpeg"], levels=[5],
                                            short_side=224, progress=False)
    assert len(other) == 1


def test_embedded_photos_are_content_disjoint_from_originals():
    from iqalib.images import embedded_folder

    originals = {p.name for p in embedded_folder().glob("*")}
    assert all(iqa_datasets.embedded_photo_path(n).name not in originals for n in iqa_datasets.EMBEDDED_PHOTOS)


def test_table1_aggregates_per_dataset_and_classifier():
    pairs = pd.DataFrame({"dataset": ["a"] * 4 + ["b"] * 2, "classifier": ["m"] * 6,
                          "mos": [0.1, 0.2, 0.3, 0.4, 0.5, 0.7], "wup": [1.0, 0.5, 0.8, 0.2, 1.0, 1.0],
                          "top1": [1, 2, 1, 3, 5, 5], "top1_ref": [1, 1, 1, 1, 5, 5]})
    t = features.table1(pairs).set_index("dataset")
    assert t.loc["a", "n_images"] == 4 and t.loc["a", "mos_median"] == pytest.approx(0.25)
    assert t.loc["a", "wup_mean"] == pytest.approx(0.625) and t.loc["a", "wup_std"] == pytest.approx(np.std([1, .5, .8, .2], ddof=1))
    assert t.loc["a", "top1_changed"] == pytest.approx(0.5) and t.loc["b", "top1_changed"] == 0
