"""Notebooks: pairs in sync, no committed outputs, every notebook renders at smoke scale."""
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.test_runner import check_site

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_has_no_outputs(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync`"
    assert _cells(jupytext.read(py)) == _cells(nbformat.read(ipynb, as_version=4)), \
        f"{py.name} and {ipynb.name} differ: run `make sync`"
    stored = nbformat.read(ipynb, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
    tagged = [c for c in stored.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source.strip().startswith("params_path =")


def _params_file(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "outputs"), **overrides)
    path = tmp_path / f"{raw['run_name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(params_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iqalib", "run", str(params_file), *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One smoke render of every notebook (worker processes: the cores available), shared by the tests."""
    tmp = tmp_path_factory.mktemp("smoke")
    return _run(_params_file(tmp)), tmp / "outputs" / "smoke"


def test_every_notebook_renders_at_smoke_scale(smoke):
    result, out = smoke
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ran {len(NOTEBOOKS)} notebook(s)" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert set(manifest["wall_time_s"]) == {p.stem for p in NOTEBOOKS}
    assert manifest["wall_time_total_s"] == pytest.approx(sum(manifest["wall_time_s"].values()))
    for p in NOTEBOOKS:
        assert (out / "notebooks" / f"{p.stem}.ipynb").exists() and (out / "site" / "notebooks" / f"{p.stem}.html").exists()
        executed = nbformat.read(out / "notebooks" / f"{p.stem}.ipynb", as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], p.stem
        text = json.dumps(outputs)
        assert "it/s]" not in text and "TqdmWarning" not in text, p.stem
        assert "start_time" not in executed.metadata.papermill, p.stem
    check_site(out)  # the results page links every notebook's page; its verdicts are the verdicts_*.csv rows
    assert "site:" not in (out / "run.log").read_text()  # a Sphinx warning can mean a table dropped
    check_every_figure_is_shown(out)
    paths = pd.read_csv(out / "features.csv")["path"]
    assert paths.str.match(r"^(run|foolbox|ai_benchmark):[^/]").all(), paths[~paths.str.match(r"^(run|foolbox|ai_benchmark):")]
    for p in NOTEBOOKS:
        assert str(REPO) not in (out / "notebooks" / f"{p.stem}.ipynb").read_text(), p.stem
    assert "tables/table1.csv" in manifest["tables"] and (out / "tables" / "table1.md").exists()
    assert "figures/fig3_quality_vs_similarity.png" in manifest["figures"]
    assert manifest["image_counts"]["01_originals"]["used"] == 6
    assert manifest["versions"]["torch"] and manifest["params"]["run_name"] == "smoke"


def test_the_same_tables_with_and_without_worker_processes(smoke, tmp_path):
    result, out = smoke
    assert result.returncode == 0
    serial = _run(_params_file(tmp_path, num_workers=0), "--only", "00", "01", "02", "03")
    assert serial.returncode == 0, serial.stderr[-3000:]
    other = tmp_path / "outputs" / "smoke"
    assert (other / "features.csv").read_bytes() == (out / "features.csv").read_bytes()
    compared = sorted(p.name for p in (other / "tables").glob("*.csv"))
    assert len(compared) > 10
    for name in compared:
        assert (other / "tables" / name).read_bytes() == (out / "tables" / name).read_bytes(), name


def check_every_figure_is_shown(out: Path) -> None:
    """Each saved figures/*.png is an image output of some executed notebook (the very bytes) and
    is a figure of that notebook's page in the site."""
    shown = {}
    for executed in sorted((out / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(executed, as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {}).get("image/png")
                if data:
                    shown["".join(data).replace("\n", "")] = executed.stem
    figures = sorted((out / "figures").glob("*.png"))
    assert figures
    for figure in figures:
        encoded = base64.b64encode(figure.read_bytes()).decode()
        assert encoded in shown, f"{figure.name} is saved but never shown"
        page = (out / "site" / "notebooks" / f"{shown[encoded]}.html").read_text()
        assert f'src="../_images/{figure.name}"' in page, figure.name
        assert (out / "site" / "_images" / figure.name).read_bytes() == figure.read_bytes(), figure.name


def test_bad_originals_are_counted_and_the_run_finishes(tmp_path, bad_folder):
    work = tmp_path / "work"  # outside the scanned folder
    work.mkdir()
    params_file = _params_file(work, run_name="badfolder",
                               originals={"source": "folder", "path": str(bad_folder), "views": 1})
    result = _run(params_file, "--only", "01")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((work / "outputs" / "badfolder" / "manifest.json").read_text())
    assert manifest["image_counts"]["01_originals"] == {
        "used": 4, "skipped": {"greyscale": 2, "not_an_image": 2, "too_small": 1, "truncated": 1}}


def test_wrong_params_fail_before_any_notebook(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("originals: {source: flickr}\n")
    result = _run(bad)
    assert result.returncode == 2 and "originals.source" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_gives_one_clear_error(tmp_path, monkeypatch):
    params_file = _params_file(tmp_path, run_name="nodata", iqa_sets=[{"name": "tid2013", "path": None}],
                               quality={"train_sets": ["tid2013"], "n_models": 1, "epochs": 1})
    result = subprocess.run([sys.executable, "-m", "iqalib", "run", str(params_file), "--only", "01"],
                            capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**__import__("os").environ, "IQALIB_TID2013": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "01_quality" not in result.stderr  # checked before any notebook starts
    assert "IQALIB_TID2013" in result.stderr and "iqa_sets[tid2013].path" in result.stderr


def test_papermill_from_the_notebooks_folder_with_a_relative_params_path(tmp_path):
    """As a user runs it: `cd notebooks && papermill 01_….ipynb out.ipynb -p params_path <relative path>`."""
    params_file = _params_file(tmp_path)
    relative = os.path.relpath(params_file, REPO / "notebooks")
    done = subprocess.run([str(Path(sys.executable).parent / "papermill"), "01_quality_vs_accuracy.ipynb",
                           str(tmp_path / "out.ipynb"), "-p", "params_path", relative, "--no-progress-bar"],
                          cwd=REPO / "notebooks", capture_output=True, text=True, timeout=600,
                          env={**os.environ, "IQALIB_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "outputs" / "smoke" / "tables" / "table1.csv").exists()
