import subprocess
import sys
import time

import pytest
import yaml

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
    ({"quality": {"train_sets": ["tid2013"]}}, ["quality.train_sets", "tid2013"]),
    ({"attacks": {"uap": {"pool": "originals_rest"}}}, ["attacks.uap.pool_size", "originals_rest"]),
    ({"iqa_sets": ["embedded", "embedded"]}, ["iqa_sets", "once"]),
])
def test_wrong_params_fail_with_one_clear_message(raw, words):
    with pytest.raises(params.ParamsError) as info:
        params.validate(raw, "x")
    for word in words:
        assert word in str(info.value)
    assert len(str(info.value).splitlines()) == 1


# One bad value per kind of rule: (raw, the field named, what is expected).
BAD_VALUES = [
    ({"attacks": {"fool_gd": {"n": "sixteen"}}}, "attacks.fool_gd.n", "an integer >= 1"),
    ({"quality": {"lr": "fast"}}, "quality.lr", "a number > 0"),
    ({"detector": {"n_boot": "many"}}, "detector.n_boot", "an integer >= 1"),
    ({"detector": {"thresholds": 0.3}}, "detector.thresholds", "list of numbers in (0, 1)"),
    ({"detector": {"thresholds": [0.3, 1.5]}}, "detector.thresholds[1]", "a number in (0, 1)"),
    ({"quality": {"test_size": "0.2"}}, "quality.test_size", "a number in (0, 1)"),
    ({"detector": {"train_size": "half"}}, "detector.train_size", "a number in (0, 1)"),
    ({"attacks": {"uap": {"xi": "10"}}}, "attacks.uap.xi", "a number in [1, 255]"),
    ({"attacks": {"uap": {"xi": 300}}}, "attacks.uap.xi", "a number in [1, 255]"),
    ({"attacks": {"uap": {"delta": 1}}}, "attacks.uap.delta", "a number in [0, 1)"),
    ({"quality": {"epochs": 2.5}}, "quality.epochs", "an integer >= 1"),
    ({"quality": {"n_models": True}}, "quality.n_models", "an integer >= 1"),  # YAML true is a bool
    ({"seed": -1}, "seed", "an integer in [0, 4294967295]"),
    ({"batch_size": 0}, "batch_size", "an integer >= 1"),
    ({"quality": {"dropout": float("nan")}}, "quality.dropout", "a number in [0, 1)"),
    ({"quality": {"weight_decay": -1e-4}}, "quality.weight_decay", "a number >= 0"),
    ({"detector": {"target_fpr": 0}}, "detector.target_fpr", "a number in (0, 1)"),
    ({"embedded_iqa": {"short_side": 100}}, "embedded_iqa.short_side", "an integer >= 224"),
    ({"embedded_iqa": {"metric": "psnr"}}, "embedded_iqa.metric", "one of haarpsi, fsim, ms_ssim"),
    ({"embedded_iqa": {"photos": ["chelsae"]}}, "embedded_iqa.photos[0]", "unknown embedded photo"),
    ({"embedded_iqa": {"photos": "chelsea"}}, "embedded_iqa.photos", "or null"),
    ({"embedded_iqa": {"levels": [True]}}, "embedded_iqa.levels[0]", "unknown level"),
    ({"distortions": {"types": []}}, "distortions.types", "a non-empty list of distortion names"),
    ({"classifiers_table1": "alexnet"}, "classifiers_table1", "a non-empty list of classifier names"),
    ({"classifier_weights": 3}, "classifier_weights", "a file path or null"),
    ({"outputs_dir": None}, "outputs_dir", "a folder path"),
    ({"originals": {"limit": 0}}, "originals.limit", "an integer >= 1 or null"),
    ({"originals": {"path": ["a"]}}, "originals.path", "a folder path or null"),
    ({"iqa_sets": [{"name": "tid2013", "path": 3}]}, "iqa_sets[0].path", "a folder path or null"),
    ({"attacks": {"uap": {"pool_size": "2000"}}}, "attacks.uap.pool_size", "drop the quotes"),
    ({"attacks": {"fool_ev": {"encoding": "dna"}}}, "attacks.fool_ev.encoding", "one of cppn, direct"),
    ({"quality": {"lr": "1e-4"}}, "quality.lr", "write it with a dot"),
    ({"run_name": "a b"}, "run_name", "letters, digits"),
    ({"robust": {"eps_255": [4, -1]}}, "robust.eps_255[1]", "a number in (0, 64]"),
    ({"robust": {"smoothing": {"sigma": 0}}}, "robust.smoothing.sigma", "a number in (0, 1]"),
    ({"robust": {"nt": {"lam": -1}}}, "robust.nt.lam", "a number >= 0"),
    ({"robust": {"nt": {"difference": "central"}}}, "robust.nt.difference", "one of forward, two_sided"),
    ({"robust": {"nt": {"around_255": -4}}}, "robust.nt.around_255", "a number in [0, 255]"),
    ({"robust": {"n_images": 2}}, "robust.n_images", "an integer >= 4"),
    ({"seed": 2**32}, "seed", "an integer in [0, 4294967295]"),
    ({"distortions": {"levels": [1, 1]}}, "distortions.levels", "list each value once"),
    ({"robust": {"eps_255": [4, 4.0]}}, "robust.eps_255", "(4.0 more than once)"),
    ({"embedded_iqa": {"photos": ["chelsea", "chelsea"]}}, "embedded_iqa.photos", "list each value once"),
]


