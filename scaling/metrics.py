"""Writes training metrics as JSON lines (metrics.jsonl) and TensorBoard events (tb/).

Only process 0 writes. Each record is one line, flushed at once, so a run killed at any moment leaves
every complete record readable. metrics.jsonl is the record of truth: when a run resumes from (or rolls
back to) a checkpoint, both are cut back to its step, TensorBoard by rewriting tb/ from metrics.jsonl,
so neither ever holds a step twice.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from tensorboardX import SummaryWriter

from scaling import runs

# Keys every training record has (docs/architecture.md); `eval_*` keys appear on evaluation steps only.
TRAIN_KEYS = ("step", "tokens", "train_loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "flops_per_s", "mfu")


class MetricsWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  With `start_step`, first cuts both back to that step (see `rewind`); without, appends to what is there.
  """

  def __init__(self, run_dir: Path, enabled: bool = True, start_step: int | None = None):
    self.enabled = enabled
    self.kept: list[dict] = []
    if not enabled:
      return
    self._run_dir = Path(run_dir)
    if start_step is not None:
      self.kept = _cut_back(self._run_dir, start_step)
    self._open()

  def _open(self) -> None:
    self._file = runs.MetricsAppender(self._run_dir)
    self._tb = SummaryWriter(str(self._run_dir / "tb"), flush_secs=30)

  def write(self, record: dict) -> None:
    """Writes one record: {"step": int, ...scalars}."""
    if not self.enabled:
      return
    clean = {k: _finite_or_none(v) for k, v in record.items()}
    self._file.append(clean)
    _add_scalars(self._tb, clean)

  def rewind(self, step: int) -> list[dict]:
    """Drops every record after `step` from metrics.jsonl and TensorBoard; returns the records kept."""
    if not self.enabled:
      return []
    self.close()
    self.kept = _cut_back(self._run_dir, step)
    self._open()
    return self.kept

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def _add_scalars(tb: SummaryWriter, record: dict) -> None:
  for key, value in record.items():
    if key != "step" and isinstance(value, (int, float)):
      tb.add_scalar(key, value, global_step=record["step"])


def _cut_back(run_dir: Path, step: int) -> list[dict]:
  """Cuts metrics.jsonl to `step` and rewrites tb/ from it (a new tb/ swapped in whole); returns the records."""
  kept = runs.truncate_metrics(run_dir, step)
  fresh, tb, old = run_dir / "tb.rewrite", run_dir / "tb", run_dir / "tb.old"
  shutil.rmtree(fresh, ignore_errors=True)
  writer = SummaryWriter(str(fresh), filename_suffix=".rewritten")  # never the live writer's file name
  for record in kept:
    _add_scalars(writer, record)
  writer.close()
  shutil.rmtree(old, ignore_errors=True)
  if tb.exists():
    tb.rename(old)
  fresh.rename(tb)
  shutil.rmtree(old, ignore_errors=True)
  return kept


def _finite_or_none(v):
  """JSON has no NaN/inf: those become null (the divergence guard reports them in status.json)."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v
