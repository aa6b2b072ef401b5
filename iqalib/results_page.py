"""The results site's first page: the paper cited and summarised, a scale box (this run vs the
paper: originals, classifier, quality labels, IQA data, attacks), the scoreboard of claims
reproduced, and every verdict row beside the paper's value, linked to the notebook that judges it.

Owns no numbers: counts come from the manifest, verdicts from ``tables/verdicts_*.csv``, the
paper's counts from ``iqalib/data/paper_values.yaml``. Returns MyST Markdown with raw HTML blocks
(no blank line inside a block: Markdown would end it there).
"""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any, Mapping

import yaml

from iqalib import report
from iqalib.params import validate

CITATION = ("Yeli Feng and Yiyu Cai. <i>Towards Robust Classification with Image Quality Assessment.</i> "
            "arXiv:2004.06288, 2020.")
TITLE = "Towards Robust Classification with Image Quality Assessment"
SUMMARY = (
    "The paper catches an ImageNet classifier's failures on poor-quality and adversarial images without re-training "
    "it: a no-reference quality model (DTNIQ-f: frozen CNN features, an MLP over 70 quality bins) scores each input, "
    "and an SVM over [top-5 probabilities, quality] flags inputs <i>not fit</i> for classification. Here each section "
    "(Tables I–V, Figs. 3–4) is re-run, then compared with the field's detectors and attacked and hardened (NT, DMS-IQA).")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def read_verdicts(out: Path) -> list[dict[str, str]]:
    """Every row of ``tables/verdicts_<notebook>.csv`` in notebook order, with its ``notebook``;
    a table written before rows carried ``scope``/``judges`` gets notebook 05's rows as beyond the
    paper and the others as the paper's, ``judges`` unknown."""
    rows = []
    for path in sorted((out / "tables").glob("verdicts_*.csv")):
        notebook = path.stem.removeprefix("verdicts_")
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                row.setdefault("scope", report.SCOPES[1] if notebook.startswith("05") else report.SCOPES[0])
                row.setdefault("judges", "")
                rows.append({"notebook": notebook, **row})
    return rows


def _used(counts: Mapping[str, Any], key: str) -> int | None:
    hit = counts.get(key)
    return int(hit["used"]) if hit else None


