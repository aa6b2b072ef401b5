"""Headless runs: papermill over ``notebooks/NN_*.ipynb`` with a params file, HTML reports via
nbconvert, and ``manifest.json`` (params, versions, wall time per notebook, image counts).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from iqalib.cache import atomic_write_text
from iqalib.params import REPO_ROOT, check_data, load, resolve_path, run_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
VERSIONED = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "scipy", "pillow", "piq",
             "nltk", "papermill", "jupytext", "matplotlib", "seaborn")


class NotebookFailed(RuntimeError):
    """A notebook raised; the executed copy under outputs/<run>/notebooks/ shows where."""


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


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _html(executed: Path, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    atomic_write_text(target, body)


def _collect(folder: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))


def run(params_path: str | Path, only: list[str] | None = None, kernel_name: str = "python3",
        log_output: bool = False) -> dict:
    """Render the notebooks with ``params_path`` into ``outputs/<run>/``; returns the manifest.

    Params and data folders are checked before any notebook starts, so a wrong key or a missing
    data set fails in a second with one message.
    """
    import papermill

    params_file = resolve_path(params_path)
    params = load(params_file)
    check_data(params)
    out = run_dir(params)
    (out / "notebooks").mkdir(exist_ok=True)
    (out / "reports").mkdir(exist_ok=True)
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    timings = dict(previous.get("wall_time_s", {})) if only else {}
    status = "ok"
    started = time.time()
    try:
        for nb in notebooks(only):
            print(f"[iqalib] {params.run_name}: {nb.name} ...", file=sys.stderr, flush=True)
            t0 = time.time()
            executed = out / "notebooks" / nb.name
            try:
                papermill.execute_notebook(str(nb), str(executed), parameters={"params_path": str(params_file)},
                                           cwd=str(NOTEBOOKS_DIR), kernel_name=kernel_name, language="python", progress_bar=False,
                                           log_output=log_output)
            except papermill.PapermillExecutionError as exc:
                status = f"failed in {nb.name}"
                raise NotebookFailed(f"{nb.name} failed ({exc.ename}: {exc.evalue}); see {executed}") from None
            finally:
                timings[nb.stem] = round(time.time() - t0, 1)
                if executed.exists():
                    _html(executed, out / "reports" / f"{nb.stem}.html")
            print(f"[iqalib] {nb.name} done in {timings[nb.stem]:.0f} s", file=sys.stderr, flush=True)
    finally:
        counts = {p.stem: json.loads(p.read_text()) for p in sorted((out / "counts").glob("*.json"))} \
            if (out / "counts").exists() else {}
        manifest = {
            "run_name": params.run_name,
            "params_file": str(params_file.relative_to(REPO_ROOT)) if params_file.is_relative_to(REPO_ROOT) else str(params_file),
            "params": params.to_dict(),
            "status": status,
            "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": _cpus()},
            "versions": package_versions(),
            "wall_time_s": timings,
            "wall_time_total_s": round(time.time() - started, 1) if not only else None,
            "image_counts": counts,
            "tables": _collect(out, "tables/*.csv"),
            "figures": _collect(out, "figures/*.png"),
            "reports": _collect(out, "reports/*.html"),
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
