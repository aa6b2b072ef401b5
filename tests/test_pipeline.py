"""The paper-scale pipeline: the sharded store, worker processes, resuming after kill -9, bf16,
stacked quality heads, and filling one store in shares (``run --shard K/N``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iqalib import features, quality
from iqalib.cache import ShardStore
from iqalib.images import open_image
from tests.conftest import REPO, colourful
from tests.test_detector import tiny_classifier


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i:03d}.jpg"
        colourful((96 + i % 5, 80), seed=i).save(path, quality=90)
        paths.append(path)
    return paths


def _jobs(paths: list[Path]) -> list[features.ImageJob]:
    jobs = []
    for p in paths:
        jobs.append(features.ImageJob(str(p), min_side=1))
        for name, level in (("gaussian_blur", 2), ("white_noise", 3), ("jpeg2000", 1)):
            jobs.append(features.ImageJob(str(p), distortion=name, level=level, seed=0, noise_id=p.stem, min_side=1,
                                          distort_in_view=True))
    return jobs


# -- the store ------------------------------------------------------------------------------------


def test_store_keeps_flushed_rows_loses_only_the_buffer_and_compacts(tmp_path):
    store = ShardStore(tmp_path / "s", shard_rows=4)
    keys = [f"{i:064x}" for i in range(10)]
    for i, k in enumerate(keys):
        store.put(k, np.full(3, i, np.float32))
    assert store.get(keys[9]) is not None  # buffered rows are readable before a flush
    again = ShardStore(tmp_path / "s", shard_rows=4)  # a new process: only the two full shards
    assert len(again) == 8 and again.get(keys[9]) is None and again.get(keys[5])[0] == 5
    store.flush()
    store.put(f"{99:064x}", np.zeros(5, np.float32))  # another width: its own shard
    store.flush()
    assert store.files() == 8
    store.compact(small=4)  # the two small shards of width 3 and 5 stay apart; nothing to merge per width
    assert store.files() == 8
    for i in range(3):
        store.put(f"{100 + i:064x}", np.full(3, 100 + i, np.float32))
        store.flush()
    store.compact(small=4)
    fresh = ShardStore(tmp_path / "s")
    assert all(fresh.get(k)[0] == i for i, k in enumerate(keys))
    assert [fresh.get(f"{100 + i:064x}")[0] for i in range(3)] == [100, 101, 102]
    assert fresh.get(f"{99:064x}").shape == (5,) and store.files() == 8  # 4 small width-3 shards -> 1


def test_every_shard_of_a_run_counts_only_once_its_keys_are_written(tmp_path):
    store = ShardStore(tmp_path / "s", shard_rows=2)
    store.put("a" * 64, np.ones(2, np.float32))
    store.put("b" * 64, np.ones(2, np.float32))
    [keys] = list((tmp_path / "s").glob("*.keys"))
    keys.unlink()  # as if killed between the rows and the keys
    assert len(ShardStore(tmp_path / "s")) == 0


def test_a_damaged_shard_is_set_aside_and_its_rows_stored_again(tmp_path):
    store = ShardStore(tmp_path / "s", shard_rows=2)
    store.put("a" * 64, np.ones(2, np.float32))
    store.put("b" * 64, np.ones(2, np.float32))
    [rows] = list((tmp_path / "s").glob("*.npy"))
    rows.write_bytes(rows.read_bytes()[:40])  # truncated on disk
    later = ShardStore(tmp_path / "s", shard_rows=1)
    assert later.get("a" * 64) is None and "a" * 64 not in later and "b" * 64 not in later
    assert sorted(p.suffix for p in (tmp_path / "s").iterdir()) == [".damaged", ".damaged"]
    later.put("a" * 64, np.full(2, 7, np.float32))  # computed again: stored, and found by the next run
    assert ShardStore(tmp_path / "s").get("a" * 64)[0] == 7
    (tmp_path / "s" / "0000-bad.keys").write_bytes(b"\xff\xfe not text")
    assert ShardStore(tmp_path / "s").get("a" * 64)[0] == 7  # a damaged keys file is set aside, not a crash
    assert (tmp_path / "s" / "0000-bad.keys.damaged").exists()


def test_shards_merged_away_by_another_process_are_skipped(tmp_path):
    first = ShardStore(tmp_path / "s", shard_rows=64)
    for i in range(3):
        first.put(f"{i:064x}", np.full(2, i, np.float32))
        first.flush()
    second = ShardStore(tmp_path / "s", shard_rows=64)  # indexed the three small shards
    first.compact()  # merges them into one and removes them
    assert [second.get(f"{i:064x}")[0] for i in range(3)] == [0, 1, 2]  # found again in the merged shard
    assert [ShardStore(tmp_path / "s").get(f"{i:064x}")[0] for i in range(3)] == [0, 1, 2]


def test_a_shard_whose_keys_and_rows_disagree_is_set_aside_not_misread(tmp_path):
    store = ShardStore(tmp_path / "s", shard_rows=3)
    for i in range(3):
        store.put(f"{i:064x}", np.full(2, i, np.float32))
    [keys] = list((tmp_path / "s").glob("*.keys"))
    keys.write_text(f"{0:064x}\n{2:064x}\n")  # a line lost: key 2 would read row 1
    later = ShardStore(tmp_path / "s")
    assert later.get(f"{2:064x}") is None and f"{0:064x}" not in later
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "s").iterdir()) == ["keys.damaged", "npy.damaged"]
    store = ShardStore(tmp_path / "t", shard_rows=2)
    store.put("a" * 64, np.ones(2, np.float32))
    store.put("b" * 64, np.ones(2, np.float32))
    [rows] = list((tmp_path / "t").glob("*.npy"))
    rows.unlink()  # keys without rows: damaged, set aside once, not rescanned on every key
    later = ShardStore(tmp_path / "t")
    assert later.get("a" * 64) is None and later.get("b" * 64) is None and len(later) == 0
    later.put("a" * 64, np.full(2, 5, np.float32))
    later.flush()
    assert ShardStore(tmp_path / "t").get("a" * 64)[0] == 5


# -- worker processes ---------------------------------------------------------------------------


def test_rows_are_the_same_with_zero_and_two_workers(tmp_path):
    clf = tiny_classifier()
    paths = _photos(tmp_path / "img", 6)
    (tmp_path / "img" / "broken.jpg").write_text("not an image")
    jobs = _jobs(paths) + [features.ImageJob(str(tmp_path / "img" / "broken.jpg")),
                           features.ImageJob(str(tmp_path / "img" / "missing.jpg"))]
    serial, reasons0 = features.embed(clf, jobs, ShardStore(tmp_path / "a"), batch_size=5, progress=False)
    parallel, reasons2 = features.embed(clf, jobs, ShardStore(tmp_path / "b"), batch_size=5, progress=False,
                                        num_workers=2)
    assert reasons0 == reasons2 and reasons0[-2:] == ["not_an_image", "missing"]
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(ShardStore(tmp_path / "b").get(features.job_keys(clf, jobs)[3]), serial[3])


def test_jobs_of_one_photo_share_its_decode_and_give_the_pixels_of_separate_loads(tmp_path, monkeypatch):
    clf = tiny_classifier()
    paths = _photos(tmp_path / "img", 3)
    (tmp_path / "img" / "broken.jpg").write_text("not an image")
    broken = str(tmp_path / "img" / "broken.jpg")
    jobs = _jobs(paths) + [features.ImageJob(broken), features.ImageJob(broken, distortion="jpeg", level=1)]
    separately = [np.asarray(clf.view(job.load(clf))) for job in jobs[:-2]]
    decoded = []
    monkeypatch.setattr(features, "open_image", lambda *a, **k: decoded.append(a[0]) or open_image(*a, **k))
    views, reasons = features._JobViews(clf, jobs)[list(range(len(jobs)))]
    assert reasons[-2:] == ["not_an_image"] * 2 and len(decoded) == len(paths) + 1  # once per file
    np.testing.assert_array_equal(views.numpy(), np.stack(separately))


def test_backbone_in_workers_gives_the_same_rows_for_any_workers_under_keys_of_its_own(tmp_path):
    clf = tiny_classifier()
    paths = _photos(tmp_path / "img", 6)
    (tmp_path / "img" / "broken.jpg").write_text("not an image")
    jobs = _jobs(paths) + [features.ImageJob(str(tmp_path / "img" / "broken.jpg"))]
    shared, reasons = features.embed(clf, jobs, None, batch_size=5, progress=False)
    threads = torch.get_num_threads()
    alone, reasons0 = features.embed(clf, jobs, ShardStore(tmp_path / "a"), batch_size=5, progress=False,
                                     backbone_in_workers=True)
    assert torch.get_num_threads() == threads  # the main process gets its threads back
    parallel, reasons2 = features.embed(clf, jobs, ShardStore(tmp_path / "b"), batch_size=5, progress=False,
                                        num_workers=2, backbone_in_workers=True)
    assert reasons == reasons0 == reasons2 and reasons[-1] == "not_an_image"
    np.testing.assert_array_equal(alone, parallel)
    np.testing.assert_allclose(alone, shared, atol=1e-4, equal_nan=True)  # the same pass, one thread
    keys = features.job_keys(clf, jobs, backbone_in_workers=True)
    assert not set(keys) & set(features.job_keys(clf, jobs))
    np.testing.assert_array_equal(ShardStore(tmp_path / "b").get(keys[3]), alone[3])


def test_rows_from_workers_hold_no_shared_memory_until_the_store_flushes(tmp_path, monkeypatch):
    clf = tiny_classifier()
    jobs = _jobs(_photos(tmp_path / "img", 10))  # 40 jobs, one batch each
    open_at_flush = []
    flush = ShardStore.flush

    def counting_flush(self):
        open_at_flush.append(len(os.listdir("/proc/self/fd")))
        return flush(self)

    monkeypatch.setattr(ShardStore, "flush", counting_flush)
    before = len(os.listdir("/proc/self/fd"))
    features.embed(clf, jobs, ShardStore(tmp_path / "s"), batch_size=1, progress=False, num_workers=2,
                   backbone_in_workers=True)
    assert open_at_flush and max(open_at_flush) < before + 20  # not one per batch (40)


_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from iqalib import features
from iqalib.cache import ShardStore
from tests.test_detector import tiny_classifier
from tests.test_pipeline import _jobs, _photos
slow = features.pixel_rows
def pixel_rows(*a, **k):
    time.sleep(0.05)
    return slow(*a, **k)
features.pixel_rows = pixel_rows
jobs = _jobs(sorted(Path({images!r}).glob("*.jpg")))
features.embed(tiny_classifier(), jobs, ShardStore({store!r}, shard_rows=8), batch_size=4, progress=False)
"""


