"""Result formats: COCO RLE, MOT boxes and per-object PNGs, from ``segment --save`` and from
``dinotrack export`` of a results folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import tiny_flags
from PIL import Image
from pycocotools import mask as mask_utils

from dinotrack.cli import main
from dinotrack.io.masks import read_mask, write_mask
from dinotrack.results.export import export_results
from dinotrack.results.formats import CocoWriter, MotWriter, ObjectsWriter, mask_box, parse_formats
from dinotrack.results.writer import RECORD_NAME, owned_files

pytestmark = pytest.mark.filterwarnings(  # pycocotools' decode under numpy 2 (tests only)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

FAST = tiny_flags(96)


def hand_made_video() -> list[np.ndarray]:
    """Five 40x60 frames: object 3 in every frame (touching the left and top border in frame
    0), object 300 (above 255) only in frames 1 and 3, object 7 from frame 2 on (touching the
    bottom-right corner)."""
    frames = []
    for t in range(5):
        ids = np.zeros((40, 60), np.int32)
        ids[0 : 5 + t, 0 : 8 + t] = 3
        if t in (1, 3):
            ids[10:20, 30 + t : 41 + t] = 300
        if t >= 2:
            ids[35:, 50:] = 7
            ids[30, 55] = 7  # a second, detached piece
        frames.append(ids)
    return frames


def feed(writers, frames, first_index=0):
    for offset, ids in enumerate(frames):
        index = first_index + offset
        for writer in writers:
            writer.add(index, f"{index:05d}", ids)


def reference_box(mask):
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]


def test_coco_rle_decodes_to_exactly_the_masks(tmp_path):
    frames = hand_made_video()
    writer = CocoWriter("clip")
    feed([writer], frames, first_index=10)
    writer.finish(tmp_path)
    doc = json.loads((tmp_path / "coco.json").read_text())
    (video,) = doc["videos"]
    assert (video["width"], video["height"], video["length"]) == (60, 40, 5)
    assert video["file_names"] == [f"clip/{i:05d}.png" for i in range(10, 15)]  # the masks
    assert video["frame_indices"] == list(range(10, 15))
    assert [a["id"] for a in doc["annotations"]] == [3, 7, 300]
    for ann in doc["annotations"]:
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == 5
        for t, ids in enumerate(frames):
            mask = ids == ann["id"]
            rle, box, area = ann["segmentations"][t], ann["bboxes"][t], ann["areas"][t]
            if not mask.any():
                assert rle is None and box is None and area is None
                continue
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(decoded.astype(bool), mask)
            assert box == reference_box(mask)
            assert box == mask_utils.toBbox(rle).tolist()  # pycocotools agrees on the box
            assert area == mask.sum() == mask_utils.area(rle)
    # Absent frames are null: 300 only in frames 1 and 3, 7 from frame 2.
    by_id = {a["id"]: a for a in doc["annotations"]}
    assert [s is not None for s in by_id[300]["segmentations"]] == [0, 1, 0, 1, 0]
    assert [s is not None for s in by_id[7]["segmentations"]] == [0, 0, 1, 1, 1]


def test_mot_lines_are_the_masks_extents_one_based(tmp_path):
    frames = hand_made_video()
    writer = MotWriter()
    feed([writer], frames, first_index=4)
    writer.finish(tmp_path)
    lines = (tmp_path / "mot.txt").read_text().splitlines()
    expected = []
    for t, ids in enumerate(frames):
        for object_id in (3, 7, 300):
            mask = ids == object_id
            if mask.any():
                x, y, w, h = reference_box(mask)
                expected.append(f"{4 + t + 1},{object_id},{x + 1},{y + 1},{w},{h},1,-1,-1,-1")
    assert lines == expected
    assert lines[0] == "5,3,1,1,8,5,1,-1,-1,-1"  # touches the top-left border: x = y = 1
    corner = next(line for line in lines if line.startswith("7,7,"))
    assert corner == "7,7,51,31,10,10,1,-1,-1,-1"  # to the bottom-right corner (60x40)
    assert sum(",300," in line for line in lines) == 2  # absent frames have no line


def test_objects_writes_one_binary_png_per_object_and_frame(tmp_path):
    frames = hand_made_video()
    writer = ObjectsWriter()
    scratch = writer.scratch
    feed([writer], frames)
    writer.finish(tmp_path)
    assert not scratch.exists()
    root = tmp_path / "objects"
    assert sorted(p.name for p in root.iterdir()) == ["3", "300", "7"]
    for object_id in (3, 7, 300):
        names = sorted(p.name for p in (root / str(object_id)).iterdir())
        assert names == [f"{t:05d}.png" for t in range(5)]
        for t, ids in enumerate(frames):
            image = Image.open(root / str(object_id) / f"{t:05d}.png")
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), (ids == object_id) * 255)


def test_abandoned_objects_writer_leaves_no_scratch():
    writer = ObjectsWriter()
    feed([writer], hand_made_video()[:2])
    scratch = writer.scratch
    assert scratch.exists()
    writer.abort()
    assert not scratch.exists()


def test_writers_refuse_frames_of_another_size_or_given_twice(tmp_path):
    frames = hand_made_video()
    for writer in (CocoWriter("v"), MotWriter(), ObjectsWriter(tmp_path / "s")):
        writer.add(0, "a", frames[0])
        with pytest.raises(ValueError, match="one size"):
            writer.add(1, "b", frames[1][:, :50])
        with pytest.raises(ValueError, match="given twice"):
            writer.add(0, "c", frames[1])
        with pytest.raises(ValueError, match="2-D"):
            writer.add(2, "d", frames[1][None])


def test_mask_box_of_a_single_pixel():
    mask = np.zeros((5, 7), bool)
    mask[4, 6] = True
    assert mask_box(mask) == (6, 4, 1, 1)


def test_parse_formats():
    assert parse_formats("png, coco,mot") == ("png", "coco", "mot")
    with pytest.raises(ValueError, match="unknown output format 'rle'"):
        parse_formats("png,rle")
    with pytest.raises(ValueError, match="twice"):
        parse_formats("mot,mot")
    with pytest.raises(ValueError, match="no output format"):
        parse_formats(" , ")


# --- segment --save and dinotrack export, end to end -------------------------------------------


@pytest.fixture(scope="module")
def saved(shared_data, tmp_path_factory):
    """``segment --save png,coco,mot,objects`` of 6 frames of soccerball, from frame 2."""
    video = shared_data("videos", "soccerball.mp4")
    mask = shared_data("davis2016-dev", "Annotations", "480p", "soccerball", "00002.png")
    out = tmp_path_factory.mktemp("saved") / "soccerball"
    args = ["segment", video, "--mask", mask, "--out", out, "--start-frame", 2]
    args += ["--max-frames", 6, "--save", "png,coco,mot,objects", *FAST]
    assert main([str(a) for a in args]) == 0
    return out


def test_segment_save_writes_every_format_in_agreement_with_the_pngs(saved):
    pngs = sorted(saved.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(2, 8)]
    masks = [read_mask(p).ids for p in pngs]
    doc = json.loads((saved / "coco.json").read_text())
    assert doc["videos"][0]["name"] == "soccerball"
    (ann,) = doc["annotations"]
    mot = (saved / "mot.txt").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in mot] == list(range(3, 9))  # frame numbers
    for t, mask in enumerate(masks):
        rle = ann["segmentations"][t]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, mask == 1)
        x, y, w, h = reference_box(mask == 1)
        assert mot[t] == f"{t + 3},1,{x + 1},{y + 1},{w},{h},1,-1,-1,-1"
        binary = np.asarray(Image.open(saved / "objects" / "1" / pngs[t].name))
        np.testing.assert_array_equal(binary, (mask == 1) * 255)


def test_export_of_a_results_folder_gives_the_files_of_save(saved, tmp_path, capsys):
    out = tmp_path / "exported"
    code = main(["export", str(saved), "--to", "coco,mot,objects", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "mot.txt").read_bytes() == (saved / "mot.txt").read_bytes()
    assert json.loads((out / "coco.json").read_text()) == json.loads(
        (saved / "coco.json").read_text()
    )  # the same video name and file names: export reads the input from the record
    for png in (saved / "objects" / "1").iterdir():
        assert (out / "objects" / "1" / png.name).read_bytes() == png.read_bytes()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [RECORD_NAME]
    recorded = sorted(owned_files(out))
    assert recorded == sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*.*")
        if p.is_file() and p.name != RECORD_NAME
    )


def test_export_of_a_davis_layout_writes_into_each_sequence(tmp_path, capsys):
    frames = hand_made_video()
    for name, offset in (("alpha", 0), ("beta", 2)):
        folder = tmp_path / "results" / name
        folder.mkdir(parents=True)
        for t, ids in enumerate(frames[offset:]):
            write_mask(folder / f"{t:05d}.png", np.where(ids == 300, 200, ids))
    (tmp_path / "results" / "notes.txt").write_text("a user's file")
    code = main(["export", str(tmp_path / "results"), "--to", "mot"])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "results" / "mot.txt").exists()
    for name, offset in (("alpha", 0), ("beta", 2)):
        writer = MotWriter()
        feed([writer], [np.where(ids == 300, 200, ids) for ids in frames[offset:]])
        writer.finish(tmp_path)
        assert (tmp_path / "results" / name / "mot.txt").read_text() == (
            tmp_path / "mot.txt"
        ).read_text()
    capsys.readouterr()
    # A second export refuses to replace the files unless told to.
    code = main(["export", str(tmp_path / "results"), "--to", "mot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--overwrite" in err[0]
    assert main(["export", str(tmp_path / "results"), "--to", "mot", "--overwrite"]) == 0


def test_export_names_frames_by_position_when_names_are_not_numbers(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    ids = np.zeros((20, 20), np.uint8)
    ids[2:5, 3:9] = 2
    for name in ("frame_a", "frame_b"):
        write_mask(folder / f"{name}.png", ids)
    export_results(folder, ["mot", "coco"])
    assert (folder / "mot.txt").read_text() == "1,2,4,3,6,3,1,-1,-1,-1\n2,2,4,3,6,3,1,-1,-1,-1\n"
    doc = json.loads((folder / "coco.json").read_text())
    assert doc["videos"][0]["file_names"] == ["res/frame_a.png", "res/frame_b.png"]


@pytest.mark.parametrize(
    "setup, message",
    [("empty", "no PNG masks"), ("missing", "does not exist"), ("rgb", "is an RGB image")],
)
def test_export_errors_are_one_line_and_exit_2(tmp_path, capsys, setup, message):
    folder = tmp_path / "res"
    if setup != "missing":
        folder.mkdir()
    if setup == "rgb":
        Image.new("RGB", (8, 8), (10, 200, 30)).save(folder / "00000.png")
    code = main(["export", str(folder), "--to", "coco,mot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    if folder.exists():  # nothing written, no temporary left
        assert [p.name for p in folder.iterdir()] == (["00000.png"] if setup == "rgb" else [])


@pytest.mark.parametrize("formats", ["png", "coco,gif", ""])
def test_export_unknown_format_exits_2(tmp_path, capsys, formats):
    write_mask(tmp_path / "00000.png", np.ones((8, 8), np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--to", formats])
    assert exit_info.value.code == 2
    assert "output format" in capsys.readouterr().err


def test_segment_save_unknown_format_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "v.mp4", "--mask", "m.png", "--out", str(tmp_path / "o"), "--save", "x"])
    assert exit_info.value.code == 2
    assert "unknown output format 'x'" in capsys.readouterr().err


def test_frames_in_any_order_give_the_files_of_frames_in_order(tmp_path):
    """A backward or two-way run yields frames out of order; the files are the same."""
    frames = hand_made_video()
    order = [2, 1, 0, *range(3, len(frames))][: len(frames)]
    outputs = []
    for run, indices in (("sorted", range(len(frames))), ("shuffled", order)):
        writers = [CocoWriter("v"), MotWriter(), ObjectsWriter(tmp_path / f"s-{run}")]
        for index in indices:
            for writer in writers:
                writer.add(index, f"{index:05d}", frames[index])
        out = tmp_path / run
        out.mkdir()
        for writer in writers:
            writer.finish(out)
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 2


def test_segment_save_of_a_two_way_run_agrees_with_its_pngs(shared_data, tmp_path):
    """`--direction both` yields the frames before the prompt in decreasing order; every format
    still lists the frames in order and agrees with the PNGs."""
    video = shared_data("videos", "soccerball.mp4")
    mask = shared_data("davis2016-dev", "Annotations", "480p", "soccerball", "00003.png")
    out = tmp_path / "both"
    args = ["segment", video, "--prompt", f"3:{mask}", "--direction", "both", "--out", out]
    args += ["--max-frames", 6, "--save", "png,coco,mot,objects", *FAST]
    assert main([str(a) for a in args]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
    doc = json.loads((out / "coco.json").read_text())
    assert doc["videos"][0]["frame_indices"] == list(range(6))
    (ann,) = doc["annotations"]
    mot = (out / "mot.txt").read_text().splitlines()
    for t, png in enumerate(pngs):
        mask_t = read_mask(png).ids == 1
        rle = ann["segmentations"][t]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, mask_t)
        x, y, w, h = reference_box(mask_t)
        assert mot[t] == f"{t + 1},1,{x + 1},{y + 1},{w},{h},1,-1,-1,-1"
        binary = np.asarray(Image.open(out / "objects" / "1" / png.name))
        np.testing.assert_array_equal(binary, mask_t * 255)


def test_export_reads_frame_names_in_natural_order(tmp_path, capsys):
    frames = hand_made_video()
    results = tmp_path / "clip"
    results.mkdir()
    names = ["frame1", "frame2", "frame3", "frame10", "frame11"]
    for name, ids in zip(names, frames, strict=True):
        write_mask(results / f"{name}.png", np.where(ids == 300, 200, ids))
    out = tmp_path / "exported"
    assert main(["export", str(results), "--to", "coco", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    doc = json.loads((out / "coco.json").read_text())
    assert doc["videos"][0]["file_names"] == [f"clip/{name}.png" for name in names]
