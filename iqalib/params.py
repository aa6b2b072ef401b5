"""Run parameters: the one schema every params/*.yaml follows, loaded, validated and frozen.

Owns the defaults (``DEFAULTS``), the rule for every key (``SCHEMA``) and the checks across keys;
a wrong key or value fails here, before any notebook starts, with one line per problem naming the
field, the bad value and what is expected. Does not look at data folders or weights (that is
``iqalib.preflight``) and imports no torch.

Paths
    A relative params FILE path (``load("../params/default.yaml")``) is taken from the current
    working directory when the file exists there (a notebook in ``notebooks/``, which papermill and
    JupyterLab run with that folder as cwd), else from the repository root (the CLI from anywhere).
    Relative paths INSIDE a params file (``outputs_dir``, ``classifier_weights``, ``originals.path``,
    ``iqa_sets[].path``) are always taken from the repository root: callers pass them through
    ``resolve_path``. ``~`` and ``$VARS`` are expanded in both.

Adding a parameter
    Two lines: its default in ``DEFAULTS`` and its rule in ``SCHEMA`` under its dotted path, e.g.
    ``"num_workers": 0,`` in ``DEFAULTS["features"]`` and ``"features.num_workers": integer(min=0),``.
    Rules (``iqalib.rules``): ``integer(min, max)``, ``number(gt=, ge=, lt=, le=)`` (ints and floats,
    stored as float), ``choice(options, noun=None)``, ``text(pattern, expected)``, ``boolean()``,
    ``list_of(rule)``, and ``rule.or_null()`` for keys that may be null. A rule that spans keys goes in ``CROSS_CHECKS``.
    Every key in ``DEFAULTS`` must have exactly one rule; ``validate`` refuses to run otherwise.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import yaml

from iqalib.distortions import DISTORTIONS, LEVELS  # names only; distortions imports no torch
from iqalib.rules import ParamsError, Rule, boolean, choice, integer, list_of, number, text

REPO_ROOT = Path(__file__).resolve().parents[1]

IQA_DATASETS = ("embedded", "tid2013", "csiq", "live")
ORIGINAL_SOURCES = ("embedded", "imagenet_val", "folder")
# Copies of registries whose modules import torch or are heavy; tests/test_params.py checks they agree.
CLASSIFIER_NAMES = ("efficientnet_lite0", "resnet152", "resnet50", "vgg16", "alexnet")  # iqalib.classifiers.CLASSIFIERS
EMBEDDED_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "retina",
                        "ihc", "china", "flower", "grace_hopper", *(f"street_{k:02d}" for k in range(100)),
                        *(f"cat_{k:02d}" for k in range(30)))  # EMBEDDED_PHOTOS of the embedded IQA set
PSEUDO_MOS_METRICS = ("haarpsi", "fsim", "ms_ssim")  # PSEUDO_MOS_METRICS of the embedded IQA set
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
    "num_workers": None,  # processes for CPU-side image work (decode, distort, view; IQA set build); None: the cores
    "amp": False,  # backbone passes under bf16 autocast + channels-last (meant for CUDA; other numbers than fp32)
    "backbone_in_workers": False,  # CPU only: each worker also runs the backbone, single-threaded (own cache keys)
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
    },
    "attacks": {
        "uap": {
            "method": "deepfool",  # deepfool: the paper's Algorithm 1 | sgd: data-efficient stochastic gradient
            "xi": 10.0,  # l-inf bound, 0–255 units
            "delta": 0.2,  # deepfool: stop at fooling rate 1 − delta on the pool
            "max_passes": 3,  # deepfool
            "num_candidates": 10,  # deepfool
            "steps": 150,  # sgd: optimiser steps
            "batch_size": 16,  # sgd: random crops per step
            "lr": 1.0,  # sgd: Adam step, 0–255 units
            "min_scale": 0.5,  # sgd: smallest crop side / short side
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
        "peer_distorted": None,  # distorted images Feature Squeezing scores (a seeded sample); null: all
        "peer_fit_cap": None,  # training originals a feature-space peer is fitted on per split (seeded sample); null: all
        "rbf_fit_cap": None,  # training sources an RBF fit of the kernel ablation uses per split (seeded sample); null: all
        "n_jobs": None,  # processes for the SVM fits (grid search, out-of-fold scores); null: the cores
    },
    "robust": {  # notebook 05: the quality half under attack, and its defences
        "n_models": 3,  # heads of the plain and NT ensembles trained for notebook 05 (same photos, same seeds)
        "n_images": 24,  # held-out IQA images each attack perturbs (spread over the pseudo-MOS range)
        "n_srocc": 96,  # held-out IQA images every quality model's clean SROCC/PLCC is measured on
        "eps_255": [1, 2, 4, 8],  # l-inf radii, 0–255 units (MSU benchmark)
        "step_255": 1.0,  # I-FGSM step, 0–255 units
        "iters": 10,  # I-FGSM and PGD iterations
        "eot_draws": 1,  # noise draws per attack step on a smoothed scorer (expectation over steps)
        # NT trains the quality model's own copy of the early layers (lr ``layer_lr``) and its heads
        # (``lr``) on ``batch_size`` images per step from ``pixel_pool`` training images. The authors'
        # difference is ``forward`` and taken at the image (``around_255`` 0); ``two_sided`` and a
        # random point within ``around_255``/255 of it are ours (``gradnorm.train_nt``).
        "nt": {"lam": 1.0e-3, "h": 1.0e-2, "steps": 120, "batch_size": 16, "lr": 1.0e-4, "layer_lr": 1.0e-5,
               "pixel_pool": 512, "difference": "forward", "around_255": 0.0},
        "smoothing": {"sigma": 0.12, "n": 24, "n_certify": 100, "conf": 0.999, "radii": [0.025, 0.05, 0.1]},
        "feature_smoothing": {"sigma": 0.25, "n": 100, "n_certify": 1000, "lipschitz_iters": 10},
        # MSE training (``steps`` on ``batch_size`` crops), then DMS-IQA's rank-preserving fine-tuning
        # through the plain metric (``rank``: ``batch_size`` training images per step, hinge ``margin``).
        "denoiser": {"layers": 5, "channels": 16, "steps": 300, "batch_size": 32, "patch": 64, "lr": 1.0e-3,
                     "rank": {"steps": 60, "batch_size": 8, "weight": 1.0, "margin": 0.01, "lr": 1.0e-4}},
        # The detector under attack: held-out originals, l-inf radii (0-255 units) and PGD steps. The
        # literature's radii (0.5-8) and two below them: on EfficientNet-Lite0 the adaptive attacks
        # already get every image through at 0.5/255, so the curve's rise shows only below it.
        # fit_cap: training originals (each with its UAP twin) the detector under attack is fitted on,
        # a seeded sample of the first split's; null: all of them (every scorer scores each one)
        "adaptive": {"n_images": 16, "eps_255": [0.125, 0.25, 0.5, 1, 2, 4, 8], "steps": 10, "fit_cap": None},
        # l2 PGD inside DMS's certified radii, on the first n_images certified images.
        "certificate_attack": {"n_images": 8, "steps": 10, "draws": 4},
        "n_certified_images": 16,  # held-out IQA images the certificates and the Lipschitz estimate run on
    },
}


class _IqaSet(Rule):
    """An ``iqa_sets`` entry: a name, or ``{name: ..., path: ...}``; normalised to the mapping."""

    def __init__(self):
        super().__init__("", lambda v: True, f"names from {', '.join(IQA_DATASETS)} or {{name, path}} mappings")

    def __call__(self, field: str, value: Any) -> Any:
        entry = {"name": value, "path": None} if isinstance(value, str) else value
        if not isinstance(entry, Mapping) or not set(entry) <= {"name", "path"}:
            shown = sorted(entry) if isinstance(entry, Mapping) else repr(value)
            raise ParamsError(f"{field}: iqa_sets entries take 'name' and 'path', got {shown}")
        if not choice(IQA_DATASETS).ok(entry.get("name")):
            raise ParamsError(f"{field}: iqa_sets name must be one of {', '.join(IQA_DATASETS)}, "
                              f"got {entry.get('name')!r}")
        path = text(expected="a folder path").or_null()(f"{field}.path", entry.get("path"))
        return {"name": entry["name"], "path": path}


_CLASSIFIER = choice(CLASSIFIER_NAMES, noun="classifier")
_FRACTION = number(gt=0, lt=1)
_POSITIVE = integer(min=1)

# The rule of every key in DEFAULTS, by dotted path (checked in this order).
SCHEMA: dict[str, Rule] = {
    "run_name": text(r"[A-Za-z0-9_-]+", "letters, digits, '-' or '_'"),
    "seed": integer(min=0, max=2**32 - 1, why="NumPy's and scikit-learn's seed range"),
    "device": choice(("auto", "cpu", "cuda")),
    "batch_size": _POSITIVE,
    "num_workers": integer(min=0).or_null(),
    "amp": boolean(),
    "backbone_in_workers": boolean(),
    "classifier": _CLASSIFIER,
    "classifier_weights": text(expected="a file path").or_null(),
    "classifiers_table1": list_of(_CLASSIFIER),
    "outputs_dir": text(expected="a folder path"),
    "originals.source": choice(ORIGINAL_SOURCES),
    "originals.path": text(expected="a folder path").or_null(),
    "originals.limit": _POSITIVE.or_null(),
    "originals.views": _POSITIVE,
    "iqa_sets": list_of(_IqaSet()),
    "embedded_iqa.photos": list_of(choice(EMBEDDED_PHOTO_NAMES, noun="embedded photo")).or_null(),
    "embedded_iqa.distortions": list_of(choice(DISTORTIONS, noun="distortion")),
    "embedded_iqa.levels": list_of(choice(LEVELS, noun="level")),
    "embedded_iqa.short_side": integer(min=224, why="the classifiers' input size"),
    "embedded_iqa.metric": choice(PSEUDO_MOS_METRICS),
    "distortions.types": list_of(choice(DISTORTIONS, noun="distortion")),
    "distortions.levels": list_of(choice(LEVELS, noun="level")),
    "quality.train_sets": list_of(choice(IQA_DATASETS)),
    "quality.n_models": _POSITIVE,
    "quality.test_size": _FRACTION,
    "quality.epochs": _POSITIVE,
    "quality.lr": number(gt=0),
    "quality.weight_decay": number(ge=0),
    "quality.batch_size": _POSITIVE,
    "quality.hidden": _POSITIVE,
    "quality.bins": _POSITIVE,
    "quality.features": choice(("multilevel", "pooled")),
    "quality.label_sigma": number(ge=0),
    "quality.dropout": number(ge=0, lt=1),
    "attacks.uap.method": choice(("deepfool", "sgd"), noun="UAP method"),
    "attacks.uap.xi": number(ge=1, le=255, why="0–255 pixel units"),
    "attacks.uap.delta": number(ge=0, lt=1),
    "attacks.uap.max_passes": _POSITIVE,
    "attacks.uap.num_candidates": _POSITIVE,
    "attacks.uap.steps": _POSITIVE,
    "attacks.uap.batch_size": _POSITIVE,
    "attacks.uap.lr": number(gt=0),
    "attacks.uap.min_scale": number(gt=0, le=1),
    "attacks.uap.pool": choice(("iqa_references", "originals_rest")),
    "attacks.uap.pool_size": _POSITIVE.or_null(),
    "attacks.uap.pool_views": _POSITIVE,
    "attacks.fool_gd.n": _POSITIVE,
    "attacks.fool_gd.steps": _POSITIVE,
    "attacks.fool_gd.lr": number(gt=0),
    "attacks.fool_gd.l2_decay": number(ge=0, lt=1),
    "attacks.fool_ev.population": _POSITIVE,
    "attacks.fool_ev.generations": _POSITIVE,
    "attacks.fool_ev.encoding": choice(("cppn", "direct")),
    "attacks.fool_ev.keep": _POSITIVE,
    "detector.n_splits": _POSITIVE,
    "detector.train_size": _FRACTION,
    "detector.thresholds": list_of(_FRACTION),
    "detector.target_fpr": _FRACTION,
    "detector.n_boot": _POSITIVE,
    "detector.peer_distorted": _POSITIVE.or_null(),
    "detector.peer_fit_cap": _POSITIVE.or_null(),
    "detector.rbf_fit_cap": _POSITIVE.or_null(),
    "detector.n_jobs": _POSITIVE.or_null(),
    "robust.n_models": _POSITIVE,
    "robust.n_images": integer(min=4, why="SROCC after attack needs a few images"),
    "robust.n_srocc": integer(min=4),
    "robust.eps_255": list_of(number(gt=0, le=64, why="0–255 pixel units")),
    "robust.step_255": number(gt=0),
    "robust.iters": _POSITIVE,
    "robust.eot_draws": _POSITIVE,
    "robust.nt.lam": number(ge=0),
    "robust.nt.h": number(gt=0),
    "robust.nt.steps": _POSITIVE,
    "robust.nt.batch_size": _POSITIVE,
    "robust.nt.lr": number(gt=0),
    "robust.nt.layer_lr": number(ge=0),
    "robust.nt.pixel_pool": _POSITIVE,
    "robust.nt.difference": choice(("forward", "two_sided")),
    "robust.nt.around_255": number(ge=0, le=255),
    "robust.smoothing.sigma": number(gt=0, le=1),
    "robust.smoothing.n": _POSITIVE,
    "robust.smoothing.n_certify": integer(min=10),
    "robust.smoothing.conf": _FRACTION,
    "robust.smoothing.radii": list_of(number(gt=0)),
    "robust.feature_smoothing.sigma": number(gt=0),
    "robust.feature_smoothing.n": _POSITIVE,
    "robust.feature_smoothing.n_certify": integer(min=10),
    "robust.feature_smoothing.lipschitz_iters": _POSITIVE,
    "robust.denoiser.layers": integer(min=2),
    "robust.denoiser.channels": _POSITIVE,
    "robust.denoiser.steps": _POSITIVE,
    "robust.denoiser.batch_size": _POSITIVE,
    "robust.denoiser.patch": integer(min=8),
    "robust.denoiser.lr": number(gt=0),
    "robust.n_certified_images": _POSITIVE,
    "robust.denoiser.rank.steps": integer(min=0),
    "robust.denoiser.rank.batch_size": integer(min=2, why="the ranking loss needs pairs"),
    "robust.denoiser.rank.weight": number(ge=0),
    "robust.denoiser.rank.margin": number(ge=0),
    "robust.denoiser.rank.lr": number(gt=0),
    "robust.adaptive.n_images": _POSITIVE,
    "robust.adaptive.eps_255": list_of(number(gt=0, le=64, why="0–255 pixel units")),
    "robust.adaptive.steps": _POSITIVE,
    "robust.adaptive.fit_cap": _POSITIVE.or_null(),
    "robust.certificate_attack.n_images": _POSITIVE,
    "robust.certificate_attack.steps": _POSITIVE,
    "robust.certificate_attack.draws": _POSITIVE,
}


def _train_sets_in_iqa_sets(p: dict[str, Any]) -> str | None:
    names = [e["name"] for e in p["iqa_sets"]]
    for name in p["quality"]["train_sets"]:
        if name not in names:
            return f"quality.train_sets names {name!r}, which is not in iqa_sets ({', '.join(names)})"
    return None


def _iqa_sets_unique(p: dict[str, Any]) -> str | None:
    names = [e["name"] for e in p["iqa_sets"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    return f"iqa_sets must name each data set once, got {', '.join(twice)} more than once" if twice else None


def _pool_size_when_needed(p: dict[str, Any]) -> str | None:
    uap = p["attacks"]["uap"]
    if uap["pool"] == "originals_rest" and uap["pool_size"] is None:
        return "attacks.uap.pool_size must be an integer >= 1 when attacks.uap.pool is originals_rest, got None"
    if uap["pool"] == "originals_rest" and p["originals"]["limit"] is None:
        # the pool is the originals after the first ``limit``: with no limit every one is evaluated
        return ("originals.limit must be set when attacks.uap.pool is originals_rest (the pool is the "
                "originals beyond the first 'limit'), got None")
    return None


# Rules across keys: each takes the merged, field-checked params and returns a message or None.
CROSS_CHECKS: tuple[Callable[[dict[str, Any]], str | None], ...] = (
    _iqa_sets_unique, _train_sets_in_iqa_sets, _pool_size_when_needed,
)


# ---------------------------------------------------------------------------------------------
# Frozen params
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Merge, validate, load
# ---------------------------------------------------------------------------------------------


def _is_section(default: Any) -> bool:
    return isinstance(default, dict) and bool(default)


def _merge(defaults: dict[str, Any], given: Mapping[str, Any], where: str, errors: list[str]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults))
            errors.append(f"unknown parameter '{where}{key}'. Valid keys here: {valid}")
        elif _is_section(defaults[key]):
            if isinstance(value, Mapping):
                merged[key] = _merge(defaults[key], value, f"{where}{key}.", errors)
            else:
                errors.append(f"parameter '{where}{key}' must be a mapping, got {value!r}")
        else:
            merged[key] = value
    return merged


def _leaves(tree: Mapping[str, Any], where: str = "") -> Iterator[str]:
    """The dotted path of every key that is not a section."""
    for key, value in tree.items():
        if _is_section(value):
            yield from _leaves(value, f"{where}{key}.")
        else:
            yield f"{where}{key}"


def _schema_gaps() -> str | None:
    keys, ruled = list(_leaves(DEFAULTS)), set(SCHEMA)
    no_rule = [k for k in keys if k not in ruled]
    no_key = sorted(ruled - set(keys))
    if not (no_rule or no_key):
        return None
    return (f"iqalib.params: every key in DEFAULTS needs one rule in SCHEMA and vice versa; "
            f"no rule for {no_rule or 'none'}, no key for {no_key or 'none'}")


def validate(raw: Mapping[str, Any], source_name: str = "params") -> Frozen:
    """Merge ``raw`` onto the defaults, check every value against ``SCHEMA``, and freeze the result.

    Raises one ParamsError whose message has one line per problem.
    """
    gaps = _schema_gaps()
    if gaps:  # a programming error, not a user's: say where to fix it
        raise RuntimeError(gaps)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source_name}: the top level must be a mapping of parameters")
    errors: list[str] = []
    p = _merge(DEFAULTS, raw, "", errors)
    if p["run_name"] is None:
        p["run_name"] = source_name
    for path, rule in SCHEMA.items():
        *sections, key = path.split(".")
        holder = p
        for section in sections:
            holder = holder[section]
        try:
            holder[key] = rule(path, holder[key])
        except ParamsError as exc:
            errors.append(str(exc))
    if not errors:
        errors = [message for check in CROSS_CHECKS if (message := check(p))]
    if errors:
        raise ParamsError("\n".join(errors))
    return Frozen(p)


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Expand ``~`` and ``$VARS``; relative paths are taken from the repository root.

    For paths inside a params file (``outputs_dir``, data folders, ``classifier_weights``).
    """
    if path is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return p if p.is_absolute() else REPO_ROOT / p


