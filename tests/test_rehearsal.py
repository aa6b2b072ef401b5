"""The rehearsal of params/paper.yaml (iqalib.rehearsal, scripts/rehearse_paper.py): its params are
paper.yaml's but for sizes, its miniature data read back through the real readers, and a broken
layout fails in the preflight, before any notebook, with one line naming the path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from iqalib import images, iqa_datasets, params, preflight, rehearsal

REPO = Path(__file__).resolve().parents[1]
# Words a size key ends in: counts, steps, generations, draws (and the caps that are counts).
SIZE_WORDS = {"batch_size", "limit", "n_models", "epochs", "max_passes", "num_candidates", "pool_size", "n",
              "steps", "population", "generations", "keep", "n_splits", "n_boot", "peer_fit_cap",
              "peer_distorted", "n_images", "n_srocc", "iters", "n_certify", "lipschitz_iters", "pixel_pool",
              "draws", "n_certified_images", "fit_cap", "rbf_fit_cap"}


def _leaves(tree: dict, where: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        path = f"{where}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


@pytest.mark.parametrize("size", sorted(rehearsal.SIZES))
def test_rehearsal_params_are_paper_yaml_but_for_sizes(size, tmp_path):
    paper = _leaves(params.validate(rehearsal.paper_params(), "paper").to_dict())
    ours = _leaves(params.validate(rehearsal.rehearsal_params(size, tmp_path), "paper").to_dict())
    assert ours.keys() == paper.keys()
    changed = {k for k in paper if ours[k] != paper[k]}
    assert changed <= set(rehearsal.SIZES[size]) | set(rehearsal.PLACEMENT), changed - set(rehearsal.SIZES[size])
    assert {k.rsplit(".", 1)[-1] for k in rehearsal.SIZES[size]} <= SIZE_WORDS
    assert ours["outputs_dir"] == str(tmp_path) and ours["run_name"] == "paper"


def test_paper_yaml_caps_the_stages_that_would_dominate():
    p = params.validate(rehearsal.paper_params(), "paper")
    assert p.detector.peer_distorted is not None and p.robust.adaptive.fit_cap is not None
    assert p.originals.limit is not None  # the UAP's pool is the originals after the first 'limit'


def test_originals_rest_pool_needs_a_limit():
    with pytest.raises(params.ParamsError, match="originals.limit must be set"):
        params.validate({"originals": {"source": "imagenet_val"}, "attacks": {"uap": {"pool": "originals_rest",
                                                                                       "pool_size": 10}}}, "x")


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    refs = rehearsal._reference_photos(1, 0)
    types, levels = ["white_noise", "jpeg"], [1, 5]
    return {"tid2013": rehearsal.write_tid2013(root / "tid2013", refs, types, levels),
            "csiq": rehearsal.write_csiq(root / "csiq", refs, types, levels),
            "live": rehearsal.write_live(root / "live", refs, per_folder=2),
            "val": rehearsal.write_imagenet_val(root / "flat", root / "by_wnid", 4, lambda files: {0: 7}),
            "root": root}


def test_miniature_iqa_sets_read_back_through_the_real_readers(miniature):
    tid = iqa_datasets.read_tid2013(miniature["tid2013"])
    csiq = iqa_datasets.read_csiq(miniature["csiq"])
    live = iqa_datasets.read_live(miniature["live"])
    assert len(tid) == len(csiq) == 4 and len(live) == 5 * 2
    assert set(tid["distortion"]) == set(csiq["distortion"]) == {"white_noise", "jpeg"}
    assert (tid.sort_values("level")["mos"].diff().dropna() <= 0.2).all()  # made-up scores fall with the level
    assert set(live["distortion"]) == {"jpeg2000", "jpeg", "white_noise", "gaussian_blur", "fast_fading"}


def test_miniature_imagenet_val_reads_back_in_both_layouts(miniature):
    rows, root = miniature["val"], miniature["root"]
    flat = images.originals("imagenet_val", root / "flat", progress=False)
    by_wnid = images.originals("imagenet_val", root / "by_wnid", progress=False)
    by_name = {r["val_name"]: r for r in rows}
    assert sorted(r.label for r in flat.records) == sorted(r["true_label"] for r in rows)
    assert all(by_name[r.image_id]["true_label"] == r.label for r in flat.records)  # the official labels
    assert sorted(r.label for r in by_wnid.records) == sorted(r["wnid_label"] for r in rows)
    assert rows[0]["wnid_label"] == 7 and all(r["wnid_label"] == r["true_label"] for r in rows[1:])


def _broken_run(tmp_path: Path, miniature: dict) -> tuple[Path, dict[str, str]]:
    """The rehearsal's params and environment with three broken paths: TID2013 without its score
    file, an ImageNet val folder whose images have no label, ResNet-152's checkpoint misnamed."""
    tid = tmp_path / "tid2013"
    subprocess.run(["cp", "-r", str(miniature["tid2013"]), str(tid)], check=True)
    (tid / "mos_with_names.txt").unlink()
    val = tmp_path / "val"
    val.mkdir()
    (val / "photo_0001.JPEG").write_bytes((miniature["root"] / "flat" / os.listdir(miniature["root"] / "flat")[0]).read_bytes())
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("alexnet", "vgg16"):  # readable state dicts: the preflight reads them, it never builds the models
        torch.save({}, rehearsal.checkpoint_path(tmp_path / "torch", name))
    (checkpoints / "resnet152.pth").write_bytes(b"")
    file = tmp_path / "paper.yaml"
    file.write_text(yaml.safe_dump(rehearsal.rehearsal_params("ci", tmp_path / "outputs")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IQALIB_")}
    env.update(TORCH_HOME=str(tmp_path / "torch"), IQALIB_TID2013=str(tid), IQALIB_CSIQ=str(miniature["csiq"]),
               IQALIB_LIVE=str(miniature["live"]), IQALIB_IMAGENET_VAL=str(val))
    return file, env


def test_broken_layouts_fail_in_the_preflight_one_line_each_naming_the_path(tmp_path, miniature):
    file, env = _broken_run(tmp_path, miniature)
    done = subprocess.run([sys.executable, "-m", "iqalib", "run", str(file)], cwd=REPO, capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 2, done.stderr
    problems = [line[2:] for line in done.stderr.splitlines() if line.startswith("- ")]
    assert len(problems) == 3, done.stderr
    tid, val, weights = problems
    assert tid.startswith("tid2013:") and str(tmp_path / "tid2013" / "mos_with_names.txt") in tid
    assert val.startswith("imagenet_val:") and str(tmp_path / "val") in val and "label" in val
    assert "resnet152" in weights and str(rehearsal.checkpoint_path(tmp_path / "torch", "resnet152")) in weights
    assert "found resnet152.pth there" in weights
    assert "[iqalib] paper:" not in done.stderr and not (tmp_path / "outputs").exists()  # no notebook started


def test_preflight_passes_on_the_miniature(tmp_path, miniature, monkeypatch):
    for name in ("alexnet", "vgg16", "resnet152"):
        path = rehearsal.checkpoint_path(tmp_path / "torch", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({}, path)  # readable as a state dict: all the preflight checks without building the model
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var, key in (("IQALIB_TID2013", "tid2013"), ("IQALIB_CSIQ", "csiq"), ("IQALIB_LIVE", "live")):
        monkeypatch.setenv(var, str(miniature[key]))
    monkeypatch.setenv("IQALIB_IMAGENET_VAL", str(miniature["root"] / "by_wnid"))
    assert preflight.problems(params.needs(params.validate(rehearsal.rehearsal_params("ci", tmp_path), "paper"))) == []


# Unit costs (s per image) as measured on the project's 2-core machine (README, cost sheet).
MEASURED_UNITS = {"alexnet_bwd": 0.0217, "alexnet_fwd": 0.0095, "decode": 0.0023, "distort": 0.0074,
                  "dncnn17_bwd": 0.653, "dncnn17_fwd": 0.247, "head_row": 0.00058, "fold_row": 0.000073,
                  "linear_row": 0.000037, "rbf_detector": 6.21, "rbf_rows": 2000, "resnet152_bwd": 0.252,
                  "resnet152_fwd": 0.110, "vgg16_bwd": 0.268, "vgg16_fwd": 0.132}


def test_cost_sheet_covers_every_notebook_and_the_caps_keep_each_stage_under_30_minutes():
    sys.path.insert(0, str(REPO / "scripts"))
    import paper_costs

    def sheet(raw):
        p = params.validate(raw, "paper")
        gpu = paper_costs.assumed_gpu(MEASURED_UNITS, p.quality.hidden, p.quality.batch_size)
        return paper_costs.sheet(p, MEASURED_UNITS, gpu, gpu_measured=False)

    capped = sheet(rehearsal.paper_params())
    assert {r["notebook"] for r in capped} == {"00", "01", "02", "03", "04", "05"}
    assert max(r["gpu_machine_s"] for r in capped) < 1800
    raw = rehearsal.paper_params()
    raw["detector"].update(rbf_fit_cap=None, peer_distorted=None)
    raw["robust"]["adaptive"]["fit_cap"] = None
    uncapped = {r["stage"]: r["gpu_machine_s"] for r in sheet(raw)}
    assert max(uncapped.values()) > 1800  # the RBF kernel ablation at ~48,000 rows a split
