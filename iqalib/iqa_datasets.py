"""Readers for subjective IQA datasets (TID2013, CSIQ, LIVE R2) in their official layouts.

Every reader takes a dataset root in its official distribution layout and returns one
``pandas.DataFrame`` with the columns of :data:`IQA_COLUMNS` (see :func:`read_iqa_dataset`).
The embedded pseudo-MOS set, built from shipped photos, lives in ``embedded_iqa``.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

__all__ = [
    "IQA_COLUMNS",
    "LIVE_FOLDERS",
    "READERS",
    "TID2013_DISTORTIONS",
    "read_csiq",
    "read_iqa_dataset",
    "read_live",
    "read_tid2013",
]

#: Columns of every reader's output, in this order.
#:
#: - ``dataset``    str, registry name ("tid2013", "csiq", "live")
#: - ``ref_id``     str, id of the pristine reference image (group key for content-disjoint splits)
#: - ``ref_path``   str, absolute path of the reference image
#: - ``path``       str, absolute path of the distorted image
#: - ``distortion`` str, normalised snake_case distortion name
#: - ``level``      int, distortion level, 1 = mildest (see each reader for its source)
#: - ``mos_raw``    float, the dataset's own score as given (MOS or DMOS, dataset units)
#: - ``mos``        float in [0, 1], higher = better quality
IQA_COLUMNS: tuple[str, ...] = (
    "dataset",
    "ref_id",
    "ref_path",
    "path",
    "distortion",
    "level",
    "mos_raw",
    "mos",
)

_SOURCES = {
    "tid2013": ("TID2013", "http://www.ponomarenko.info/tid2013.htm"),
    "csiq": ("CSIQ", "https://s2.smu.edu/~eclarson/csiq.html"),
    "live": ("LIVE Release 2", "https://live.ece.utexas.edu/research/quality/subjective.htm"),
}


# ----------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------


def _missing(dataset: str, what: str, path: Path, layout: str = "") -> FileNotFoundError:
    """Build one clear FileNotFoundError naming the dataset, the path and the data source."""
    label, url = _SOURCES[dataset]
    msg = f"{label}: {what} not found: {path}. Download {label} from {url}"
    if layout:
        msg += f" and pass its root folder (expected layout: {layout})"
    return FileNotFoundError(msg + ".")


def _check_root(dataset: str, root: str | Path, layout: str) -> Path:
    """Return ``root`` as an absolute Path, or raise FileNotFoundError if it is not a folder."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise _missing(dataset, "dataset root folder", root, layout)
    return root


def _require_file(dataset: str, path: Path, what: str, layout: str) -> Path:
    if not path.is_file():
        raise _missing(dataset, what, path, layout)
    return path


