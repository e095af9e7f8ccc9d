"""Writes training metrics as JSON lines (metrics.jsonl) and TensorBoard events (tb/).

Only process 0 writes. Each record is one line, flushed at once, so a run killed at any moment leaves
every complete record readable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tensorboardX import SummaryWriter

# Keys every training record has (DESIGN.md); `eval_*` keys appear on evaluation steps only.
TRAIN_KEYS = ("step", "tokens", "train_loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "flops_per_s", "mfu")


class MetricsWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard."""

  def __init__(self, run_dir: Path, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    run_dir = Path(run_dir)
    self._file = open(run_dir / "metrics.jsonl", "a")
    self._tb = SummaryWriter(str(run_dir / "tb"), flush_secs=30)

  def write(self, record: dict) -> None:
    """Writes one record: {"step": int, ...scalars}."""
    if not self.enabled:
      return
    clean = {k: _finite_or_none(v) for k, v in record.items()}
    self._file.write(json.dumps(clean, sort_keys=True) + "\n")
    self._file.flush()
    for key, value in clean.items():
      if key != "step" and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, global_step=record["step"])

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def _finite_or_none(v):
  """JSON has no NaN/inf: those become null (the divergence guard reports them in status.json)."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v
