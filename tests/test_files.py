"""Files written whole or not at all: an interrupted write leaves the old file and no temporary one."""

import os

import pytest

from fastbp import _files


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, step):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")

    def interrupted(*args):
        raise KeyboardInterrupt

    if step != "write":
        monkeypatch.setattr(os, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        with _files.replaced_atomically(path) as file:
            file.write(b"new")
            if step == "write":
                interrupted()
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["m.npz"]