def _require_dir(dataset: str, path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise _missing(dataset, what, path, layout)
    return path


class _CaseInsensitiveDir:
    """Look up file names in one folder ignoring case (the datasets mix BMP/bmp, I01/i01).

    An exact-case match wins; if only case-folded matches exist and there is more than one,
    the lookup raises rather than guessing.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._names: set[str] = set()
        self._folded: dict[str, list[str]] = {}
        if directory.is_dir():
            for p in directory.iterdir():
                self._names.add(p.name)
                self._folded.setdefault(p.name.lower(), []).append(p.name)

    def find(self, name: str) -> Path | None:
        if name in self._names:
            return self.directory / name
        hits = self._folded.get(name.lower(), [])
        if len(hits) > 1:
            raise ValueError(
                f"ambiguous file name {name!r} in {self.directory}: "
                f"several case variants exist {sorted(hits)}"
            )
        return self.directory / hits[0] if hits else None


def _raise_if_missing(dataset: str, what: str, missing: list[Path]) -> None:
    """Raise one FileNotFoundError naming the missing listed files (first few + count)."""
    if not missing:
        return
    label, url = _SOURCES[dataset]
    shown = ", ".join(str(p) for p in missing[:5])
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    raise FileNotFoundError(
        f"{label}: {len(missing)} {what}(s) listed in the score file not found: {shown}{more}. "
        f"The copy of {label} looks incomplete; re-download it from {url}."
    )


def _finish(rows: list[dict], dataset: str) -> pd.DataFrame:
    """Assemble the rows into a DataFrame with exactly IQA_COLUMNS and stable dtypes."""
    df = pd.DataFrame(rows, columns=list(IQA_COLUMNS))
    df["dataset"] = dataset
    for col in ("ref_id", "ref_path", "path", "distortion"):
        df[col] = df[col].astype(str)
    df["level"] = df["level"].astype("int64")
    df["mos_raw"] = df["mos_raw"].astype("float64")
    df["mos"] = df["mos"].astype("float64")
    if not df["mos"].between(0.0, 1.0).all():  # pragma: no cover - guarded by the readers
        raise AssertionError(f"{dataset}: mos outside [0, 1]")
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------------------
# TID2013
# ----------------------------------------------------------------------------------------

#: TID2013 distortion type number (the ``tt`` in ``iXX_tt_l.bmp``) -> normalised name,
#: following the list in the TID2013 readme.
TID2013_DISTORTIONS: dict[int, str] = {
    1: "white_noise",  # additive Gaussian noise
    2: "color_noise",  # additive noise in colour components stronger than in luminance
    3: "spatially_correlated_noise",
    4: "masked_noise",
    5: "high_frequency_noise",
    6: "impulse_noise",
    7: "quantization_noise",
    8: "gaussian_blur",
    9: "image_denoising",
    10: "jpeg",
    11: "jpeg2000",
    12: "jpeg_transmission_errors",
    13: "jpeg2000_transmission_errors",
    14: "non_eccentricity_pattern_noise",
    15: "local_blockwise_distortions",
    16: "mean_shift",  # intensity shift
    17: "contrast_change",
    18: "color_saturation_change",
    19: "multiplicative_gaussian_noise",
    20: "comfort_noise",
    21: "lossy_compression_of_noisy_images",
    22: "color_quantization_with_dither",
    23: "chromatic_aberrations",
    24: "sparse_sampling_and_reconstruction",
}

_TID_LAYOUT = (
    "root/mos_with_names.txt, root/reference_images/I01.BMP..., "
    "root/distorted_images/i01_01_1.bmp..."
)
_TID_NAME = re.compile(r"^i(\d{2})_(\d{2})_(\d)\.bmp$", re.IGNORECASE)


def _parse_tid_line(line: str, where: str, seen: set[str]) -> tuple[str, int, int, int, float]:
    """One ``<MOS> <file>`` line -> (file, image no., type no., level, MOS); ``seen`` catches repeats."""
    parts = line.split()
    if len(parts) != 2:
        raise ValueError(f"{where}: expected '<MOS> <file>', got {line!r}")
    mos_txt, fname = parts
    m = _TID_NAME.match(fname)
    if m is None:
        raise ValueError(f"{where}: file name {fname!r} does not match 'iNN_TT_L.bmp'")
    img_no, type_no, level = (int(g) for g in m.groups())
    if type_no not in TID2013_DISTORTIONS:
        raise ValueError(f"{where}: unknown distortion type {type_no:02d} in {fname!r} (expected 01..24)")
    if not 1 <= level <= 5:
        raise ValueError(f"{where}: level {level} not in 1..5")
    if fname.lower() in seen:
        raise ValueError(f"{where}: {fname!r} listed twice")
    seen.add(fname.lower())
    try:
        mos_raw = float(mos_txt)
    except ValueError:
        raise ValueError(f"{where}: MOS {mos_txt!r} is not a number") from None
    if not 0.0 <= mos_raw <= 9.0:
        raise ValueError(f"{where}: MOS {mos_raw} outside 0..9")
    return fname, img_no, type_no, level, mos_raw


def read_tid2013(root: str | Path) -> pd.DataFrame:
    """Read TID2013 (25 references x 24 distortions x 5 levels = 3000 images).

    Layout: ``root/mos_with_names.txt`` (lines ``<MOS> <file>``), ``root/reference_images/``
    (``I01.BMP`` ... ``I24.BMP``, ``i25.bmp``) and ``root/distorted_images/`` (``i01_01_1.bmp``
    = image 01, distortion type 01, level 1). File-name case varies and is ignored.

    Columns (see :data:`IQA_COLUMNS`):

    - ``ref_id``: ``"I01"`` ... ``"I25"``.
    - ``distortion``: from :data:`TID2013_DISTORTIONS` (type number 1..24).
    - ``level``: the file's own level 1..5, 1 = mildest (TID2013 generates levels at
      decreasing PSNR). Caveat: for ``mean_shift`` and ``contrast_change`` the levels
      alternate between decreasing and increasing brightness/contrast, so level is not
      monotone in perceived quality for those two types.
    - ``mos_raw``: MOS as given, nominal range 0..9, higher = better.
    - ``mos``: ``MOS / 9`` in [0, 1].

    The number of rows is whatever the score file lists (3000 for the official file); every
    listed distorted image and its reference must exist, else FileNotFoundError.
    """
    root = _check_root("tid2013", root, _TID_LAYOUT)
    score_file = _require_file("tid2013", root / "mos_with_names.txt", "score file", _TID_LAYOUT)
    ref_dir = _require_dir(
        "tid2013", root / "reference_images", "reference image folder", _TID_LAYOUT
    )
    dist_dir = _require_dir(
        "tid2013", root / "distorted_images", "distorted image folder", _TID_LAYOUT
    )
    refs = _CaseInsensitiveDir(ref_dir)
    dists = _CaseInsensitiveDir(dist_dir)

    rows: list[dict] = []
    missing: list[Path] = []
    seen: set[str] = set()
    text = _text(score_file, "TID2013", encoding="utf-8-sig")
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fname, img_no, type_no, level, mos_raw = _parse_tid_line(line, f"TID2013: {score_file}:{lineno}", seen)
        ref_id = f"I{img_no:02d}"
        ref_path = refs.find(f"{ref_id}.bmp")
        if ref_path is None:
            missing.append(ref_dir / f"{ref_id}.BMP")
            ref_path = ref_dir / f"{ref_id}.BMP"
        path = dists.find(fname)
        if path is None:
            missing.append(dist_dir / fname)
            path = dist_dir / fname
        rows.append(
            dict(
                ref_id=ref_id,
                ref_path=str(ref_path),
                path=str(path),
                distortion=TID2013_DISTORTIONS[type_no],
                level=level,
                mos_raw=mos_raw,
                mos=mos_raw / 9.0,
            )
        )
    if not rows:
        raise ValueError(f"TID2013: score file {score_file} lists no images")
    _raise_if_missing("tid2013", "image file", sorted(set(missing)))
    return _finish(rows, "tid2013")


# ----------------------------------------------------------------------------------------
# CSIQ
# ----------------------------------------------------------------------------------------

_CSIQ_LAYOUT = (
    "root/csiq.DMOS.xlsx (sheet 'all_by_image'), root/src_imgs/<image>.png, "
    "root/dst_imgs/<type>/<image>.<TYPE>.<level>.png"
)
_CSIQ_SHEET = "all_by_image"
#: Columns read from the spreadsheet (dst_idx and dmos_std exist too but are not needed).
_CSIQ_REQUIRED = ("image", "dst_type", "dst_lev", "dmos")
#: dst_type spelling (lower-cased, single spaces) -> normalised distortion name.
#: The official sheet is believed to use "noise", "jpeg", "jpeg 2000", "fnoise", "blur",
#: "contrast"; the folder/abbreviation spellings are accepted as well.
_CSIQ_TYPES = {
    "awgn": "white_noise",
    "noise": "white_noise",
    "white noise": "white_noise",
    "blur": "gaussian_blur",
    "gblur": "gaussian_blur",
    "gaussian blur": "gaussian_blur",
    "jpeg": "jpeg",
    "jpeg 2000": "jpeg2000",
    "jpeg2000": "jpeg2000",
    "jp2k": "jpeg2000",
    "fnoise": "pink_noise",
    "1/f noise": "pink_noise",
    "pink noise": "pink_noise",
    "contrast": "contrast",
}
#: normalised distortion -> folder under dst_imgs/ (also the case-folded file abbreviation:
#: files are e.g. 1600.AWGN.1.png, 1600.BLUR.1.png, 1600.JPEG.1.png, 1600.jpeg2000.1.png,
#: 1600.fnoise.1.png, 1600.contrast.1.png).
_CSIQ_FOLDERS = {
    "white_noise": "awgn",
    "gaussian_blur": "blur",
    "jpeg": "jpeg",
    "jpeg2000": "jpeg2000",
    "pink_noise": "fnoise",
    "contrast": "contrast",
}


def _norm_header(value: object) -> str:
    return re.sub(r"\s+", "_", str(value).strip().lower()) if value is not None else ""


def _csiq_image_name(value: object) -> str:
    """Spreadsheet image names: numeric names such as 1600 may come back as int/float."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _read_csiq_sheet(xlsx: Path) -> pd.DataFrame:
    """Read the ``all_by_image`` sheet with the required columns (lower-case names).

    Uncertain detail: whether the header is on the sheet's first row. We therefore look for
    the header in the first 20 rows (the row matching most required column names) and fail
    with a ValueError naming the missing columns if no row has all of them.
    """
    try:
        book = pd.ExcelFile(xlsx, engine="openpyxl")
    except Exception as exc:  # corrupt / not an xlsx
        raise ValueError(f"CSIQ: cannot read spreadsheet {xlsx}: {exc}") from exc
    with book:
        sheets = {str(s).strip().lower(): s for s in book.sheet_names}
        if _CSIQ_SHEET not in sheets:
            raise ValueError(
                f"CSIQ: sheet {_CSIQ_SHEET!r} not found in {xlsx}; "
                f"sheets present: {book.sheet_names}"
            )
        raw = pd.read_excel(book, sheet_name=sheets[_CSIQ_SHEET], header=None, dtype=object)

    best_row, best_hits = 0, -1
    for i in range(min(20, len(raw))):
        names = {_norm_header(v) for v in raw.iloc[i].tolist() if not pd.isna(v)}
        hits = sum(c in names for c in _CSIQ_REQUIRED)
        if hits > best_hits:
            best_row, best_hits = i, hits
    header = []
    if len(raw):
        header = [_norm_header(v) if not pd.isna(v) else "" for v in raw.iloc[best_row].tolist()]
    missing = [c for c in _CSIQ_REQUIRED if c not in header]
    if missing:
        raise ValueError(
            f"CSIQ: sheet {_CSIQ_SHEET!r} of {xlsx} lacks required column(s) {missing} "
            f"(looked for a header row with {list(_CSIQ_REQUIRED)}; best candidate row "
            f"{best_row + 1} has {[h for h in header if h]})"
        )
    twice = [c for c in _CSIQ_REQUIRED if header.count(c) > 1]
    if twice:
        raise ValueError(f"CSIQ: sheet {_CSIQ_SHEET!r} of {xlsx} has column(s) {twice} more than once in its header "
                         f"(row {best_row + 1}; names compared in lower case): which one holds the scores is unclear")
    cols = {c: header.index(c) for c in _CSIQ_REQUIRED}
    body = raw.iloc[best_row + 1 :, list(cols.values())]
    body.columns = list(cols.keys())
    # Trailing blank rows (or blank spacer rows) carry nothing: drop them. A row with scores but
    # no image name is an error, not a blank row.
    blank = body.apply(lambda column: column.isna() | (column.astype(str).str.strip() == ""))
    nameless = blank["image"] & ~blank.drop(columns="image").all(axis=1)
    if nameless.any():
        rows = [int(i) + 1 for i in body.index[nameless][:5]]
        raise ValueError(f"CSIQ: sheet {_CSIQ_SHEET!r} of {xlsx}: row(s) {rows} have scores but no image name")
    return body[~blank["image"]].reset_index(drop=True)


