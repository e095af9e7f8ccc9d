"""Tests of the metrics writer: one JSON line per record, NaN as null, TensorBoard events alongside."""

import json
import math

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
