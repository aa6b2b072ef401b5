import numpy as np

from iqalib import cache, features
from iqalib.classifiers import load_classifier
from tests.conftest import colourful


def test_key_ignores_order_and_changes_with_values():
    assert cache.key_of({"a": 1, "b": 2}) == cache.key_of({"b": 2, "a": 1})
    assert cache.key_of({"a": 1}) != cache.key_of({"a": 2})


def test_array_cache_round_trip_and_corrupt_entry(tmp_path):
    c = cache.ArrayCache(tmp_path)
    c.put("ab12", np.arange(4, dtype=np.float32))
    assert np.array_equal(c.get("ab12"), np.arange(4))
    (tmp_path / "ab" / "ab12.npy").write_bytes(b"half a file")  # e.g. written by an older, killed run
    assert c.get("ab12") is None and "ab12" not in c
    assert not list(tmp_path.rglob("*.tmp"))


def test_embeddings_are_cached_and_reused(tmp_path, monkeypatch):
    clf = load_classifier("efficientnet_lite0", "cpu")
    colourful((200, 150)).save(tmp_path / "a.png")
    jobs = [features.ImageJob(str(tmp_path / "a.png")),
            features.ImageJob(str(tmp_path / "a.png"), distortion="jpeg", level=3),
            features.ImageJob(str(tmp_path / "missing.png"))]
    c = features.cache_for(tmp_path / "run")
    first, reasons = features.embed(clf, jobs, c, progress=False)
    assert reasons == [None, None, "missing"] and np.isnan(first[2]).all()
    assert not np.allclose(first[0], first[1])  # the distortion is part of the key and the pixels

    calls = []
    real_embed = clf.embed
    monkeypatch.setattr(clf, "embed", lambda *a, **k: calls.append(1) or real_embed(*a, **k))
    again, _ = features.embed(clf, jobs, c, progress=False)
    assert calls == [] and np.array_equal(again[:2], first[:2])  # nothing recomputed