def _csiq_entry(rec, where: str, seen: set[tuple[str, str, int]]) -> tuple[str, str, int, float]:
    """One spreadsheet row -> (image, distortion, level, dmos), validated; ``seen`` catches repeats."""
    image = _csiq_image_name(rec.image)
    dst_type = re.sub(r"\s+", " ", str(rec.dst_type).strip().lower())
    if dst_type not in _CSIQ_TYPES:
        raise ValueError(f"{where}: unknown dst_type {rec.dst_type!r} (known: {sorted(set(_CSIQ_TYPES))})")
    distortion = _CSIQ_TYPES[dst_type]
    try:
        level_f = float(rec.dst_lev)
        dmos = float(rec.dmos)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: non-numeric dst_lev {rec.dst_lev!r} or dmos {rec.dmos!r}") from None
    if math.isnan(level_f) or not level_f.is_integer() or not 1 <= level_f <= 5:
        raise ValueError(f"{where}: dst_lev {rec.dst_lev!r} is not an integer in 1..5")
    # DMOS is documented as 0..1; a value far outside suggests a wrong column or a
    # 0..100 scale, so fail instead of clipping it away. Small excursions are clipped.
    if math.isnan(dmos) or not -0.1 <= dmos <= 1.1:
        raise ValueError(f"{where}: dmos {rec.dmos!r} is not in the expected 0..1 range")
    level = int(level_f)
    key = (image.lower(), distortion, level)
    if key in seen:
        raise ValueError(f"{where}: duplicate entry {image}/{distortion}/level {level}")
    seen.add(key)
    return image, distortion, level, dmos