def scale_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what, this run, the paper) for the scale box."""
    p = validate(manifest.get("params", {}), "the run's params")
    paper = report.paper_counts()
    counts = manifest.get("image_counts", {})
    sets = [s.name for s in p.iqa_sets]
    embedded = "embedded" in sets
    iqa_images = sum(c["used"] for k, c in counts.items() if k.startswith("00_")) or None
    originals = _used(counts, "02_original")
    labels = (f"pseudo-MOS: {p.embedded_iqa.metric.upper()}, a full-reference metric, not human opinion"
              if embedded and "embedded" in p.quality.train_sets else f"human MOS ({', '.join(p.quality.train_sets)})")
    kinds = f"{len(p.distortions.types)} types × {len(p.distortions.levels)} levels"
    ours_source = {"embedded": "photos shipped in pip wheels (foolbox, ai-benchmark)"}.get(p.originals.source,
                                                                                           f"{p.originals.source} folder")
    return [
        ("originals (correctly classified)", f"{_n(originals)} of {_n(_used(counts, '02_originals_all'))} used; {ours_source}",
         f"{paper['original']:,} of {paper['sec3_original']:,} ImageNet val"),
        ("classifier", f"{p.classifier} (Table I: {', '.join(p.classifiers_table1)})",
         "ResNet-152 (Table I: AlexNet, VGG-16, ResNet-152)"),
        ("quality labels", labels, "human MOS (TID2013)"),
        ("IQA data", f"{', '.join(sets)}: {_n(iqa_images)} images", f"TID2013, CSIQ, LIVE: {paper['iqa_images']:,} images"),
        ("distorted images", f"{_n(_used(counts, '02_distorted'))} ({kinds})",
         f"{paper['distorted']:,} ({paper['distortion_types']} types × {paper['distortion_levels']} levels)"),
        ("adversarial images", f"{_n(_used(counts, '02_adversarial'))} (UAP, {p.attacks.uap.method})",
         f"{paper['adversarial']:,} (UAP of ResNet-152, DeepFool)"),
        ("fooling images", f"Fool_EV {_n(_used(counts, '02_fool_ev'))}, Fool_GD {_n(_used(counts, '02_fool_gd'))}",
         f"Fool_EV {paper['fool_ev']:,}, Fool_GD {paper['fool_gd']:,}"),
    ]


def _table(header: list[str], rows: list[list[str]], attrs: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _score(rows: list[dict], scope: str) -> tuple[int, int, int, int]:
    mine = [r for r in rows if r["scope"] == scope]
    count = {v: sum(r["verdict"] == v for r in mine) for v in report.VERDICTS}
    return len(mine), count["reproduced"], count["not reproduced"], count["not testable"]


def scoreboard(rows: list[dict]) -> str:
    """"N of M of the paper's claims reproduced", and the same beyond the paper."""
    cells = []
    for scope, label in ((report.SCOPES[0], "of the paper's claims reproduced"),
                         (report.SCOPES[1], "claims beyond the paper reproduced")):
        total, ok, no, untestable = _score(rows, scope)
        cells.append(f'<div><span class="score">{ok} of {total}</span> {label}<br><small>{no} not reproduced'
                     + (f", {untestable} not testable" if untestable else "") + "</small></div>")
    return '<div class="iqalib-scoreboard"><b>Scoreboard</b>' + "".join(cells) + "</div>"


def _page_of(notebook: str, titles: Mapping[str, str]) -> str:
    return next((stem for stem in titles if stem == notebook or stem.startswith(f"{notebook}_")), "")


def verdict_table(rows: list[dict], titles: Mapping[str, str], scope: str) -> str:
    body = []
    for r in (r for r in rows if r["scope"] == scope):
        stem = _page_of(r["notebook"], titles)
        claim = (f'<a href="notebooks/{_e(stem)}.html#verdicts-{_e(r["notebook"])}">{_e(r["claim"])}</a>'
                 if stem else _e(r["claim"]))
        verdict = f'<td class="v-{_e(r["verdict"].replace(" ", "-"))}">{_e(r["verdict"])}</td>'
        body.append([_e(r["notebook"]), claim, _e(r["paper"]), _e(r["ours"]), verdict, _e(r["judges"]), _e(r["why"])])
    return ('<div class="iqalib-verdicts">' + _table(["nb", "claim", "paper", "ours", "verdict", "judges", "rule"], body)
            + "</div>")


def _about_run(manifest: Mapping[str, Any]) -> str:
    """Images used and skipped, and the params. No wall times: a re-render gives the same bytes
    (they are in ``manifest.json``)."""
    counts = [[_e(k), f'<td style="text-align:right">{_n(c.get("used"))}</td>',
               _e(", ".join(f"{r}: {n}" for r, n in sorted(c.get("skipped", {}).items())) or "none")]
              for k, c in manifest.get("image_counts", {}).items()]
    commit = manifest.get("git_commit") or ""
    params = _e(yaml.safe_dump(manifest.get("params", {}), sort_keys=False, allow_unicode=True)).replace("\n", "&#10;")
    return ("<details><summary>Images used and skipped, params</summary>"
            f"<p>params <code>{_e(manifest.get('params_file'))}</code>, status {_e(manifest.get('status'))}"
            + (f", code at commit <code>{_e(commit[:12])}</code>" + (" (with uncommitted changes)" if manifest.get("git_dirty") else "")
               if commit else "") + "</p>"
            + _table(["images", "used", "skipped (reason: count)"], counts)
            + f"<pre>{params}</pre></details>")


def render(out: Path, manifest: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    """The results page (MyST Markdown) of the run folder ``out``."""
    rows = read_verdicts(out)
    scale = _table(["", "this run", "the paper"], [[f"<b>{_e(a)}</b>", _e(b), _e(c)] for a, b, c in scale_rows(manifest)])
    note = report.rehearsal_note()
    pages = "".join(f'<li><a href="notebooks/{_e(stem)}.html">{_e(title)}</a></li>' for stem, title in titles.items())
    return "\n\n".join([
        "# Feng & Cai (2020), reproduced and extended",
        f'<p>{CITATION} — run <code>{_e(manifest.get("run_name"))}</code>'
        + (f" <b>{_e(note)}</b>" if note else "") + f"</p>\n<p>{SUMMARY}</p>",
        "## Scoreboard and scale",
        f'<div class="iqalib-top">{scoreboard(rows)}<div class="iqalib-scale"><b>Scale: this run vs the paper</b>{scale}</div>'
        "</div>\n<p><small>A verdict applies the rule in its row to this run's numbers. Read the scale before a "
        "\"not reproduced\": this run is far smaller than the paper's.</small></p>",
        "## The paper's claims",
        verdict_table(rows, titles, report.SCOPES[0]),
        "## Beyond the paper",
        verdict_table(rows, titles, report.SCOPES[1]),
        "## The notebooks",
        f"<ol start=\"0\">{pages}</ol>\n<p>Every table's CSV is under <code>tables/</code> of this site "
        "(and of the run folder); every figure is on the <a href=\"figures.html\">figures page</a>.</p>",
        "## This run",
        _about_run(manifest),
    ])
