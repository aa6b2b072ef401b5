"""report: tables and figures are written in full and shown narrow; verdicts; ROC plot."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from iqalib import figures, params, report
from tests.conftest import REPO


@pytest.fixture
def P(tmp_path):
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "outputs"), run_name="reporttest")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return params.run_dir(params.load(path))  # report writes under a run's folder


@pytest.fixture
def shown(monkeypatch):
    """What the helpers would display in a kernel (display() replaced by a recorder)."""
    import IPython.display

    seen = []
    monkeypatch.setattr(report, "_in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: seen.append(obj))
    return seen


def _wide(rows=5, cols=20):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"group": [f"g{i}" for i in range(rows)], **{f"m{j}": rng.random(rows) for j in range(cols)}})


def test_csv_keeps_every_column_and_full_precision(P):
    df = _wide()
    report.save_table(df, "wide", P, "A wide table.", show=False)
    back = pd.read_csv(P / "tables" / "wide.csv")
    pd.testing.assert_frame_equal(back, df)
    assert (P / "tables" / "wide.md").read_text().startswith("A wide table.\n\n|")


def test_shown_view_is_narrow_rounded_and_captioned(P, shown):
    report.save_table(_wide(rows=5, cols=20), "wide", P, "A wide table.")
    (bundle,) = shown
    text = bundle["text/markdown"]
    assert text.startswith("**A wide table.**") and "tables/wide.csv" in text
    header = text.splitlines()[2]
    assert header.count("|") - 1 <= report.MAX_VIEW_COLUMNS  # transposed: one column per row of the table
    assert "Transposed" in text
    assert all(len(cell.strip().split(".")[-1]) <= 3 for cell in text.splitlines()[4].split("|")[2:-1])


def test_caption_with_edge_spaces_stays_bold(P, shown):
    report.save_table(_wide(2, 2), "spaced", P, "Table II. Caption built from parts. ")
    assert shown[0]["text/markdown"].startswith("**Table II. Caption built from parts.**\n")
    assert (P / "tables" / "spaced.md").read_text().startswith("Table II. Caption built from parts.\n\n|")


def test_long_and_wide_view_keeps_key_columns():
    view, note = report.table_view(_wide(rows=40, cols=20))
    assert list(view.columns[:1]) == ["group"] and len(view.columns) == report.MAX_VIEW_COLUMNS
    assert "more column" in note and len(view) == 40


def test_view_folds_std_twins_and_leaves_bounds_and_empty_columns_to_the_csv():
    df = pd.DataFrame({"group": ["a", "b"], "rate": [0.12345, 0.5], "rate_std": [0.01, np.nan],
                       "rate_ci_low": [0.1, 0.4], "rate_ci_high": [0.2, 0.6], "n": [10, 20],
                       "paper_rate": [np.nan, np.nan]})
    view, note = report.table_view(df)
    assert list(view.columns) == ["group", "rate ± std", "n"]
    assert view["rate ± std"].tolist() == ["0.123 ± 0.010", "0.500"]
    assert view["n"].tolist() == ["10", "20"]
    assert "2 confidence bound(s)" in note and "paper_rate" in note


def test_whole_counts_print_as_integers_and_whole_shares_keep_their_decimals():
    df = pd.DataFrame({"model": ["a", "b"], "count": [12.0, np.nan], "share": [1.0, 1.0], "rate": [0.875, 1.0]})
    view, _ = report.table_view(df)
    assert view["count"].tolist() == ["12", "–"]
    assert view["share"].tolist() == ["1.000", "1.000"], "a rate of 1 beside 0.875 reads as the same kind"
    assert view["rate"].tolist() == ["0.875", "1.000"]


def test_view_columns_pick_exactly_those(P, shown):
    df = _wide(rows=3, cols=20)
    report.save_table(df, "picked", P, view_columns=["group", "m3"], digits=2)
    view, note = report.table_view(df, ["group", "m3"], digits=2)
    assert list(view.columns) == ["group", "m3"] and "19 more column(s)" in note
    text = shown[0]["text/markdown"]
    assert "m3" in text and "m4" not in text and "| g0" in text
    with pytest.raises(KeyError, match="nope"):
        report.table_view(df, ["group", "nope"])


def test_save_figure_writes_shows_the_png_and_closes(P, shown):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert report.save_figure(fig, "line", P) is None  # nothing for a cell to echo
    png = (P / "figures" / "line.png").read_bytes()
    assert png.startswith(b"\x89PNG") and not plt.fignum_exists(fig.number)
    (image,) = shown
    assert image.data == png


def test_helpers_only_write_outside_a_kernel(P, capsys):
    fig, _ = plt.subplots()
    report.save_figure(fig, "quiet", P)
    report.save_table(_wide(2, 2), "quiet", P, "caption")
    assert capsys.readouterr().out == ""


def test_verdicts_are_saved_and_shown_under_one_heading(P, shown):
    rows = [{"claim": "quality drops with distortion level", "paper": "yes", "ours": "Spearman -0.98",
             "verdict": "reproduced", "why": "held-out photos"},
            {"claim": "Table V detection rates", "paper": 0.9, "ours": None, "verdict": "not testable",
             "why": "paper values not transcribed"}]
    table = report.verdicts(rows, "01", P)
    assert list(table.columns) == list(report.VERDICT_COLUMNS) and len(table) == 2
    saved = pd.read_csv(P / "tables" / "verdicts_01.csv")
    assert saved["claim"].tolist() == [r["claim"] for r in rows] and saved["verdict"].tolist() == ["reproduced", "not testable"]
    (bundle,) = shown
    assert bundle["text/markdown"].startswith("### Ours vs the paper") and "**reproduced**" in bundle["text/markdown"]


@pytest.mark.parametrize("row, match", [
    ({"claim": "x", "verdict": "maybe"}, "verdict must be one of"),
    ({"claim": "x", "verdict": "reproduced", "score": 1}, "unknown key"),
    ({"claim": "", "verdict": "reproduced"}, "needs a claim"),
])
def test_bad_verdict_rows_are_refused(P, row, match):
    with pytest.raises(ValueError, match=match):
        report.verdicts([row], "01", P)


def test_plot_roc_one_curve_per_group_in_paper_order():
    fpr = np.linspace(0, 1, 11)
    points = pd.concat([pd.DataFrame({"group": g, "fpr": fpr, "tpr": np.sqrt(fpr)}) for g in ("fool_gd", "zzz", "distorted")])
    auc = pd.DataFrame({"group": ["distorted", "fool_gd"], "auc": [0.7, 0.9]})
    fig = figures.roc(points, auc=auc)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels[:3] == ["distorted (AUC 0.700)", "fool_gd (AUC 0.900)", "zzz"] and len(labels) == 4  # + chance
    plt.close(fig)
    fig, ax = plt.subplots()
    assert figures.roc(points, ax=ax) is fig
    plt.close(fig)


# The cells the paper leaves empty: "-" (fooling images have no true class), a blank, or a row that
# comes from the prose with one value only (iqalib/data/paper_values.yaml says which, per cell).
PAPER_BLANKS = {("table4", "adversarial", "fit_accuracy_q030"), ("table4", "fool_ev", "accuracy"),
                ("table4", "fool_ev", "fit_accuracy_q030"), ("table4", "fool_gd", "accuracy"),
                ("table4", "fool_gd", "fit_accuracy_q030"), ("table5", "fool_ev", "fit_accuracy"),
                ("table5", "fool_gd", "fit_accuracy"), ("table5", "original", "fit_accuracy")}


def test_paper_values_have_no_empty_cell_but_the_papers_own_blanks():
    import yaml
    from importlib import resources

    data = yaml.safe_load(resources.files("iqalib").joinpath("data/paper_values.yaml").read_text())
    empty = set()
    for name in ("table1", "table2", "table3", "table4", "table5"):
        frame, transcribed = report.paper_values(name)
        assert transcribed and len(frame)
        key = "group" if "group" in frame else "dataset"
        for _, row in frame.iterrows():
            for column, value in row.items():
                if pd.isna(value):
                    empty.add((name, row[key], column))
    assert empty == PAPER_BLANKS
    assert all(isinstance(v, (int, float)) and v == v for v in data["counts"].values())
    assert all(c["text"] and c["value"] == c["value"] for c in data["claims"])


def test_a_pipe_inside_a_cell_does_not_break_the_shown_table(P, shown):
    import mistune  # nbconvert's Markdown renderer: the HTML reports are rendered with it

    rows = [{"claim": "the score moves", "paper": "yes", "ours": "mean |Δs| 0.32 vs 0.05", "verdict": "reproduced",
             "why": "rule: |Δs| ≥ 5×"}]
    report.verdicts(rows, "05", P)
    (bundle,) = shown
    html = mistune.create_markdown(plugins=["table"])(bundle["text/markdown"])
    assert html.count("<tr>") == 2 and "mean |Δs| 0.32" in html and "|:-" not in html


def test_a_rehearsal_says_so_in_every_caption(tmp_path, monkeypatch):
    import pandas as pd

    from iqalib import report

    class _Run:
        folder = tmp_path

    monkeypatch.setenv("IQALIB_REHEARSAL", "1")
    report.save_table(pd.DataFrame({"a": [1]}), "t", _Run(), "Caption.", show=False)
    assert (tmp_path / "tables" / "t.md").read_text().startswith("[Rehearsal of paper.yaml: random weights")
    monkeypatch.delenv("IQALIB_REHEARSAL")
    report.save_table(pd.DataFrame({"a": [1]}), "t", _Run(), "Caption.", show=False)
    assert (tmp_path / "tables" / "t.md").read_text().startswith("Caption.")


def test_vs_eps_facets_and_dodges_so_equal_rates_stay_visible():
    """Four models at the same rate at every radius: one panel per attack, and at each radius every
    model's point at its own x (dodged on the log axis), none hidden under another."""
    rows = [{"quality_model": m, "attack": a, "eps_255": e, "attack_success_rate": 1.0}
            for m in ("plain", "nt", "dms", "fs") for a in ("oblivious", "strong") for e in (0.5, 1.0, 2.0)]
    fig = figures.vs_eps(pd.DataFrame(rows), "attack_success_rate", "success", "t", facet="attack", dodge=0.15)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["oblivious", "strong"]
    xs = [tuple(line.get_xdata()) for line in panels[0].get_lines() if len(line.get_xdata()) == 3]
    assert len(xs) == 4 and len({x[0] for x in xs}) == 4  # four models, four distinct x at ε = 0.5
    assert all(abs(np.log2(x[0] / 0.5)) <= 0.15 * 1.5 + 1e-9 for x in xs)  # each within the dodge of its ε
    plt.close(fig)


@pytest.mark.parametrize("groups, shape", [(["distorted", "adversarial", "fool_ev", "fool_gd"], (2, 2)),
                                           (["distorted", "adversarial", "fool_ev"], (1, 3))])
def test_the_roc_grid_folds_four_groups_into_two_rows(groups, shape):
    points = pd.DataFrame([{"group": g, "detector": d, "fpr": x, "tpr": x ** 0.5}
                           for g in groups for d in ("fit_for_task", "msp") for x in (0.0, 0.5, 1.0)])
    fig = figures.roc_grid(points, "t")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(groups) and [ax.get_title() for ax in shown] == groups
    rows = sorted({round(ax.get_position().y0, 2) for ax in shown}, reverse=True)
    assert (len(rows), len(shown) // len(rows)) == shape
    assert fig.get_size_inches()[0] <= 3.6 * shape[1] + 1e-9  # 2 x 2: about 720 px at 100 dpi, not 1,700
    plt.close(fig)