def read_csiq(root: str | Path) -> pd.DataFrame:
    """Read CSIQ (30 references, 6 distortions, 4-5 levels; 866 images officially).

    Layout: ``root/csiq.DMOS.xlsx`` (sheet ``all_by_image``, columns image, dst_idx,
    dst_type, dst_lev, dmos_std, dmos; header names matched case-insensitively with
    spaces stripped), ``root/src_imgs/<image>.png`` and
    ``root/dst_imgs/<folder>/<image>.<TYPE>.<level>.png`` with folders
    ``awgn blur contrast fnoise jpeg jpeg2000`` (file-name case is ignored).

    Columns (see :data:`IQA_COLUMNS`):

    - ``ref_id``: the ``image`` name (e.g. ``"1600"``).
    - ``distortion``: white_noise, gaussian_blur, jpeg, jpeg2000, pink_noise, contrast.
    - ``level``: ``dst_lev`` as given, 1 = mildest.
    - ``mos_raw``: DMOS as given, 0..1, lower = better.
    - ``mos``: ``1 - clip(dmos, 0, 1)``.

    Raises ValueError for a missing sheet/column or an unknown dst_type, FileNotFoundError
    for a missing root, spreadsheet or listed image.
    """
    root = _check_root("csiq", root, _CSIQ_LAYOUT)
    xlsx = root / "csiq.DMOS.xlsx"
    if not xlsx.is_file():  # tolerate a case-changed copy of the file name
        xlsx = _CaseInsensitiveDir(root).find("csiq.DMOS.xlsx") or xlsx
    _require_file("csiq", xlsx, "DMOS spreadsheet", _CSIQ_LAYOUT)
    src_dir = _require_dir("csiq", root / "src_imgs", "reference image folder", _CSIQ_LAYOUT)
    dst_dir = _require_dir("csiq", root / "dst_imgs", "distorted image folder", _CSIQ_LAYOUT)

    sheet = _read_csiq_sheet(xlsx)
    if sheet.empty:
        raise ValueError(f"CSIQ: sheet {_CSIQ_SHEET!r} of {xlsx} has no data rows")

    srcs = _CaseInsensitiveDir(src_dir)
    folders: dict[str, _CaseInsensitiveDir] = {}
    rows: list[dict] = []
    missing: list[Path] = []
    seen: set[tuple[str, str, int]] = set()
    for i, rec in enumerate(sheet.itertuples(index=False)):
        where = f"CSIQ: {xlsx} sheet {_CSIQ_SHEET!r} data row {i + 1}"
        image, distortion, level, dmos = _csiq_entry(rec, where, seen)

        ref_path = srcs.find(f"{image}.png")
        if ref_path is None:
            ref_path = src_dir / f"{image}.png"
            missing.append(ref_path)
        folder = _CSIQ_FOLDERS[distortion]
        if folder not in folders:
            folders[folder] = _CaseInsensitiveDir(dst_dir / folder)
        fname = f"{image}.{folder}.{level}.png"  # abbreviation case is ignored by find()
        path = folders[folder].find(fname)
        if path is None:
            path = dst_dir / folder / fname
            missing.append(path)
        rows.append(
            dict(
                ref_id=image,
                ref_path=str(ref_path),
                path=str(path),
                distortion=distortion,
                level=level,
                mos_raw=dmos,
                mos=1.0 - min(max(dmos, 0.0), 1.0),
            )
        )
    _raise_if_missing("csiq", "image file", sorted(set(missing)))
    return _finish(rows, "csiq")


