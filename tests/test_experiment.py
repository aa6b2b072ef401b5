"""The experiment floor: the run's captions and settings, the one job builder of the groups (a row
built and the same row read back from features.csv make the same job), features.csv written and
read with its types, and the detector study's tables equal to the functions they wrap."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from iqalib import evaluation, experiment, feature_table, groups, images, params, peer_experiment, tables
from tests.conftest import REPO
from tests.test_detector import N_SPLITS, features, scores, splits  # noqa: F401  (shared module fixtures)


def _run(tmp_path, name: str = "smoke", **changes) -> experiment.Run:
    raw = yaml.safe_load((REPO / "params" / f"{name}.yaml").read_text())
    raw.update(outputs_dir=str(tmp_path / "outputs"), run_name="exptest", **changes)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    p = params.load(path)
    return experiment.Run(p, params.run_dir(p), progress=False)


# ------------------------------------------------------------------------------ the run


def test_distinct_images_counts_files_by_content_and_distorted_rows_by_their_setting(tmp_path):
    for name, colour in (("a.png", 0), ("b.png", 0), ("c.png", 255)):  # a and b: one image twice
        images.Image.new("RGB", (8, 8), (colour, 0, 0)).save(tmp_path / name)
    names = ("a.png", "b.png", "c.png", "a.png", "b.png", "c.png", "c.png", "c.png")
    table = pd.DataFrame({
        "group": ["original", "original", "original", "fool_ev", "fool_ev", "distorted", "distorted", "distorted"],
        "path": [str(tmp_path / n) for n in names],
        "file_digest": [images.file_digest(tmp_path / n) for n in names],
        "distortion": [None, None, None, None, None, "jpeg", "jpeg", "gaussian_blur"],
        "level": [np.nan, np.nan, np.nan, np.nan, np.nan, 1.0, 2.0, 1.0]})
    table["distortion"] = table["distortion"].astype("str")
    assert groups.distinct_images(table).to_dict() == {"original": 2, "fool_ev": 1, "distorted": 3}
    one = table.assign(file_digest="0" * 16)  # the table's digests are read, not the files hashed again
    assert groups.distinct_images(one).to_dict() == {"original": 1, "fool_ev": 1, "distorted": 3}



def test_captions_say_pseudo_mos_exactly_when_the_quality_model_trains_on_the_embedded_set(tmp_path):
    embedded = _run(tmp_path)
    assert embedded.pseudo_mos and embedded.has_embedded_iqa
    assert embedded.data_note.startswith("Quality model trained on the embedded pseudo-MOS set")
    assert embedded.target == f"pseudo-MOS ({embedded.params.embedded_iqa.metric})"
    assert embedded.score_label("embedded") == "pseudo-MOS (HaarPSI)"
    assert embedded.score_label("tid2013") == "MOS (normalised)"

    paper = experiment.Run(params.load(REPO / "params" / "paper.yaml"), tmp_path, progress=False)
    assert not paper.pseudo_mos and paper.data_note == "" and paper.target == "MOS"
    assert paper.thresholds == [0.3, 0.35]


def test_baseline_thresholds_add_the_matched_one_only_when_new(tmp_path):
    run = _run(tmp_path)
    table = pd.DataFrame({"group": ["original"] * 100, "quality": np.linspace(0.0, 0.99, 100)})
    thresholds, matched = experiment.baseline_thresholds(run, table, 0.1)
    assert matched == tables.matched_threshold(table, 0.1) and thresholds == [*run.thresholds, matched]
    table["quality"] = 0.3  # every original at 0.3: the matched threshold is the run's first
    assert experiment.baseline_thresholds(run, table, 0.1) == (run.thresholds, 0.3)


# ------------------------------------------------------------------------------ the groups' jobs


def _record() -> images.ImageRecord:
    path = sorted(images.embedded_folder().glob("imagenet_*.jpg"))[0]
    return images.ImageRecord(path=str(path), image_id="photo0:center", source_id="photo0", view="center", label=3)


def test_distorted_rows_cover_every_type_and_level_seeded_by_the_parent(tmp_path):
    run = _run(tmp_path)
    record = _record()
    rows = groups.distorted_rows(run, record)
    d = run.params.distortions
    assert len(rows) == len(d.types) * len(d.levels)
    assert {(r["distortion"], r["level"]) for r in rows} == {(t, int(lv)) for t in d.types for lv in d.levels}
    assert {r["parent_id"] for r in rows} == {record.image_id} and {r["view"] for r in rows} == {"center"}
    job = groups.jobs(run, rows[:1])[0]
    assert job.distort_in_view and job.noise_id == record.image_id and job.seed == run.params.seed
    assert (job.min_side, job.allow_grey) == (90, False)  # the photo rules hold for a photo's distortions


def test_a_row_read_back_from_features_csv_makes_the_job_that_built_it(tmp_path):
    run = _run(tmp_path)
    record = _record()
    built = [*groups.original_rows([record]), *groups.distorted_rows(run, record)[:3],
             groups._row("fool_gd", "fool_gd_0000", record.path, attack="fool_gd", seed=run.params.seed)]
    table = pd.DataFrame(built).assign(file_digest=images.file_digest(record.path),
                                       path=lambda t: [run.portable(p) for p in t["path"]],
                                       top1=np.float32(0.5), top2=np.float32(0.2), top3=np.float32(0.1),
                                       top4=np.float32(0.05), top5=np.float32(0.01), pred=3,
                                       quality=np.float32(0.7), correct=True,
                                       correct_vs_clean=pd.array([True, False, True, True, pd.NA], dtype="boolean"))
    assert all(":" in p and not p.startswith("/") for p in table["path"])
    feature_table.write(table, tmp_path / "features.csv")
    back = feature_table.read(tmp_path / "features.csv")
    assert groups.jobs(run, back) == groups.jobs(run, built)
    assert groups.jobs(run, back)[-1].allow_grey  # generated images are taken as they are


def test_features_csv_reads_back_as_written(tmp_path):
    table = pd.DataFrame({
        "group": ["original", "distorted", "fool_ev"], "image_id": ["a", "a|blur|3", "fool_ev_0"],
        "parent_id": [None, "a", None], "source_id": ["s1", "s1", None], "view": ["full", "full", "full"],
        "distortion": [None, "blur", None], "level": [np.nan, 3.0, np.nan], "attack": [None, None, "fool_ev"],
        "seed": [np.nan, 0.0, 0.0], "label": [7.0, 7.0, np.nan], "path": ["run:x.png", "run:x.png", "run:y.png"],
        "file_digest": ["0123456789abcdef", "0123456789abcdef", "00000000000000e5"],
        **{f"top{k}": np.array([0.1234567, 1 / 3, 2 / 3], np.float32) / k for k in range(1, 6)},
        "pred": np.array([7, 8, 1], np.int64), "quality": np.array([0.123456789, np.nan, 0.5], np.float32),
        "correct": [True, False, False], "correct_vs_clean": pd.array([True, False, pd.NA], dtype="boolean")})
    feature_table.write(table, tmp_path / "features.csv")
    pd.testing.assert_frame_equal(feature_table.read(tmp_path / "features.csv"), table)


def test_reading_a_missing_or_stale_features_csv_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_adversarial_quality"):
        feature_table.read(tmp_path / "features.csv")
    (tmp_path / "features.csv").write_text("group,image_id\noriginal,a\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        feature_table.read(tmp_path / "features.csv")


def test_a_table_whose_images_were_made_again_asks_for_notebook_02(tmp_path):
    run = _run(tmp_path)
    folder = run.folder / "attacks" / "fool_gd"
    folder.mkdir(parents=True)
    for k, colour in enumerate((0, 255)):
        images.Image.new("RGB", (8, 8), (colour, 0, 0)).save(folder / f"{k:04d}.png")
    paths = [folder / "0000.png", folder / "0001.png"]
    table = pd.DataFrame({
        "group": "fool_gd", "image_id": ["fool_gd_0000", "fool_gd_0001"], "parent_id": None, "source_id": None,
        "view": "full", "distortion": None, "level": np.nan, "attack": "fool_gd", "seed": 0.0, "label": np.nan,
        "path": [run.portable(p) for p in paths], "file_digest": [images.file_digest(p) for p in paths],
        **{f"top{k}": np.float32(0.1) for k in range(1, 6)}, "pred": 1, "quality": np.float32(0.5),
        "correct": False, "correct_vs_clean": pd.array([pd.NA, pd.NA], dtype="boolean")})
    feature_table.write(table, run.folder / groups.FEATURES_FILE)
    pd.testing.assert_frame_equal(groups.load(run), feature_table.read(run.folder / groups.FEATURES_FILE))

    images.Image.new("RGB", (8, 8), (0, 0, 255)).save(paths[1])  # the group made again, other pixels
    assert groups.changed_files(run, table) == [table.loc[1, "path"]]
    with pytest.raises(ValueError, match=r"1 of its files changed .*fool_gd/0001.png.*run notebook 02"):
        groups.load(run)
    paths[1].unlink()  # a missing file is the later step's counted skip, not a stale table
    assert groups.changed_files(run, table) == [] and len(groups.load(run)) == 2


def test_the_pixel_peers_score_every_row_but_a_seeded_sample_of_the_distorted_ones(tmp_path):
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    table = pd.DataFrame({"group": ["original"] * 3 + ["distorted"] * 10 + ["fool_ev"] * 2},
                         index=np.arange(100, 115))
    sampled = _run(tmp_path, detector={**raw.get("detector", {}), "peer_distorted": 4})
    rows = peer_experiment.peer_rows(sampled, table)
    assert rows["group"].value_counts().to_dict() == {"original": 3, "distorted": 4, "fool_ev": 2}
    assert rows.index.equals(peer_experiment.peer_rows(sampled, table).index)  # seeded: the same rows again
    every = _run(tmp_path, detector={**raw.get("detector", {}), "peer_distorted": None})
    assert peer_experiment.peer_rows(every, table).index.equals(table.index)


def test_groups_card_reads_its_fooling_rate_from_the_table():
    table = pd.DataFrame({"group": ["original", "adversarial", "adversarial", "adversarial", "adversarial"],
                          "correct_vs_clean": pd.array([True, True, False, False, False], dtype="boolean")})
    card = groups.Groups(table, {}, {"variant": "sgd", "xi": 10.0, "pool_size": 4, "pool": "iqa_references", "n_eval": 4})
    assert card.fooling_rate == 0.75
    assert "**75%**" in card.uap_sentence() and "ξ = 10" in card.uap_sentence()
    assert card.sizes().loc["images"].to_dict() == {"original": 1, "adversarial": 4}


# ------------------------------------------------------------------------------ the detector study


def test_the_study_tables_are_the_functions_on_the_same_splits(features, splits, scores):  # noqa: F811
    study = evaluation.DetectorStudy(features, splits, scores, seed=0, n_boot=100, paper_fpr=0.0857, target_fpr=0.1)
    assert study.n_sources == len(splits[0][0]) + len(splits[0][1])
    pd.testing.assert_frame_equal(study.table5()[1], tables.table5(scores, 0.0857, secondary_fpr=(0.1,), n_boot=100,
                                                                   seed=0)[1])
    at = study.at_false_alarm()
    assert list(dict.fromkeys(at["target_fpr"])) == [0.0857, 0.1]
    pd.testing.assert_frame_equal(at[at["target_fpr"] == 0.1].reset_index(drop=True), evaluation.rates_at_false_alarm(
        features, splits, target_fpr=0.1, scores=scores, n_boot=100, seed=0))
    examples = study.examples(per_kind=3)
    assert set(examples) <= {"detected", "false alarm", "missed"} and all(len(t) <= 3 for t in examples.values())
    if "false alarm" in examples:
        assert set(examples["false alarm"]["group"]) == {"original"}
    toy = pd.DataFrame({"group": ["distorted"] * 3 + ["adversarial", "fool_ev"], "score": [9, 8, 7, 1, 5]})
    turns = evaluation._each_group_in_turn(toy, most_flagged=True)  # noqa: SLF001 (Appendix C's order)
    assert list(turns["score"]) == [9, 5, 1, 8, 7]  # each group's most flagged before any group's second
    assert list(evaluation._each_group_in_turn(toy, most_flagged=False)["score"]) == [1, 5, 7, 8, 9]
    trained = evaluation.DetectorStudy.train(features, n_splits=N_SPLITS, seed=0, n_boot=100, target_fpr=0.1,
                                             progress=False)
    assert experiment.paper_false_alarm_rate() == 0.0857
    pd.testing.assert_frame_equal(trained.scores, scores)


def test_notebook_05_model_keys_survive_a_moved_run_and_keep_outside_paths(tmp_path):
    from iqalib import robust_experiment

    keys = []
    for where in ("a", "b"):  # the same run in two checkouts: its cached IQA files move with it
        (tmp_path / where).mkdir()
        run = _run(tmp_path / where)
        keys.append(robust_experiment._key_paths(run, [run.folder / "cache/x/2.png", run.folder / "cache/x/1.png"]))
    assert keys[0] == keys[1] == ["run:cache/x/1.png", "run:cache/x/2.png"]
    outside = tmp_path / "datasets" / "tid2013" / "i01.bmp"
    assert robust_experiment._key_paths(run, [outside]) == [str(outside)]