def test_a_run_killed_mid_pass_resumes_losing_at_most_one_shard(tmp_path):
    clf = tiny_classifier()
    paths = _photos(tmp_path / "img", 40)
    jobs = _jobs(paths)
    store_dir = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(REPO), images=str(tmp_path / "img"),
                                                                  store=str(store_dir))], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store_dir.glob("*.keys"))) < 3:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    kept = len(ShardStore(store_dir))
    assert 24 <= kept < len(jobs), "killed after three shards of eight, before the end"
    computed = []
    original = features.pixel_rows

    def counting(clf_, views, amp=False, pad_to=None):
        computed.append(len(views))  # the jobs' views; the padding is added inside
        return original(clf_, views, amp, pad_to=pad_to)

    features.pixel_rows = counting
    try:
        resumed, _ = features.embed(clf, jobs, ShardStore(store_dir, shard_rows=8), batch_size=4, progress=False)
    finally:
        features.pixel_rows = original
    assert sum(computed) == len(jobs) - kept  # only what no flushed shard holds
    fresh, _ = features.embed(clf, jobs, None, batch_size=4, progress=False)
    np.testing.assert_array_equal(resumed, fresh)


@pytest.mark.parametrize("in_workers", [False, True], ids=["shared_pass", "backbone_in_workers"])
def test_a_row_is_the_same_in_a_full_batch_a_last_batch_and_a_resumed_run(foolbox_images, tmp_path, in_workers):
    # EfficientNet-Lite0 on CPU picks other kernels for small batches (measured: batches of 1-8
    # differ from 32 in the last bits at 1 thread, a batch of 1 at 2); every pass is padded to the
    # batch size, so where a job's batch ended does not show in its row.
    from iqalib.classifiers import load_classifier

    clf = load_classifier("efficientnet_lite0", "cpu")
    jobs = [features.ImageJob(str(p)) for p, _ in foolbox_images[:17]]
    kw = dict(batch_size=16, progress=False, backbone_in_workers=in_workers)
    whole, _ = features.embed(clf, jobs, ShardStore(tmp_path / "whole"), **kw)  # batches of 16, 1
    resumed = ShardStore(tmp_path / "resumed")
    features.embed(clf, jobs[:13], resumed, **kw)  # a run that stopped after 13 jobs
    again, _ = features.embed(clf, jobs, resumed, **kw)  # the rest, 4 jobs, in one batch
    np.testing.assert_array_equal(again, whole)
    alone, _ = features.embed(clf, jobs[16:], None, **kw)  # one job alone
    np.testing.assert_array_equal(alone[0], whole[16])


