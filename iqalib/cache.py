"""On-disk caches keyed by everything that affects a value: per-image arrays in shards
(``ShardStore``, what runs use; ``ArrayCache``, one file per entry, kept as the simple reference)
and groups of generated images (``cached_images``). Owns the one atomic write; knows nothing of
what it stores or how it was made.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
import uuid
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
    """One ``.npy`` file per entry under ``root/<key[:2]>/<key>.npy`` (no pickle). Simple, and one
    file per image: at paper scale (850,000 images) use ``ShardStore``."""

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

    def flush(self) -> None:
        """Nothing to do: every ``put`` is already on disk (the same protocol as ``ShardStore``)."""

    def compact(self) -> None:
        """Nothing to merge: one file per entry (the same protocol as ``ShardStore``)."""


class ShardStore:
    """Per-image float32 rows keyed by content keys, written in shards of up to ``shard_rows`` rows.

    A shard is ``root/<name>.npy`` (the rows, one per key) and ``root/<name>.keys`` (one hex key per
    line), each written atomically, the keys file last: a shard counts only once its keys file is
    there, so a run killed mid-write loses at most the rows not yet flushed (under one shard).
    Reads are memory-mapped. Shard names are unique per writer (time, process, random), so several
    processes or machines (``run --shard K/N``) can fill one store; a key found twice is the same
    value (keys are content hashes), and the first shard in name order wins. Rows of one shard share
    a width; different shards may differ. ``put`` buffers; call ``flush`` when a pass ends.
    """

    def __init__(self, root: str | os.PathLike, shard_rows: int = 4096):
        self.root = Path(root)
        self.shard_rows = int(shard_rows)
        self._index: dict[str, tuple[str, int]] = {}  # key -> (shard, row)
        self._maps: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self._pending_keys: list[str] = []
        self._scanned: set[str] = set()
        self._key_counts: dict[str, int] = {}
        self._scan()

    def _shards(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.keys")) if self.root.is_dir() else []

    def _scan(self) -> None:
        """Index shards not seen yet (another process may have added some)."""
        for name in self._shards():
            if name in self._scanned:
                continue
            try:
                keys = (self.root / f"{name}.keys").read_text().split()
            except FileNotFoundError:
                continue  # merged away by another process's ``compact`` since the listing
            except UnicodeDecodeError:
                self._move_aside(name)  # a damaged keys file: its rows are computed again
                continue
            for row, key in enumerate(keys):
                self._index.setdefault(key, (name, row))
            self._scanned.add(name)
            self._key_counts[name] = len(keys)

    def _move_aside(self, name: str) -> None:
        """Take a damaged shard out of the store (renamed ``*.damaged``, keys file first, so it
        stops counting), leaving it for a look but never read again."""
        for suffix in (".keys", ".npy"):
            path = self.root / f"{name}{suffix}"
            try:
                path.replace(path.with_name(path.name + ".damaged"))
            except FileNotFoundError:
                pass

    def _rows(self, name: str) -> np.ndarray | None:
        if name not in self._maps:
            try:
                rows = np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                if (self.root / f"{name}.keys").exists():  # keys without rows: damaged, not merged away
                    self._move_aside(name)
                self._rescan()  # merged away by another process's ``compact``: its rows sit in the merged shard
                return None
            except (ValueError, EOFError):
                rows = None  # truncated, or not an array
            except OSError:
                return None  # not the shard's fault (too many open files, say): its rows are computed again
            if rows is None or len(rows) != self._key_counts.get(name, len(rows)):
                # A damaged shard (rows unreadable, or not one per key: a key would get another's
                # row). Left in place, its keys would stay indexed and its rows be recomputed on
                # every run, never stored again.
                self._move_aside(name)
                self._rescan()
                return None
            self._maps[name] = rows
        return self._maps[name]

    def _rescan(self) -> None:
        """Index every shard again (after a shard left the store: its keys may sit in another one)."""
        self._index, self._scanned, self._key_counts = {}, set(), {}
        self._scan()

    def get(self, key: str) -> np.ndarray | None:
        if key in self._pending:
            return self._pending[key]
        hit = self._index.get(key)
        if hit is None:
            return None
        rows = self._rows(hit[0])
        if rows is None or hit[1] >= len(rows):
            if self._index.get(key) == hit:
                del self._index[key]  # so that ``put`` stores the row computed again
                return None
            return self.get(key)  # the shard left the store and the key was found in another
        return np.array(rows[hit[1]])

    def put(self, key: str, value: np.ndarray) -> None:
        if key in self._index or key in self._pending:
            return
        self._pending[key] = np.ascontiguousarray(value, dtype=np.float32)
        self._pending_keys.append(key)
        if len(self._pending_keys) >= self.shard_rows:
            self.flush()

    def __contains__(self, key: str) -> bool:
        return key in self._pending or key in self._index

    def __len__(self) -> int:
        return len(self._index) + len(self._pending)

    def flush(self) -> None:
        """Write the buffered rows as one shard per row width (nothing when the buffer is empty)."""
        if not self._pending_keys:
            return
        by_width: dict[int, list[str]] = {}
        for key in self._pending_keys:
            by_width.setdefault(self._pending[key].shape[-1], []).append(key)
        for keys in by_width.values():
            self._write_shard(keys, np.stack([self._pending[k] for k in keys]))
        self._pending.clear()
        self._pending_keys.clear()

    def _write_shard(self, keys: list[str], rows: np.ndarray) -> str:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        buffer = io.BytesIO()
        np.save(buffer, rows, allow_pickle=False)
        atomic_write_bytes(self.root / f"{name}.npy", buffer.getvalue())
        atomic_write_text(self.root / f"{name}.keys", "\n".join(keys) + "\n")  # last: the shard now counts
        for row, key in enumerate(keys):
            self._index.setdefault(key, (name, row))
        self._scanned.add(name)
        self._key_counts[name] = len(keys)
        return name

    def compact(self, small: int | None = None) -> None:
        """Merge the shards under ``small`` rows (default: a quarter shard) into one, when there are
        at least two: many short passes then still leave few files. Safe to interrupt: the merged
        shard is complete before the small ones are removed, and duplicates are harmless."""
        self.flush()
        self._scan()
        limit = self.shard_rows // 4 if small is None else small
        small_ones = []
        for name in self._shards():
            rows = self._rows(name)
            if rows is not None and len(rows) < limit:
                small_ones.append((name, rows))
        by_width: dict[int, list[tuple[str, np.ndarray]]] = {}
        for name, rows in small_ones:
            by_width.setdefault(rows.shape[-1], []).append((name, rows))
        for group in by_width.values():
            if len(group) < 2:
                continue
            keys, parts, merging = [], [], []
            for name, rows in group:
                try:
                    keys += (self.root / f"{name}.keys").read_text().split()
                except FileNotFoundError:
                    continue  # another process merged it first: its rows are in that process's shard
                parts.append(np.asarray(rows))
                merging.append((name, rows))
            if len(merging) < 2:
                continue
            group = merging
            merged = self._write_shard(keys, np.concatenate(parts))
            for name, _ in group:
                self._maps.pop(name, None)
                (self.root / f"{name}.keys").unlink(missing_ok=True)  # first: the shard stops counting
                (self.root / f"{name}.npy").unlink(missing_ok=True)
            for row, key in enumerate(keys):
                self._index[key] = (merged, row)

    def files(self) -> int:
        """Files the store holds on disk (for the benchmark's files-per-image figure)."""
        return sum(1 for p in self.root.iterdir() if p.is_file()) if self.root.is_dir() else 0


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
