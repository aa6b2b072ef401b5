"""On-disk caches keyed by everything that affects a value: per-image arrays (``ArrayCache``) and
groups of generated images (``cached_images``). Owns the one atomic write; knows nothing of what it
stores or how it was made.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd


def _current_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any writer thread exists.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open(path, "w") would give a new file


def key_of(fields: Mapping[str, Any]) -> str:
    """Stable SHA-256 hex key of a JSON-able mapping (key order does not matter)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so readers never see half a file.

    The file gets the mode a plain ``open()`` would give it (0o666 minus the umask), not
    ``mkstemp``'s private 0o600; on any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class ArrayCache:
    """One ``.npy`` file per entry under ``root/<key[:2]>/<key>.npy`` (no pickle)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            path.unlink(missing_ok=True)  # unreadable entry: recompute rather than fail
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        atomic_write_bytes(self._path(key), buffer.getvalue())

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()


# --------------------------------------------------------------------------------------------------
# groups of generated images

_NUMBERED_PNG = re.compile(r"^\d{4,}\.png$")


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for keys and meta: numpy scalars/arrays and paths -> plain JSON."""
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _canonical(key: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=json_default))


def png_bytes(image: Any) -> bytes:
    """A PIL image as lossless PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _cached_entry(folder: Path, key: dict) -> tuple[list[Path], pd.DataFrame] | None:
    """The group stored in ``folder`` if its ``key.json`` equals ``key`` and every file exists."""
    key_path, meta_path = folder / "key.json", folder / "meta.csv"
    if not (key_path.exists() and meta_path.exists()):
        return None
    try:
        same = json.loads(key_path.read_text()) == key
    except json.JSONDecodeError:
        return None
    if not same:
        return None
    df = pd.read_csv(meta_path)
    paths = [folder / f for f in df["file"]]
    return (paths, df) if all(p.exists() for p in paths) else None


def cached_images(folder: str | os.PathLike, key: Mapping[str, Any],
                  generate: Callable[[], tuple[list[Any], pd.DataFrame]]) -> tuple[list[Path], pd.DataFrame]:
    """Generate a group of images once and reuse it while ``key`` is unchanged.

    ``key`` is a JSON-able mapping of everything that affects the result (generator name, budget,
    seed, classifier weights id, code version, ...). If ``folder/key.json`` equals it and every file
    listed in ``folder/meta.csv`` exists, those are returned and ``generate`` is not called.
    Otherwise ``generate()`` -> (PIL images, per-image DataFrame) is called, images are saved as
    lossless PNG ``NNNN.png`` (so re-classifying a file gives the generator's result), then
    ``meta.csv`` (a ``file`` column + the DataFrame's columns), then ``key.json`` last — each
    atomically — so an interrupted run is never mistaken for a finished one.

    Returns (image paths, the DataFrame as read back from ``meta.csv``) in both cases.
    """
    folder = Path(folder)
    key = _canonical(key)
    cached = _cached_entry(folder, key)
    if cached is not None:
        return cached
    images, df = generate()
    if len(images) != len(df):
        raise ValueError(f"generate() returned {len(images)} images but {len(df)} meta rows")
    if "file" in df.columns:
        raise ValueError("generate()'s DataFrame must not have a 'file' column (cached_images adds it)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").unlink(missing_ok=True)  # invalid until the new group is complete
    names = [f"{i:04d}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        atomic_write_bytes(folder / name, png_bytes(image))
    keep = set(names)
    for stale in folder.iterdir():
        if _NUMBERED_PNG.match(stale.name) and stale.name not in keep:
            stale.unlink()
    df = df.reset_index(drop=True).copy()
    df.insert(0, "file", names)
    atomic_write_text(folder / "meta.csv", df.to_csv(index=False))
    atomic_write_text(folder / "key.json", json.dumps(key, indent=2, sort_keys=True))
    df = pd.read_csv(folder / "meta.csv")
    return [folder / f for f in df["file"]], df
