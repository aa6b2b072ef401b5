"""Preflight: before any notebook starts, check that the data folders and classifier weights a
run's params name are there and usable, and report every problem at once.

Owns those file-system checks and ``PreflightError``. Does not own the params schema
(``iqalib.params`` checks types and ranges) and never decodes an image: it reads the IQA sets'
score files and looks for files by name and suffix only.
"""
from __future__ import annotations

import os
from pathlib import Path

from iqalib.params import DATA_ENV, Needs, data_path, resolve_path

# Files that count as images when looking for at least one (by name only; the run decodes them).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif", ".jp2")


class PreflightError(FileNotFoundError):
    """Data or weights a run needs are missing; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) before the run could start:\n"
                         + "\n".join(f"- {p}" for p in self.problems))


def check(needs: Needs) -> None:
    """Raise one PreflightError listing every problem ``problems(needs)`` finds; else return None."""
    found = problems(needs)
    if found:
        raise PreflightError(found)


def problems(needs: Needs) -> list[str]:
    """One line per missing or unusable data folder and per missing classifier weights file, for
    what a run reads from disk (``iqalib.params.needs``: plain names and paths)."""
    found = []
    for name, given in needs.iqa_sets:
        if name != "embedded":
            found += _iqa_set_problems(name, given)
    source, given = needs.originals
    if source != "embedded":
        found += _originals_problems(source, given)
    found += _weights_problems(needs.weights)
    return [" ".join(p.split()) for p in found]  # one line each, whatever the readers wrote


def _advice(kind: str, given: str | None, param: str) -> tuple[str, str]:
    """(where the folder came from, how to point at another one)."""
    env, _ = DATA_ENV[kind]
    source = f"from '{param}'" if given not in (None, "") else f"from the environment variable {env}"
    return source, f"Set '{param}' in the params file or the environment variable {env}."


def _iqa_set_problems(name: str, given: str | None) -> list[str]:
    from iqalib.iqa_datasets import read_iqa_dataset  # imported late: heavy, and being split

    param = f"iqa_sets[{name}].path"
    try:
        root = data_path(name, given, param)
    except FileNotFoundError as exc:
        return [str(exc)]
    try:
        read_iqa_dataset(name, root)  # official layout and every listed file; no decoding
    except (FileNotFoundError, ValueError) as exc:
        source, advice = _advice(name, given, param)  # the reader's message says where the data comes from
        return [f"{name}: {root} ({source}) is not a usable copy: {exc} {advice}"]
    return []


def _originals_problems(source: str, given: str | None) -> list[str]:
    param = "originals.path"
    try:
        root = data_path(source, given, param)
    except FileNotFoundError as exc:
        return [str(exc)]
    where, advice = _advice(source, given, param)
    advice += f" The data comes from {DATA_ENV[source][1]}."
    if not root.is_dir():
        return [f"{source}: {root} ({where}) is not a folder. {advice}"]
    if not _has_image(root):
        suffixes = ", ".join(IMAGE_SUFFIXES)
        links = sum(1 for p in root.iterdir() if p.is_symlink() and p.is_dir())
        linked = f" Its {links} linked sub-folder(s) are not followed: point at the real folders." if links else ""
        return [f"{source}: {root} ({where}) holds no image files ({suffixes}).{linked} {advice}"]
    if not _has_label(source, root):
        layouts = ("flat ILSVRC2012_val_XXXXXXXX.JPEG files under their official names, or one sub-folder per "
                   "WordNet id (n01440764/...)" if source == "imagenet_val" else "one sub-folder per WordNet id (n01440764/...)")
        return [f"{source}: {root} ({where}) holds images but none with an ImageNet label: expected {layouts}. {advice}"]
    return []


def _has_label(source: str, root: Path) -> bool:
    """Whether at least one image under ``root`` gets a label from its name or folder (no decoding)."""
    from iqalib.images import folder_candidates, imagenet_val_candidates

    candidates = imagenet_val_candidates(root) if source == "imagenet_val" else folder_candidates(root)
    return any(record is not None for record, _ in candidates)


def _has_image(root: Path) -> bool:
    """True at the first file with an image suffix under ``root`` (stops early; no decoding)."""
    for _folder, _dirs, files in os.walk(root):
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".") for f in files):
            return True
    return False


def _weights_problems(weights: list[tuple[str, str | None, str]]) -> list[str]:
    from iqalib.classifiers import WeightsNotFoundError, read_weights  # imports torch

    found = []
    for name, given, param in weights:
        try:  # read, not only found: a truncated file would otherwise fail minutes into a notebook
            read_weights(name, None if given is None else str(resolve_path(given)), mapped=True)
        except WeightsNotFoundError as exc:
            found.append(f"{param} {name}: {exc}")
    return found
