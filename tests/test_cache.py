import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqalib import cache


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


def test_atomic_write_honours_the_umask(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    cache.atomic_write_bytes(path, b"data")
    with open(tmp_path / "plain.bin", "wb") as f:
        f.write(b"data")
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert path.read_bytes() == b"data"
    assert mode == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)  # not mkstemp's 0o600


def test_failing_atomic_write_leaves_nothing_behind(tmp_path):
    cache.atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(TypeError):
        cache.atomic_write_bytes(tmp_path / "a.bin", "text is not bytes")  # fails inside the write
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


# -- cached groups of generated images -------------------------------------------------------------


def _random_images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").resize((32, 32))
            for _ in range(n)]


def test_cached_images(tmp_path):
    calls = {"n": 0}

    def generate():
        calls["n"] += 1
        ims = _random_images(3, seed=calls["n"])
        return ims, pd.DataFrame({"target": [1, 2, 3], "confidence": [0.5, 0.25, 0.125]})

    folder = tmp_path / "group"
    key = {"generator": "x", "budget": 3, "seed": 0, "weights": "tiny", "version": "1"}
    paths, df = cache.cached_images(folder, key, generate)
    assert calls["n"] == 1 and [p.name for p in paths] == ["0000.png", "0001.png", "0002.png"]
    assert list(df.columns) == ["file", "target", "confidence"] and all(p.exists() for p in paths)
    first = [np.asarray(Image.open(p)).copy() for p in paths]

    paths2, df2 = cache.cached_images(folder, dict(key), generate)
    assert calls["n"] == 1, "same key: nothing regenerated"
    assert paths2 == paths
    pd.testing.assert_frame_equal(df, df2)

    cache.cached_images(folder, {**key, "seed": 1}, generate)
    assert calls["n"] == 2, "changed key regenerates"
    assert not np.array_equal(np.asarray(Image.open(paths[0])), first[0])

    cache.cached_images(folder, {**key, "seed": 1}, generate)
    assert calls["n"] == 2
    paths[1].unlink()
    cache.cached_images(folder, {**key, "seed": 1}, generate)
    assert calls["n"] == 3, "a missing image regenerates"
    assert not any(p.name.startswith(".") for p in folder.iterdir()), "no temp files left"
