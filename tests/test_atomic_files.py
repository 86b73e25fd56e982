"""Publishing single files: a file appears whole or not at all, an existing file is replaced
only when asked, and the temporaries of dead runs are removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dinotrack.io.atomic import (
    atomic_output,
    make_parents,
    output_file,
    remove_empty,
    remove_stale_temporaries,
    temporary_sibling,
)


def test_output_file_refuses_existing_files_unless_overwrite(tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError, match="--overlay .*file already exists; pass --overwrite"):
        output_file(tmp_path / "file", flag="--overlay")
    assert output_file(tmp_path / "file", overwrite=True) == tmp_path / "file"
    with pytest.raises(NotADirectoryError, match="file is a file"):
        output_file(tmp_path / "file" / "ov.mp4")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        output_file(tmp_path / "x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileExistsError, match="not a regular file"):
        output_file(tmp_path / "fifo", overwrite=True)
    new = tmp_path / "new" / "deeper" / "ov.mp4"
    assert output_file(new) == new and not (tmp_path / "new").exists()  # checks only
    made = make_parents(new)
    assert made == [new.parent, new.parent.parent] and new.parent.is_dir()
    remove_empty(made)  # what a failed run does: no new empty folder is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "file", "x"]


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "out.mp4"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    mine = temporary_sibling(target)
    mine.write_text("in flight")  # this process: alive
    theirs = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    theirs.write_text("left by SIGKILL")
    partial = tmp_path / f".out.mp4.partial-{theirs.name.split('.')[-2]}"
    partial.mkdir()
    (partial / "00000.png").write_bytes(b"x")
    other_host = tmp_path / f".out.mp4.otherhost-{dead_pid}-0123abcd.tmp"
    other_host.write_text("another machine's run")
    user = tmp_path / ".out.mp4.notes"
    user.write_text("the user's")
    removed = remove_stale_temporaries(target)
    assert sorted(removed) == sorted([theirs, partial])
    assert mine.exists() and other_host.exists() and user.exists()
