"""Headless runs: papermill over ``notebooks/NN_*.ipynb`` with a params file, ``manifest.json``,
and the results site (``book``: ``site/``, with ``index.html`` pointing at it) under ``outputs/<run>/``.

Progress goes to the ``iqalib.runner`` logger and ``outputs/<run>/run.log``, never into a notebook:
kernels run with progress bars off, and whatever a notebook still writes to stderr is moved to the
log. Executed notebooks keep no timestamps or machine paths, so re-rendering unchanged code with
unchanged params rewrites the same bytes (the manifest's wall times aside).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from iqalib import book
from iqalib.cache import atomic_write_text
from iqalib.params import REPO_ROOT, cpus_available, load, needs, params_file, resolve_path, run_dir
from iqalib.preflight import check as preflight

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
VERSIONED = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "scipy", "pillow", "piq",
             "nltk", "papermill", "jupytext", "matplotlib", "seaborn")

# What one notebook writes under outputs/<run>/ and a later one reads. An artefact is named by its
# folder, made by one notebook, and present when its proof file exists.
ARTEFACTS: dict[str, tuple[str, str]] = {
    "models/quality": ("00", "models/quality/card.json"),  # the DTNIQ-f heads notebook 00 trains
}
NEEDS: dict[str, tuple[str, ...]] = {
    "02": ("models/quality",),
    "03": ("models/quality",),
    "04": ("models/quality",),
    "05": ("models/quality",),
}

# The kernel inherits these: tqdm bars off (TQDM_DISABLE covers calls without an explicit
# ``disable``; IQALIB_PROGRESS=0 is iqalib's own switch), and tqdm.auto's import-time
# "IProgress not found" warning (no ipywidgets in a headless kernel) silenced.
HEADLESS_ENV = {"TQDM_DISABLE": "1", "IQALIB_PROGRESS": "0"}
HEADLESS_WARNINGS = "ignore:IProgress not found"
VOLATILE_KEYS = ("start_time", "end_time", "duration")  # papermill's timing metadata
_PROGRESS_LINE = re.compile(r"\d+/\d+ \[|\d+(\.\d+)?(it/s|s/it)\]|^\s*\d+%\|")


class NotebookFailed(RuntimeError):
    """A notebook raised; the executed copy under outputs/<run>/notebooks/ shows where."""


class MissingPrerequisite(ValueError):
    """``--only`` asked for a notebook whose input, made by another notebook, is not there yet."""


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The paper notebooks in run order (``NN_name.ipynb``); ``only`` keeps those whose NN matches."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {str(o).zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise ValueError(f"--only {', '.join(sorted(unknown))}: no such notebook; have {', '.join(p.name[:2] for p in found)}")
        found = [p for p in found if p.name[:2] in wanted]
    return found


def check_order(selected: list[Path], out: Path, params_arg: str | os.PathLike) -> None:
    """Raise ``MissingPrerequisite`` (one line) when a selected notebook needs an artefact that no
    earlier selected notebook makes and that ``out`` does not hold from a previous run."""
    chosen = [p.name[:2] for p in selected]
    for nn in chosen:
        for artefact in NEEDS.get(nn, ()):
            maker, proof = ARTEFACTS[artefact]
            if maker in chosen and chosen.index(maker) < chosen.index(nn):
                continue
            if not (out / proof).exists():
                raise MissingPrerequisite(f"notebook {nn} needs {artefact} from {maker}: run "
                                          f"`python -m iqalib run {params_arg} --only {maker}` first")


def notebook_params_path(file: Path) -> str:
    """``params_path`` as the kernel (cwd ``notebooks/``) should see it: relative when the file
    lies inside the repository (``../params/default.yaml``), so executed notebooks hold no
    machine-specific path; absolute otherwise."""
    file = file.resolve()
    return os.path.relpath(file, NOTEBOOKS_DIR) if file.is_relative_to(REPO_ROOT) else str(file)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict:
    """The commit of the code and params a run used: the last commit that changed anything outside
    ``outputs/`` (so committing a rendered run does not change what the next render records), and
    whether tracked files outside ``outputs/`` had uncommitted changes."""
    outside = (".", ":(exclude)outputs")
    commit = _git("log", "-1", "--format=%H", "--", *outside) or None
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", *outside)
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


# ------------------------------------------------------------------------------ executed notebooks

def tidy_notebook(nb, input_path: str, output_path: str) -> list[str]:
    """Make an executed notebook reproducible and quiet, in place; returns the stderr lines removed.

    Drops papermill's timing metadata and the kernel's execution timestamps, names the injected
    parameters cell ``injected-parameters`` (papermill gives it a random id), records the input and
    output paths as given (relative), and removes ``stderr`` stream outputs: progress bars and
    warnings belong to the runner's log, not the report.
    """
    meta = nb.metadata.get("papermill", {})
    for key in VOLATILE_KEYS:
        meta.pop(key, None)
    if meta:
        meta["input_path"], meta["output_path"] = input_path, output_path
    stderr: list[str] = []
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in VOLATILE_KEYS:
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                for line in re.split(r"[\r\n]+", output.get("text", "")):
                    if line.strip() and not _PROGRESS_LINE.search(line) and line.strip() not in stderr[-1:]:
                        stderr.append(line.strip())
            else:
                kept.append(output)
        cell["outputs"] = kept
    return stderr


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to the repository when inside it, else relative to ``base``."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else os.path.relpath(path, base)


def _finish_notebook(source: Path, executed: Path, out: Path) -> None:
    """Tidy the executed notebook in place (its stderr to the log)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for line in tidy_notebook(nb, _shown(source, out), _shown(executed, out)):
        log.warning("%s: %s", source.stem, line)
    atomic_write_text(executed, nbformat.writes(nb) + "\n")


