"""Atomic report writes (core/io.py): a failed write leaves the old file as it was and no temporary file behind."""

from __future__ import annotations

import json
import os

import pytest

from adaptive_hf.core import io


def test_write_json_creates_the_folder_and_replaces_the_file(tmp_path):
    target = tmp_path / "reports" / "report.json"
    io.write_json(target, {"accuracy": 0.5})
    io.write_json(target, {"accuracy": 0.75}, indent=1)
    assert json.loads(target.read_text()) == {"accuracy": 0.75}
    assert target.read_text().endswith("\n")
    assert sorted(os.listdir(target.parent)) == ["report.json"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failure_during_the_write_keeps_the_old_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "report.json"
    io.write_json(target, {"run": "old"})

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        io.write_json(target, {"run": "new", "rows": list(range(1000))})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"run": "old"}
    assert os.listdir(tmp_path) == ["report.json"]  # the temporary file is gone too


def test_a_payload_that_cannot_be_serialized_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    io.write_json(target, {"run": "old"})
    with pytest.raises(TypeError):
        io.write_json(target, {"run": object()})
    assert json.loads(target.read_text()) == {"run": "old"}
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_text_is_atomic_too(tmp_path, monkeypatch):
    target = tmp_path / "card.md"
    io.write_text(target, "# old card\n")
    monkeypatch.setattr(io.os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        io.write_text(target, "# new card\n")
    assert target.read_text() == "# old card\n"
