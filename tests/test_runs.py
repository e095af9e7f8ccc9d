"""Tests of the run-directory contract: atomic JSON, status with heartbeat, strict metrics reading, run-dir checks."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from scaling import runs
from scaling.errors import UserError


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


def test_run_info_carries_its_format_version(tmp_path):
  assert runs.read_run_info(tmp_path) is None
  runs.write_run_info(tmp_path, {"run_id": "x"})
  assert runs.read_run_info(tmp_path) == {"run_id": "x", "format_version": runs.FORMAT_VERSION}
  runs.write_json_atomic(tmp_path / "run.json", {"format_version": runs.FORMAT_VERSION + 1})
  with pytest.raises(UserError, match="format_version"):
    runs.read_run_info(tmp_path)


def test_corrupt_files_are_one_clear_error(tmp_path):
  (tmp_path / "status.json").write_text('{"state": "runn')
  with pytest.raises(UserError, match="status.json is not valid JSON"):
    runs.read_status(tmp_path)
  (tmp_path / "status.json").write_text('{"state": "sleeping"}')
  with pytest.raises(UserError, match="status.json is corrupt"):
    runs.read_status(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
  with pytest.raises(UserError, match=r"metrics.jsonl:2 is not a JSON record"):
    runs.read_metrics(tmp_path)


def test_appender_never_writes_a_step_twice(tmp_path):
  appender = runs.MetricsAppender(tmp_path)
  appender.append({"step": 0, "eval_loss": 5.0})
  appender.append({"step": 10, "train_loss": 3.0})
  with pytest.raises(ValueError, match="step 10 is not after"):
    appender.append({"step": 10, "train_loss": 3.0})
  appender.close()
  assert [r["step"] for r in runs.read_metrics(tmp_path)] == [0, 10]
  with pytest.raises(ValueError):
    runs.MetricsAppender(tmp_path).append({"step": 5})


def test_status_keeper_beats_while_running_and_stops_after(tmp_path):
  keeper = runs.StatusKeeper(tmp_path, interval_s=0.05)
  keeper.set("running", 3, "starting")
  first = runs.read_status(tmp_path)
  assert (first["host"], first["pid"]) == (socket.gethostname(), os.getpid()) and runs.is_alive(first)
  deadline = time.time() + 10
  while runs.read_status(tmp_path)["heartbeat"] == first["heartbeat"] and time.time() < deadline:
    time.sleep(0.02)
  beat = runs.read_status(tmp_path)
  assert beat["heartbeat"] > first["heartbeat"] and (beat["state"], beat["step"], beat["reason"]) == ("running", 3, "starting")
  keeper.update(step=7)
  assert runs.read_status(tmp_path)["step"] == 7
  keeper.set("done", 9)
  done = runs.read_status(tmp_path)
  time.sleep(0.2)
  assert runs.read_status(tmp_path) == done and done["state"] == "done"


def test_is_alive_tells_dead_runs_from_live_ones(tmp_path):
  now = time.time()
  live = runs.status_record("running", 1)
  assert runs.is_alive(live, now=now)
  assert not runs.is_alive({**live, "heartbeat": now - runs.STALE_AFTER_S - 1}, now=now)  # stale heartbeat
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  assert not runs.is_alive({**live, "pid": int(dead.stdout)}, now=now)  # its pid is gone on this host
  assert runs.is_alive({**live, "host": "elsewhere", "pid": int(dead.stdout)}, now=now)  # another host: trust the beat
  assert not runs.is_alive({**live, "state": "done"}, now=now)


def test_check_run_dir(tmp_path):
  assert runs.check_run_dir(tmp_path / "new") == tmp_path / "new"
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match="is a file"):
    runs.check_run_dir(tmp_path / "file")
  assert runs.check_run_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # missing parents are created later
  with pytest.raises(UserError, match="is a file, so the directory cannot be created"):
    runs.check_run_dir(tmp_path / "file" / "run")
