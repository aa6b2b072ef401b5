"""Wu-Palmer semantic similarity between ImageNet-1k classes, exactly as NLTK's
``Synset.wup_similarity`` gives it on WordNet 3.0, served offline from the shipped
matrix ``iqalib/data/wup_imagenet1k.npz`` (built by ``scripts/build_wup_matrix.py``).

Neither nltk nor the WordNet corpus is needed at run time.

Rule for a class with itself: similarity 1. NLTK's default (``use_min_depth``)
Wu-Palmer is *not* 1 for a synset with itself when it has several hypernym paths of
different lengths (107 ImageNet classes, mostly dog breeds: NLTK gives
``wup(chihuahua, chihuahua) == 0.8125``). An unchanged top-1 must score 1 (the
paper's Fig. 5 speaks of distorted images whose similarity "equals 1"), so the
diagonal is set to 1; every other pair is NLTK's value exactly. The matrix is
symmetric.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence, Union

import numpy as np

__all__ = ["wup_similarity", "wup_by_index", "imagenet_wnids", "wup_matrix"]

#: Location of the shipped matrix (values + uint8 index + wnid order).
DATA_FILE: Path = Path(__file__).resolve().parent / "data" / "wup_imagenet1k.npz"

WnidLike = Union[str, Sequence[str], np.ndarray]
IndexLike = Union[int, np.integer, Sequence[int], np.ndarray]


class _Table:
    """The loaded matrix and the wnid lookup structures (built once)."""

    def __init__(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            values = np.asarray(z["values"], dtype=np.float64)
            index = np.asarray(z["index"])
            wnids = np.asarray(z["wnids"]).astype("<U9")
        n = len(wnids)
        if index.shape != (n, n):
            raise ValueError(f"{path}: index shape {index.shape} does not match {n} wnids")
        matrix = values[index]
        # A class is identical to itself: 1, whatever NLTK's min-depth rule gives (module docstring).
        np.fill_diagonal(matrix, 1.0)
        matrix.setflags(write=False)
        self.matrix: np.ndarray = matrix
        self.wnids: tuple[str, ...] = tuple(str(w) for w in wnids)
        self.lookup: dict[str, int] = {w: i for i, w in enumerate(self.wnids)}
        if len(self.lookup) != n:
            raise ValueError(f"{path}: duplicate wnids")
        keys, ok = _wnid_keys(wnids)
        if not ok.all():
            raise ValueError(f"{path}: malformed wnids {wnids[~ok][:5].tolist()}")
        order = np.argsort(keys, kind="stable")
        self.sorted_keys: np.ndarray = keys[order]
        self.sorted_to_index: np.ndarray = order.astype(np.intp)


@functools.cache
def _table() -> _Table:
    return _Table(DATA_FILE)


def imagenet_wnids() -> list[str]:
    """WordNet ids of the ImageNet-1k classes in class-index order.

    ``imagenet_wnids()[i]`` is the wnid (e.g. ``"n01440764"``) of class index ``i``;
    read from the shipped matrix file, so no other package is needed.
    """
    return list(_table().wnids)


def wup_matrix() -> np.ndarray:
    """The full read-only 1000x1000 float64 Wu-Palmer matrix in class-index order.

    ``wup_matrix()[i, j]`` equals NLTK's ``s_i.wup_similarity(s_j)`` for ``i != j``, and 1 for ``i == j``.
    """
    return _table().matrix


def _wnid_keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse a flat unicode array of wnids ``n########`` to int64 offsets.

    Works on the raw UCS-4 code points (no per-element Python work).  Returns
    ``(keys, well_formed)``; keys of malformed entries are meaningless.
    """
    width = max(x.dtype.itemsize // 4, 9)
    x = np.ascontiguousarray(x, dtype=f"<U{width}")
    cp = x.view(np.uint32).reshape(x.size, width)
    ok = cp[:, 0] == ord("n")
    keys = np.zeros(x.size, dtype=np.int64)
    for k in range(1, 9):
        d = cp[:, k].astype(np.int64) - ord("0")
        ok &= (d >= 0) & (d <= 9)
        keys *= 10
        keys += d
    if width > 9:
        ok &= ~cp[:, 9:].any(axis=1)
    return keys, ok


def _wnids_to_indices(x: np.ndarray) -> np.ndarray:
    """Map an array of wnid strings to class indices; KeyError on unknown ids."""
    t = _table()
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.intp)
    if x.dtype.kind == "O":
        x = x.astype(str)
    if x.dtype.kind != "U":
        raise TypeError(f"expected WordNet id strings, got array of dtype {x.dtype}")
    flat = x.ravel()
    keys, ok = _wnid_keys(flat)
    pos = np.searchsorted(t.sorted_keys, keys)
    np.clip(pos, 0, len(t.sorted_keys) - 1, out=pos)
    ok &= t.sorted_keys[pos] == keys
    if not ok.all():
        bad = list(dict.fromkeys(str(w) for w in flat[~ok][:5]))
        raise KeyError(f"unknown WordNet id(s), not ImageNet-1k classes: {', '.join(map(repr, bad))}")
    return t.sorted_to_index[pos].reshape(x.shape)


