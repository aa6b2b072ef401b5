"""The per-image table every step after the groups reads (``features.csv``): its columns, the
paper's group names and feature columns, the helpers that read a row's source, label and
correctness, and writing/reading the file with its column types (so a table read back is the
table that was written). pandas only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from iqalib.cache import atomic_write_text


GROUPS: tuple[str, ...] = ("original", "distorted", "adversarial", "fool_ev", "fool_gd")


FOOLING: tuple[str, ...] = ("fool_ev", "fool_gd")


TOP5: tuple[str, ...] = ("top1", "top2", "top3", "top4", "top5")


FEATURES: tuple[str, ...] = TOP5 + ("quality",)


COLUMN_SETS: dict[str, tuple[str, ...]] = {"quality": ("quality",), "top5": TOP5, "top5+quality": FEATURES}


def ordered_groups(groups: Iterable[str]) -> list[str]:
    """Paper order first (original, distorted, adversarial, fool_ev, fool_gd), then any others."""
    present = {g for g in groups if isinstance(g, str)}
    return [g for g in GROUPS if g in present] + sorted(present - set(GROUPS))


def sources(features: pd.DataFrame) -> pd.Series:
    """source_id as strings (None where missing) so ids compare equal however the CSV was parsed."""
    s = features["source_id"]
    return s.map(lambda v: None if pd.isna(v) or v == "" else str(v)).astype(object)


def labelled(features: pd.DataFrame) -> np.ndarray:
    """True where the true class is known (fooling images have none: accuracy is undefined)."""
    if "label" not in features:
        return ~features["group"].isin(FOOLING).to_numpy()
    return features["label"].notna().to_numpy()


def correct(features: pd.DataFrame) -> np.ndarray:
    """Classifier correct per row (False where no label); tolerant of CSV round trips."""
    if "correct" in features:
        mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False}  # 1/0 and 1.0/0.0 hash as True/False
        c = features["correct"].map(lambda v: mapping.get(v, False) if not pd.isna(v) else False)
        return c.to_numpy(bool) & labelled(features)
    return (features["pred"].to_numpy() == features["label"].to_numpy()) & labelled(features)


#: Columns of ``features.csv``: what each image is (enough to rebuild it without parsing ids), the
#: content hash of its file when the table was built (``images.file_digest``: a later step that
#: reads the file's pixels again can tell it is still the file the row describes), then what the
#: classifier and the quality model say about it.
TABLE_COLUMNS = ("group", "image_id", "parent_id", "source_id", "view", "distortion", "level", "attack", "seed",
                 "label", "path", "file_digest", "top1", "top2", "top3", "top4", "top5", "pred", "quality", "correct",
                 "correct_vs_clean")

#: Column types of ``features.csv`` as the groups build it: what ``read`` restores, so that every
#: notebook computes on the table exactly as it was written (float32 probabilities and quality;
#: text as pandas strings, missing text NaN, as a table built from rows holds it).
DTYPES: dict[str, str] = {
    **{c: "str" for c in ("group", "image_id", "parent_id", "source_id", "view", "distortion", "attack", "path",
                          "file_digest")},
    "level": "float64", "seed": "float64", "label": "float64", **{c: "float32" for c in TOP5}, "pred": "int64",
    "quality": "float32", "correct": "bool", "correct_vs_clean": "boolean"}


def write(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``features.csv`` atomically (the columns of ``TABLE_COLUMNS``, in that order)."""
    missing = [c for c in TABLE_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"a features table needs the columns {missing}")
    atomic_write_text(path, table[list(TABLE_COLUMNS)].to_csv(index=False))
    return Path(path)


def read(path: str | Path) -> pd.DataFrame:
    """``features.csv`` as ``write`` got it, column types restored (``DTYPES``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the notebook that builds the groups "
                                "(02_adversarial_quality) writes it; run it first")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in TABLE_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; rebuild it with this version of iqalib")
    table = pd.read_csv(path, dtype={c: t for c, t in DTYPES.items() if t not in ("bool", "boolean")})
    table["correct"] = table["correct"].astype(bool)
    table["correct_vs_clean"] = table["correct_vs_clean"].astype("boolean")
    return table[list(TABLE_COLUMNS)]
