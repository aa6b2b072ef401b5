"""On-disk cache of per-image arrays (backbone embeddings and the like), keyed by a hash of
everything that affects the value. Owns atomic writes; knows nothing of what it stores.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def key_of(fields: Mapping[str, Any]) -> str:
    """Stable SHA-256 hex key of a JSON-able mapping (key order does not matter)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        atomic_write_bytes(self._path(key), buffer.getvalue())

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()