# ----------------------------------------------------------------------------------------
# LIVE Release 2
# ----------------------------------------------------------------------------------------

_LIVE_LAYOUT = (
    "root/dmos.mat, root/refnames_all.mat, root/refimgs/, "
    "root/{jp2k,jpeg,wn,gblur,fastfading}/info.txt + img<k>.bmp"
)
#: Folders in the order of the 982 entries of dmos.mat / refnames_all.mat, with sizes.
LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)
LIVE_N_ENTRIES = sum(n for _, n in LIVE_FOLDERS)  # 982
_LIVE_DISTORTIONS = {
    "jp2k": "jpeg2000",
    "jpeg": "jpeg",
    "wn": "white_noise",
    "gblur": "gaussian_blur",
    "fastfading": "fast_fading",
}
#: Sign that turns the info.txt parameter into a severity (larger = worse). ASSUMPTIONS:
#: jp2k/jpeg: bit rate (bpp), lower = worse -> -1; wn: noise sigma, gblur: blur kernel
#: sigma, higher = worse -> +1; fastfading: receiver/channel SNR (dB), lower = worse -> -1.
#: The fastfading meaning is the least certain; read_live() checks every assumed direction
#: against the DMOS (Spearman correlation must be positive) and raises if contradicted.
_LIVE_SEVERITY_SIGN = {"jp2k": -1.0, "jpeg": -1.0, "wn": 1.0, "gblur": 1.0, "fastfading": -1.0}


