"""Headless runs: papermill over ``notebooks/NN_*.ipynb`` with a params file, HTML reports
(nbconvert), ``manifest.json`` and a front page ``index.html`` under ``outputs/<run>/``.

Progress goes to the ``iqalib.runner`` logger and ``outputs/<run>/run.log``, never into a notebook:
kernels run with progress bars off, and whatever a notebook still writes to stderr is moved to the
log. Executed notebooks keep no timestamps or machine paths, so re-rendering unchanged code with
unchanged params rewrites the same bytes (the manifest's wall times aside).
"""
from __future__ import annotations

import html
import json
import logging
import os
import platform
import re
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from string import Template
from typing import Any, Iterator

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


def _finish_notebook(source: Path, executed: Path, report: Path, out: Path) -> None:
    """Tidy the executed notebook (stderr to the log), then export its HTML report."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    for line in tidy_notebook(nb, _shown(source, out), _shown(executed, out)):
        log.warning("%s: %s", source.stem, line)
    atomic_write_text(executed, nbformat.writes(nb) + "\n")
    exporter = HTMLExporter(log=_nbconvert_log)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": source.stem}})
    atomic_write_text(report, body)


class _NoAltTextNotice(logging.Filter):
    """nbconvert notes every figure without alt text (notebook outputs have none to give)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Alternative text is missing")


_nbconvert_log = logging.getLogger(f"{__name__}.nbconvert")
_nbconvert_log.addFilter(_NoAltTextNotice())


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
    (out / "reports").mkdir(exist_ok=True)
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
                            _finish_notebook(nb, executed, out / "reports" / f"{nb.stem}.html", out)
                    log.info("%s: %s done in %.0f s", params.run_name, nb.stem, timings[nb.stem])
        finally:
            manifest = _manifest(params, file, out, status, timings)
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
            write_index(out, manifest)
            log.info("%s: %s, manifest and index written, finished %s", params.run_name, status,
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
        "reports": _collect(out, "reports/*.html"),
    }


def _cpus() -> int:
    return cpus_available()


# ------------------------------------------------------------------------------------ front page

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: list[str], rows: list[list[str]], attrs: str = "", row_class: str = "") -> str:
    """An HTML table from already-escaped cells; a cell that is a whole ``<td ...>`` is kept as is."""
    tr = f'<tr class="{row_class}">' if row_class else "<tr>"
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join(tr + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _notebook_title(executed: Path) -> str:
    """The first Markdown heading of an executed notebook, else its name."""
    try:
        cells = json.loads(executed.read_text()).get("cells", [])
    except (OSError, ValueError):
        return executed.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return executed.stem


def read_verdicts(out: Path) -> list[dict[str, str]]:
    """Every row of ``tables/verdicts_<notebook>.csv``, in notebook order, as text, with a
    ``notebook`` key (the file name's suffix)."""
    import csv

    rows = []
    for path in sorted((out / "tables").glob("verdicts_*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.append({"notebook": path.stem.removeprefix("verdicts_"), **row})
    return rows


def render_index(out: Path, manifest: dict) -> str:
    """The run's front page: standalone HTML (inline CSS, relative links, no external assets)."""
    import yaml

    reports = {Path(r).stem: r for r in manifest.get("reports", [])}

    def report_link(notebook: str) -> str:
        stem = next((s for s in sorted(reports) if s == notebook or s.startswith(f"{notebook}_")), None)
        return f'<a href="{_e(reports[stem])}">{_e(notebook)}</a>' if stem else _e(notebook)

    report_items = [f'<li><a href="{_e(r)}">{_e(Path(r).stem)}</a> — {_e(_notebook_title(out / "notebooks" / f"{Path(r).stem}.ipynb"))}</li>'
                    for r in manifest.get("reports", [])]
    verdict_rows = [[report_link(v["notebook"]), _e(v.get("claim")), _e(v.get("paper")), _e(v.get("ours")),
                     f'<td class="v-{_e(str(v.get("verdict")).replace(" ", "-"))}">{_e(v.get("verdict"))}</td>', _e(v.get("why"))]
                    for v in read_verdicts(out)]
    figures = [f'<figure><a href="{_e(f)}"><img src="{_e(f)}" alt="{_e(Path(f).stem)}" loading="lazy"></a>'
               f'<figcaption>{_e(Path(f).stem)}</figcaption></figure>' for f in manifest.get("figures", [])]
    counts = [[_e(name), f'<td class="num">{_e(c.get("used"))}</td>',
               _e(", ".join(f"{reason}: {n}" for reason, n in sorted(c.get("skipped", {}).items())) or "none")]
              for name, c in manifest.get("image_counts", {}).items()]
    timings = [[report_link(stem), f'<td class="num">{t:.1f}</td>'] for stem, t in manifest.get("wall_time_s", {}).items()]
    timings.append(["<b>total</b>", f'<td class="num"><b>{manifest.get("wall_time_total_s") or 0:.1f}</b></td>'])
    status = manifest.get("status", "")
    commit = manifest.get("git_commit")
    subtitle = (f'params <code>{_e(manifest.get("params_file"))}</code> · status '
                f'<span class="status-{"ok" if status == "ok" else "failed"}">{_e(status)}</span>'
                + (f' · code at commit <code>{_e(commit[:12])}</code>' + (" (with uncommitted changes)" if manifest.get("git_dirty") else "")
                   if commit else ""))
    empty = '<p class="empty">{}</p>'.format
    page = Template(resources.files("iqalib").joinpath("templates/index.html").read_text(encoding="utf-8"))
    return page.substitute(
        title=_e(f"Run {manifest.get('run_name', out.name)}"),
        subtitle=subtitle,
        reports="<ul>\n" + "\n".join(report_items) + "\n</ul>" if report_items else empty("No reports yet."),
        verdicts=_table(["notebook", "claim", "paper", "ours", "verdict", "why"], verdict_rows, ' id="verdicts"', "verdict")
        if verdict_rows else empty("No notebook has written verdicts (tables/verdicts_*.csv) yet."),
        figures='<div class="thumbs">\n' + "\n".join(figures) + "\n</div>" if figures else empty("No figures."),
        data=_table(["images", "used", "skipped (reason: count)"], counts) if counts else empty("No image counts recorded."),
        timings=_table(["notebook", "seconds"], timings),
        params_file=_e(manifest.get("params_file")),
        params=_e(yaml.safe_dump(manifest.get("params", {}), sort_keys=False, allow_unicode=True)),
    )


def write_index(out: Path, manifest: dict) -> Path:
    """Write ``outputs/<run>/index.html`` from the manifest and the run folder."""
    path = out / "index.html"
    atomic_write_text(path, render_index(out, manifest))
    return path