# -- precision, heads ---------------------------------------------------------------------------------


def test_bf16_probabilities_match_fp32_within_tolerance(foolbox_images):
    from iqalib.classifiers import load_classifier

    clf = load_classifier("efficientnet_lite0", "cpu")
    images = [Image.open(p).convert("RGB") for p, _ in foolbox_images[:6]]
    views = np.stack([features._view_array(clf, im) for im in images])
    fp32 = features.probabilities(clf, features.pixel_rows(clf, views))
    bf16 = features.probabilities(clf, features.pixel_rows(clf, views, amp=True))
    # Stated tolerance: bf16 keeps 8 bits of mantissa; the softmax moves by < 0.05 and the top-1
    # stays on these photos (CPU autocast emulates what CUDA bf16 does on tensor cores).
    assert np.abs(bf16 - fp32).max() < 0.05
    assert (bf16.argmax(1) == fp32.argmax(1)).all()
    assert features.job_keys(clf, [features.ImageJob(str(foolbox_images[0][0]))], amp=True) != \
        features.job_keys(clf, [features.ImageJob(str(foolbox_images[0][0]))])


def test_stacked_heads_score_like_one_head_at_a_time():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12)).astype(np.float32)
    model = quality.QualityModel("efficientnet_lite0", n_models=3, hidden=16, bins=10, epochs=2, device="cpu")
    model.fit(x, rng.uniform(0.1, 0.9, 50), progress=False)
    rows = torch.from_numpy(x)
    with torch.inference_mode():
        looped = np.stack([head(rows).numpy() for head in model.heads])
    np.testing.assert_allclose(model.member_scores(x), looped, atol=1e-5)


