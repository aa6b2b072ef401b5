"""Tests for iqalib.iqa_datasets readers, on tiny fixtures written in the official layouts."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import savemat

from iqalib import iqa_datasets as iqd

COLUMNS = ["dataset", "ref_id", "ref_path", "path", "distortion", "level", "mos_raw", "mos"]


def _image_bytes(fmt: str, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value // 2, 255 - value)).save(buf, format=fmt)
    return buf.getvalue()


BMP = _image_bytes("BMP")
PNG = _image_bytes("PNG")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _check_common(df: pd.DataFrame, dataset: str) -> None:
    assert list(df.columns) == COLUMNS
    assert (df["dataset"] == dataset).all()
    assert df["mos"].between(0.0, 1.0).all()
    assert df["level"].dtype == np.int64
    for col in ("path", "ref_path"):
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in df[col])


# ---------------------------------------------------------------------------------------
# TID2013
# ---------------------------------------------------------------------------------------

# (file name as listed in mos_with_names.txt, MOS, file name as stored on disk)
TID_ENTRIES = [
    ("i01_01_1.bmp", 6.0, "i01_01_1.bmp"),
    ("i01_01_5.bmp", 2.0, "i01_01_5.bmp"),
    ("i01_08_1.bmp", 5.5, "I01_08_1.BMP"),  # case differs on disk
    ("i01_10_3.bmp", 4.0, "i01_10_3.bmp"),
    ("I01_11_2.BMP", 4.5, "i01_11_2.bmp"),  # case differs in the score file
    ("i25_01_1.bmp", 7.2, "i25_01_1.bmp"),
    ("i25_24_5.bmp", 0.9, "i25_24_5.bmp"),
]


def make_tid2013(root: Path) -> Path:
    lines = [f"{mos:.5f} {listed}" for listed, mos, _ in TID_ENTRIES]
    root.mkdir(parents=True, exist_ok=True)
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    _write(root / "reference_images" / "I01.BMP", BMP)
    _write(root / "reference_images" / "i25.bmp", BMP)
    for _, _, on_disk in TID_ENTRIES:
        _write(root / "distorted_images" / on_disk, BMP)
    return root


def test_tid2013_reads_rows_scores_and_names(tmp_path):
    df = iqd.read_tid2013(make_tid2013(tmp_path / "tid"))
    _check_common(df, "tid2013")
    assert len(df) == len(TID_ENTRIES)
    np.testing.assert_allclose(df["mos_raw"], [m for _, m, _ in TID_ENTRIES])
    np.testing.assert_allclose(df["mos"], df["mos_raw"] / 9.0)
    assert df["distortion"].tolist() == [
        "white_noise", "white_noise", "gaussian_blur", "jpeg", "jpeg2000",
        "white_noise", "sparse_sampling_and_reconstruction",
    ]
    assert df["level"].tolist() == [1, 5, 1, 3, 2, 1, 5]
    assert df["ref_id"].tolist() == ["I01"] * 5 + ["I25"] * 2
    assert df.groupby("ref_id")["ref_path"].nunique().eq(1).all()
    assert Path(df.loc[df.ref_id == "I25", "ref_path"].iloc[0]).name == "i25.bmp"
    # case-insensitive lookup returns the file that really exists
    assert Path(df["path"].iloc[2]).name == "I01_08_1.BMP"
    # higher MOS -> higher mos
    assert df["mos"].idxmax() == df["mos_raw"].idxmax()
    assert df["mos"].idxmin() == df["mos_raw"].idxmin()


def test_tid2013_distortion_table_complete():
    names = iqd.TID2013_DISTORTIONS
    assert sorted(names) == list(range(1, 25))
    assert len(set(names.values())) == 24
    assert all(v == v.lower() and " " not in v for v in names.values())
    assert (names[1], names[8], names[10], names[11]) == (
        "white_noise", "gaussian_blur", "jpeg", "jpeg2000")


def test_tid2013_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as exc:
        iqd.read_tid2013(missing)
    msg = str(exc.value)
    assert "TID2013" in msg and str(missing) in msg and "ponomarenko.info" in msg


def test_tid2013_missing_score_file(tmp_path):
    root = make_tid2013(tmp_path / "tid")
    (root / "mos_with_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match="TID2013.*mos_with_names.txt"):
        iqd.read_tid2013(root)


def test_tid2013_missing_listed_image(tmp_path):
    root = make_tid2013(tmp_path / "tid")
    (root / "distorted_images" / "i01_10_3.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"TID2013.*i01_10_3\.bmp"):
        iqd.read_tid2013(root)


def test_tid2013_bad_line_is_value_error(tmp_path):
    root = make_tid2013(tmp_path / "tid")
    with open(root / "mos_with_names.txt", "a") as f:
        f.write("4.0 i01_25_1.bmp\n")  # distortion type 25 does not exist
    with pytest.raises(ValueError, match="distortion type 25"):
        iqd.read_tid2013(root)


# ---------------------------------------------------------------------------------------
# CSIQ
# ---------------------------------------------------------------------------------------

# (image, dst_idx, dst_type as in the sheet, level, dmos, file name on disk)
CSIQ_ENTRIES = [
    (1600, 1, "noise", 1, 0.06, "awgn/1600.AWGN.1.png"),
    (1600, 1, "noise", 5, 0.70, "awgn/1600.AWGN.5.png"),
    (1600, 2, "jpeg", 2, 0.20, "jpeg/1600.JPEG.2.png"),
    (1600, 3, "jpeg 2000", 3, 0.40, "jpeg2000/1600.jpeg2000.3.png"),
    ("bridge", 4, "fnoise", 1, 0.10, "fnoise/bridge.fnoise.1.png"),
    ("bridge", 5, "blur", 4, 0.65, "blur/bridge.BLUR.4.png"),
    ("bridge", 6, "contrast", 2, -0.01, "contrast/bridge.contrast.2.png"),  # clipped to 0
]


def _csiq_sheet(columns=None) -> pd.DataFrame:
    df = pd.DataFrame(
        [(img, idx, typ, lev, 0.05, dmos) for img, idx, typ, lev, dmos, _ in CSIQ_ENTRIES],
        columns=["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"],
    )
    if columns is not None:
        df.columns = columns
    return df


def make_csiq(root: Path, sheet: pd.DataFrame | None = None, sheet_name="all_by_image",
              startrow: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sheet = _csiq_sheet() if sheet is None else sheet
    with pd.ExcelWriter(root / "csiq.DMOS.xlsx", engine="openpyxl") as xw:
        pd.DataFrame({"note": ["other sheet"]}).to_excel(xw, sheet_name="all_by_distortion")
        sheet.to_excel(xw, sheet_name=sheet_name, index=False, startrow=startrow)
    _write(root / "src_imgs" / "1600.png", PNG)
    _write(root / "src_imgs" / "bridge.png", PNG)
    for *_, rel in CSIQ_ENTRIES:
        _write(root / "dst_imgs" / rel, PNG)
    return root


def test_csiq_reads_rows_scores_and_names(tmp_path):
    df = iqd.read_csiq(make_csiq(tmp_path / "csiq"))
    _check_common(df, "csiq")
    assert len(df) == len(CSIQ_ENTRIES)
    assert df["ref_id"].tolist() == ["1600"] * 4 + ["bridge"] * 3  # numeric name -> "1600"
    assert df["distortion"].tolist() == [
        "white_noise", "white_noise", "jpeg", "jpeg2000", "pink_noise", "gaussian_blur",
        "contrast",
    ]
    assert df["level"].tolist() == [e[3] for e in CSIQ_ENTRIES]
    np.testing.assert_allclose(df["mos_raw"], [e[4] for e in CSIQ_ENTRIES])
    np.testing.assert_allclose(df["mos"], 1.0 - np.clip(df["mos_raw"], 0, 1))
    assert df["mos"].iloc[-1] == 1.0  # slightly negative DMOS clipped
    # lower DMOS -> higher mos
    assert df["mos"].iloc[0] > df["mos"].iloc[1]
    assert [Path(p).relative_to(tmp_path / "csiq" / "dst_imgs").as_posix()
            for p in df["path"]] == [e[5] for e in CSIQ_ENTRIES]
    assert Path(df["ref_path"].iloc[0]).name == "1600.png"


def test_csiq_tolerates_header_case_spaces_and_title_rows(tmp_path):
    sheet = _csiq_sheet([" Image", "DST_IDX", "dst_type ", "Dst_Lev", "dmos_std", " DMOS "])
    root = make_csiq(tmp_path / "csiq", sheet=sheet, sheet_name="All_by_Image", startrow=2)
    df = iqd.read_csiq(root)
    assert len(df) == len(CSIQ_ENTRIES)
    np.testing.assert_allclose(df["mos_raw"], [e[4] for e in CSIQ_ENTRIES])


def test_csiq_missing_column_is_value_error(tmp_path):
    root = make_csiq(tmp_path / "csiq", sheet=_csiq_sheet().drop(columns="dmos"))
    with pytest.raises(ValueError) as exc:
        iqd.read_csiq(root)
    msg = str(exc.value)
    assert "dmos" in msg and "csiq.DMOS.xlsx" in msg and "CSIQ" in msg


def test_csiq_missing_sheet_is_value_error(tmp_path):
    root = make_csiq(tmp_path / "csiq", sheet_name="Sheet1")
    with pytest.raises(ValueError, match="all_by_image"):
        iqd.read_csiq(root)


def test_csiq_unknown_type_is_value_error(tmp_path):
    sheet = _csiq_sheet()
    sheet.loc[0, "dst_type"] = "motion blur"
    with pytest.raises(ValueError, match="motion blur"):
        iqd.read_csiq(make_csiq(tmp_path / "csiq", sheet=sheet))


def test_csiq_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        iqd.read_csiq(tmp_path / "absent")
    assert "CSIQ" in str(exc.value) and str(tmp_path / "absent") in str(exc.value)
    assert "s2.smu.edu" in str(exc.value)

    root = make_csiq(tmp_path / "csiq")
    (root / "dst_imgs" / "jpeg" / "1600.JPEG.2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"CSIQ.*1600\.jpeg\.2\.png"):
        iqd.read_csiq(root)

    (root / "csiq.DMOS.xlsx").unlink()
    with pytest.raises(FileNotFoundError, match=r"CSIQ.*csiq\.DMOS\.xlsx"):
        iqd.read_csiq(root)


# ---------------------------------------------------------------------------------------
# LIVE Release 2
# ---------------------------------------------------------------------------------------

LIVE_REFS = ["bikes.bmp", "buildings.bmp", "caps.bmp", "womanhat.bmp"]


def _live_spec(seed: int = 0):
    """One record per entry of the 982: folder, k, ref, org flag, parameter, dmos, severity."""
    rng = np.random.default_rng(seed)
    recs = []
    for folder, n in iqd.LIVE_FOLDERS:
        sev = rng.uniform(0, 1, n)
        for k in range(1, n + 1):
            s = sev[k - 1]
            org = int(k % 7 == 0)
            if folder in ("jp2k", "jpeg"):
                param = 3.0 - 2.9 * s  # bit rate, lower = worse
            elif folder == "fastfading":
                param = 30.0 - 25.0 * s  # SNR dB, lower = worse
            else:
                param = 0.1 + 3.0 * s  # sigma, higher = worse
            dmos = 0.0 if org else 100.0 * s + rng.normal(0, 3)
            recs.append(dict(folder=folder, k=k, ref=LIVE_REFS[k % len(LIVE_REFS)], org=org,
                             param=param, dmos=dmos, sev=s))
    return pd.DataFrame(recs)


def make_live(root: Path, spec: pd.DataFrame | None = None) -> tuple[Path, pd.DataFrame]:
    spec = _live_spec() if spec is None else spec
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "dmos.mat", {"dmos": spec["dmos"].to_numpy()[None, :],
                                "orgs": spec["org"].to_numpy(dtype=float)[None, :]})
    cell = np.empty((1, len(spec)), dtype=object)
    cell[0, :] = spec["ref"].tolist()
    savemat(root / "refnames_all.mat", {"refnames_all": cell})
    for ref in LIVE_REFS:
        _write(root / "refimgs" / ref, BMP)
    for folder, part in spec.groupby("folder", sort=False):
        (root / folder).mkdir(exist_ok=True)
        lines = [f"{r.ref} img{r.k}.bmp {r.param:.4f}" for r in part.itertuples()]
        (root / folder / "info.txt").write_text("\n".join(lines) + "\n")
        for r in part.itertuples():
            if not r.org:  # the reader must not touch reference copies
                (root / folder / f"img{r.k}.bmp").write_bytes(BMP)
    return root, spec


@pytest.fixture(scope="module")
def live_root(tmp_path_factory):
    return make_live(tmp_path_factory.mktemp("live") / "databaserelease2")


def test_live_reads_rows_and_excludes_reference_copies(live_root):
    root, spec = live_root
    df = iqd.read_live(root)
    _check_common(df, "live")
    assert len(spec) == 982
    kept = spec[spec.org == 0].reset_index(drop=True)
    assert len(df) == len(kept) < 982
    expected_paths = [str(root / f / f"img{k}.bmp") for f, k in zip(kept.folder, kept.k)]
    assert df["path"].tolist() == expected_paths
    np.testing.assert_allclose(df["mos_raw"], kept["dmos"])
    np.testing.assert_allclose(df["mos"], 1 - np.clip(kept["dmos"] / 100, 0, 1))
    assert df.groupby("distortion").size().to_dict() == {
        "jpeg2000": 227 - 227 // 7, "jpeg": 233 - 233 // 7, "white_noise": 174 - 174 // 7,
        "gaussian_blur": 174 - 174 // 7, "fast_fading": 174 - 174 // 7}
    assert sorted(df["ref_id"].unique()) == ["bikes", "buildings", "caps", "womanhat"]
    assert (df["ref_id"] == kept["ref"].str.replace(".bmp", "", regex=False)).all()
    assert df.groupby("ref_id")["ref_path"].nunique().eq(1).all()
    # lower DMOS -> higher mos
    assert df["mos"].corr(df["mos_raw"], method="spearman") == pytest.approx(-1.0)
    assert df.attrs["level_source"] == {f: "parameter" for f, _ in iqd.LIVE_FOLDERS}


def test_live_levels_follow_parameter_direction(live_root):
    root, spec = live_root
    df = iqd.read_live(root)
    kept = spec[spec.org == 0].reset_index(drop=True)
    assert set(df["level"]) == {1, 2, 3, 4, 5}
    for dist, part in df.groupby("distortion"):
        sev = kept.loc[part.index, "sev"]
        # level is a monotone (quintile) function of the true severity in every type
        assert part["level"].corr(sev, method="spearman") > 0.95, dist
        assert part["level"].value_counts().min() >= len(part) // 5 - 1
        assert part.loc[sev.idxmax(), "level"] == 5 and part.loc[sev.idxmin(), "level"] == 1
    # jpeg: the lowest bit rate is the worst level
    jpeg = kept[kept.folder == "jpeg"]
    assert df.loc[jpeg["param"].idxmin(), "level"] == 5


def test_live_dmos_outside_0_100_is_clipped(tmp_path):
    spec = _live_spec()
    spec.loc[0, "dmos"], spec.loc[1, "dmos"] = -2.5, 104.0
    assert spec.loc[[0, 1], "org"].eq(0).all()
    root, _ = make_live(tmp_path / "live", spec)
    df = iqd.read_live(root)
    assert df["mos"].iloc[0] == 1.0 and df["mos"].iloc[1] == 0.0
    assert df["mos_raw"].iloc[0] == -2.5


def test_live_missing_files(tmp_path, live_root):
    with pytest.raises(FileNotFoundError) as exc:
        iqd.read_live(tmp_path / "absent")
    assert "LIVE" in str(exc.value) and str(tmp_path / "absent") in str(exc.value)
    assert "live.ece.utexas.edu" in str(exc.value)

    root = tmp_path / "live"
    shutil.copytree(live_root[0], root)
    (root / "gblur" / "img1.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"LIVE.*gblur.img1\.bmp"):
        iqd.read_live(root)

    (root / "dmos.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"LIVE.*dmos\.mat"):
        iqd.read_live(root)


def test_live_entry_count_mismatch_is_value_error(tmp_path, live_root):
    root = tmp_path / "live"
    shutil.copytree(live_root[0], root)
    spec = live_root[1]
    savemat(root / "dmos.mat", {"dmos": spec["dmos"].to_numpy()[None, :-1],
                                "orgs": spec["org"].to_numpy(dtype=float)[None, :-1]})
    with pytest.raises(ValueError, match="981 entries, expected 982"):
        iqd.read_live(root)


@pytest.mark.parametrize("damage", ["dmos_truncated", "dmos_infinite", "info_not_text"])
def test_live_damaged_files_are_value_errors_naming_them(tmp_path, live_root, damage):
    root = tmp_path / "live"
    shutil.copytree(live_root[0], root)
    spec = live_root[1]
    if damage == "dmos_truncated":
        (root / "dmos.mat").write_bytes((root / "dmos.mat").read_bytes()[:100])
        expected = r"cannot read .*dmos\.mat as a MATLAB file"
    elif damage == "dmos_infinite":
        dmos = spec["dmos"].to_numpy().copy()
        dmos[5] = np.inf
        savemat(root / "dmos.mat", {"dmos": dmos[None, :], "orgs": spec["org"].to_numpy(dtype=float)[None, :]})
        expected = r"dmos\.mat 'dmos' contains NaN or infinite"
    else:
        (root / "jpeg" / "info.txt").write_bytes(b"\xff\xfe\x00 not text")
        expected = r"jpeg/info\.txt is not utf-8 text"
    with pytest.raises(ValueError, match=expected):
        iqd.read_live(root)


def test_tid2013_scores_not_in_utf8_are_a_value_error(tmp_path):
    root = make_tid2013(tmp_path / "tid")
    (root / "mos_with_names.txt").write_bytes(b"\xff\xfe\xfa junk")
    with pytest.raises(ValueError, match=r"TID2013: .*mos_with_names\.txt is not utf-8-sig text"):
        iqd.read_tid2013(root)


def test_csiq_scores_without_a_name_and_a_header_named_twice_are_value_errors(tmp_path):
    sheet = _csiq_sheet()
    sheet.loc[2, "image"] = None
    with pytest.raises(ValueError, match=r"row\(s\) \[4\] have scores but no image name"):
        iqd.read_csiq(make_csiq(tmp_path / "a", sheet=sheet))
    twice = _csiq_sheet().assign(DMOS=0.5)  # "DMOS" and "dmos"
    with pytest.raises(ValueError, match=r"\['dmos'\] more than once"):
        iqd.read_csiq(make_csiq(tmp_path / "b", sheet=twice))
    spaced = pd.concat([_csiq_sheet(), pd.DataFrame([{c: None for c in _csiq_sheet().columns}])], ignore_index=True)
    assert len(iqd.read_csiq(make_csiq(tmp_path / "c", sheet=spaced))) == len(CSIQ_ENTRIES)  # a blank row is dropped


def test_live_refnames_disagreeing_with_info_is_value_error(tmp_path, live_root):
    root = tmp_path / "live"
    shutil.copytree(live_root[0], root)
    cell = np.empty((1, 982), dtype=object)
    cell[0, :] = live_root[1]["ref"].tolist()[::-1]  # wrong order
    savemat(root / "refnames_all.mat", {"refnames_all": cell})
    with pytest.raises(ValueError, match="refnames_all"):
        iqd.read_live(root)


def test_live_parameter_direction_contradiction_is_value_error(tmp_path):
    spec = _live_spec()
    is_wn = spec.folder == "wn"
    spec.loc[is_wn, "param"] = 10.0 - spec.loc[is_wn, "param"]  # now higher sigma = better
    root, _ = make_live(tmp_path / "live", spec)
    with pytest.raises(ValueError, match=r"wn.*contradicts the DMOS"):
        iqd.read_live(root)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


def test_registry_dispatch_and_unknown_name(tmp_path):
    assert set(iqd.READERS) == {"tid2013", "csiq", "live"}
    root = make_tid2013(tmp_path / "tid")
    pd.testing.assert_frame_equal(iqd.read_iqa_dataset("TID2013", root), iqd.read_tid2013(root))
    with pytest.raises(ValueError) as exc:
        iqd.read_iqa_dataset("kadid10k", root)
    assert all(name in str(exc.value) for name in ("tid2013", "csiq", "live"))
