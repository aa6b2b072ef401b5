"""Everything a notebook shows leaves through here: tables (CSV + Markdown twin), figures (PNG),
image counts, and paper-vs-ours tables, under ``outputs/<run>/`` with uniform names and one style.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # headless (papermill, CI); inline display in Jupyter still works via display()
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from iqalib.cache import atomic_write_bytes, atomic_write_text  # noqa: E402
from iqalib.params import Frozen, run_dir  # noqa: E402

STYLE = {"figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}


def use_style() -> None:
    """One plotting style for every figure."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams.update(STYLE)


def _folder(params: Frozen, kind: str) -> Path:
    folder = run_dir(params) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_table(df: pd.DataFrame, name: str, params: Frozen, caption: str = "", floatfmt: str = ".3f") -> Path:
    """``tables/<name>.csv`` and a Markdown twin ``tables/<name>.md`` (caption on top)."""
    folder = _folder(params, "tables")
    path = folder / f"{name}.csv"
    atomic_write_text(path, df.to_csv(index=False))
    markdown = df.to_markdown(index=False, floatfmt=floatfmt) if _has_tabulate() else df.to_string(index=False)
    atomic_write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown + "\n")
    return path


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def save_figure(fig: "plt.Figure", name: str, params: Frozen) -> Path:
    """``figures/<name>.png``; the figure stays open so the notebook can still show it."""
    import io

    path = _folder(params, "figures") / f"{name}.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_counts(name: str, counts: Mapping[str, Any], params: Frozen) -> Path:
    """Image counts (``{"used": N, "skipped": {reason: n}}``) for the manifest, under ``counts/``."""
    path = _folder(params, "counts") / f"{name}.json"
    atomic_write_text(path, json.dumps(dict(counts), indent=2, sort_keys=True))
    return path


def paper_vs_ours(ours: pd.DataFrame, paper: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """Join our table with the paper's values on ``on``; paper columns are prefixed ``paper_``."""
    paper = paper.rename(columns={c: f"paper_{c}" for c in paper.columns if c not in on})
    return ours.merge(paper, on=on, how="left")


def summarize(values: pd.Series) -> dict[str, float]:
    """median / mean / std (ddof=1) / count of a numeric series, NaNs dropped."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return {"median": float(v.median()) if len(v) else float("nan"), "mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "count": int(len(v))}


def paper_values(table: str) -> tuple[pd.DataFrame, bool]:
    """The paper's numbers for ``table`` (from ``iqalib/data/paper_values.yaml``) and whether they
    were transcribed; empty cells are NaN, never guessed."""
    import yaml
    from importlib import resources

    data = yaml.safe_load(resources.files("iqalib").joinpath("data/paper_values.yaml").read_text())
    spec = data[table]
    frame = pd.DataFrame(spec["rows"], columns=spec["columns"])
    numeric = [c for c in frame.columns if c not in ("dataset", "classifier", "group")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame, bool(data.get("transcribed"))


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


def group_summary(df: pd.DataFrame, column: str, groups: list[str]) -> pd.DataFrame:
    """median / mean / std / count of ``column`` per group, in the given order (Tables II and III)."""
    rows = [{"group": g, **summarize(df.loc[df["group"] == g, column])} for g in groups]
    return pd.DataFrame(rows)
