"""The embedding pipeline on a paper-shaped workload: today's serial path against worker processes and
the sharded store, in one run (issue: paper scale in 30 minutes on one GPU).

    .venv/bin/python benchmarks/bench_pipeline.py [--photos 100] [--rss-jobs 2000 10000] [--json]

Workload: ImageNet-sized JPEGs (short side 375 px, quality 90) made from the photos shipped in the
ai-benchmark wheel, each as an original and under the paper's 4 distortion types x 5 levels in the
classifier's view (as the Distorted group is made): ``photos x 21`` jobs. Classifier:
EfficientNet-Lite0 on this machine's CPU. Measured, each on a fresh store:

* time per stage and image: decode, view + tensor, each distortion, backbone (batch 32), store write;
* the JPEG 2000 encoders (Pillow/OpenJPEG with 1 and 2 threads; glymur, imagecodecs where installed);
* the CPU side alone (decode + view + distort) through 0, 1, 2 worker processes, best of 3
  interleaved rounds;
* end to end: the serial path (``num_workers=0``, one ``.npy`` file per image: ``ArrayCache``)
  against ``num_workers`` 0, 1 and 2 with the sharded ``ShardStore``, and 2 workers that also run
  the backbone single-threaded (``backbone_in_workers``), best of 2 interleaved rounds;
* peak RSS of a fresh process embedding ``--rss-jobs`` jobs each (new path), and files per 1000 images;
* the ceilings the stage costs put on the end-to-end gain (``ceilings``: arithmetic, not measured).

With ``--json`` the last line is one JSON object with at least ``prep_speedup_2v1``,
``end_to_end_speedup_vs_serial``, ``rss_ratio_10k_vs_2k`` and ``cache_files_per_1000_images``.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iqalib import distortions, features  # noqa: E402
from iqalib.cache import ArrayCache, ShardStore  # noqa: E402
from iqalib.classifiers import load_classifier  # noqa: E402
from iqalib.images import open_image  # noqa: E402
from iqalib.params import cpus_available  # noqa: E402

TYPES = ("gaussian_blur", "white_noise", "jpeg", "jpeg2000")


def make_workload(folder: Path, n_photos: int) -> list[Path]:
    """ImageNet-sized JPEGs from the ai-benchmark photos (classification, then street photos)."""
    root = Path(importlib.util.find_spec("ai_benchmark").submodule_search_locations[0]) / "data"
    sources = sorted((root / "classification").glob("*.jpg"), key=lambda p: int(p.stem))
    sources += sorted((root / "enhancement").glob("*.jpg"), key=lambda p: int(p.stem))
    out = []
    for i, src in enumerate(sources[:n_photos]):
        with Image.open(src) as raw:
            image = raw.convert("RGB")
        scale = 375 / min(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.LANCZOS)
        path = folder / f"val_{i:05d}.JPEG"
        image.save(path, quality=90)
        out.append(path)
    return out


def make_jobs(paths: list[Path], seeds: int = 1) -> list[features.ImageJob]:
    jobs = []
    for seed in range(seeds):
        for path in paths:
            if seed == 0:
                jobs.append(features.ImageJob(str(path)))
            for name in TYPES:
                for level in distortions.LEVELS:
                    jobs.append(features.ImageJob(str(path), distortion=name, level=level, seed=seed,
                                                  noise_id=path.stem, distort_in_view=True))
    return jobs


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stage_costs(clf, paths: list[Path]) -> dict[str, float]:
    """Milliseconds per image of each stage, in this process (one core for the CPU stages)."""
    sample = paths[:20]
    ms = {"decode": _timed(lambda: [open_image(p) for p in sample], 2) / len(sample) * 1e3}
    decoded = [open_image(p) for p in sample]
    ms["view_and_tensor"] = _timed(lambda: np.stack([features._view_array(clf, im) for im in decoded]), 2) / len(sample) * 1e3
    views = [clf.view(im) for im in decoded]
    for name in TYPES:
        ms[f"distort_{name}"] = _timed(lambda: [distortions.distort(v, name, lvl, 0, str(i)) for i, v in enumerate(views)
                                                for lvl in distortions.LEVELS]) / (len(views) * 5) * 1e3
    batch = np.stack([features._view_array(clf, im) for im in (decoded * 2)[:32]])
    features.pixel_rows(clf, batch)  # warm-up
    ms["backbone_batch32"] = _timed(lambda: features.pixel_rows(clf, batch), 3) / len(batch) * 1e3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one backbone process per core would cost (see ceilings())
    try:
        features.pixel_rows(clf, batch)
        ms["backbone_batch32_1_thread"] = _timed(lambda: features.pixel_rows(clf, batch), 3) / len(batch) * 1e3
    finally:
        torch.set_num_threads(threads)
    rows = features.pixel_rows(clf, batch)
    with tempfile.TemporaryDirectory() as tmp:
        store, files = ShardStore(Path(tmp) / "s", shard_rows=4096), ArrayCache(Path(tmp) / "a")
        keys = [f"{i:064x}" for i in range(len(rows))]
        ms["store_sharded"] = _timed(lambda: ([store.put(k, r) for k, r in zip(keys, rows)], store.flush())) / len(rows) * 1e3
        ms["store_one_file_each"] = _timed(lambda: [files.put(k, r) for k, r in zip(keys, rows)]) / len(rows) * 1e3
    return {k: round(v, 2) for k, v in ms.items()}


def ceilings(ms: dict[str, float], cores: int, threads: int, workers: int = 2) -> dict[str, float]:
    """Upper bounds on the end-to-end gain over the serial path, from the stage costs (arithmetic,
    not a measurement; the store write and the hand-over are left out, so a measured ratio of
    rates can come out a little above them). A photo's 21 jobs (original, then 20 distorted)
    decode and view it once per batch of 32 they fall in: 1 + 20/32 times on average; each
    distorted job adds the mean of the four distortions. Serial wall time per job = CPU side +
    backbone. With the backbone's ``threads`` threads in the main process busy on the cores for the
    whole pass, workers can only use what is left: wall >= max(backbone, (threads x backbone + CPU
    side) / cores). ``workers`` single-threaded backbones, each preparing and embedding its own
    batches, need (1-thread backbone + CPU side) / min(workers, cores)."""
    distort = np.mean([ms[f"distort_{name}"] for name in TYPES])
    cpu = (ms["decode"] + ms["view_and_tensor"]) * (1 + 20 / 32) / 21 + distort * 20 / 21
    serial = cpu + ms["backbone_batch32"]
    main_threads = (min(threads, cores) * ms["backbone_batch32"] + cpu) / cores
    per_core = (ms["backbone_batch32_1_thread"] + cpu) / min(workers, cores)
    return {"cpu_side_ms": round(cpu, 2), "serial_ms": round(serial, 2),
            "ceiling_backbone_in_main": round(serial / max(main_threads, ms["backbone_batch32"]), 2),
            "ceiling_one_backbone_per_core": round(serial / per_core, 2)}


def jpeg2000_codecs(paths: list[Path], folder: Path) -> list[dict]:
    """Encode+decode time (ms per 224 px view and per full image) and achieved bits per pixel of the
    JPEG 2000 encoders (Pillow with one and two OpenJPEG threads; glymur and imagecodecs where
    installed), at the level definitions' rates. ``folder``: scratch space for glymur's files."""
    bpps = distortions.LEVEL_PARAMS["jpeg2000"][0]
    images = {"view_224": [open_image(p).resize((224, 224)) for p in paths[:10]],
              "full_375": [open_image(p) for p in paths[:10]]}
    out = []

    def pillow(im, bpp):
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG2000", quality_mode="rates", quality_layers=[24.0 / bpp])
        Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").load()
        return len(buffer.getvalue())

    def with_opj_threads(n: str):
        # Pillow has no thread option, but OpenJPEG (>= 2.4, encoder too) reads OPJ_NUM_THREADS
        # whenever the caller sets no thread count itself.
        def encode(im, bpp):
            before = os.environ.get("OPJ_NUM_THREADS")
            os.environ["OPJ_NUM_THREADS"] = n
            try:
                return pillow(im, bpp)
            finally:
                if before is None:
                    del os.environ["OPJ_NUM_THREADS"]
                else:
                    os.environ["OPJ_NUM_THREADS"] = before
        return encode

    # Pillow/OpenJPEG is what distortions.jpeg2000 uses.
    codecs = {"pillow_openjpeg": with_opj_threads("1"), "pillow_openjpeg_OPJ_NUM_THREADS_2": with_opj_threads("2")}
    try:  # glymur (PyPI; not a dependency) drives the system libopenjp2 through files
        import glymur

        def glymur_files(im, bpp):
            path = folder / "x.jp2"
            glymur.Jp2k(str(path), data=np.asarray(im), cratios=[24.0 / bpp])
            glymur.Jp2k(str(path))[:]
            return path.stat().st_size

        codecs[f"glymur {glymur.__version__} (OpenJPEG {glymur.version.openjpeg_version})"] = glymur_files
    except (ImportError, OSError):
        out.append({"codec": "glymur", "installed": False})
    for name, fn in codecs.items():
        for size, ims in images.items():
            t0 = time.perf_counter()
            try:
                sizes = [fn(im, bpp) for im in ims for bpp in bpps]
            except Exception as error:  # an optional codec that imports but cannot encode here
                out.append({"codec": name, "size": size, "error": repr(error)[:200]})
                continue
            elapsed = (time.perf_counter() - t0) / (len(ims) * len(bpps)) * 1e3
            pixels = [im.size[0] * im.size[1] for im in ims for _ in bpps]
            achieved = [8 * s / n for s, n in zip(sizes, pixels)]
            out.append({"codec": name, "size": size, "ms_per_image": round(elapsed, 1),
                        "bpp_target": list(bpps), "bpp_achieved_mean": [round(float(np.mean(achieved[k::len(bpps)])), 3)
                                                                        for k in range(len(bpps))]})
    out += _imagecodecs(images["view_224"])
    return out


def _imagecodecs(views: list[Image.Image]) -> list[dict]:
    """imagecodecs' OpenJPEG encoder, where installed (``pip install imagecodecs``; not a dependency).
    Its ``level`` is a PSNR target in dB, not a rate, so the bits per pixel it gives vary by image:
    measured at two PSNR targets, with the mean bits per pixel they gave."""
    try:
        import imagecodecs
    except ImportError:
        return [{"codec": "imagecodecs", "installed": False}]
    out = []
    for threads in (1, 2):
        for psnr in (20, 25):
            t0 = time.perf_counter()
            sizes = []
            try:
                for im in views:
                    encoded = imagecodecs.jpeg2k_encode(np.asarray(im), level=psnr, numthreads=threads)
                    imagecodecs.jpeg2k_decode(encoded, numthreads=threads)
                    sizes.append(len(encoded))
            except Exception as error:  # a build without OpenJPEG, or an older signature
                return out + [{"codec": f"imagecodecs {imagecodecs.__version__}", "error": repr(error)[:200]}]
            out.append({"codec": f"imagecodecs {imagecodecs.__version__}", "size": "view_224", "threads": threads,
                        "psnr_target_db": psnr, "ms_per_image": round((time.perf_counter() - t0) / len(views) * 1e3, 1),
                        "bpp_achieved_mean": round(float(np.mean(sizes)) * 8 / (224 * 224), 3)})
    return out


def prep_rates(clf, jobs, counts=(0, 1, 2), rounds: int = 3) -> tuple[dict[int, float], list[dict[str, float]]]:
    """Jobs per second of the CPU side alone (decode + view + distort), no backbone, per worker
    count: the best of ``rounds`` rounds, and every round's rates. Each round runs every count, in
    alternating order (0 1 2, then 2 1 0, ...), as ``bench_quality`` does its variants: this
    machine's speed drifts by 10-20 % over a minute, and timing consecutive blocks would put the
    drift on one count."""
    per_round = []
    for r in range(rounds):
        rates = {}
        for w in (counts if r % 2 == 0 else counts[::-1]):
            start = time.perf_counter()
            sum(len(reasons) for _, reasons in features.prepared(clf, jobs, 32, w))
            rates[w] = len(jobs) / (time.perf_counter() - start)
        per_round.append({str(w): round(rates[w], 1) for w in counts})
    best = {w: max(r[str(w)] for r in per_round) for w in counts}
    return best, per_round


def embed_rate(clf, jobs, store, workers: int, backbone_in_workers: bool = False) -> float:
    t0 = time.perf_counter()
    features.embed(clf, jobs, store, batch_size=32, progress=False, num_workers=workers,
                   backbone_in_workers=backbone_in_workers)
    return len(jobs) / (time.perf_counter() - t0)


#: End-to-end configurations: (store kind, workers, backbone_in_workers). The first is today's
#: serial path, one ``.npy`` file per image.
END_TO_END = {
    "serial_one_file_each": ("files", 0, False),
    "workers_0_sharded": ("shards", 0, False),
    "workers_1_sharded": ("shards", 1, False),
    "workers_2_sharded": ("shards", 2, False),
    "workers_2_sharded_backbone_in_workers": ("shards", 2, True),
}


def end_to_end_rates(clf, jobs, folder: Path, rounds: int = 2) -> tuple[dict[str, float], list[dict[str, float]], int]:
    """Jobs per second of whole embeddings into a fresh store, per configuration: the best of
    ``rounds`` rounds in alternating order (as ``prep_rates``), every round's rates, and the files
    the serial path left in its store."""
    per_round, serial_files = [], 0
    for r in range(rounds):
        rates = {}
        for name in (list(END_TO_END) if r % 2 == 0 else list(END_TO_END)[::-1]):
            kind, workers, in_workers = END_TO_END[name]
            where = folder / f"{name}_{r}"
            store = ArrayCache(where) if kind == "files" else ShardStore(where)
            rates[name] = embed_rate(clf, jobs, store, workers, in_workers)
            if kind == "files":
                serial_files = sum(1 for _ in where.rglob("*.npy"))
        per_round.append({name: round(rates[name], 1) for name in END_TO_END})
    best = {name: max(r[name] for r in per_round) for name in END_TO_END}
    return best, per_round, serial_files


def rss_child(n_jobs: int, photos: int, workers: int) -> dict:
    """Run one embedding of ``n_jobs`` jobs in a fresh process; its peak RSS (MB) and store files."""
    code = f"""
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
sys.argv = ['x']
import benchmarks.bench_pipeline as b
from iqalib import features
from iqalib.cache import ShardStore
from iqalib.classifiers import load_classifier
with tempfile.TemporaryDirectory() as tmp:
    paths = b.make_workload(Path(tmp), {photos})
    jobs = b.make_jobs(paths, seeds=-(-{n_jobs} // (len(paths) * 21)) + 1)[:{n_jobs}]
    clf = load_classifier('efficientnet_lite0', 'cpu')
    store = ShardStore(Path(tmp) / 'store')
    emb, _ = features.embed(clf, jobs, store, batch_size=32, progress=False, num_workers={workers})
    print(json.dumps({{"jobs": len(jobs), "rows": len(store), "files": store.files(),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--rss-jobs", type=int, nargs=2, default=(2000, 10000))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    clf = load_classifier("efficientnet_lite0", "cpu")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_workload(tmp, args.photos)
        jobs = make_jobs(paths)
        result["jobs"] = len(jobs)
        result["stage_ms_per_image"] = stage_costs(clf, paths)
        result["ceilings"] = ceilings(result["stage_ms_per_image"], cpus_available(), torch.get_num_threads())
        result["jpeg2000"] = jpeg2000_codecs(paths, tmp)
        prep, prep_rounds = prep_rates(clf, jobs)
        result["prep_jobs_per_s"] = {str(w): round(r, 1) for w, r in prep.items()}
        result["prep_jobs_per_s_per_round"] = prep_rounds
        new, e2e_rounds, serial_files = end_to_end_rates(clf, jobs, tmp)
        serial = new.pop("serial_one_file_each")
        in_main = max(v for k, v in new.items() if not k.endswith("backbone_in_workers"))
        result["end_to_end_jobs_per_s"] = {"serial_one_file_each": round(serial, 1),
                                           **{name: round(r, 1) for name, r in new.items()}}
        result["end_to_end_jobs_per_s_per_round"] = e2e_rounds
    small, large = (rss_child(n, args.photos, 2) for n in args.rss_jobs)
    result["rss"] = {str(args.rss_jobs[0]): small, str(args.rss_jobs[1]): large}
    best = max(new.values())
    summary = {
        "prep_speedup_2v1": round(prep[2] / prep[1], 2),
        "prep_speedup_2v0": round(prep[2] / prep[0], 2),
        "prep_speedup_2v1_per_round": [round(r["2"] / r["1"], 2) for r in prep_rounds],
        "end_to_end_speedup_vs_serial": round(best / serial, 2),
        "end_to_end_speedup_vs_serial_per_round": [
            round(max(v for k, v in r.items() if k != "serial_one_file_each") / r["serial_one_file_each"], 2)
            for r in e2e_rounds],
        "best_config": max(new, key=new.get),
        "end_to_end_speedup_backbone_in_main": round(in_main / serial, 2),
        "end_to_end_ceiling_backbone_in_main": result["ceilings"]["ceiling_backbone_in_main"],
        "end_to_end_speedup_backbone_in_workers": round(new["workers_2_sharded_backbone_in_workers"] / serial, 2),
        "end_to_end_ceiling_one_backbone_per_core": result["ceilings"]["ceiling_one_backbone_per_core"],
        "rss_ratio_10k_vs_2k": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "cache_files_per_1000_images": round(large["files"] / large["rows"] * 1000, 2),
        "serial_cache_files_per_1000_images": round(serial_files / len(jobs) * 1000, 1),
    }
    result.update(summary)
    if args.json:
        print(json.dumps(result, indent=2))
        print(json.dumps(summary))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
