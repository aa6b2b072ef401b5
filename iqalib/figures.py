"""The report's figures, one plotting style: each function takes a table the notebooks computed
and returns a matplotlib figure for ``report.save_figure`` (which writes and shows it). Owns no
numbers and writes nothing.
"""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt  # no forced backend: inline in a kernel, Agg when there is no display
import numpy as np
import pandas as pd

from iqalib.feature_table import GROUPS


STYLE = {"figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}


def use_style() -> None:
    """One plotting style for every figure."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams.update(STYLE)


def roc(roc_points: pd.DataFrame, ax: Any = None, auc: pd.DataFrame | None = None) -> "plt.Figure":
    """One ROC curve per group (``group``, ``fpr``, ``tpr`` columns, e.g. from
    ``evaluation.roc_per_group``) plus the chance diagonal; AUC in the legend when ``auc`` has
    ``group`` and ``auc`` columns. Returns the figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    aucs = {} if auc is None else dict(zip(auc["group"], auc["auc"]))
    present = {g for g in roc_points["group"] if isinstance(g, str)}
    for group in [g for g in GROUPS if g in present] + sorted(present - set(GROUPS)):
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


def vs_eps(df: pd.DataFrame, y: str, ylabel: str, title: str, hue: str = "quality_model",
           style: str = "attack", ylim: tuple[float, float] | None = None, facet: str | None = None,
           dodge: float = 0.0) -> "plt.Figure":
    """``y`` against the attack radius ``eps_255`` (log axis, ticks at the radii measured), one line
    per ``hue`` and ``style``, legend beside the axes so it hides no line. ``facet``: one panel per
    value of that column instead of a line style. ``dodge``: each ``hue`` level's points shifted
    by this fraction of a factor 2 along the log axis, side by side, so that equal values (rates
    of a few images often are) stay visible instead of hiding one another. Returns the figure."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    panels = [None] if facet is None else list(dict.fromkeys(df[facet]))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 if facet is None else 3.6 * len(panels), 3.8),
                             sharey=True, squeeze=False)
    levels = list(dict.fromkeys(df[hue]))
    shift = {level: 2.0 ** (dodge * (i - (len(levels) - 1) / 2)) for i, level in enumerate(levels)}
    eps = sorted(df["eps_255"].unique())
    marks = {"markers": True} if facet is None else {"marker": "o", "markersize": 5}
    for ax, panel in zip(axes[0], panels):
        part = df if panel is None else df[df[facet] == panel]
        part = part.assign(eps_255=part["eps_255"] * part[hue].map(shift))
        sns.lineplot(part, x="eps_255", y=y, hue=hue, hue_order=levels, style=None if facet else style,
                     ax=ax, legend=ax is axes[0][-1], **marks)
        ax.set_xscale("log")
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="ε (0–255 pixel units)", ylabel=ylabel, title=title if panel is None else str(panel))
        if ylim is not None:
            ax.set_ylim(*ylim)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if facet is not None:
        fig.suptitle(title)
        fig.tight_layout()
    return fig


def _span(values: pd.Series, lo: float = 0.0, hi: float = 1.0, pad: float = 0.05) -> tuple[float, float]:
    """The data's range padded by ``pad`` of itself, inside [lo, hi]: a density squeezed into a
    tenth of a fixed 0-1 axis shows nothing."""
    a, b = float(values.min()), float(values.max())
    margin = max((b - a) * pad, 0.02)
    return max(lo, a - margin), min(hi, b + margin)


def kde_grid(df: pd.DataFrame, x: str, y: str, by: str, xlabel: str, ylabel: str, title: str,
             col_wrap: int = 5) -> "plt.Figure":
    """One bivariate KDE panel per value of ``by`` (seaborn), points overlaid; the x axis (a
    quality score) spans the data, the y axis (a similarity) is 0-1."""
    import seaborn as sns
    import warnings

    groups = list(dict.fromkeys(df[by]))
    ncols = min(col_wrap, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(2.6 * ncols, 4.2), 2.5 * nrows + 0.3), sharex=True,
                             sharey=True, squeeze=False)
    xlim = _span(df[x]) if len(df) else (0, 1)
    for ax, group in zip(axes.flat, groups):
        g = df[df[by] == group]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny or constant groups: the KDE is skipped, points remain
            if len(g) >= 5 and g[x].nunique() > 1 and g[y].nunique() > 1:
                sns.kdeplot(data=g, x=x, y=y, fill=True, cmap="mako", thresh=0.05, levels=8, ax=ax, clip=(xlim, (0, 1)))
        ax.scatter(g[x], g[y], s=6, color="tab:orange", alpha=0.6, linewidths=0)
        ax.set_title(f"{group} (n={len(g)})")
        ax.set_xlim(*xlim)
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


def iqa_scatter(held: pd.DataFrame, target: str, title: str) -> "plt.Figure":
    """Predicted quality against the subjective score of held-out rows, per distortion."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    sns.scatterplot(data=held, x="mos", y="pred", hue="distortion", s=8, alpha=0.6, ax=ax, legend="brief")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=target, ylabel="predicted quality (held-out head)", title=title)
    ax.legend(fontsize=6, markerscale=1.5, loc="lower right")
    return fig


def quality_vs_level(held: pd.DataFrame, target: str) -> "plt.Figure":
    """Mean predicted and subjective score against distortion level, one panel per distortion."""
    import seaborn as sns

    levels = held.groupby(["distortion", "level"])[["pred", "mos"]].mean().reset_index()
    grid = sns.relplot(data=levels.melt(id_vars=["distortion", "level"], value_vars=["pred", "mos"], var_name="score"),
                       x="level", y="value", hue="score", col="distortion", col_wrap=5, kind="line", marker="o",
                       height=1.9, aspect=1.0).set(ylim=(0, 1), xticks=sorted(levels["level"].unique()))
    grid.figure.suptitle(f"Predicted quality (pred) and {target} (mos) against distortion level, held-out references",
                         y=1.02)
    return grid.figure


def feature_shift(shift: pd.DataFrame) -> "plt.Figure":
    """``probes.feature_shift``'s table as bars: length of the mean change per tap and statistic,
    and its cosine with the change Gaussian noise makes, per perturbation."""
    import seaborn as sns

    long = shift.assign(where=shift["tap"] + " " + shift["statistic"]).melt(
        id_vars=["where", "perturbation"], value_vars=["shift", "cosine_to_reference"], var_name="measure")
    long["measure"] = long["measure"].map({"shift": "length of the mean change (spread units)",
                                           "cosine_to_reference": "cosine with the change noise makes"})
    grid = sns.catplot(data=long, x="where", y="value", hue="perturbation", col="measure", kind="bar", sharey=False,
                       height=2.8, aspect=1.6)
    grid.set_titles("{col_name}").set_xticklabels(rotation=60, ha="right").set_axis_labels("", "")
    grid.figure.suptitle("Early-layer statistics: UAP vs control maps of its amplitude (Original group)", y=1.03)
    return grid.figure


def by_level(table: pd.DataFrame, threshold: float) -> "plt.Figure":
    """Baseline-2's rejection rate and the classifier's accuracy against distortion level."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
    for name, g in table.groupby("distortion"):
        axes[0].plot(g["level"], g["detection_rate"], marker="o", label=name)
        axes[1].plot(g["level"], g["accuracy"], marker="o", label=name)
    axes[0].set(xlabel="level", ylabel=f"rejected (quality < {threshold})", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="level", ylabel="classifier accuracy", ylim=(-0.02, 1.02))
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(sorted(table["level"].unique()))  # levels are whole numbers: no tick at 1.5
    fig.tight_layout()
    return fig


def tsne(points: np.ndarray, groups: pd.Series) -> "plt.Figure":
    """Fig. 4: the t-SNE points of the detector's inputs, one colour per group (paper order)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for g in GROUPS:
        m = (groups == g).to_numpy()
        ax.scatter(points[m, 0], points[m, 1], s=8, alpha=0.7, label=f"{g} ({m.sum()})")
    ax.legend(fontsize=7)
    ax.set(title="t-SNE of [top-1..top-5, quality]", xticks=[], yticks=[])
    return fig


def robust_training(nt_log: pd.DataFrame, denoiser_log: pd.DataFrame, rank_log: pd.DataFrame) -> "plt.Figure":
    """Per step: NT training's input-gradient norm; the denoiser's MSE against doing nothing; the
    share of image pairs the metric ranks out of order behind the denoiser during rank fine-tuning."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    nt_log.plot(x="step", y="grad_l1", ax=axes[0], legend=False, title="NT: ‖∇f‖₁ of the batch (normalised input)")
    axes[0].set_ylabel("‖∇ₓf‖₁ where the difference is taken")
    denoiser_log.plot(x="step", y=["mse", "noisy_mse"], ax=axes[1], logy=True, title="Denoiser (MSE): vs doing nothing")
    axes[1].set_ylabel("MSE to the clean image (log)")
    axes[1].legend(["denoised", "noisy input (doing nothing)"], fontsize=7)
    if len(rank_log):
        rank_log.assign(violated=rank_log["violated"].rolling(10, min_periods=1).mean()).plot(
            x="step", y="violated", ax=axes[2], legend=False, ylim=(0, None),
            title="Rank fine-tuning: pairs out of order\n(rolling mean of 10 steps)")
    axes[2].set_ylabel("share of pairs")
    fig.tight_layout()
    return fig


def nt_slopes(slopes: pd.DataFrame, attacked_images: pd.DataFrame) -> "plt.Figure":
    """What NT's penalty sees against what the attack finds, per model (``robust_nt_slopes`` and
    ``robust_attack_images``): the mean rise of the score over one step along sign(∇f) at the clean
    image, against the step (solid), its first-order prediction step × ‖∇f‖₁ (dashed), and the
    ten-step I-FGSM's mean rise at each ε (dotted), NT's finite-difference step marked."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    up = attacked_images[attacked_images["attack"] == "ifgsm_up"]
    top, bottom = 0.0, 0.0
    for (model, part), color in zip(slopes.groupby("quality_model", sort=False), ("C0", "C1")):
        part = part.sort_values("step_255")
        ax.plot(part["step_255"], part["rise"], "o-", color=color, label=f"{model}: one step along sign ∇f")
        ax.plot(part["step_255"], part["step"] * part["grad_l1"], "--", color=color, alpha=0.6, label=f"{model}: step × ‖∇f‖₁")
        ten = up[up["quality_model"] == model].assign(rise=lambda d: d["attacked"] - d["clean"]) \
            .groupby("eps_255")["rise"].mean()
        ax.plot(ten.index, ten.to_numpy(), "s:", color=color, label=f"{model}: ten-step I-FGSM up, at ε")
        top, bottom = max(top, part["rise"].max(), ten.max()), min(bottom, part["rise"].min(), ten.min())
    h = slopes.loc[slopes["nt_h"], "step_255"].iloc[0]
    ax.axvline(h, color="grey", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.annotate("NT's h", (h, 0), xytext=(3, 3), textcoords="offset points", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set(xlabel="step or ε (0–255 pixel units)", ylabel="mean rise of the score", ylim=(1.15 * bottom, 1.15 * top),
           title="What NT's finite difference sees, and what the attack finds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def certified_widths(certified: pd.DataFrame) -> "plt.Figure":
    """Mean certified interval width against the ℓ2 radius, per quality model."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sns.lineplot(certified, x="radius", y="interval_width_mean", hue="quality_model", marker="o", ax=ax)
    ax.set(xlabel="ℓ2 radius (on [0, 1] pixels)", ylabel="mean certified interval width", ylim=(0, 1.05),
           title="Certified interval vs radius")
    return fig


def _kind_of(row: Any) -> str:
    """A gallery label: the group, or for a distorted image its distortion and level."""
    distortion = getattr(row, "distortion", None)
    return f"{distortion} L{int(row.level)}" if isinstance(distortion, str) and distortion else row.group


def examples(picked: dict[str, pd.DataFrame], pictures: dict[str, list], title: str) -> "plt.Figure":
    """Appendix C: a gallery row per kind of decision, each image with its predicted quality and top-1."""
    rows = [[(im, f"{_kind_of(r)}\nq={r.quality:.2f} top1={r.top1:.2f}") for im, r in zip(pictures[kind], rows.itertuples())]
            for kind, rows in picked.items()]
    return gallery(rows, list(picked), title)


#: How each detector is drawn in the comparison figures: ours stand out, peers share thin lines.
OURS_STYLE = {"fit_for_task": {"color": "black", "linewidth": 2.2},
              "fit_for_task+": {"color": "crimson", "linewidth": 2.2},
              "msp+quality": {"color": "darkorange", "linewidth": 1.6, "linestyle": "--"},
              "no detector": {"color": "grey", "linewidth": 1.0, "linestyle": ":"}}


def _detector_styles(names: list[str]) -> dict[str, dict]:
    palette = plt.get_cmap("tab10").colors
    peers = [n for n in names if n not in OURS_STYLE]
    return {**{n: {"color": palette[i % 10], "linewidth": 1.0} for i, n in enumerate(peers)},
            **{n: s for n, s in OURS_STYLE.items() if n in names}}


def roc_grid(points: pd.DataFrame, title: str) -> "plt.Figure":
    """One panel per group, one ROC curve per detector (``detector, group, fpr, tpr``, e.g. from
    ``comparison.roc_points``); ours drawn thick; one legend for all panels."""
    present = [g for g in GROUPS if g in set(points["group"])]
    names = list(dict.fromkeys(points["detector"]))
    styles = _detector_styles(names)
    # four panels as 2 x 2: in a row they are 1,700 px wide, shrunk below half in a report's column
    ncols = 2 if len(present) == 4 else len(present)
    nrows = -(-len(present) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows + 1.1), sharex=True, sharey=True,
                             squeeze=False)
    for ax, group in zip(axes.flat, present):
        for name in names:
            g = points[(points["group"] == group) & (points["detector"] == name)]
            ax.plot(g["fpr"], g["tpr"], label=name, **styles[name])
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.6)
        ax.set_title(group)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    for ax in axes[-1]:
        ax.set_xlabel("false-alarm rate (held-out originals)")
    for ax in axes[:, 0]:
        ax.set_ylabel("detection rate")
    for ax in axes.flat[len(present):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_columns = min(4 if nrows > 1 else 6, len(names))
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, frameon=False)
    fig.suptitle(title)
    legend_inches = 0.22 * -(-len(names) // legend_columns) + 0.15
    fig.tight_layout(rect=(0, legend_inches / fig.get_size_inches()[1], 1, 1))
    return fig


def risk_coverage(curves: pd.DataFrame, paper: pd.DataFrame | None, title: str) -> "plt.Figure":
    """One panel per labelled group: accuracy of the accepted images against coverage, per detector
    (``detector, group, coverage, accuracy``); the paper's detector as a star where ``paper``
    (``group, coverage, accuracy``) has the group."""
    present = list(dict.fromkeys(curves["group"]))
    names = list(dict.fromkeys(curves["detector"]))
    styles = _detector_styles(names)
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.6), squeeze=False)
    for ax, group in zip(axes[0], present):
        for name in names:
            g = curves[(curves["group"] == group) & (curves["detector"] == name)]
            ax.plot(g["coverage"], g["accuracy"], label=name, **styles[name])
        if paper is not None and group in set(paper["group"]):
            p = paper[paper["group"] == group].iloc[0]
            ax.plot([p["coverage"]], [p["accuracy"]], marker="*", markersize=13, color="gold",
                    markeredgecolor="black", linestyle="none", label="paper (Table V)")
        ax.set_title(group)
        ax.set_xlabel("coverage (share of images accepted)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("accuracy of accepted images")
    handles: dict[str, Any] = {}  # one legend entry per label over all panels (the star is in two)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(7, len(handles)), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig
