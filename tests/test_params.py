import pytest

from iqalib import params
from tests.conftest import REPO


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_shipped_params_files_validate(name):
    p = params.load(REPO / "params" / f"{name}.yaml")
    assert p.run_name == name
    assert p.distortions.types == ("gaussian_blur", "white_noise", "jpeg", "jpeg2000")


def test_params_are_frozen():
    p = params.validate({}, "x")
    with pytest.raises(AttributeError):
        p.seed = 3
    with pytest.raises(TypeError):
        p.originals["source"] = "folder"


@pytest.mark.parametrize("raw, words", [
    ({"seeed": 1}, ["unknown parameter 'seeed'", "seed"]),
    ({"originals": {"sourse": "embedded"}}, ["originals.sourse"]),
    ({"classifier": "resnet9000"}, ["unknown classifier", "resnet9000"]),
    ({"distortions": {"types": ["blurr"]}}, ["unknown distortion", "blurr"]),
    ({"distortions": {"levels": [6]}}, ["levels"]),
    ({"iqa_sets": [{"name": "kadid"}]}, ["iqa_sets", "kadid"]),
    ({"device": "tpu"}, ["device"]),
    ({"originals": "embedded"}, ["must be a mapping"]),
    ({"quality": {"patches": 2}}, ["quality.patches", "view only"]),
    ({"quality": {"train_sets": ["tid2013"]}}, ["quality.train_sets", "tid2013"]),
])
def test_wrong_params_fail_with_one_clear_message(raw, words):
    with pytest.raises(params.ParamsError) as info:
        params.validate(raw, "x")
    for word in words:
        assert word in str(info.value)


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(params.ParamsError, match="bad.yaml"):
        params.load(bad)
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        params.load(tmp_path / "nothere.yaml")


def test_missing_dataset_names_parameter_and_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("IQALIB_TID2013", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        params.data_path("tid2013", None, "iqa_sets[tid2013].path")
    message = str(info.value)
    assert "iqa_sets[tid2013].path" in message and "IQALIB_TID2013" in message and "ponomarenko" in message
    monkeypatch.setenv("IQALIB_TID2013", str(tmp_path))
    assert params.data_path("tid2013", None, "x") == tmp_path


def test_run_name_defaults_to_file_stem(tmp_path):
    f = tmp_path / "my-run.yaml"
    f.write_text("seed: 3\n")
    assert params.load(f).run_name == "my-run"