@pytest.mark.parametrize("raw, field, expected", BAD_VALUES, ids=[b[1] + "-" + repr(b[0])[-12:] for b in BAD_VALUES])
def test_each_bad_value_is_one_line_naming_field_value_and_rule(raw, field, expected):
    with pytest.raises(params.ParamsError) as info:
        params.validate(raw, "x")
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(field) and expected in message, message


def test_every_problem_is_reported_on_its_own_line():
    with pytest.raises(params.ParamsError) as info:
        params.validate({"seeed": 1, "device": "tpu", "quality": {"lr": "fast", "epochs": "ten"}}, "x")
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == ["device", "quality.epochs", "quality.lr"]


def test_every_default_key_has_exactly_one_rule_and_defaults_pass():
    assert params._schema_gaps() is None
    p = params.validate({}, "x")
    assert p.to_dict() | {"run_name": None} == params.DEFAULTS | {"run_name": None}


def test_numbers_are_stored_as_floats_and_iqa_sets_normalised():
    p = params.validate({"attacks": {"uap": {"xi": 8}}, "iqa_sets": ["embedded", {"name": "tid2013"}]}, "x")
    assert p.attacks.uap.xi == 8.0 and isinstance(p.attacks.uap.xi, float)
    assert [dict(e) for e in p.iqa_sets] == [{"name": "embedded", "path": None}, {"name": "tid2013", "path": None}]


def test_rules_reject_bools_where_numbers_are_expected_and_accept_booleans_where_asked():
    assert params.boolean()("x.flag", False) is False
    for rule, value in [(params.boolean(), 1), (params.integer(min=0), True), (params.number(ge=0), False),
                        (params.choice((0, 1)), True)]:
        with pytest.raises(params.ParamsError, match="x.key"):
            rule("x.key", value)


def test_adding_a_key_is_one_line_in_defaults_and_one_in_schema(monkeypatch):
    defaults = {**params.DEFAULTS, "features": {"num_workers": 0}}
    monkeypatch.setattr(params, "DEFAULTS", defaults)
    with pytest.raises(RuntimeError, match="features.num_workers"):  # a key without a rule never slips through
        params.validate({}, "x")
    monkeypatch.setattr(params, "SCHEMA", {**params.SCHEMA, "features.num_workers": params.integer(min=0)})
    assert params.validate({"features": {"num_workers": 2}}, "x").features.num_workers == 2
    with pytest.raises(params.ParamsError, match=r"features.num_workers must be an integer >= 0, got -1"):
        params.validate({"features": {"num_workers": -1}}, "x")


def test_name_copies_agree_with_their_registries():
    from iqalib.classifiers import CLASSIFIERS

    assert params.CLASSIFIER_NAMES == tuple(CLASSIFIERS)
    try:  # the embedded IQA set may live in its own module
        from iqalib import embedded_iqa as home
    except ImportError:
        from iqalib import iqa_datasets as home
    assert params.EMBEDDED_PHOTO_NAMES == tuple(home.EMBEDDED_PHOTOS)
    assert params.PSEUDO_MOS_METRICS == tuple(home.PSEUDO_MOS_METRICS)