@contextmanager
def _headless_kernel_env() -> Iterator[None]:
    """The environment papermill's kernels inherit while the runner renders (restored after)."""
    saved = {k: os.environ.get(k) for k in (*HEADLESS_ENV, "PYTHONWARNINGS")}
    os.environ.update(HEADLESS_ENV)
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (saved["PYTHONWARNINGS"], HEADLESS_WARNINGS)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _run_log(out: Path) -> Iterator[None]:
    """Also log to ``outputs/<run>/run.log`` (appended; not in git) while a run lasts."""
    handler = logging.FileHandler(out / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)


# ------------------------------------------------------------------------------------- the run

def _collect(folder: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern))


#: The validated params of a run, written into its folder when the run starts: every notebook of
#: the run opens this one file, so all of them see the params the runner checked, once.
PARAMS_SNAPSHOT = "run_params.yaml"


def _checked_params(params_path: str | Path) -> tuple[Path, Any]:
    """The params file and its validated params, its data folders checked (``preflight``): the
    one load of a run's params file."""
    file = params_file(params_path)
    params = load(file)
    preflight(needs(params))
    return file, params


def write_snapshot(params: Any, out: Path) -> Path:
    """``<run>/run_params.yaml``: the validated params, every default filled in (``yaml.safe_dump``)."""
    import yaml

    text = ("# The validated params this run's notebooks read (written by iqalib.runner; edit the params\n"
            "# file under params/, not this copy).\n" + yaml.safe_dump(params.to_dict(), sort_keys=False))
    atomic_write_text(out / PARAMS_SNAPSHOT, text)
    return out / PARAMS_SNAPSHOT


