"""What checking ``features.csv`` against its files costs (``groups.load`` -> ``groups.changed_files``:
each distinct file hashed again, every time notebooks 03-05 load the table).

    .venv/bin/python benchmarks/bench_table_check.py [--files 4000] [--kb 128] [--paper-files 52000]

Files: ``--files`` files of random bytes, ``--kb`` KiB on average (ImageNet's validation JPEGs
average about 128 KiB), in a temporary folder removed afterwards. Their digests are taken once
(untimed, as notebook 02 takes them; this also puts them in the page cache), then
``changed_files`` is timed, best of 3: a WARM-cache figure; a cold read adds the disk's time for
the same bytes. The paper-scale projection multiplies the time per file by ``--paper-files``
distinct files (paper.yaml: 48,000 originals, 3,000 Fool_GD images and at most 1,000 Fool_EV ones,
one elite per class; the distorted and UAP rows point at their originals' files).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from iqalib import groups, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--kb", type=float, default=128.0)
    ap.add_argument("--paper-files", type=int, default=52_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sizes = np.maximum(1, rng.normal(args.kb, args.kb / 4, args.files)).astype(int) * 1024
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{i:06d}.jpg" for i in range(args.files)]
        for path, size in zip(paths, sizes):
            path.write_bytes(rng.bytes(int(size)))
        table = pd.DataFrame({"path": [str(p) for p in paths], "file_digest": [images.file_digest(p) for p in paths]})
        run = SimpleNamespace(resolve=Path)
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            changed = groups.changed_files(run, table)
            best = min(best, time.perf_counter() - start)
        assert changed == []
    total_mb = sizes.sum() / 2**20
    per_file = best / args.files
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); warm page cache")
    print(f"{args.files} files, {total_mb:,.0f} MiB: {best:.2f} s ({per_file * 1e3:.3f} ms a file, "
          f"{total_mb / best:,.0f} MiB/s); at {args.paper_files:,} files: {per_file * args.paper_files:.1f} s a load")


if __name__ == "__main__":
    main()