def _mat_var(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"LIVE Release 2: variable {name!r} not found in {path}; found {found}")
    return np.asarray(mat[name])


def _mat_str(value: object) -> str:
    """A MATLAB cell element as loaded by scipy (nested 1-element arrays) -> str."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one string, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    return str(value).strip()


def _read_live_info(info: Path, n: int) -> tuple[dict[int, str], dict[int, float] | None]:
    """Parse ``info.txt``: lines ``<ref name> <distorted name> <parameter>``.

    Returns (k -> reference name, k -> parameter or None) for img1..img{n}. Strict: every
    ``img<k>.bmp`` with 1 <= k <= n must be listed exactly once and nothing else. Lines with
    only two fields (no parameter) are accepted only if *all* lines lack it.
    """
    refs: dict[int, str] = {}
    params: dict[int, float] = {}
    n_fields: set[int] = set()
    for lineno, line in enumerate(_text(info, "LIVE Release 2").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"LIVE Release 2: {info}:{lineno}"
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected '<ref> <img> <parameter>', got {line!r}")
        m = re.fullmatch(r"img(\d+)\.bmp", parts[1], flags=re.IGNORECASE)
        if m is None:
            raise ValueError(f"{where}: distorted name {parts[1]!r} is not 'img<k>.bmp'")
        k = int(m.group(1))
        if not 1 <= k <= n:
            raise ValueError(f"{where}: {parts[1]!r} outside img1..img{n} for this folder")
        if k in refs:
            raise ValueError(f"{where}: {parts[1]!r} listed twice")
        refs[k] = parts[0]
        n_fields.add(len(parts))
        if len(parts) == 3:
            try:
                params[k] = float(parts[2])
            except ValueError:
                raise ValueError(f"{where}: parameter {parts[2]!r} is not a number") from None
    if len(n_fields) > 1:
        raise ValueError(f"LIVE Release 2: {info}: some lines have a parameter, others not")
    absent = [k for k in range(1, n + 1) if k not in refs]
    if absent:
        raise ValueError(
            f"LIVE Release 2: {info} lists {len(refs)} images, expected {n} "
            f"(img1..img{n}); missing e.g. img{absent[0]}.bmp"
        )
    return refs, (params if n_fields == {3} else None)


def _quintile_levels(severity: pd.Series) -> pd.Series:
    """Map a severity (larger = worse) to levels 1..5 by rank quintile (ties share a level)."""
    pct = severity.rank(method="average", pct=True)
    return np.ceil(pct * 5).clip(1, 5).astype("int64")


def read_live(root: str | Path) -> pd.DataFrame:
    """Read LIVE Release 2 (29 references; 982 entries of which 779 are distorted images).

    Layout: ``root/dmos.mat`` (``dmos`` 1x982, ``orgs`` 1x982 with 1 = the entry is a copy of
    its reference), ``root/refnames_all.mat`` (``refnames_all``, 1x982 cell of reference file
    names), ``root/refimgs/<ref>.bmp`` and the folders jp2k (227), jpeg (233), wn (174),
    gblur (174), fastfading (174), in that order in the 982 entries; entry k of a folder is
    ``img<k>.bmp``, described by a line ``<ref> img<k>.bmp <parameter>`` of its ``info.txt``.

    Entries with ``orgs == 1`` (reference copies) are excluded.

    Columns (see :data:`IQA_COLUMNS`):

    - ``ref_id``: reference file name without extension (e.g. ``"bikes"``).
    - ``distortion``: jpeg2000, jpeg, white_noise, gaussian_blur, fast_fading.
    - ``level``: 1..5, quintile of the info.txt distortion parameter ranked within each
      distortion type over all references (direction per ``_LIVE_SEVERITY_SIGN``: bit rate
      lower = worse, sigma higher = worse, fast-fading SNR lower = worse). If a folder's
      info.txt has no parameter column, the level falls back to the DMOS quintile within
      (reference, type) and a warning is issued. ``df.attrs["level_source"]`` records which
      source was used per folder ("parameter" or "dmos").
    - ``mos_raw``: DMOS as given in dmos.mat (roughly 0..100, higher = worse).
    - ``mos``: ``1 - clip(dmos / 100, 0, 1)``.

    Strict checks (ValueError): 982 entries in every .mat variable, refnames_all agreeing
    with info.txt, every info.txt listing img1..img<n>, and the assumed parameter direction
    agreeing with the DMOS. Missing files raise FileNotFoundError.
    """
    root = _check_root("live", root, _LIVE_LAYOUT)
    dmos_file = _require_file("live", root / "dmos.mat", "score file dmos.mat", _LIVE_LAYOUT)
    names_file = _require_file("live", root / "refnames_all.mat", "reference-name file refnames_all.mat", _LIVE_LAYOUT)
    ref_dir = _require_dir("live", root / "refimgs", "reference image folder", _LIVE_LAYOUT)
    infos = {f: _require_file("live", root / f / "info.txt", f"{f}/info.txt", _LIVE_LAYOUT) for f, _ in LIVE_FOLDERS}
    dmos, orgs, refnames = _read_live_scores(dmos_file, names_file)

    refs = _CaseInsensitiveDir(ref_dir)
    rows: list[dict] = []
    missing: list[Path] = []
    level_source: dict[str, str] = {}
    offset = 0
    for folder, n in LIVE_FOLDERS:
        info_refs, info_params = _read_live_info(infos[folder], n)
        imgs = _CaseInsensitiveDir(root / folder)
        folder_rows = []
        for k in range(1, n + 1):
            idx = offset + k - 1
            if refnames[idx].lower() != info_refs[k].lower():
                raise ValueError(
                    f"LIVE Release 2: entry {idx + 1} ({folder}/img{k}.bmp): refnames_all.mat "
                    f"says {refnames[idx]!r} but {infos[folder]} says {info_refs[k]!r}; the "
                    "assumed entry order (jp2k, jpeg, wn, gblur, fastfading) may be wrong"
                )
            if orgs[idx] == 1:
                continue  # reference copy: not a distorted image
            d = float(dmos[idx])
            folder_rows.append(
                dict(
                    **_live_paths(refs, imgs, refnames[idx], f"img{k}.bmp", missing),
                    distortion=_LIVE_DISTORTIONS[folder],
                    level=0,  # filled below
                    mos_raw=d,
                    # Some DMOS values in dmos.mat are slightly negative or above 100; they
                    # are clipped to the 0..100 scale before normalising.
                    mos=1.0 - min(max(d / 100.0, 0.0), 1.0),
                    _param=np.nan if info_params is None else info_params[k],
                )
            )
        offset += n
        if folder_rows:
            part = pd.DataFrame(folder_rows)
            level_source[folder] = _live_levels(part, folder, infos[folder], info_params is not None)
            rows.extend(part.drop(columns="_param").to_dict("records"))

    _raise_if_missing("live", "image file", sorted(set(missing)))
    df = _finish(rows, "live")
    df.attrs["level_source"] = level_source
    return df


def _text(path: Path, dataset: str, encoding: str = "utf-8") -> str:
    """A score or info file's text; bytes that are not ``encoding`` are a ValueError naming it."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{dataset}: {path} is not {encoding} text (byte {exc.start}): is it the official file?") from None


