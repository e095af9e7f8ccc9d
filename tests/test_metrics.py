"""Tests of the metrics writer: one JSON line per record, NaN as null, TensorBoard events alongside."""

import json
import math

from ckpt_testlib import tensorboard_steps
from tensorboardX import event_file_writer

from scaling import runs, storage
from scaling.metrics import MetricsWriter


def test_records_are_lines_and_tensorboard_events_exist(tmp_path):
  writer = MetricsWriter(tmp_path)
  writer.write({"step": 1, "train_loss": 2.5, "lr": 1e-3})
  writer.write({"step": 2, "train_loss": math.nan, "lr": 1e-3})
  writer.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2]
  assert json.loads(lines[1])["train_loss"] is None
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_disabled_writer_writes_nothing(tmp_path):
  writer = MetricsWriter(tmp_path, enabled=False)
  writer.write({"step": 1})
  writer.close()
  assert not list(tmp_path.iterdir())


def test_a_cut_back_keeps_tensorboard_files_in_step_order_within_one_second(tmp_path, monkeypatch):
  """TensorBoard reads event files in name order and drops what it read when a step goes back: the history
  rewritten at a resume must sort before the live file opened in the same second (it sorted after)."""
  monkeypatch.setattr(event_file_writer.time, "time", lambda: 1_800_000_000.0)  # every file in one second
  writer = MetricsWriter(tmp_path)
  for step in range(1, 11):
    writer.write({"step": step, "train_loss": 1.0 / step})
  writer.close()
  resumed = MetricsWriter(tmp_path, start_step=6)
  for step in range(7, 10):
    resumed.write({"step": step, "train_loss": 1.0 / step})
  resumed.close()
  assert tensorboard_steps(tmp_path) == list(range(1, 10))


def test_on_gcs_each_byte_of_the_records_and_events_is_uploaded_once(gcs_root, tmp_path, monkeypatch):
  """An object cannot be appended to: metrics.jsonl was rewritten whole at every flush and tensorboardX's gs://
  writer uploaded its whole event file at every flush, so a run uploaded the square of its length. Now each
  flush appends (an upload of the new bytes and a compose), and a cut back uploads the history once."""
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(event_file_writer.time, "time", lambda: 1_800_000_000.0)  # every file in one second
  uploaded = []
  gcs = storage._gcs()  # the one filesystem object that storage uploads through (fsspec caches it)
  pipe = gcs.pipe_file

  def counted(path, data, *args, **kwargs):
    uploaded.append(len(data))
    return pipe(path, data, *args, **kwargs)

  monkeypatch.setattr(gcs, "pipe_file", counted)
  run = storage.path(gcs_root)

  def objects() -> list:
    return [run / "metrics.jsonl", *(run / "tb").iterdir()]

  writer = MetricsWriter(run)
  for step in range(1, 41):
    writer.write({"step": step, "train_loss": 1.0 / step, "lr": 1e-3})
    writer.flush()  # as before a checkpoint: every record is readable on GCS at once
    assert [r["step"] for r in runs.read_metrics(run)][-1] == step
  writer.close()
  assert sum(uploaded) == sum(len(p.read_bytes()) for p in objects())
  assert tensorboard_steps(run) == list(range(1, 41))

  uploaded.clear()
  resumed = MetricsWriter(run, start_step=20)
  for step in range(21, 31):
    resumed.write({"step": step, "train_loss": 1.0 / step})
  resumed.close()
  assert [r["step"] for r in runs.read_metrics(run)] == list(range(1, 31))
  assert tensorboard_steps(run) == list(range(1, 31))
  assert sum(uploaded) == sum(len(p.read_bytes()) for p in objects())
  assert not [p.name for p in run.iterdir() if p.name.startswith(".append")]