# -- filling one store in shares ------------------------------------------------------------------


def test_shares_partition_the_bulk_passes_into_one_store(tmp_path):
    from iqalib import experiment, groups

    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "out"), run_name="shares")
    file = tmp_path / "shares.yaml"
    file.write_text(yaml.safe_dump(raw))
    whole = tmp_path / "whole.yaml"
    whole.write_text(yaml.safe_dump({**raw, "run_name": "whole"}))
    for k in range(2):
        done = subprocess.run([sys.executable, "-m", "iqalib", "run", str(file), "--shard", f"{k}/2"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and f"share {k}/2" in done.stdout, done.stderr[-2000:]
    groups.prefill(experiment.open_run(whole, progress=False), 0, 1)
    shared = ShardStore(tmp_path / "out" / "shares" / "cache" / "embeddings")
    alone = ShardStore(tmp_path / "out" / "whole" / "cache" / "embeddings")
    assert len(shared) == len(alone) > 6
    assert all(groups.in_share(str(i), 0, 3) + groups.in_share(str(i), 1, 3) + groups.in_share(str(i), 2, 3)
               == 1 for i in range(100))
    bad = subprocess.run([sys.executable, "-m", "iqalib", "run", str(file), "--shard", "2/2"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "K/N" in bad.stderr