def _loadmat(path: Path) -> dict:
    """scipy's ``loadmat`` of ``path``; a file it cannot read is a ValueError naming it."""
    from scipy.io import loadmat  # local import: scipy is only needed for LIVE

    try:
        return loadmat(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 (scipy raises MatReadError, IndexError, ... on a damaged file)
        raise ValueError(f"LIVE Release 2: cannot read {path} as a MATLAB file ({type(exc).__name__}: {exc})") from None


def _read_live_scores(dmos_file: Path, names_file: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(dmos, orgs, reference names) of the 982 entries, each checked for length and values."""
    # dmos.mat from the official release is the un-realigned DMOS; dmos_realigned.mat
    # (dmos_new) is a different file and is not read here.
    dmos_mat = _loadmat(dmos_file)
    dmos = _mat_var(dmos_mat, "dmos", dmos_file).astype("float64").reshape(-1)
    orgs = _mat_var(dmos_mat, "orgs", dmos_file).reshape(-1)
    refnames_raw = _mat_var(_loadmat(names_file), "refnames_all", names_file)
    refnames = [_mat_str(v) for v in refnames_raw.reshape(-1)]
    checks = (("dmos", dmos, dmos_file), ("orgs", orgs, dmos_file),
              ("refnames_all", refnames, names_file))
    for var, arr, path in checks:
        if len(arr) != LIVE_N_ENTRIES:
            raise ValueError(
                f"LIVE Release 2: {path} variable {var!r} has {len(arr)} entries, expected "
                f"{LIVE_N_ENTRIES} (jp2k 227 + jpeg 233 + wn/gblur/fastfading 174 each)"
            )
    if not np.isin(orgs, (0, 1)).all():
        raise ValueError(f"LIVE Release 2: {dmos_file} 'orgs' must contain only 0/1")
    if not np.isfinite(dmos).all():
        raise ValueError(f"LIVE Release 2: {dmos_file} 'dmos' contains NaN or infinite values")
    return dmos, orgs, refnames


def _live_paths(refs: _CaseInsensitiveDir, imgs: _CaseInsensitiveDir, ref_name: str, name: str,
                missing: list[Path]) -> dict:
    """``ref_id``, ``ref_path``, ``path`` of one entry; files that are absent go to ``missing``."""
    ref_path = refs.find(ref_name)
    if ref_path is None:
        ref_path = refs.directory / ref_name
        missing.append(ref_path)
    path = imgs.find(name)
    if path is None:
        path = imgs.directory / name
        missing.append(path)
    return {"ref_id": Path(ref_name).stem, "ref_path": str(ref_path), "path": str(path)}


def _live_levels(part: pd.DataFrame, folder: str, info: Path, has_param: bool) -> str:
    """Fill ``part["level"]`` (1..5) for one folder; returns the source used ("parameter" or "dmos")."""
    if has_param:
        severity = _LIVE_SEVERITY_SIGN[folder] * part["_param"]
        if len(part) >= 10 and severity.nunique() > 1:
            rho = severity.corr(part["mos_raw"], method="spearman")
            if not rho > 0:
                raise ValueError(
                    f"LIVE Release 2: {info}: the assumed direction of the "
                    f"distortion parameter (sign {_LIVE_SEVERITY_SIGN[folder]:+.0f}, larger "
                    f"severity = worse) contradicts the DMOS (Spearman {rho:.2f}); "
                    "check what the parameter means"
                )
        part["level"] = _quintile_levels(severity)
        return "parameter"
    warnings.warn(
        f"LIVE Release 2: {info} has no parameter column; deriving level "
        "from DMOS quintiles within (reference, type)",
        stacklevel=3,
    )
    part["level"] = part.groupby("ref_id", sort=False)["mos_raw"].transform(_quintile_levels)
    return "dmos"


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------

READERS: dict[str, Callable[[str | Path], pd.DataFrame]] = {
    "tid2013": read_tid2013,
    "csiq": read_csiq,
    "live": read_live,
}


def read_iqa_dataset(name: str, root: str | Path) -> pd.DataFrame:
    """Read the subjective IQA dataset ``name`` (a key of :data:`READERS`, case-insensitive).

    Returns a DataFrame with exactly the columns of :data:`IQA_COLUMNS`; ``mos`` is in
    [0, 1] with higher = better quality for every dataset. Unknown names raise ValueError.
    """
    key = str(name).strip().lower()
    if key not in READERS:
        raise ValueError(f"unknown IQA dataset {name!r}; valid names: {sorted(READERS)}")
    return READERS[key](root)