def test_load_does_not_import_torch(tmp_path):
    code = ("import sys, iqalib.params; iqalib.params.load('params/default.yaml'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(params.ParamsError, match="bad.yaml") as info:
        params.load(bad)
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        params.load(tmp_path / "nothere.yaml")


def test_a_key_given_twice_and_a_file_not_in_utf8_are_named_errors(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 0\nbatch_size: 8\nseed: 1\n")
    with pytest.raises(params.ParamsError, match=r"twice.yaml: not valid YAML: .*'seed' is given twice.*line 3"):
        params.load(twice)
    merged = "a: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\n"  # merge keys read as safe_load reads them, overrides too
    assert yaml.load(merged, Loader=params._UniqueKeyLoader) == yaml.safe_load(merged)  # noqa: S506, SLF001
    unhashable = tmp_path / "unhashable.yaml"
    unhashable.write_text("? [1, 2]\n: 3\n")
    with pytest.raises(params.ParamsError, match=r"unhashable.yaml: not valid YAML: .*unhashable"):
        params.load(unhashable)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(params.ParamsError, match=r"latin.yaml: not UTF-8 text"):
        params.load(latin)


def test_load_prefixes_every_line_with_the_file(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("attacks:\n  fool_gd: {n: sixteen}\nquality: {lr: fast}\n")
    with pytest.raises(params.ParamsError) as info:
        params.load(f)
    assert str(info.value).splitlines() == [
        f"{f}: quality.lr must be a number > 0, got 'fast'",  # in SCHEMA's order
        f"{f}: attacks.fool_gd.n must be an integer >= 1, got 'sixteen'",
    ]


def test_relative_params_path_from_a_notebook_folder(monkeypatch):
    monkeypatch.chdir(REPO / "notebooks")
    assert params.load("../params/smoke.yaml").run_name == "smoke"


def test_relative_params_path_from_elsewhere_falls_back_to_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert params.load("params/smoke.yaml").run_name == "smoke"
    assert params.params_file("params/smoke.yaml") == REPO / "params" / "smoke.yaml"


def test_relative_params_path_prefers_the_working_directory(monkeypatch, tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("run_name: mine\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert params.load("../params/smoke.yaml").run_name == "mine"
    monkeypatch.chdir(tmp_path)
    assert params.load("params/smoke.yaml").run_name == "mine"
    # paths inside the params stay relative to the repository root, wherever the run starts
    assert params.resolve_path("outputs") == REPO / "outputs"


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


def _set(tree: dict, dotted: str, value) -> None:
    *sections, key = dotted.split(".")
    for s in sections:
        tree = tree.setdefault(s, {})
    tree[key] = value


CLI_BAD = [
    ("attacks.fool_gd.n", "sixteen"),
    ("quality.lr", "fast"),
    ("detector.n_boot", "many"),
    ("detector.thresholds", 0.3),
    ("quality.test_size", "0.2"),
    ("detector.train_size", "half"),
    ("attacks.uap.xi", "10"),
]


@pytest.mark.parametrize("field, value", CLI_BAD)
def test_cli_refuses_a_bad_value_in_one_line_before_any_notebook(tmp_path, field, value):
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw["outputs_dir"] = str(tmp_path / "out")
    _set(raw, field, value)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "iqalib", "run", str(f)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - started
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and field in lines[0] and repr(value) in lines[0], done.stderr
    assert not (tmp_path / "out").exists()  # no run folder: no notebook started
    assert elapsed < 10, f"took {elapsed:.1f} s"  # the contract, a generous upper bound


def test_process_counts_default_to_the_cores_and_take_a_given_count():
    cores = params.cpus_available()
    p = params.validate({}, "x")
    assert params.workers(p) == cores and params.detector_jobs(p) == cores
    p = params.validate({"num_workers": 0, "detector": {"n_jobs": 3}}, "x")
    assert params.workers(p) == 0 and params.detector_jobs(p) == 3
    with pytest.raises(params.ParamsError, match="detector.n_jobs"):
        params.validate({"detector": {"n_jobs": 0}}, "x")