def run(params_path: str | Path, only: list[str] | None = None, kernel_name: str = "python3",
        log_output: bool = False) -> dict:
    """Render the notebooks with ``params_path`` into ``outputs/<run>/``; returns the manifest.

    Params, data folders and (with ``only``) what the chosen notebooks need from earlier ones are
    checked before any notebook starts, so a wrong key, a missing data set or a skipped step fails
    in a second with one message. With ``only``, the other notebooks' timings are kept.
    """
    import papermill

    file, params = _checked_params(params_path)
    selected = notebooks(only)
    check_order(selected, resolve_path(params.outputs_dir) / params.run_name, params_path)
    out = run_dir(params)
    (out / "notebooks").mkdir(exist_ok=True)
    snapshot = write_snapshot(params, out)
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    timings = dict(previous.get("wall_time_s", {})) if only else {}
    status = "ok"
    with _run_log(out):
        log.info("%s: %d notebook(s) with %s (python %s on %s, %d CPU(s)), started %s", params.run_name, len(selected),
                 _shown(file, out), platform.python_version(), platform.platform(), _cpus(),
                 datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            with _headless_kernel_env():
                for nb in selected:
                    log.info("%s: %s ...", params.run_name, nb.stem)
                    t0 = time.time()
                    executed = out / "notebooks" / nb.name
                    try:
                        papermill.execute_notebook(str(nb), str(executed),
                                                   parameters={"params_path": notebook_params_path(snapshot)},
                                                   cwd=str(NOTEBOOKS_DIR), kernel_name=kernel_name, language="python",
                                                   progress_bar=False, log_output=log_output)
                    except papermill.PapermillExecutionError as exc:
                        status = f"failed in {nb.name}"
                        raise NotebookFailed(f"{nb.name} failed ({exc.ename}: {exc.evalue}); see {executed}") from None
                    finally:
                        timings[nb.stem] = round(time.time() - t0, 1)
                        if executed.exists():
                            _finish_notebook(nb, executed, out)
                    log.info("%s: %s done in %.0f s", params.run_name, nb.stem, timings[nb.stem])
        finally:
            manifest = _manifest(params, file, out, status, timings)
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
            write_site(out, manifest)
            log.info("%s: %s, manifest and site written, finished %s", params.run_name, status,
                     datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return manifest


def prefill(params_path: str | Path, shard: int, of: int) -> dict[str, int]:
    """``python -m iqalib run PARAMS --shard K/N``: params and data checked as for a run, then share
    ``shard`` of ``of`` of the bulk backbone passes put into the run's store (``groups.prefill``),
    logged to ``run.log``; no notebook is rendered."""
    from iqalib import experiment, groups  # imports torch: only when a share is filled

    file, params = _checked_params(params_path)
    out = run_dir(params)
    with _run_log(out):
        log.info("%s: share %d/%d of the bulk passes, started %s", params.run_name, shard, of,
                 datetime.now(timezone.utc).isoformat(timespec="seconds"))
        run_ = experiment.Run(params, out, progress=False)
        counts = groups.prefill(run_, shard, of)
        log.info("%s: share %d/%d done: %s", params.run_name, shard, of, counts)
    return counts


def _manifest(params, file: Path, out: Path, status: str, timings: dict[str, float]) -> dict:
    """What the run used and made. Only ``wall_time_s`` and ``wall_time_total_s`` change when
    unchanged code and params are rendered again (start and finish times and the full platform
    string are in ``run.log``)."""
    counts = {p.stem: json.loads(p.read_text()) for p in sorted((out / "counts").glob("*.json"))}
    stems = {nb.stem.split("_")[0]: nb.stem for nb in notebooks()}
    code_paths = {stems.get(p.stem, p.stem): json.loads(p.read_text())
                  for p in sorted((out / "code_paths").glob("*.json"))}
    timings = dict(sorted(timings.items()))
    return {
        "run_name": params.run_name,
        "params_file": _shown(file, out),
        "params": params.to_dict(),
        "status": status,
        **git_state(),
        "machine": {"system": platform.system(), "processor": platform.machine(), "cpus": _cpus()},
        "versions": package_versions(),
        "wall_time_s": timings,
        "wall_time_total_s": round(sum(timings.values()), 1),
        "image_counts": counts,
        "code_paths": code_paths,
        "tables": _collect(out, "tables/*.csv"),
        "figures": _collect(out, "figures/*.png"),
        "site": f"{book.SITE}/index.html",
    }


def _cpus() -> int:
    return cpus_available()


# ------------------------------------------------------------------------------------ the site

def write_site(out: Path, manifest: dict) -> Path | None:
    """Build ``outputs/<run>/site/`` (``book.build``) after the notebooks. A failed build is logged,
    not raised: the notebooks, tables and figures are written, and ``python -m iqalib site`` (``make
    site``) builds it again."""
    try:
        return book.build(out, manifest)
    except Exception as exc:  # noqa: BLE001 - Sphinx raises many kinds; the run's results stand
        log.error("%s: the results site was not built (%s: %s); rebuild it with `python -m iqalib site %s`",
                  manifest.get("run_name"), type(exc).__name__, exc, _shown(out, out))
        return None
