"""Everything a notebook shows leaves through here: tables (CSV + Markdown twin, a narrow rounded
view shown), figures (PNG, shown), verdicts (ours vs the paper), image counts and paper-vs-ours
tables, under ``outputs/<run>/`` with uniform names (the plotting style is ``figures``'s).

Owns no numbers: it writes and shows what the notebooks compute. Showing needs an IPython kernel
(JupyterLab or papermill); in a plain Python process the helpers only write files.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt  # no forced backend: inline in a kernel, Agg when there is no display
import pandas as pd

from iqalib.cache import atomic_write_bytes, atomic_write_text

MAX_VIEW_COLUMNS = 14  # a wider table is shown narrowed (or transposed); its CSV keeps every column
VERDICTS = ("reproduced", "not reproduced", "not testable")
VERDICT_COLUMNS = ("claim", "paper", "ours", "verdict", "why", "scope", "judges")
#: ``scope``: whose claim a verdict row judges; ``judges``: whether its rule asks only for the
#: paper's direction (lower, higher, at p < 0.05) or for a size (the paper's number, a stated bar).
SCOPES = ("paper", "beyond the paper")
JUDGES = ("direction", "magnitude")


def _folder(where: Any, kind: str) -> Path:
    """``<run folder>/<kind>``: ``where`` is the run (anything with a ``folder``) or its folder."""
    folder = Path(getattr(where, "folder", where)) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_kernel() -> bool:
    """True inside an IPython shell (JupyterLab, papermill's kernel), where ``display`` shows things."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_markdown(text: str, about: Mapping[str, Any] | None = None) -> None:
    """Rendered Markdown in the notebook; the same text as the plain-text fallback. ``about``
    (kept in the output's metadata under ``iqalib``) tells the results site what the output is
    (a table, a verdict table, a figure's caption), so it can number and caption it."""
    if _in_kernel():
        from IPython.display import display

        display({"text/markdown": text, "text/plain": text}, raw=True,
                metadata={"iqalib": dict(about)} if about else None)


def show_image(path: str | Path, width: int | None = None) -> None:
    """A PNG already on disk (e.g. the UAP's ``uap.png``), shown in the notebook and HTML report."""
    if _in_kernel():
        from IPython.display import Image, display

        display(Image(filename=str(path), width=width))


# ---------------------------------------------------------------------------------------------- tables

def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _format_column(column: pd.Series, digits: int) -> pd.Series:
    """Floats rounded to ``digits`` decimals; a float column holding only whole numbers (counts
    that went through a NaN or a pivot) printed as integers, unless every value lies within
    [−1, 1]: that is a share that happens to be whole here (a rate of 1.000 beside 0.875 in the
    next column), and a count of only 0s and 1s reads as well with decimals."""
    numeric = pd.to_numeric(column, errors="coerce")
    if pd.api.types.is_float_dtype(column.dtype):
        whole = numeric.dropna()
        if len(whole) and (whole == whole.round()).all() and 1 < whole.abs().max() < 1e15:
            return numeric.map(lambda v: "–" if pd.isna(v) else str(int(v)))
        return numeric.map(lambda v: _fmt(float(v), digits))
    return column.map(lambda v: _fmt(v, digits))


def _key_columns(df: pd.DataFrame) -> list[str]:
    """Columns that name a row (text, categories, booleans), in table order."""
    return [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]


def _paper_beside_ours(columns: list) -> list:
    """Each ``paper_<x>`` column moved right after our ``<x>``, so a wide table shows the paper's
    value next to ours rather than off-screen at its end."""
    paper = {str(c)[len("paper_"):]: c for c in columns if str(c).startswith("paper_") and str(c)[6:] in map(str, columns)}
    ordered = []
    for c in columns:
        if c in paper.values():
            continue
        ordered.append(c)
        if str(c) in paper:
            ordered.append(paper[str(c)])
    return ordered


def table_view(df: pd.DataFrame, view_columns: Sequence[str] | None = None, digits: int = 3,
               max_columns: int = MAX_VIEW_COLUMNS) -> tuple[pd.DataFrame, str]:
    """The narrow, rounded view of ``df`` that a notebook shows, and a note on what it leaves out.

    With ``view_columns``: exactly those columns. Otherwise columns with no values are dropped,
    ``x`` and its ``x_std`` twin (or ``x_mean`` and ``x_std``) become one ``mean ± std`` column,
    bootstrap bounds (``_ci_low``/``_ci_high``) are left to the CSV, and a table still wider than
    ``max_columns`` is transposed (few rows) or cut to its key columns plus the first numeric ones.
    Every cell is a string, floats rounded to ``digits`` decimals; a ``paper_<x>`` column stands
    right after our ``<x>``.
    """
    if view_columns is not None:
        missing = [c for c in view_columns if c not in df.columns]
        if missing:
            raise KeyError(f"view_columns not in the table: {', '.join(map(str, missing))}")
        view = df[list(view_columns)]
        shown = pd.DataFrame({c: _format_column(view[c], digits) for c in view.columns}, index=view.index)
        left = len(df.columns) - len(view_columns)
        return shown.reset_index(drop=True), (f"Not shown: {left} more column(s)." if left else "")

    df = df[_paper_beside_ours(list(df.columns))]
    keep = [c for c in df.columns if df[c].notna().any()] or list(df.columns)
    empty = [str(c) for c in df.columns if c not in keep]
    data = df[keep]
    columns: dict[str, pd.Series] = {}
    folded, bounds = set(), 0
    for c in keep:
        if c in folded:
            continue
        if str(c).endswith(("_ci_low", "_ci_high")) and str(c).rsplit("_ci_", 1)[0] in keep:
            bounds += 1
            continue
        std = f"{str(c)[:-5] if str(c).endswith('_mean') else c}_std"
        if std in keep and std != c and pd.api.types.is_numeric_dtype(data[c]) and not pd.api.types.is_bool_dtype(data[c]):
            mean, spread = _format_column(data[c], digits), _format_column(data[std], digits)
            columns[f"{c} ± std"] = pd.Series([m if s == "–" else f"{m} ± {s}" for m, s in zip(mean, spread)], index=data.index)
            folded.add(std)
            continue
        columns[str(c)] = _format_column(data[c], digits)
    shown = pd.DataFrame(columns, index=data.index).reset_index(drop=True)
    notes, cut = [], 0
    if len(shown.columns) > max_columns:
        keys = [str(c) for c in _key_columns(df) if str(c) in shown.columns]
        if len(shown) <= max_columns:
            label = shown[keys].agg(" · ".join, axis=1) if keys else shown.index.astype(str)
            shown = shown.drop(columns=keys).set_axis(label, axis=0).T.rename_axis("column").reset_index()
            notes.append("Transposed: one column per row of the table.")
        else:
            rest = [c for c in shown.columns if c not in keys][: max(1, max_columns - len(keys))]
            cut = len(shown.columns) - len(keys) - len(rest)
            shown = shown[keys + rest]
    left_out = [f"{bounds} confidence bound(s)" if bounds else "", f"{cut} more column(s)" if cut else "",
                f"empty column(s) {', '.join(empty)}" if empty else ""]
    if any(left_out):
        notes.append("Not shown: " + "; ".join(x for x in left_out if x) + ".")
    return shown, " ".join(notes)


_NUMBER_CELL = re.compile(r"^(–|[-+]?\d[\d.,eE+-]*( ± [-+]?\d[\d.,eE+-]*)?)$")


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table of an all-string frame (tabulate keeps the strings as they are); a "|" inside a
    cell or a header (e.g. "mean |Δs|") is escaped, or it would end the cell and break the whole table."""
    align = ["right" if len(frame) and frame[c].map(lambda v: bool(_NUMBER_CELL.match(str(v)))).all() else "left"
             for c in frame.columns]
    escaped = frame.map(lambda v: str(v).replace("|", "\\|"))
    escaped.columns = [str(c).replace("|", "\\|") for c in frame.columns]
    return escaped.to_markdown(index=False, disable_numparse=True, colalign=align)


def rehearsal_note() -> str:
    """The caption prefix of a rehearsal (``scripts/rehearse_paper.py`` sets ``IQALIB_REHEARSAL``):
    its networks have random weights and its scores are made up, so no number is a result."""
    if not os.environ.get("IQALIB_REHEARSAL"):
        return ""
    return "[Rehearsal of paper.yaml: random weights, made-up scores, a dozen photos; not a result.] "


def save_table(df: pd.DataFrame, name: str, run: Any, caption: str = "", floatfmt: str = ".3f",
               show: bool = True, view_columns: Sequence[str] | None = None, digits: int = 3,
               takeaway: str = "", view: pd.DataFrame | None = None) -> None:
    """Write ``tables/<name>.csv`` (every column, full precision) and its Markdown twin
    ``tables/<name>.md`` (caption on top), then show a narrow rounded view (see ``table_view``)
    under the caption, and ``takeaway`` (one line: what the table shows) under it. ``show=False``
    only writes. ``view``: a frame shown instead of ``df`` (e.g. a pivot of a long table), the
    files keep ``df``. Returns nothing, so a cell that ends with this call shows the table once."""
    folder = _folder(run, "tables")
    caption = (rehearsal_note() + caption).strip()  # Markdown shows "**text **" literally: no space inside the bold
    atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))
    markdown = df.to_markdown(index=False, floatfmt=floatfmt)
    atomic_write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown + "\n")
    if show:
        shown, note = table_view(df if view is None else view, view_columns, digits)
        if view is not None:
            note = " ".join(p for p in (note, f"Shown: a compact view of the {len(df)}-row table.") if p)
        table = _markdown(shown)
        parts = [f"**{caption}**" if caption else "", table, f"*{takeaway}*" if takeaway else "",
                 f"*{note} Every column is in `tables/{name}.csv`.*" if note else ""]
        show_markdown("\n\n".join(p for p in parts if p),
                      {"kind": "table", "name": name, "caption": caption, "takeaway": takeaway, "note": note,
                       "table": table})


def show_table(df: pd.DataFrame, caption: str = "", digits: int = 3) -> None:
    """Show (not save) a small frame the way ``save_table`` shows one: rounded, its index a column
    when it names the rows. For a count or a sample a notebook prints on the way."""
    if not isinstance(df.index, pd.RangeIndex):
        df = df.rename_axis(df.index.name or "").reset_index()
    shown, note = table_view(df, digits=digits)
    table = _markdown(shown)
    parts = [f"**{caption}**" if caption else "", table, f"*{note}*" if note else ""]
    show_markdown("\n\n".join(p for p in parts if p), {"kind": "table", "name": "", "caption": caption, "note": note,
                                                       "table": table})


def verdicts(rows: Iterable[Mapping[str, Any]], notebook: str, run: Any, show: bool = True) -> pd.DataFrame:
    """Ours vs the paper, one row per claim: ``{claim, paper, ours, verdict, why, scope, judges}``
    with ``verdict`` one of ``reproduced``, ``not reproduced``, ``not testable``, ``scope`` one of
    ``SCOPES`` (default: the paper's claim) and ``judges`` one of ``JUDGES`` (default: direction).

    Writes ``tables/verdicts_<notebook>.csv`` (+ ``.md``), which the run's front page collects, and
    shows the rows under the heading "Ours vs the paper". Returns the table (assign it, or the
    notebook shows it a second time).
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        unknown = set(row) - set(VERDICT_COLUMNS)
        if unknown:
            raise ValueError(f"verdict row {i}: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(VERDICT_COLUMNS)}")
    defaults = {"scope": SCOPES[0], "judges": JUDGES[0]}
    frame = pd.DataFrame([{k: row.get(k, defaults.get(k)) for k in VERDICT_COLUMNS} for row in rows],
                         columns=list(VERDICT_COLUMNS))
    for column, allowed in (("verdict", VERDICTS), ("scope", SCOPES), ("judges", JUDGES)):
        bad = sorted(set(frame[column]) - set(allowed), key=str)
        if bad:
            raise ValueError(f"{column} must be one of {', '.join(allowed)}; got {', '.join(map(repr, bad))}")
    if frame["claim"].isna().any() or (frame["claim"].astype(str).str.strip() == "").any():
        raise ValueError("every verdict row needs a claim")
    save_table(frame, f"verdicts_{notebook}", run, f"Ours vs the paper ({notebook}).", show=False)
    if show:
        shown = frame.drop(columns="scope").map(lambda v: _fmt(v, 3))
        shown["verdict"] = "**" + frame["verdict"] + "**"
        table = _markdown(shown)
        show_markdown("### Ours vs the paper\n\n" + table, {"kind": "verdicts", "notebook": notebook, "table": table})
    return frame


# --------------------------------------------------------------------------------------------- figures

def save_figure(fig: "plt.Figure", name: str, run: Any, show: bool = True, caption: str = "",
                takeaway: str = "") -> None:
    """Write ``figures/<name>.png``, show exactly that PNG in the notebook with ``caption`` (what
    it shows) and ``takeaway`` (one line: what to read from it) under it, and close the figure (so
    the inline backend does not show it a second time). ``show=False`` only writes."""
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure expects a matplotlib Figure, got {type(fig).__name__}")
    path = _folder(run, "figures") / f"{name}.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)
    if show and _in_kernel():
        from IPython.display import Image, display

        caption = (rehearsal_note() + caption).strip()
        about = {"kind": "figure", "name": name, "caption": caption, "takeaway": takeaway}
        display(Image(data=buffer.getvalue(), format="png"), metadata={"iqalib": about})
        if caption or takeaway:
            show_markdown(" ".join(p for p in (f"**{caption}**" if caption else "", f"*{takeaway}*" if takeaway else "") if p),
                          {"kind": "caption", "name": name})


# ------------------------------------------------------------------------------------- counts, paper

def save_counts(counts_by_name: Mapping[str, Mapping[str, Any]], run: Any, prefix: str = "") -> list[Path]:
    """Image counts per name (each ``{"used": N, "skipped": {reason: n}}``) for the manifest, as
    ``counts/<prefix><name>.json``."""
    paths = []
    for name, counts in counts_by_name.items():
        path = _folder(run, "counts") / f"{prefix}{name}.json"
        atomic_write_text(path, json.dumps(dict(counts), indent=2, sort_keys=True))
        paths.append(path)
    return paths


def save_code_paths(run: Any, notebook: str) -> Path:
    """The code paths the notebook's calls took (``run.took``: classifier, feature kind, IQA sets,
    UAP method ...) for the manifest, as ``code_paths/<notebook>.json``."""
    path = _folder(run, "code_paths") / f"{notebook}.json"
    atomic_write_text(path, json.dumps(run.took, indent=2, sort_keys=True, default=str))
    return path


def paper_vs_ours(ours: pd.DataFrame, paper: pd.DataFrame, on: list[str], keep_paper_rows: bool = False) -> pd.DataFrame:
    """Join our table with the paper's values on ``on``; paper columns are prefixed ``paper_``.
    ``keep_paper_rows``: the paper's rows that match none of ours are kept below ours (e.g. Table I's
    TID2013/CSIQ/LIVE rows beside the embedded set's), their own columns empty."""
    paper = paper.rename(columns={c: f"paper_{c}" for c in paper.columns if c not in on})
    merged = ours.merge(paper, on=on, how="left")
    if keep_paper_rows:
        extra = paper.merge(ours[on].drop_duplicates(), on=on, how="left", indicator=True)
        extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
        merged = pd.concat([merged, extra], ignore_index=True)[list(merged.columns)]
    return merged


@functools.cache
def _paper_data() -> dict:
    """``iqalib/data/paper_values.yaml``, read once (``yaml.safe_load``)."""
    import yaml
    from importlib import resources

    return yaml.safe_load(resources.files("iqalib").joinpath("data/paper_values.yaml").read_text())


def paper_counts() -> dict:
    """The paper's image counts (``counts`` in ``iqalib/data/paper_values.yaml``), for the scale box."""
    return dict(_paper_data()["counts"])


def paper_claim(claim_id: str) -> float:
    """The value of one of the paper's claims in ``iqalib/data/paper_values.yaml`` (``claims``)."""
    hit = [c["value"] for c in _paper_data()["claims"] if c["id"] == claim_id]
    if not hit:
        raise KeyError(f"no claim {claim_id!r} in paper_values.yaml")
    return float(hit[0])


def paper_values(table: str) -> tuple[pd.DataFrame, bool]:
    """The paper's numbers for ``table`` (from ``iqalib/data/paper_values.yaml``) and whether they
    were transcribed; empty cells are NaN, never guessed."""
    data = _paper_data()
    spec = data[table]
    frame = pd.DataFrame(spec["rows"], columns=spec["columns"])
    numeric = [c for c in frame.columns if c not in ("dataset", "classifier", "group")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame, bool(data.get("transcribed"))
