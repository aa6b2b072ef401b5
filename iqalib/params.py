"""Run parameters: the one schema every params/*.yaml follows, loaded, validated and frozen.

Owns the defaults and the checks; a wrong key or value fails here with one clear message that
names it, never deep inside a notebook. Relative paths resolve against the repository root.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

IQA_DATASETS = ("embedded", "tid2013", "csiq", "live")
ORIGINAL_SOURCES = ("embedded", "imagenet_val", "folder")
# Where the real data comes from, for error messages: (environment variable, origin).
DATA_ENV = {
    "tid2013": ("IQALIB_TID2013", "http://www.ponomarenko.info/tid2013.htm"),
    "csiq": ("IQALIB_CSIQ", "https://s2.smu.edu/~eclarson/csiq.html"),
    "live": ("IQALIB_LIVE", "https://live.ece.utexas.edu/research/quality/subjective.htm"),
    "imagenet_val": ("IQALIB_IMAGENET_VAL", "https://image-net.org (ILSVRC2012 validation set)"),
    "folder": ("IQALIB_ORIGINALS", "any folder with one sub-folder per WordNet id"),
}

# Every key a params file may set. A value of None means "no default: derived or optional".
DEFAULTS: dict[str, Any] = {
    "run_name": None,  # default: the params file's stem
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "batch_size": 16,
    "classifier": "efficientnet_lite0",
    "classifier_weights": None,  # a file for torch.load(weights_only=True); default: package / torch cache
    "classifiers_table1": ["efficientnet_lite0"],
    "outputs_dir": "outputs",
    "originals": {
        "source": "embedded",  # embedded | imagenet_val | folder
        "path": None,  # for imagenet_val / folder; or the environment variable in DATA_ENV
        "limit": None,  # at most this many source photos (None: all)
        "views": 1,  # deterministic views per photo (embedded pool only): full, flip, crops ...
    },
    "iqa_sets": [{"name": "embedded", "path": None}],
    "embedded_iqa": {
        "photos": None,  # None: all shipped photos; or a list of their names
        "distortions": [
            "gaussian_blur", "white_noise", "jpeg", "jpeg2000", "contrast",
            "pixelate", "impulse_noise", "color_saturation", "color_quantization", "darken",
        ],
        "levels": [1, 2, 3, 4, 5],
        "short_side": 288,  # references are resized so their short side is this many pixels
        "metric": "haarpsi",  # full-reference metric (piq) that gives the pseudo-MOS
    },
    "distortions": {
        "types": ["gaussian_blur", "white_noise", "jpeg", "jpeg2000"],
        "levels": [1, 2, 3, 4, 5],
    },
    "quality": {
        "train_sets": ["embedded"],  # IQA sets (names in iqa_sets) the deployed ensemble trains on
        "n_models": 10,  # paper: ten models; each trains on one content-disjoint 80/20 split
        "test_size": 0.2,
        "epochs": 30,
        "lr": 1.0e-4,
        "weight_decay": 1.0e-4,
        "batch_size": 64,
        "hidden": 2048,
        "bins": 70,
        "features": "multilevel",  # multilevel: early-layer statistics of the shared pass | pooled
        "label_sigma": 0.03,  # width of the Gaussian soft label over the bins, [0, 1] scale
        "dropout": 0.0,
        "patches": 0,  # extra native-resolution crops per image at prediction, one backbone pass each
    },
    "attacks": {
        "uap": {
            "xi": 10.0,  # l-inf bound, 0–255 units
            "delta": 0.2,  # stop at fooling rate 1 − delta on the pool
            "max_passes": 3,
            "num_candidates": 10,
            "pool": "iqa_references",  # iqa_references | originals_rest (disjoint from the evaluated originals)
            "pool_size": None,  # originals_rest: how many further originals
            "pool_views": 2,  # iqa_references: views per reference photo (full, mirror, ...)
        },
        "fool_gd": {"n": 16, "steps": 40, "lr": 2.0, "l2_decay": 0.002},
        "fool_ev": {"population": 32, "generations": 40, "encoding": "cppn", "keep": 16},
    },
    "detector": {
        "n_splits": 10,
        "train_size": 0.5,
        "thresholds": [0.3, 0.35],  # Baseline-2 (paper: 0.3)
        "target_fpr": 0.05,
        "n_boot": 1000,
    },
}



class ParamsError(ValueError):
    """A params file that does not follow the schema."""


class Frozen(Mapping):
    """Read-only view of nested params: attribute and item access, lists become tuples."""

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", MappingProxyType({k: _freeze(v) for k, v in data.items()}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"params have no '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are frozen; change the YAML file instead")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Frozen({dict(self._data)!r})"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able copy (for the manifest)."""
        return {k: _thaw(v) for k, v in self._data.items()}


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Frozen(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Frozen):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _merge(defaults: dict[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults))
            raise ParamsError(f"unknown parameter '{where}{key}'. Valid keys here: {valid}")
        if isinstance(defaults[key], dict) and defaults[key]:
            if not isinstance(value, Mapping):
                raise ParamsError(f"parameter '{where}{key}' must be a mapping, got {value!r}")
            merged[key] = _merge(defaults[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ParamsError(message)


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Expand ``~`` and ``$VARS``; relative paths are taken from the repository root."""
    if path is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return p if p.is_absolute() else REPO_ROOT / p


def data_path(kind: str, given: str | None, param_name: str) -> Path:
    """The folder of a real data set: the params value, else its environment variable.

    Raises one FileNotFoundError naming the parameter, the variable and where the data comes from.
    """
    env, origin = DATA_ENV[kind]
    raw = given if given not in (None, "") else (os.environ.get(env) or None)
    path = resolve_path(raw)
    if path is None or not path.exists():
        found = f"'{path}' does not exist" if path is not None else "it is not set"
        raise FileNotFoundError(
            f"{kind}: no data folder ({found}). Set '{param_name}' in the params file or the "
            f"environment variable {env}. The data comes from {origin}."
        )
    return path


def check_data(params: Frozen) -> None:
    """Fail fast, before any notebook runs, when a real data folder the params name is missing."""
    for entry in params.iqa_sets:
        if entry["name"] != "embedded":
            data_path(entry["name"], entry["path"], f"iqa_sets[{entry['name']}].path")
    if params.originals.source != "embedded":
        data_path(params.originals.source, params.originals.path, "originals.path")


def validate(raw: Mapping[str, Any], source_name: str = "params") -> Frozen:
    """Merge ``raw`` onto the defaults, check every value, and freeze the result."""
    if raw is None:
        raw = {}
    _check(isinstance(raw, Mapping), f"{source_name}: the top level must be a mapping of parameters")
    p = _merge(DEFAULTS, raw, "")

    if p["run_name"] is None:
        p["run_name"] = source_name
    _check(isinstance(p["run_name"], str) and p["run_name"].replace("-", "").replace("_", "").isalnum(),
           f"run_name must be letters, digits, '-' or '_', got {p['run_name']!r}")
    _check(isinstance(p["seed"], int), f"seed must be an integer, got {p['seed']!r}")
    _check(p["device"] in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {p['device']!r}")
    _check(isinstance(p["batch_size"], int) and p["batch_size"] > 0, "batch_size must be a positive integer")

    from iqalib.classifiers import CLASSIFIERS  # ground floor to ground floor: names only
    from iqalib.distortions import DISTORTIONS, LEVELS

    for name in [p["classifier"], *p["classifiers_table1"]]:
        _check(name in CLASSIFIERS, f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")

    o = p["originals"]
    _check(o["source"] in ORIGINAL_SOURCES,
           f"originals.source must be one of {', '.join(ORIGINAL_SOURCES)}, got {o['source']!r}")
    _check(o["limit"] is None or (isinstance(o["limit"], int) and o["limit"] > 0), "originals.limit must be a positive integer or null")
    _check(isinstance(o["views"], int) and o["views"] >= 1, "originals.views must be an integer >= 1")

    sets = p["iqa_sets"]
    _check(isinstance(sets, list) and sets, "iqa_sets must be a non-empty list")
    normalised = []
    for entry in sets:
        entry = {"name": entry, "path": None} if isinstance(entry, str) else dict(entry)
        _check(set(entry) <= {"name", "path"}, f"iqa_sets entries take 'name' and 'path', got {sorted(entry)}")
        _check(entry.get("name") in IQA_DATASETS,
               f"iqa_sets name must be one of {', '.join(IQA_DATASETS)}, got {entry.get('name')!r}")
        entry.setdefault("path", None)
        normalised.append(entry)
    p["iqa_sets"] = normalised

    for section, types_key in (("embedded_iqa", "distortions"), ("distortions", "types")):
        for name in p[section][types_key]:
            _check(name in DISTORTIONS, f"{section}.{types_key}: unknown distortion {name!r}; choose from {', '.join(DISTORTIONS)}")
        for level in p[section]["levels"]:
            _check(level in LEVELS, f"{section}.levels: levels are {list(LEVELS)}, got {level!r}")
    q = p["quality"]
    for key in ("n_models", "epochs", "batch_size", "hidden", "bins"):
        _check(isinstance(q[key], int) and q[key] >= 1, f"quality.{key} must be a positive integer")
    _check(q["patches"] == 0, "quality.patches must be 0 in notebook runs: the cached pipeline scores the classifier's "
           "view only (QualityModel(patches=p) in Python scores the view + p native-resolution crops)")
    _check(0 < q["test_size"] < 1, "quality.test_size must be in (0, 1)")
    _check(q["features"] in ("multilevel", "pooled"), "quality.features must be multilevel or pooled")
    set_names = [e["name"] for e in p["iqa_sets"]]
    for name in q["train_sets"]:
        _check(name in set_names, f"quality.train_sets names {name!r}, which is not in iqa_sets ({', '.join(set_names)})")
    uap = p["attacks"]["uap"]
    _check(uap["pool"] in ("iqa_references", "originals_rest"), "attacks.uap.pool must be iqa_references or originals_rest")
    _check(uap["pool"] != "originals_rest" or (isinstance(uap["pool_size"], int) and uap["pool_size"] > 0),
           "attacks.uap.pool_size must be a positive integer when attacks.uap.pool is originals_rest")
    _check(0 < uap["xi"] <= 255 and 0 <= uap["delta"] < 1, "attacks.uap: xi must be in (0, 255] and delta in [0, 1)")
    _check(p["attacks"]["fool_ev"]["encoding"] in ("cppn", "direct"), "attacks.fool_ev.encoding must be cppn or direct")
    d = p["detector"]
    _check(isinstance(d["n_splits"], int) and d["n_splits"] >= 1 and 0 < d["train_size"] < 1,
           "detector.n_splits must be >= 1 and detector.train_size in (0, 1)")
    _check(0 < d["target_fpr"] < 1, "detector.target_fpr must be in (0, 1)")
    _check(isinstance(p["embedded_iqa"]["short_side"], int) and p["embedded_iqa"]["short_side"] >= 224,
           "embedded_iqa.short_side must be an integer >= 224 (the classifiers' input size)")
    return Frozen(p)


def load(path: str | os.PathLike) -> Frozen:
    """Read a params YAML file (``yaml.safe_load``), validate it and return frozen params."""
    path = resolve_path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} does not exist (see params/ for examples)")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    try:
        params = validate(raw or {}, source_name=path.stem)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    return params


def run_dir(params: Frozen) -> Path:
    """``outputs/<run_name>/`` for these params (created if missing)."""
    folder = resolve_path(params.outputs_dir) / params.run_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
