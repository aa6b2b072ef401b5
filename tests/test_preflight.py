"""Preflight: every missing data folder or weights file is named, in one error, before a run starts."""
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from iqalib import classifiers, params, preflight
from tests.conftest import REPO
from tests.test_iqa_datasets import make_tid2013

TID = {"iqa_sets": ["embedded", "tid2013"]}


@pytest.fixture(autouse=True)
def no_data_variables(monkeypatch):
    for env, _ in params.DATA_ENV.values():
        monkeypatch.delenv(env, raising=False)


def _problems(raw) -> list[str]:
    with pytest.raises(preflight.PreflightError) as info:
        preflight.check(params.needs(params.validate(raw, "x")))
    error = info.value
    assert isinstance(error, FileNotFoundError)
    assert str(error).splitlines()[1:] == [f"- {p}" for p in error.problems]
    return error.problems


def test_shipped_smoke_params_pass():
    assert preflight.check(params.needs(params.load("params/smoke.yaml"))) is None


def test_empty_tid2013_folder_from_the_environment_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_TID2013", str(tmp_path))
    [problem] = _problems(TID)
    for words in ("iqa_sets[tid2013].path", "IQALIB_TID2013", "mos_with_names.txt", "ponomarenko.info", str(tmp_path)):
        assert words in problem


def test_tid2013_with_scores_but_missing_images_is_reported(monkeypatch, tmp_path):
    root = make_tid2013(tmp_path / "tid")
    raw = {"iqa_sets": ["embedded", {"name": "tid2013", "path": str(root)}]}
    assert preflight.problems(params.needs(params.validate(raw, "x"))) == []
    (root / "distorted_images" / "i01_10_3.bmp").unlink()
    [problem] = _problems(raw)
    assert "i01_10_3.bmp" in problem and "from 'iqa_sets[tid2013].path'" in problem and "IQALIB_TID2013" in problem


def test_unset_data_folder_names_parameter_and_variable():
    [problem] = _problems({"iqa_sets": ["csiq"], "quality": {"train_sets": ["csiq"]}})
    assert "iqa_sets[csiq].path" in problem and "IQALIB_CSIQ" in problem and "s2.smu.edu" in problem


def test_missing_torchvision_weights_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    [problem] = _problems({"classifier": "resnet152", "classifiers_table1": ["resnet152"]})
    assert problem.startswith("classifier resnet152:")
    assert "resnet152-394f9c45.pth" in problem and "TORCH_HOME" in problem


def test_loading_and_preflight_share_one_weights_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(classifiers.WeightsNotFoundError) as by_loader:
        classifiers.load_classifier("resnet50", "cpu")
    with pytest.raises(classifiers.WeightsNotFoundError) as by_rule:
        classifiers.weights_file("resnet50")
    assert str(by_loader.value) == str(by_rule.value)


def test_weights_file_finds_the_cached_file_without_building_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint: never read")
    assert classifiers.weights_file("alexnet") == cached
    with pytest.raises(classifiers.WeightsNotFoundError, match="points at .*nothere.pth, which does not exist"):
        classifiers.weights_file("alexnet", tmp_path / "nothere.pth")
    assert classifiers.weights_file("efficientnet_lite0").is_file()


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04truncated zip", None])
def test_weights_that_do_not_read_are_reported_before_the_run(tmp_path, content):
    import torch

    bad = tmp_path / "bad.pt"
    if content is None:  # a whole pickled model, not a state dict: weights_only refuses it
        torch.save(torch.nn.Linear(2, 2), bad)
    else:
        bad.write_bytes(content)
    [problem] = _problems({"classifier_weights": str(bad)})
    assert problem.startswith("classifier efficientnet_lite0:") and "bad.pt is not readable" in problem
    assert "weights_only=False" not in problem and "download it again" in problem
    with pytest.raises(classifiers.WeightsNotFoundError, match="bad.pt is not readable"):
        classifiers.load_classifier("efficientnet_lite0", "cpu", weights_path=str(bad))


def test_classifier_weights_resolve_against_the_repository():
    [problem] = _problems({"classifier_weights": "weights/none.pth"})
    assert problem.startswith("classifier efficientnet_lite0:") and str(REPO / "weights" / "none.pth") in problem


def test_an_originals_folder_of_linked_class_folders_says_links_are_not_followed(tmp_path):
    (tmp_path / "real" / "n02123045").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "real" / "n02123045" / "cat.JPEG")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "n02123045").symlink_to(tmp_path / "real" / "n02123045", target_is_directory=True)
    [problem] = _problems({"originals": {"source": "folder", "path": str(tmp_path / "links")}})
    assert "holds no image files" in problem and "1 linked sub-folder(s) are not followed" in problem


def test_empty_originals_folder_is_reported(tmp_path):
    [problem] = _problems({"originals": {"source": "folder", "path": str(tmp_path)}})
    assert "holds no image files" in problem and "originals.path" in problem and "IQALIB_ORIGINALS" in problem
    (tmp_path / "n02123045").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "n02123045" / "cat.JPEG")
    assert preflight.problems(params.needs(params.validate({"originals": {"source": "folder", "path": str(tmp_path)}}, "x"))) == []


def test_every_problem_in_one_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("IQALIB_TID2013", str(tmp_path))
    raw = {**TID, "originals": {"source": "imagenet_val"}, "classifiers_table1": ["efficientnet_lite0", "vgg16"]}
    problems = _problems(raw)
    assert [p.split()[0] for p in problems] == ["tid2013:", "imagenet_val:", "classifiers_table1"]
    assert "IQALIB_IMAGENET_VAL" in problems[1] and "vgg16-397923af.pth" in problems[2]


def test_cli_reports_an_empty_tid2013_before_any_notebook(tmp_path):
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "out"), iqa_sets=["embedded", "tid2013"])
    f = tmp_path / "tid.yaml"
    f.write_text(yaml.safe_dump(raw))
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IQALIB_")}
    done = subprocess.run([sys.executable, "-m", "iqalib", "run", str(f)], cwd=REPO, capture_output=True, text=True,
                          env={**env, "IQALIB_TID2013": str(tmp_path / "empty")}, timeout=120)
    assert done.returncode == 2 and "mos_with_names.txt" in done.stderr and "IQALIB_TID2013" in done.stderr, done.stderr
    assert "[iqalib]" not in done.stderr  # the runner's "<notebook> ..." progress line never came
    assert not (tmp_path / "out").exists()
