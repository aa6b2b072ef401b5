"""The run's results site: ``outputs/<run>/site/``, a Sphinx book (myst-nb + sphinx-book-theme,
what Jupyter Book 1 is made of) of the executed notebooks, with the results page first
(``results_page``) and a figures page grouped by notebook; every asset local, no CDN.

Owns no numbers and executes nothing (``nb_execution_mode = "off"``: papermill is the executor).
It reads the executed notebooks and rewrites their outputs for the book: the parameters cell once,
code folded, each ``report`` table and figure numbered with its caption and takeaway (the
``iqalib`` metadata ``report`` puts on every output it shows), tables linked to their CSV.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from iqalib.cache import atomic_write_text

log = logging.getLogger(__name__)

SITE = "site"
FIGURES_PAGE = "figures"
#: Sphinx settings of the book. No ``copyright`` year, no "last updated", no source links: the
#: same notebooks give the same bytes. ``nb_ipywidgets_js`` empty: no require.js from a CDN.
CONF = {
    "project": "Feng & Cai (2020) reproduced",
    "author": "iqalib",
    "copyright": "",
    "extensions": ["myst_nb"],
    "html_theme": "sphinx_book_theme",
    "html_title": "Robust classification with image quality — reproduction",
    "html_copy_source": False,
    "html_show_sourcelink": False,
    "html_show_sphinx": False,
    "html_last_updated_fmt": None,
    "html_static_path": ["_static"],
    "html_css_files": ["results.css"],
    "html_extra_path": ["_extra"],
    "html_theme_options": {"home_page_in_toc": True, "show_toc_level": 2, "use_download_button": False,
                           "use_fullscreen_button": False, "use_source_button": False,
                           "use_repository_button": False, "navigation_with_keys": False,
                           "secondary_sidebar_items": {"**": ["page-toc"], "index": []}},
    "html_context": {"default_mode": "light"},  # else the theme's script logs "invalid theme mode" on a first visit
    "nb_execution_mode": "off",
    "nb_render_markdown_format": "myst",
    "nb_ipywidgets_js": {},
    "nb_output_stderr": "remove",
    "myst_enable_extensions": ["dollarmath", "attrs_block"],
    "numfig": True,
    # the site's own numbers in brackets: many captions start with the paper's ("Table I.", "Fig. 3")
    "numfig_format": {"figure": "[Fig. %s]", "table": "[Table %s]"},
    "suppress_warnings": ["myst.header", "mystnb.unknown_mime_type"],
    "exclude_patterns": ["_build", "_extra"],
    "language": "en",
}
CSS = """
.iqalib-scale, .iqalib-scoreboard { border: 1px solid var(--pst-color-border); border-radius: .4rem; padding: .6rem .9rem; margin: .6rem 0; }
.iqalib-scale table, .iqalib-verdicts table { font-size: .8rem; margin: 0; line-height: 1.3; }
.iqalib-scale td, .iqalib-scale th { padding: .15rem .4rem; }
.iqalib-top { display: grid; grid-template-columns: minmax(12rem, 1fr) 3fr; gap: 1rem; align-items: start; }
.iqalib-scoreboard div { margin: .5rem 0; }
.iqalib-scoreboard .score { font-size: 1.6rem; font-weight: 700; }
.bd-article h1 { font-size: 2rem; }
.iqalib-verdicts { overflow-x: auto; }
.v-reproduced { color: #176b2c; font-weight: 600; } .v-not-reproduced { color: #a3261b; font-weight: 600; }
.v-not-testable { color: #7a5b00; font-weight: 600; }
.iqalib-takeaway { font-style: italic; }
figure img { max-width: 100%; height: auto; }
.bd-main .bd-content .bd-article-container { max-width: 100%; }  /* wide tables: the room beside the sidebars */
/* a wide table scrolls in its box; its caption wraps at the box's width instead of scrolling away with it */
.pst-scrollable-table-container caption { max-width: min(48rem, 85vw); text-align: left; position: sticky; left: 0; }
"""


# ------------------------------------------------------------------------------ notebook pages

def _png_names(out: Path) -> dict[str, str]:
    """base64 of each ``figures/*.png`` → its name: a figure output of an older run (no metadata)
    is still found by its bytes."""
    return {base64.b64encode(p.read_bytes()).decode(): p.stem for p in sorted((out / "figures").glob("*.png"))}


def _about(output: dict) -> dict:
    return dict(output.get("metadata", {}).get("iqalib", {}))


def _directive_output(text: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": text, "text/plain": text}}


def _fence(body: str) -> str:
    """A MyST directive fence longer than any backtick run in ``body``."""
    return "`" * max(3, max((len(run) for run in body.split("\n") if set(run) == {"`"}), default=0) + 1)


def _figure_markdown(name: str, caption: str, takeaway: str) -> str:
    caption = caption or name.replace("_", " ")
    legend = f"\n\n{{.iqalib-takeaway}}\n{takeaway}" if takeaway else ""
    # ``:scale: 100`` keeps the size and makes Sphinx link the image to its full-size file
    # (``html_scaled_image_link``): a wide figure shrunk to the column opens readable on a click
    return f"```{{figure}} ../figures/{name}.png\n:name: fig-{name}\n:alt: {caption}\n:scale: 100\n\n{caption}{legend}\n```"


def _table_markdown(about: dict) -> str:
    """A numbered MyST table (when it has a caption), its takeaway, and a link to its CSV (when
    saved: ``report.show_table`` frames have no file)."""
    name, caption = about.get("name", ""), (about.get("caption") or "").replace("\n", " ")
    if caption:
        label = f":name: table-{name}\n" if name else ""
        # Tildes: CommonMark ends a backtick fence's info string at a backtick, so a caption with
        # `code` in it would leave the directive as text; a tilde fence's info string may hold them.
        lines = [f"~~~{{table}} {caption}\n{label}\n{about['table']}\n~~~"]
    else:
        lines = [about["table"]]
    if about.get("takeaway"):
        lines.append(f"{{.iqalib-takeaway}}\n{about['takeaway']}")
    link = f'Every column: <a href="../tables/{name}.csv">tables/{name}.csv</a>.' if name else ""
    if about.get("note") or link:
        lines.append(" ".join(p for p in (about.get("note", ""), link) if p))
    return "\n\n".join(lines)


def prepare_notebook(nb: dict, pngs: dict[str, str]) -> tuple[dict, list[str]]:
    """The executed notebook as the book shows it, and the figures it shows (in order).

    The notebook's own parameters cell goes (papermill's injected one stays: the parameters
    once); code is folded; ``report`` tables become numbered MyST tables with their takeaway and
    CSV link; ``figures/*.png`` outputs become numbered figures of that very file; their
    separate caption outputs (for JupyterLab readers) go, the figure carries the caption.
    """
    nb = copy.deepcopy(nb)
    injected = any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])
    shown: list[str] = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if injected and "parameters" in tags:
            tags.append("remove-cell")
            continue
        tags.append("hide-input")
        outputs = []
        for output in cell.get("outputs", []):
            about = _about(output)
            png = output.get("data", {}).get("image/png")
            name = about.get("name") if about.get("kind") == "figure" else pngs.get(png.replace("\n", "") if isinstance(png, str) else "")
            if about.get("kind") == "caption":
                continue
            if png and name in pngs.values():
                outputs.append(_directive_output(_figure_markdown(name, about.get("caption", ""), about.get("takeaway", ""))))
                shown.append(name)
            elif about.get("kind") == "table" and about.get("table"):
                outputs.append(_directive_output(_table_markdown(about)))
            elif about.get("kind") == "verdicts" and about.get("table"):
                outputs.append(_directive_output(
                    f"```{{table}} Ours vs the paper (notebook {about['notebook']})\n:name: verdicts-{about['notebook']}\n\n"
                    f"{about['table']}\n```"))
            else:
                outputs.append(output)
        cell["outputs"] = outputs
    return nb, shown


def _figures_page(out: Path, shown: dict[str, list[str]], titles: dict[str, str]) -> str:
    """Every ``figures/*.png``, grouped by the notebook that shows it (in the paper's order)."""
    captions = {}
    for executed in sorted((out / "notebooks").glob("*.ipynb")):
        for cell in json.loads(executed.read_text()).get("cells", []):
            for output in cell.get("outputs", []):
                about = _about(output)
                if about.get("kind") == "figure":
                    captions[about["name"]] = (about.get("caption", ""), about.get("takeaway", ""))
    every = [p.stem for p in sorted((out / "figures").glob("*.png"))]
    placed = {name for names in shown.values() for name in names}
    groups = [(titles[stem], f"notebooks/{stem}", names) for stem, names in shown.items() if names]
    rest = [n for n in every if n not in placed]
    if rest:
        groups.append(("Not shown in any notebook", "", rest))
    parts = ["# Figures\n\nEvery figure of the run, grouped by the notebook that makes it, each with a link to "
             "its place in that notebook; a click on a figure opens it at full size. The PNGs are under "
             "`figures/` of the run folder.\n"]
    for title, page, names in groups:
        parts.append(f"## {title}\n")
        if page:
            parts.append(f"From [{title}]({page}.ipynb).\n")
        for name in dict.fromkeys(names):
            caption, takeaway = captions.get(name, ("", ""))
            caption = caption or name.replace("_", " ")
            legend = f"\n\n{takeaway}" if takeaway else ""
            # an image and its caption, not a second numbered figure: the notebook's number is the figure's
            where = f", {{ref}}`in its notebook <fig-{name}>`" if page else ""
            parts.append(f"```{{image}} figures/{name}.png\n:alt: {caption}\n:width: 90%\n```\n\n"
                         f"{caption} (`{name}.png`{where}){legend}\n")
    return "\n".join(parts)


def notebook_title(nb: dict, fallback: str) -> str:
    """The first ``# `` heading of a notebook, else ``fallback``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


# ----------------------------------------------------------------------------------- the build

def _stage(out: Path, src: Path, manifest: dict) -> None:
    """The book's sources under ``src``: conf.py, the results page, one page per notebook, the
    figures page, the figures themselves and the CSVs (copied as they are into the site)."""
    from iqalib import results_page

    pngs = _png_names(out)
    shown: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    (src / "notebooks").mkdir(parents=True)
    for executed in sorted((out / "notebooks").glob("*.ipynb")):
        nb = json.loads(executed.read_text())
        titles[executed.stem] = notebook_title(nb, executed.stem)
        page, shown[executed.stem] = prepare_notebook(nb, pngs)
        (src / "notebooks" / executed.name).write_text(json.dumps(page, indent=1, ensure_ascii=False))
    shutil.copytree(out / "figures", src / "figures") if (out / "figures").is_dir() else (src / "figures").mkdir()
    (src / "_extra" / "tables").mkdir(parents=True)
    for csv in sorted((out / "tables").glob("*.csv")):
        shutil.copy2(csv, src / "_extra" / "tables" / csv.name)
    (src / "_static").mkdir()
    (src / "_static" / "results.css").write_text(CSS)
    toc = "\n".join(f"notebooks/{stem}" for stem in titles) + f"\n{FIGURES_PAGE}"
    (src / "index.md").write_text(results_page.render(out, manifest, titles)
                                  + f"\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toc}\n```\n")
    (src / f"{FIGURES_PAGE}.md").write_text(_figures_page(out, shown, titles))
    (src / "conf.py").write_text("".join(f"{key} = {value!r}\n" for key, value in CONF.items()))


def build(out: Path, manifest: dict | None = None) -> Path:
    """Build ``out/site/`` from the run folder ``out`` (executed notebooks, tables, figures,
    manifest) and point ``out/index.html`` at it; returns the site's ``index.html``. The site is
    built beside the old one and swapped in, so a failed build leaves the previous site."""
    from sphinx.application import Sphinx

    out = Path(out)
    if manifest is None:
        manifest = json.loads((out / "manifest.json").read_text())
    site, new = out / SITE, out / f".{SITE}-new"
    shutil.rmtree(new, ignore_errors=True)
    warnings = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="iqalib-book-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        _stage(out, src, manifest)
        # Built inside tmp, then moved: myst-nb writes its image outputs beside the output folder
        # (``<outdir>/../jupyter_execute``), which must not land in the run folder.
        html = Path(tmp) / "html"
        app = Sphinx(str(src), str(src), str(html), str(Path(tmp) / "doctrees"), "html", status=None,
                     warning=warnings, freshenv=True, keep_going=True)
        app.build()
        shutil.move(str(html), str(new))
    for line in warnings.getvalue().splitlines():
        if line.strip():
            log.warning("site: %s", re.sub(r"\x1b\[[0-9;]*m", "", line).replace(str(src), ""))
    (new / ".buildinfo").unlink(missing_ok=True)  # Sphinx's incremental-build stamp, nothing a reader opens
    shutil.rmtree(new / "_sources", ignore_errors=True)  # empty: html_copy_source is off
    old = out / f".{SITE}-old"
    shutil.rmtree(old, ignore_errors=True)
    if site.exists():
        site.rename(old)
    new.rename(site)
    shutil.rmtree(old, ignore_errors=True)
    atomic_write_text(out / "index.html", _redirect(f"{SITE}/index.html"))
    return site / "index.html"


def _redirect(target: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Results</title>\n'
            f'<meta http-equiv="refresh" content="0; url={target}"></head>\n'
            f'<body><p>The results site is <a href="{target}">{target}</a>.</p></body></html>\n')
