"""Everything a notebook shows leaves through here: tables (CSV + Markdown twin, a narrow rounded
view shown), figures (PNG, shown), verdicts (ours vs the paper), image counts and paper-vs-ours
tables, under ``outputs/<run>/`` with uniform names and one plotting style.

Owns no numbers: it writes and shows what the notebooks compute. Showing needs an IPython kernel
(JupyterLab or papermill); in a plain Python process the helpers only write files.
"""
from __future__ import annotations

import functools
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt  # no forced backend: inline in a kernel, Agg when there is no display
import pandas as pd

from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.params import Frozen, run_dir

STYLE = {"figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}
MAX_VIEW_COLUMNS = 14  # a wider table is shown narrowed (or transposed); its CSV keeps every column
VERDICTS = ("reproduced", "not reproduced", "not testable")
VERDICT_COLUMNS = ("claim", "paper", "ours", "verdict", "why")
# The paper's group order (Section V-A), for legends; other groups follow alphabetically.
GROUP_ORDER = ("original", "distorted", "adversarial", "fool_ev", "fool_gd")


def use_style() -> None:
    """One plotting style for every figure."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams.update(STYLE)


def _folder(params: Frozen, kind: str) -> Path:
    folder = run_dir(params) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_kernel() -> bool:
    """True inside an IPython shell (JupyterLab, papermill's kernel), where ``display`` shows things."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _show_markdown(text: str) -> None:
    """Rendered Markdown in the notebook and HTML report; the same text as the plain-text fallback."""
    if _in_kernel():
        from IPython.display import display

        display({"text/markdown": text, "text/plain": text}, raw=True)


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
    that went through a NaN) printed as integers."""
    numeric = pd.to_numeric(column, errors="coerce")
    if pd.api.types.is_float_dtype(column.dtype):
        whole = numeric.dropna()
        if len(whole) and (whole == whole.round()).all() and whole.abs().max() < 1e15:
            return numeric.map(lambda v: "–" if pd.isna(v) else str(int(v)))
        return numeric.map(lambda v: _fmt(float(v), digits))
    return column.map(lambda v: _fmt(v, digits))


def _key_columns(df: pd.DataFrame) -> list[str]:
    """Columns that name a row (text, categories, booleans), in table order."""
    return [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]


def table_view(df: pd.DataFrame, view_columns: Sequence[str] | None = None, digits: int = 3,
               max_columns: int = MAX_VIEW_COLUMNS) -> tuple[pd.DataFrame, str]:
    """The narrow, rounded view of ``df`` that a notebook shows, and a note on what it leaves out.

    With ``view_columns``: exactly those columns. Otherwise columns with no values are dropped,
    ``x`` and its ``x_std`` twin (or ``x_mean`` and ``x_std``) become one ``mean ± std`` column,
    bootstrap bounds (``_ci_low``/``_ci_high``) are left to the CSV, and a table still wider than
    ``max_columns`` is transposed (few rows) or cut to its key columns plus the first numeric ones.
    Every cell is a string, floats rounded to ``digits`` decimals.
    """
    if view_columns is not None:
        missing = [c for c in view_columns if c not in df.columns]
        if missing:
            raise KeyError(f"view_columns not in the table: {', '.join(map(str, missing))}")
        view = df[list(view_columns)]
        shown = pd.DataFrame({c: _format_column(view[c], digits) for c in view.columns}, index=view.index)
        left = len(df.columns) - len(view_columns)
        return shown.reset_index(drop=True), (f"Not shown: {left} more column(s)." if left else "")

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
    """A pipe table of an all-string frame (tabulate keeps the strings as they are)."""
    align = ["right" if len(frame) and frame[c].map(lambda v: bool(_NUMBER_CELL.match(str(v)))).all() else "left"
             for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def save_table(df: pd.DataFrame, name: str, params: Frozen, caption: str = "", floatfmt: str = ".3f",
               show: bool = True, view_columns: Sequence[str] | None = None, digits: int = 3) -> None:
    """Write ``tables/<name>.csv`` (every column, full precision) and its Markdown twin
    ``tables/<name>.md`` (caption on top), then show a narrow rounded view (see ``table_view``)
    under the caption. ``show=False`` only writes. Returns nothing, so a cell that ends with this
    call shows the table once."""
    folder = _folder(params, "tables")
    caption = caption.strip()  # Markdown shows "**text **" literally: no space may stand inside the bold
    atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))
    markdown = df.to_markdown(index=False, floatfmt=floatfmt)
    atomic_write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown + "\n")
    if show:
        view, note = table_view(df, view_columns, digits)
        parts = [f"**{caption}**" if caption else "", _markdown(view),
                 f"*{note} Every column is in `tables/{name}.csv`.*" if note else ""]
        _show_markdown("\n\n".join(p for p in parts if p))


def verdicts(rows: Iterable[Mapping[str, Any]], notebook: str, params: Frozen, show: bool = True) -> pd.DataFrame:
    """Ours vs the paper, one row per claim: ``{claim, paper, ours, verdict, why}`` with ``verdict``
    one of ``reproduced``, ``not reproduced``, ``not testable``.

    Writes ``tables/verdicts_<notebook>.csv`` (+ ``.md``), which the run's front page collects, and
    shows the rows under the heading "Ours vs the paper". Returns the table (assign it, or the
    notebook shows it a second time).
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        unknown = set(row) - set(VERDICT_COLUMNS)
        if unknown:
            raise ValueError(f"verdict row {i}: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(VERDICT_COLUMNS)}")
    frame = pd.DataFrame([{k: row.get(k) for k in VERDICT_COLUMNS} for row in rows], columns=list(VERDICT_COLUMNS))
    bad = sorted(set(frame["verdict"]) - set(VERDICTS), key=str)
    if bad:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {', '.join(map(repr, bad))}")
    if frame["claim"].isna().any() or (frame["claim"].astype(str).str.strip() == "").any():
        raise ValueError("every verdict row needs a claim")
    save_table(frame, f"verdicts_{notebook}", params, f"Ours vs the paper ({notebook}).", show=False)
    if show:
        shown = frame.map(lambda v: _fmt(v, 3))
        shown["verdict"] = "**" + frame["verdict"] + "**"
        _show_markdown("### Ours vs the paper\n\n" + _markdown(shown))
    return frame


# --------------------------------------------------------------------------------------------- figures

def save_figure(fig: "plt.Figure", name: str, params: Frozen, show: bool = True) -> None:
    """Write ``figures/<name>.png``, show exactly that PNG in the notebook, and close the figure
    (so the inline backend does not show it a second time). ``show=False`` only writes."""
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure expects a matplotlib Figure, got {type(fig).__name__}")
    path = _folder(params, "figures") / f"{name}.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)
    if show and _in_kernel():
        from IPython.display import Image, display

        display(Image(data=buffer.getvalue(), format="png"))


def plot_roc(roc_points: pd.DataFrame, ax: Any = None, auc: pd.DataFrame | None = None) -> "plt.Figure":
    """One ROC curve per group (``group``, ``fpr``, ``tpr`` columns, e.g. from
    ``evaluation.roc_per_group``) plus the chance diagonal; AUC in the legend when ``auc`` has
    ``group`` and ``auc`` columns. Returns the figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    aucs = {} if auc is None else dict(zip(auc["group"], auc["auc"]))
    present = {g for g in roc_points["group"] if isinstance(g, str)}
    for group in [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER)):
        g = roc_points[roc_points["group"] == group]
        label = f"{group} (AUC {aucs[group]:.3f})" if group in aucs else group
        ax.plot(g["fpr"], g["tpr"], label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false-alarm rate (held-out originals)")
    ax.set_ylabel("detection rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    return fig


def plot_vs_eps(df: pd.DataFrame, y: str, ylabel: str, title: str, hue: str = "quality_model",
                style: str = "attack", ylim: tuple[float, float] | None = None) -> "plt.Figure":
    """``y`` against the attack radius ``eps_255`` (log axis, ticks at the radii measured), one line
    per ``hue`` and ``style``, legend beside the axes so it hides no line. Returns the figure."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.lineplot(df, x="eps_255", y=y, hue=hue, style=style, markers=True, ax=ax)
    eps = sorted(df["eps_255"].unique())
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="ε (0–255 pixel units)", ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def kde_grid(df: pd.DataFrame, x: str, y: str, by: str, xlabel: str, ylabel: str, title: str,
             col_wrap: int = 5) -> "plt.Figure":
    """One bivariate KDE panel per value of ``by`` (seaborn), points overlaid; axes on [0, 1]."""
    import seaborn as sns
    import warnings

    groups = list(dict.fromkeys(df[by]))
    ncols = min(col_wrap, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.5 * nrows), sharex=True, sharey=True, squeeze=False)
    for ax, group in zip(axes.flat, groups):
        g = df[df[by] == group]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny or constant groups: the KDE is skipped, points remain
            if len(g) >= 5 and g[x].nunique() > 1 and g[y].nunique() > 1:
                sns.kdeplot(data=g, x=x, y=y, fill=True, cmap="mako", thresh=0.05, levels=8, ax=ax, clip=((0, 1), (0, 1)))
        ax.scatter(g[x], g[y], s=6, color="tab:orange", alpha=0.6, linewidths=0)
        ax.set_title(f"{group} (n={len(g)})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def gallery(rows: list[list[tuple[object, str]]], row_titles: list[str], title: str = "", size: float = 1.9) -> "plt.Figure":
    """A grid of images: ``rows`` of (image path or PIL image, caption), one row title each (Fig. 1 / App. C)."""
    from PIL import Image

    ncols = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * 1.15 * len(rows)), squeeze=False)
    for i, (row, name) in enumerate(zip(rows, row_titles)):
        for j in range(ncols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                source, caption = row[j]
                if isinstance(source, Image.Image):
                    ax.imshow(source.convert("RGB"))
                else:
                    with Image.open(source) as im:
                        ax.imshow(im.convert("RGB"))
                ax.set_title(caption, fontsize=7)
        axes[i, 0].text(-0.08, 0.5, name, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- counts, paper

def save_counts(name: str, counts: Mapping[str, Any], params: Frozen) -> Path:
    """Image counts (``{"used": N, "skipped": {reason: n}}``) for the manifest, under ``counts/``."""
    path = _folder(params, "counts") / f"{name}.json"
    atomic_write_text(path, json.dumps(dict(counts), indent=2, sort_keys=True))
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
