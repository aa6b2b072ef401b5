"""runner: order checks, quiet and reproducible executed notebooks, manifest and front page.

The end-to-end tests render two tiny notebooks written here (seconds), not the paper notebooks
(tests/test_notebooks.py renders those).
"""
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from iqalib import report, runner
from iqalib.__main__ import main
from tests.conftest import REPO


def _params_file(tmp_path: Path, run_name: str = "runnertest") -> Path:
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "outputs"), run_name=run_name)
    path = tmp_path / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------------- order

def test_only_fails_in_one_line_before_starting_when_a_prerequisite_is_missing(tmp_path):
    params_file = _params_file(tmp_path)
    result = subprocess.run([sys.executable, "-m", "iqalib", "run", str(params_file), "--only", "03"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: notebook 03 needs models/quality from 00: run "
                      f"`python -m iqalib run {params_file} --only 00` first"]
    assert not (tmp_path / "outputs").exists()  # checked before the run folder is made


def test_check_order_accepts_an_earlier_maker_or_a_previous_run(tmp_path):
    nb = {nn: Path(f"{nn}_x.ipynb") for nn in ("00", "01", "03", "04")}
    runner.check_order([nb["00"], nb["03"], nb["04"]], tmp_path, "p.yaml")  # 00 runs first
    runner.check_order([nb["01"]], tmp_path, "p.yaml")  # needs nothing
    with pytest.raises(runner.MissingPrerequisite, match="notebook 04 needs models/quality from 00"):
        runner.check_order([nb["04"]], tmp_path, "p.yaml")
    (tmp_path / "models" / "quality").mkdir(parents=True)
    (tmp_path / "models" / "quality" / "card.json").write_text("{}")
    runner.check_order([nb["04"]], tmp_path, "p.yaml")


def test_every_need_names_a_declared_artefact():
    assert all(a in runner.ARTEFACTS for needs in runner.NEEDS.values() for a in needs)
    assert all(maker < nn for nn, needs in runner.NEEDS.items() for a in needs for maker in [runner.ARTEFACTS[a][0]])


# ---------------------------------------------------------------------------- params path

def test_params_path_is_relative_to_the_notebooks_folder_inside_the_repo(tmp_path, monkeypatch):
    inside = REPO / "params" / "smoke.yaml"
    assert runner.notebook_params_path(inside) == "../params/smoke.yaml"
    assert runner.notebook_params_path(tmp_path / "p.yaml") == str((tmp_path / "p.yaml").resolve())
    from iqalib import params

    monkeypatch.chdir(runner.NOTEBOOKS_DIR)  # where papermill's kernel runs
    assert params.params_file("../params/smoke.yaml") == inside.resolve()


# ------------------------------------------------------------------------- tidy notebooks

def test_tidy_notebook_drops_timestamps_and_stderr():
    nb = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell("params_path = 'x'", metadata={"tags": ["injected-parameters"]})
    cell = nbformat.v4.new_code_cell("work()")
    cell.metadata.update(execution={"iopub.status.busy": "2026-01-01T00:00:00Z"},
                         papermill={"start_time": "t0", "end_time": "t1", "duration": 1.0, "status": "completed"})
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rbar:  50%|#    | 1/2 [00:01<00:01, 1.00it/s]\r"),
                    nbformat.v4.new_output("stream", name="stderr", text="UserWarning: odd\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="kept\n")]
    nb.cells = [injected, cell]
    nb.metadata["papermill"] = {"start_time": "t0", "end_time": "t1", "duration": 1.0, "input_path": "/abs/in.ipynb",
                                "output_path": "/abs/out.ipynb", "parameters": {"params_path": "x"}}
    removed = runner.tidy_notebook(nb, "notebooks/in.ipynb", "notebooks/out.ipynb")
    assert removed == ["UserWarning: odd"]  # progress bars are dropped, other stderr goes to the log
    assert nb.metadata.papermill == {"input_path": "notebooks/in.ipynb", "output_path": "notebooks/out.ipynb",
                                     "parameters": {"params_path": "x"}}
    assert "execution" not in cell.metadata and cell.metadata.papermill == {"status": "completed"}
    assert [o.name for o in cell.outputs] == ["stdout"] and injected.id == "injected-parameters"


# ------------------------------------------------------------------------------ front page

class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.rows, self._row, self._cell, self._in_verdicts = [], [], [], None, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self.links.append(a["href"])
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "table" and a.get("id") == "verdicts":
            self._in_verdicts = True
        elif tag == "tr" and self._in_verdicts and a.get("class") == "verdict":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._in_verdicts = False


def check_front_page(out: Path) -> _Page:
    """The front page of a run folder links every report and figure (relative, no external
    assets) and its verdict table holds exactly the rows of tables/verdicts_*.csv."""
    text = (out / "index.html").read_text()
    page = _Page()
    page.feed(text)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["reports"]) == {p.relative_to(out).as_posix() for p in out.glob("reports/*.html")}
    assert set(manifest["reports"]) <= set(page.links)
    assert set(page.images) == {p.relative_to(out).as_posix() for p in out.glob("figures/*.png")}
    assert not re.search(r"""(src|href)=["']?(https?:|//|/)""", text)
    expected = []
    for path in sorted(out.glob("tables/verdicts_*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        expected += [[path.stem.removeprefix("verdicts_"), *row] for row in frame[list(report.VERDICT_COLUMNS)].values.tolist()]
    assert page.rows == expected
    return page


def test_front_page_of_a_fabricated_run(tmp_path):
    out = tmp_path / "fab"
    for folder in ("tables", "figures", "reports", "notebooks"):
        (out / folder).mkdir(parents=True)
    pd.DataFrame([{"claim": "blur lowers quality", "paper": "yes", "ours": "-0.98", "verdict": "reproduced", "why": "a & b <c>"},
                  {"claim": "Table I", "paper": "0.61", "ours": "", "verdict": "not testable", "why": ""}]
                 ).to_csv(out / "tables" / "verdicts_00.csv", index=False)
    pd.DataFrame([{"claim": "Table V", "paper": "0.9", "ours": "0.5", "verdict": "not reproduced", "why": "22 UAP images"}]
                 ).to_csv(out / "tables" / "verdicts_04_detector.csv", index=False)
    (out / "figures" / "roc.png").write_bytes(b"\x89PNG")
    for stem in ("00_train", "04_detector"):
        (out / "reports" / f"{stem}.html").write_text("<html></html>")
    manifest = {"run_name": "fab", "params_file": "params/fab.yaml", "params": {"seed": 0}, "status": "ok",
                "git_commit": "0123456789abcdef", "git_dirty": False,
                "wall_time_s": {"00_train": 1.0, "04_detector": 2.5}, "wall_time_total_s": 3.5,
                "image_counts": {"01_originals": {"used": 6, "skipped": {"too_small": 1}}},
                "figures": ["figures/roc.png"], "reports": ["reports/00_train.html", "reports/04_detector.html"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    runner.write_index(out, manifest)
    page = check_front_page(out)
    assert len(page.rows) == 3 and page.rows[0][-1] == "a & b <c>"
    text = (out / "index.html").read_text()
    assert "01_originals" in text and "too_small: 1" in text and "3.5" in text and "<details>" in text


# ------------------------------------------------------------------------------ end to end

_SETUP = '''
import warnings
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from iqalib import params, report
OUT = params.run_dir(params.load(params_path))
'''
_WORK = '''
for _ in tqdm(range(30), disable=False):  # a caller that ignores the switch
    pass
for _ in tqdm(range(30)):  # honours TQDM_DISABLE
    pass
warnings.warn("something odd")
report.save_table(pd.DataFrame({"group": list("abc"), **{f"m{i}": np.arange(3) / 7 for i in range(20)}}), "wide", OUT, "Wide.")
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
report.save_figure(fig, "line", OUT)
table = report.verdicts([{"claim": "c", "paper": "1", "ours": "1", "verdict": "reproduced", "why": "w"}], "00", OUT)
(OUT / "models" / "quality").mkdir(parents=True, exist_ok=True)
(OUT / "models" / "quality" / "card.json").write_text("{}")
'''


def _notebook(path: Path, title: str, *code: str) -> None:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"),
                nbformat.v4.new_code_cell('params_path = "none"', metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(c) for c in code)]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    nbformat.write(nb, path)


@pytest.fixture
def tiny_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "00_make.ipynb", "Make", _SETUP, _WORK)
    _notebook(folder / "02_use.ipynb", "Use", _SETUP, 'print("uses", OUT.name)')
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", folder)
    return folder


def test_headless_run_is_quiet_shows_figures_and_rerenders_identically(tmp_path, tiny_notebooks, capsys):
    params_file = _params_file(tmp_path)
    out = tmp_path / "outputs" / "runnertest"
    manifest = runner.run(params_file)
    snapshot = {p: p.read_bytes() for p in [*out.glob("notebooks/*.ipynb"), *out.glob("reports/*.html")]}
    assert len(snapshot) == 4

    for path in out.glob("notebooks/*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        text = json.dumps(outputs)
        assert "it/s]" not in text and "TqdmWarning" not in text and str(tmp_path) not in text
        assert not {"start_time", "end_time", "duration"} & set(nb.metadata.papermill)
        assert all("execution" not in c.metadata for c in nb.cells)
    made = nbformat.read(out / "notebooks" / "00_make.ipynb", as_version=4)
    shown = [o for c in made.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "display_data"]
    assert any("image/png" in o.data for o in shown)  # the figure is in the notebook and its report
    assert any("**Wide.**" in o.data.get("text/markdown", "") for o in shown)
    assert any(o.data.get("text/markdown", "").startswith("### Ours vs the paper") for o in shown)
    assert "<img" in (out / "reports" / "00_make.html").read_text()

    log = (out / "run.log").read_text()
    assert "00_make ..." in log and "00_make done in" in log and "something odd" in log and "it/s]" not in log
    assert manifest["wall_time_total_s"] == pytest.approx(sum(manifest["wall_time_s"].values()))
    assert "finished_utc" not in manifest and manifest["git_commit"]
    check_front_page(out)

    runner.run(params_file)  # unchanged code and params: the same bytes
    assert {p: p.read_bytes() for p in snapshot} == snapshot

    before = json.loads((out / "manifest.json").read_text())["wall_time_s"]
    capsys.readouterr()
    assert main(["run", str(params_file), "--only", "02"]) == 0
    assert "ran 1 notebook(s)" in capsys.readouterr().out
    after = json.loads((out / "manifest.json").read_text())
    assert after["wall_time_s"]["00_make"] == before["00_make"]
    assert after["wall_time_total_s"] == pytest.approx(sum(after["wall_time_s"].values()))


# ---------------------------------------------------------------------------- command line

def test_check_images_verbose_lists_each_skipped_file_with_its_reason(bad_folder):
    result = subprocess.run([sys.executable, "-m", "iqalib", "check-images", str(bad_folder), "--verbose"],
                            capture_output=True, text=True, cwd=REPO, check=True)
    listed = dict(line.split()[::-1] for line in result.stdout.split("skipped files:\n")[1].splitlines())
    assert listed == {"n02123045/empty.png": "not_an_image", "n02123045/not_image.jpg": "not_an_image",
                      "n02123045/grey.jpg": "greyscale", "n02123045/sixteen_bit.png": "greyscale",
                      "n02123045/tiny.jpg": "too_small", "n02123045/truncated.jpg": "truncated"}
    assert result.stderr.endswith("\n")  # the summary does not start on the progress bar's line


def test_a_run_loads_its_params_once_and_every_notebook_reads_the_same_snapshot(tmp_path, tiny_notebooks, monkeypatch):
    from iqalib import params

    params_file = _params_file(tmp_path)
    loads = []
    real = runner.load
    monkeypatch.setattr(runner, "load", lambda path: loads.append(path) or real(path))
    runner.run(params_file)
    assert len(loads) == 1
    out = tmp_path / "outputs" / "runnertest"
    assert params.load(out / runner.PARAMS_SNAPSHOT).to_dict() == params.load(params_file).to_dict()
    for path in sorted(out.glob("notebooks/*.ipynb")):
        injected = [c.source for c in nbformat.read(path, as_version=4).cells
                    if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and str(out / runner.PARAMS_SNAPSHOT) in injected[0], injected
