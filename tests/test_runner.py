"""runner: order checks, quiet and reproducible executed notebooks, manifest and results site.

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


# ------------------------------------------------------------------------------ the site

class _Page(HTMLParser):
    """Links, images and the verdict rows (tables inside ``div.iqalib-verdicts``) of one page."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.rows, self.text = [], [], [], []
        self._row, self._cell, self._depth = None, None, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag in ("img", "script") and "src" in a:
            self.images.append(a["src"])
        elif tag == "link" and "href" in a:
            self.links.append(a["href"])
        if tag == "div" and self._depth:
            self._depth += 1
        elif tag == "div" and "iqalib-verdicts" in a.get("class", ""):
            self._depth = 1
        elif tag == "tr" and self._depth:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1
        elif tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:  # the header row has th cells only
                self.rows.append(self._row)
            self._row = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def check_site(out: Path) -> _Page:
    """The run's ``index.html`` points into ``site/``; no page of the site asks for anything off
    this machine; there is a page per executed notebook; the results page's verdict rows are
    exactly the rows of ``tables/verdicts_*.csv`` (the paper's claims, then beyond the paper);
    every ``figures/*.png`` is on the figures page; the build left nothing else in the run folder. Returns the parsed results page."""
    site = out / "site"
    assert 'url=site/index.html' in (out / "index.html").read_text()
    assert not (out / "jupyter_execute").exists() and not list(out.glob(".site-*"))  # the build's leftovers
    assert json.loads((out / "manifest.json").read_text())["site"] == "site/index.html"
    for html in site.rglob("*.html"):
        page = _parse(html)
        external = [u for u in page.links + page.images if re.match(r"(https?:)?//", u)]
        assert not external, (html.relative_to(site), external)
    stems = sorted(p.stem for p in (out / "notebooks").glob("*.ipynb"))
    assert stems and all((site / "notebooks" / f"{stem}.html").is_file() for stem in stems)
    front = _parse(site / "index.html")
    assert all(f"notebooks/{stem}.html" in front.links for stem in stems)
    expected = {scope: [] for scope in report.SCOPES}
    for path in sorted(out.glob("tables/verdicts_*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for row in frame.to_dict("records"):
            expected[row["scope"]].append([path.stem.removeprefix("verdicts_"), row["claim"], row["paper"], row["ours"],
                                           row["verdict"], row["judges"], row["why"]])
    assert front.rows == [r for scope in report.SCOPES for r in expected[scope]]
    shown = {Path(src).name for src in _parse(site / "figures.html").images}
    assert {p.name for p in out.glob("figures/*.png")} <= shown
    return front


def check_book_page(path: Path) -> None:
    """A notebook's page in the book: the parameters once (papermill's), code folded, the figure and
    the tables numbered with their captions and takeaways (a caption with code in it too), a pipe in
    a header kept in its cell, each saved table linked to its CSV, no Sphinx error box."""
    text = path.read_text()
    visible = re.sub(r"<[^>]+>", "", text)  # Pygments splits code into spans
    assert visible.count("params_path = ") == 1 and "injected-parameters" in text and 'params_path = "none"' not in visible
    assert "tag_hide-input" in text and "<details" in text
    assert re.search(r"Fig\. 1.*A line\.", text, re.S) and "It falls." in text and "_images/line.png" in text
    assert re.search(r"Table 1.*Wide\.", text, re.S) and re.search(r"Table 2.*Pipes in a header\.", text, re.S)
    assert "mean |Δs|</p></th>" in text and "One row." in text
    assert 'href="../tables/wide.csv"' in text and 'href="../tables/pipes.csv"' in text
    assert re.search(r"Table 3.*A <code[^>]*>.*code.*</code> span in a caption\.", text, re.S)
    assert ":name:" not in visible and "{table}" not in visible  # no directive left as text
    assert "system-message" not in text and "|:-" not in text


def test_results_page_of_a_fabricated_run(tmp_path):
    from iqalib import book, results_page

    out = tmp_path / "fab"
    for folder in ("tables", "figures", "notebooks"):
        (out / folder).mkdir(parents=True)
    pd.DataFrame([{"claim": "blur lowers quality", "paper": "yes", "ours": "-0.98", "verdict": "reproduced",
                   "why": "a & b <c>", "scope": "paper", "judges": "direction"},
                  {"claim": "Table I", "paper": "0.61", "ours": "", "verdict": "not testable", "why": "",
                   "scope": "paper", "judges": "magnitude"}]).to_csv(out / "tables" / "verdicts_00.csv", index=False)
    pd.DataFrame([{"claim": "NT steadies the score", "paper": "30 %", "ours": "7 %", "verdict": "not reproduced",
                   "why": "|Δs| rule"}]).to_csv(out / "tables" / "verdicts_05.csv", index=False)  # written before scope/judges
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    manifest = {"run_name": "fab", "params_file": "params/fab.yaml", "params": raw, "status": "ok",
                "git_commit": "0123456789abcdef", "git_dirty": False, "wall_time_s": {"00_train": 1.0},
                "image_counts": {"02_original": {"used": 6, "skipped": {"too_small": 1}},
                                 "02_originals_all": {"used": 9, "skipped": {}}},
                "site": "site/index.html"}
    text = results_page.render(out, manifest, {"00_train": "Train", "05_robust": "Robust"})
    assert "Towards Robust Classification with Image Quality Assessment" in text
    assert '<span class="score">1 of 2</span> of the paper' in text and "1 not testable" in text
    assert '<span class="score">0 of 1</span> claims beyond' in text
    assert "6 of 9 used" in text and "49,056" in text  # the scale box: ours beside the paper's count
    assert "too_small: 1" in text and "seconds" not in text  # no wall time: re-renders give the same bytes
    assert 'href="notebooks/05_robust.html#verdicts-05"' in text and "a &amp; b &lt;c&gt;" in text

    pd.DataFrame([{"claim": "NT steadies the score", "paper": "30 %", "ours": "7 %", "verdict": "not reproduced",
                   "why": "|Δs| rule", "scope": "beyond the paper", "judges": "magnitude"}]
                 ).to_csv(out / "tables" / "verdicts_05.csv", index=False)
    for stem, title in (("00_train", "Train"), ("05_robust", "Robust")):
        _notebook(out / "notebooks" / f"{stem}.ipynb", title, "1 + 1")
    (out / "manifest.json").write_text(json.dumps(manifest))
    book.build(out)
    front = check_site(out)
    assert [r[0] for r in front.rows] == ["00", "00", "05"] and front.rows[0][-1] == "a & b <c>"


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
report.save_figure(fig, "line", OUT, caption="A line.", takeaway="It falls.")
report.save_table(pd.DataFrame({"model": ["a"], "mean |Δs|": [0.5]}), "pipes", OUT, "Pipes in a header.", takeaway="One row.")
report.save_table(pd.DataFrame({"x": [1]}), "ticks", OUT, "A `code` span in a caption.")
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
    snapshot = {p: p.read_bytes() for p in [*out.glob("notebooks/*.ipynb"), *out.glob("site/**/*"), out / "index.html"]
                if p.is_file()}
    assert len(snapshot) > 20

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
    check_book_page(out / "site" / "notebooks" / "00_make.html")

    log = (out / "run.log").read_text()
    assert "00_make ..." in log and "00_make done in" in log and "something odd" in log and "it/s]" not in log
    assert manifest["wall_time_total_s"] == pytest.approx(sum(manifest["wall_time_s"].values()))
    assert "finished_utc" not in manifest and manifest["git_commit"]
    assert "site:" not in log  # Sphinx built the site without a warning
    check_site(out)

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