def _wnid_to_index(w: str) -> int:
    try:
        return _table().lookup[w]
    except KeyError:
        raise KeyError(f"unknown WordNet id, not an ImageNet-1k class: {w!r}") from None


def wup_similarity(a: WnidLike, b: WnidLike) -> Union[float, np.ndarray]:
    """Wu-Palmer similarity between ImageNet-1k classes given by WordNet id.

    Args:
        a, b: WordNet ids like ``"n02981792"`` (both ``str``), or two sequences /
            arrays of them with the same shape.
    Returns:
        ``float`` for two strings, else a float64 ``np.ndarray`` of the common
        shape; equal to NLTK's ``wn.synset_from_pos_and_offset('n', off_a)
        .wup_similarity(...)`` on WordNet 3.0 for two different classes, and 1 for a
        class with itself.
    Raises:
        KeyError: a wnid is not one of the 1000 ImageNet-1k classes (named in the message).
        ValueError: shapes differ (including a string paired with a sequence).
    """
    if isinstance(a, str) and isinstance(b, str):
        return float(_table().matrix[_wnid_to_index(a), _wnid_to_index(b)])
    aa = np.asarray(a)
    bb = np.asarray(b)
    if aa.shape != bb.shape:
        raise ValueError(f"wup_similarity: shape mismatch {aa.shape} vs {bb.shape}")
    ia = _wnids_to_indices(aa)
    ib = _wnids_to_indices(bb)
    return _table().matrix[ia, ib]


def _check_indices(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype.kind not in "iu":
        if x.size == 0:
            return x.astype(np.intp)
        raise TypeError(f"wup_by_index: {name} must be integer class indices, got dtype {x.dtype}")
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        n = len(_table().wnids)
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise IndexError(f"wup_by_index: {name} contains class index {bad}, outside [0, {n})")
    return x


def wup_by_index(i: IndexLike, j: IndexLike) -> Union[float, np.ndarray]:
    """Wu-Palmer similarity between ImageNet-1k classes given by class index (0..999).

    Args:
        i, j: class indices (e.g. classifier top-1 predictions and labels), both
            ints, or two integer sequences / arrays of the same shape.
    Returns:
        ``float`` for two scalars, else a float64 ``np.ndarray`` of the common shape.
    Raises:
        IndexError: an index is outside ``[0, 1000)`` (negative indices are not wrapped).
        TypeError: non-integer input.
        ValueError: shapes differ.
    """
    ii = np.asarray(i)
    jj = np.asarray(j)
    if ii.shape != jj.shape:
        raise ValueError(f"wup_by_index: shape mismatch {ii.shape} vs {jj.shape}")
    ii = _check_indices(ii, "i")
    jj = _check_indices(jj, "j")
    out = _table().matrix[ii, jj]
    if ii.ndim == 0:
        return float(out)
    return out
