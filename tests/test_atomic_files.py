"""Publishing outputs: files and directories appear whole or not at all, and a directory that
dinotrack did not write is never replaced."""

from __future__ import annotations

import os

import pytest

from dinotrack.atomic_files import (
    MARKER_NAME,
    atomic_directory,
    atomic_output,
    output_directory,
    output_file,
)


def test_directory_is_published_whole_with_its_marker(tmp_path):
    target = tmp_path / "a" / "res"
    with atomic_directory(target) as tmp:
        (tmp / "x.png").write_bytes(b"1")
        assert not target.exists()
    assert sorted(p.name for p in target.iterdir()) == [MARKER_NAME, "x.png"]
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "y.png").write_bytes(b"2")
        raise RuntimeError("the run failed")
    assert sorted(p.name for p in target.iterdir()) == [MARKER_NAME, "x.png"]  # untouched
    with atomic_directory(target) as tmp:
        (tmp / "y.png").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == [MARKER_NAME, "y.png"]  # replaced
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["res"]  # no temporaries


def test_foreign_directories_are_refused_empty_ones_used(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"mine already holds .*\(e.g. notes.txt\)"):
        with atomic_directory(mine):
            pass
    assert (mine / "notes.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty) as tmp:
        (tmp / "x.png").write_bytes(b"1")
    assert (empty / "x.png").is_file()


def test_file_appearing_during_the_run_stops_the_replacement(tmp_path):
    target = tmp_path / "res"
    with atomic_directory(target):
        pass
    with pytest.raises(FileExistsError), atomic_directory(target) as tmp:
        (tmp / "x.png").write_bytes(b"1")
        os.remove(target / MARKER_NAME)  # e.g. someone reuses the folder meanwhile
        (target / "theirs.txt").write_text("keep")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_output_paths_are_normalised_and_bad_ones_named(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    assert output_directory(tmp_path / "x" / ".." / "y") == tmp_path / "y"
    with pytest.raises(FileExistsError, match="(e.g. x)"):
        output_directory(tmp_path / "x" / "..")  # the parent, which holds x
    monkeypatch.chdir(tmp_path / "x")
    assert output_directory(".") == tmp_path / "x"  # empty: usable, named absolutely
    with pytest.raises(ValueError, match="empty"):
        output_directory("")
    with pytest.raises(ValueError, match="cannot use /"):
        output_directory("/")
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub" / "res"):
        with pytest.raises(NotADirectoryError, match="file"):
            output_directory(bad)
    with pytest.raises(NotADirectoryError, match="file is a file"):
        output_file(tmp_path / "file" / "ov.mp4")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        output_file(tmp_path / "x")
    assert output_file(tmp_path / "new" / "ov.mp4").parent.is_dir()  # parents created


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
