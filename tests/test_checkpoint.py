"""The checkpoint's integrity protocol: a kill at any moment of a save, even twice in a row, leaves a
checkpoint that verifies; a changed byte does not."""

import os

import pytest
import torch

from matcher.run import checkpoint
from matcher.run.checkpoint import CHECKPOINT_FORMAT, _read, _write_verified

IDENTITY = {"run": "la-tiny", "seed": 0}


def _state(step: int) -> dict:
    return {"format": CHECKPOINT_FORMAT, "identity": IDENTITY, "step": step, "weights": torch.full((64,), step)}


def _killed_before_the_rename(monkeypatch, path, state):
    def killed(*args):
        raise KeyboardInterrupt  # the process dies after the checksum list is written, before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _write_verified(path, state)
    monkeypatch.undo()


def test_two_kills_in_a_row_still_leave_a_verified_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    _write_verified(path, _state(1))
    _killed_before_the_rename(monkeypatch, path, _state(2))
    _killed_before_the_rename(monkeypatch, path, _state(3))
    loaded, problem = _read(path, IDENTITY)
    assert problem is None and loaded["step"] == 1
    _write_verified(path, _state(4))  # a clean save accepts only itself again
    assert len(checkpoint._accepted_checksums(path)) == 1 and _read(path, IDENTITY)[0]["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]


def test_a_changed_byte_or_another_identity_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    _write_verified(path, _state(1))
    assert "a checkpoint of another run (run differ" in _read(path, {**IDENTITY, "run": "dr-tiny"})[1]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "damaged" in _read(path, IDENTITY)[1]
    (tmp_path / "last.pt.sha256").unlink()
    (tmp_path / "last.pt.sha256").mkdir()  # unreadable list: nothing is accepted, and no traceback
    assert "damaged" in _read(path, IDENTITY)[1]
