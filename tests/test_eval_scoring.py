"""Scoring results folders: the official numbers, dataset layouts, reports and errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from davis_fixtures import (
    blob_sequence,
    require_data,
    write_davis,
    write_gray_png,
    write_palette_png,
    write_results,
)
from PIL import Image

from eval.davis import open_davis, read_annotation, read_result
from eval.metrics import jaccard
from eval.report import evaluation_record, write_csvs
from eval.scoring import (
    GLOBAL_COLUMNS,
    count_objects,
    score_label_sequence,
    score_results,
)

# --- the official numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["results-rvos", "results-lag"])
def test_oracle_reproduces_every_official_number(folder):
    oracle = require_data("davis-metric-oracle")
    expected = json.loads((oracle / "expected.json").read_text())[folder]
    evaluation = score_results(open_davis(oracle, "val"), oracle / folder, workers=2)
    rows = evaluation.object_rows()
    assert set(rows) == set(expected["per_object"])
    checked = 0
    for name, columns in expected["per_object"].items():
        for column, value in columns.items():
            assert rows[name][column] == pytest.approx(value, abs=1e-6), (name, column)
            checked += 1
    global_row = evaluation.global_row()
    for column, value in expected["global"].items():
        assert global_row[column] == pytest.approx(value, abs=1e-6), column
        checked += 1
    assert checked == 15 * 6 + 7


def test_oracle_lab_coat_counts_objects_absent_from_the_first_frame():
    oracle = require_data("davis-metric-oracle")
    dataset = open_davis(oracle, "val", sequences=["lab-coat"])
    first = read_annotation(dataset.sequences[0].annotation_paths[0])
    assert sorted(np.unique(first)) == [0, 3, 4, 5]
    assert count_objects(first) == 5
    evaluation = score_results(dataset, oracle / "results-lag", workers=1)
    assert [obj.name for obj in evaluation.objects] == [f"lab-coat_{k}" for k in range(1, 6)]


# --- semantics on hand-made sequences ----------------------------------------------------------


def test_first_and_last_frames_are_not_scored():
    truth = blob_sequence(num_frames=5)
    pred = truth.copy()
    pred[0] = 0
    pred[-1] = 2  # garbage in unscored frames
    j, f = score_label_sequence(truth, pred)
    assert j.shape == f.shape == (2, 3)
    assert (j == 1).all() and (f == 1).all()


def test_void_pixels_are_background():
    truth = blob_sequence(num_frames=4, num_objects=1)
    void = np.zeros_like(truth, bool)
    void[:, -6:, -6:] = True
    truth[void] = 255
    j, _ = score_label_sequence(truth, np.where(void, 0, truth))
    assert (j == 1).all()
    pred = np.where(void, 1, truth)  # labelling the void region as the object costs J
    j, _ = score_label_sequence(truth, pred)
    assert (j < 1).all()
    expected = jaccard(truth[1:-1] == 1, pred[1:-1] == 1)
    np.testing.assert_array_equal(j[0], expected)


def test_objects_are_one_to_the_largest_first_frame_id():
    truth = np.zeros((4, 12, 12), np.uint8)
    truth[:, 2:6, 2:6] = 3  # only id 3 in the first frame: objects 1 and 2 are empty
    truth[2, 8:11, 8:11] = 4  # a later id above K is background
    pred = np.where(truth == 3, 3, 0).astype(np.uint8)
    j, f = score_label_sequence(truth, pred)
    assert j.shape == (3, 2)
    assert (j == 1).all() and (f == 1).all()


def test_score_label_sequence_rejects_short_or_mismatched():
    with pytest.raises(ValueError, match="at least 3 frames"):
        score_label_sequence(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        score_label_sequence(np.zeros((3, 4, 4), np.uint8), np.zeros((3, 4, 5), np.uint8))


# --- layouts -------------------------------------------------------------------------------------


def _two_sequences() -> dict[str, np.ndarray]:
    return {"alpha": blob_sequence(seed=1), "beta": blob_sequence(num_frames=7, seed=2)}


def _degrade(ids: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = ids.copy()
    out[:, rng.integers(0, ids.shape[1], 6), :] = 0
    return out


def test_2017_layout_scores_and_parallel_equals_serial(tmp_path):
    seqs = _two_sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", {n: _degrade(s, 3) for n, s in seqs.items()})
    dataset = open_davis(root, "val")
    assert dataset.year == "2017" and dataset.sequence_names == ("alpha", "beta")
    serial = score_results(dataset, results, workers=1)
    parallel = score_results(dataset, results, workers=2)
    assert serial.object_rows() == parallel.object_rows()
    assert [o.name for o in serial.objects] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    for obj in serial.objects:
        truth, pred = seqs[obj.sequence], _degrade(seqs[obj.sequence], 3)
        k = obj.object_id
        np.testing.assert_array_equal(obj.j, jaccard(truth[1:-1] == k, pred[1:-1] == k))
        assert obj.frames == tuple(f"{t:05d}" for t in range(1, len(truth) - 1))


@pytest.mark.parametrize("layout", ["2016", "2016-paths"])
def test_2016_layouts_read_255_as_object_one(tmp_path, layout):
    seqs = {n: (s > 0).astype(np.uint8) for n, s in _two_sequences().items()}
    root = write_davis(tmp_path / "davis", seqs, layout=layout)
    dataset = open_davis(root, "val")
    assert dataset.year == "2016" and dataset.sequence_names == ("alpha", "beta")
    first = read_annotation(dataset.sequences[0].annotation_paths[0])
    np.testing.assert_array_equal(first, seqs["alpha"][0])
    # Results as 0/255 grayscale (the DAVIS-2016 convention) or as ids both work.
    gray = tmp_path / "gray"
    for name, ids in seqs.items():
        for t, frame in enumerate(ids):
            write_gray_png(gray / name / f"{t:05d}.png", frame * 255)
    palette = write_results(tmp_path / "palette", seqs)
    for results in (gray, palette):
        evaluation = score_results(dataset, results, workers=1)
        assert [o.name for o in evaluation.objects] == ["alpha_1", "beta_1"]
        assert evaluation.global_row()["J&F-Mean"] == 1.0


def test_sequences_restrict_and_order(tmp_path):
    root = write_davis(tmp_path / "davis", _two_sequences())
    assert open_davis(root, "val", sequences=["beta"]).sequence_names == ("beta",)
    with pytest.raises(ValueError, match="gamma are not in split 'val'"):
        open_davis(root, "val", sequences=["beta", "gamma"])


def test_year_selects_the_split_file(tmp_path):
    root = write_davis(tmp_path / "davis", _two_sequences())
    (root / "ImageSets" / "2016").mkdir()
    (root / "ImageSets" / "2016" / "val.txt").write_text("alpha\n")
    assert open_davis(root, "val").sequence_names == ("alpha", "beta")
    assert open_davis(root, "val", year="2016").sequence_names == ("alpha",)


# --- reports -------------------------------------------------------------------------------------


def test_csvs_have_the_official_columns_and_the_json_the_same_numbers(tmp_path):
    seqs = _two_sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", {n: _degrade(s, 4) for n, s in seqs.items()})
    evaluation = score_results(open_davis(root, "val"), results, workers=1)
    global_path, per_seq_path = write_csvs(evaluation, results)
    assert global_path.name == "global_results-val.csv"
    assert per_seq_path.name == "per-sequence_results-val.csv"
    with global_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(GLOBAL_COLUMNS) and len(rows) == 1
    with per_seq_path.open() as handle:
        per_seq = list(csv.DictReader(handle))
    assert list(per_seq[0]) == ["Sequence", *GLOBAL_COLUMNS]
    assert [r["Sequence"] for r in per_seq] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    record = json.loads(json.dumps(evaluation_record(evaluation, {"timings": {"x": 1.0}})))
    for column in GLOBAL_COLUMNS:
        assert float(rows[0][column]) == pytest.approx(record["global"][column], abs=5e-6)
    for r in per_seq:
        assert float(r["J-Mean"]) == pytest.approx(
            record["per_object"][r["Sequence"]]["J-Mean"], abs=5e-6
        )
    assert record["global"]["J&F-Mean"] == pytest.approx(
        (record["global"]["J-Mean"] + record["global"]["F-Mean"]) / 2
    )
    assert record["timings"]["x"] == 1.0 and "scoring_seconds" in record["timings"]
    assert len(record["per_frame"]["beta_2"]["J"]) == 5


def test_global_row_averages_objects_not_sequences(tmp_path):
    seqs = {"one": blob_sequence(num_objects=1, seed=5), "three": blob_sequence(num_objects=3)}
    root = write_davis(tmp_path / "davis", seqs)
    pred = {"one": seqs["one"], "three": np.zeros_like(seqs["three"])}
    evaluation = score_results(
        open_davis(root, "val"), write_results(tmp_path / "r", pred), workers=1
    )
    assert evaluation.global_row()["J-Mean"] == pytest.approx(1 / 4)  # not (1 + 0) / 2


# --- errors ---------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    seqs = _two_sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    return root, results


def test_missing_root_and_split(tmp_path, tree):
    root, _ = tree
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_davis(tmp_path / "nope", "val")
    with pytest.raises(FileNotFoundError, match=r"split 'test'.*available: ImageSets/2017/val.txt"):
        open_davis(root, "test")


def test_split_naming_absent_sequences(tree):
    root, _ = tree
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nghost\n")
    with pytest.raises(FileNotFoundError, match="without annotations: ghost"):
        open_davis(root, "val")


def test_missing_result_folder_and_frames(tree):
    root, results = tree
    dataset = open_davis(root, "val")
    (results / "beta" / "00003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"misses 1 of the 5 scored frames: 00003.png"):
        score_results(dataset, results, workers=1)
    with pytest.raises(FileNotFoundError, match=r"results folder .*beta/(alpha|beta) not found"):
        score_results(dataset, results / "beta", workers=2)


def test_unscored_result_frames_may_be_missing(tree):
    root, results = tree
    (results / "alpha" / "00000.png").unlink()
    (results / "alpha" / "00005.png").unlink()
    evaluation = score_results(open_davis(root, "val"), results, workers=1)
    assert evaluation.global_row()["J&F-Mean"] == 1.0


def test_wrong_size_rgb_and_high_ids_name_the_file(tree):
    root, results = tree
    dataset = open_davis(root, "val")
    bad = results / "alpha" / "00002.png"
    write_palette_png(bad, np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"00002.png is 20x20 \(WxH\); expected 56x40"):
        score_results(dataset, results, workers=1)
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"00002.png is a RGB image; expected a single-channel"):
        score_results(dataset, results, workers=2)
    write_palette_png(bad, np.full((40, 56), 3, np.uint8))
    with pytest.raises(ValueError, match=r"00002.png holds object id 3, but sequence alpha has 2"):
        score_results(dataset, results, workers=1)


def test_read_result_maps_255_only_for_binary_sequences(tmp_path):
    path = tmp_path / "r.png"
    write_gray_png(path, np.array([[0, 255], [255, 0]]))
    np.testing.assert_array_equal(read_result(path, binary=True), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(read_result(path), [[0, 255], [255, 0]])
