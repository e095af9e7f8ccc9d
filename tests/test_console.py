"""Tests of the training display: ETA formatting, the progress line, plain lines off a TTY, the live line on one."""

import io

from scaling import console


def test_format_eta():
  assert [console.format_eta(s) for s in (None, 42, 185, 3725)] == ["?", "42s", "3m05s", "1h02m"]


def test_progress_line_shows_what_the_issue_asks_for():
  record = {"step": 50, "tokens": 204800, "train_loss": 2.3456, "tokens_per_s": 3100.0, "mfu": 0.482}
  line = console.progress_line(record, 300, 2.5, 65)
  assert line == "step 50/300  tokens 205k  train_loss 2.3456  eval_loss 2.5000  3.1k tok/s  MFU 48.2%  ETA 1m05s"


def test_off_a_tty_one_line_every_n_records_and_at_evaluations():
  out = io.StringIO()
  display = console.TrainDisplay(steps=100, every=3, stream=out, live=False)
  for step in range(10, 101, 10):
    display.show({"step": step, "tokens": step, "train_loss": 1.0, **({"eval_loss": 0.9} if step == 50 else {})})
  display.close()
  steps = [int(l.split()[3].split("/")[0]) for l in out.getvalue().splitlines()]
  assert steps == [30, 50, 60, 90, 100]


def test_live_line_on_a_terminal():
  out = io.StringIO()
  display = console.TrainDisplay(steps=20, every=1, stream=out, live=True)
  for step in (10, 20):
    display.show({"step": step, "tokens": step * 100, "train_loss": 2.0})
  display.close()
  assert "step 20/20" in out.getvalue()


def test_disabled_display_prints_nothing():
  out = io.StringIO()
  console.TrainDisplay(steps=5, enabled=False, stream=out).show({"step": 5})
  assert out.getvalue() == ""