def params_file(path: str | os.PathLike) -> Path:
    """Where the params file ``path`` is: a relative path from the current working directory when
    the file exists there, else from the repository root (absolute either way; may not exist)."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    return here.resolve() if here.exists() else (REPO_ROOT / p).resolve()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping, which PyYAML
    otherwise resolves silently to the last value (``seed: 0`` ... ``seed: 1``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor``: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str | os.PathLike) -> Frozen:
    """Read a params YAML file (``yaml.safe_load``), validate it and return frozen params.

    A relative ``path`` is looked up in the working directory, then the repository root (see the
    module docstring). Every problem is one line of the ParamsError, prefixed with the file.
    """
    file = params_file(path)
    if not file.is_file():
        where = "" if Path(path).is_absolute() else f" (looked in {Path.cwd()} and {REPO_ROOT})"
        raise FileNotFoundError(f"params file {path} does not exist{where}; see params/ for examples")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{_shown(file)}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader: see the class)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise ParamsError(f"{_shown(file)}: not valid YAML: {first}") from None
    try:
        return validate(raw or {}, source_name=file.stem)
    except ParamsError as exc:
        raise ParamsError("\n".join(f"{_shown(file)}: {line}" for line in str(exc).splitlines())) from None


def cpus_available() -> int:
    """The CPU cores this process may use (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _count_or_cores(value: int | None) -> int:
    return cpus_available() if value is None else int(value)


def workers(params: Frozen) -> int:
    """``num_workers``, or the cores available when it is null."""
    return _count_or_cores(params.num_workers)


def detector_jobs(params: Frozen) -> int:
    """``detector.n_jobs``, or the cores available when it is null."""
    return _count_or_cores(params.detector.n_jobs)


def run_dir(params: Frozen) -> Path:
    """``outputs/<run_name>/`` for these params (created if missing)."""
    folder = resolve_path(params.outputs_dir) / params.run_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


class Needs(NamedTuple):
    """What a run reads from disk, as plain values (for ``iqalib.preflight``): IQA sets as
    (name, path or None), the originals as (source, path or None), and classifier weights as
    (classifier name, weights file or None, the parameter that names it)."""

    iqa_sets: list[tuple[str, str | None]]
    originals: tuple[str, str | None]
    weights: list[tuple[str, str | None, str]]


def needs(params: Frozen) -> Needs:
    """The data folders and weights ``params`` name (``classifier_weights`` belongs to
    ``classifier`` only, as in the notebooks)."""
    weights = [(name, params.classifier_weights if name == params.classifier else None,
                "classifier" if name == params.classifier else "classifiers_table1")
               for name in dict.fromkeys([params.classifier, *params.classifiers_table1])]
    return Needs([(e["name"], e["path"]) for e in params.iqa_sets],
                 (params.originals.source, params.originals.path), weights)
