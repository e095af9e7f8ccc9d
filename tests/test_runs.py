"""Tests of run-directory files: atomic JSON, status, and metrics reading that survives a torn last line."""

import json

import pytest

from scaling import runs


def test_status_round_trip_and_default(tmp_path):
  assert runs.read_status(tmp_path)["state"] == "pending"
  runs.set_status(tmp_path, "failed", 7, "non-finite train_loss at step 7")
  status = runs.read_status(tmp_path)
  assert (status["state"], status["step"], status["reason"]) == ("failed", 7, "non-finite train_loss at step 7")
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
  with pytest.raises(ValueError):
    runs.set_status(tmp_path, "exploded", 1)


def test_torn_last_metrics_line_is_ignored(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "trai')
  assert [r["step"] for r in runs.read_metrics(tmp_path)] == [1, 2]


def test_write_json_atomic_converts_numpy_scalars(tmp_path):
  import numpy as np

  runs.write_json_atomic(tmp_path / "x.json", {"a": np.float32(1.5), "b": (1, 2)})
  assert runs.read_json(tmp_path / "x.json") == {"a": 1.5, "b": [1, 2]}
