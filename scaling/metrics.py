"""Writes training metrics as JSON lines (metrics.jsonl) and TensorBoard events (tb/).

Only process 0 writes. Each record is one line, flushed at once, so a run killed at any moment leaves
every complete record readable (in a gs:// run directory, every record up to the newest checkpoint: see
`runs.MetricsAppender`). metrics.jsonl is the record of truth: when a run resumes from (or rolls
back to) a checkpoint, both are cut back to its step, TensorBoard by rewriting tb/ from metrics.jsonl,
so neither ever holds a step twice.

TensorBoard reads the event files of a directory in name order, and drops what it has read when a step
goes back, so names must sort in step order. tensorboardX names a file by the second it was opened; our
suffixes order the files of one second: `.0-history` (the records kept at a resume, rewritten) before
`.1-live`.

On GCS, tensorboardX's own writer would keep each event file in memory, upload all of it at every flush
and once more when collected. Instead the events are written to a local file (under the scaling cache)
and what it gains is appended to the object of the same name in tb/ every `runs.REMOTE_FLUSH_S` and at
each flush (`storage.AppendMirror`), so each byte goes up once.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from tensorboardX import SummaryWriter

from scaling import runs, storage

HISTORY_SUFFIX, LIVE_SUFFIX = ".0-history", ".1-live"  # event-file name suffixes: the history sorts first
# Keys every training record has (docs/architecture.md); `eval_*` keys appear on evaluation steps only.
TRAIN_KEYS = ("step", "tokens", "train_loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "flops_per_s", "mfu")


class MetricsWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  With `start_step`, first cuts both back to that step (see `rewind`); without, appends to what is there.
  """

  def __init__(self, run_dir: storage.AnyPath, enabled: bool = True, start_step: int | None = None):
    self.enabled = enabled
    self.kept: list[dict] = []
    if not enabled:
      return
    self._run_dir = storage.path(run_dir)
    if start_step is not None:
      self.kept = _cut_back(self._run_dir, start_step)
    self._open()

  def _open(self) -> None:
    self._file = runs.MetricsAppender(self._run_dir)
    self._mirrors: list[storage.AppendMirror] | None = None
    if not storage.is_remote(self._run_dir):
      self._tb = SummaryWriter(str(self._run_dir / "tb"), flush_secs=30, filename_suffix=LIVE_SUFFIX)
      return
    self._tb_local = _fresh_local_dir(self._run_dir, "tb-live")
    self._tb = SummaryWriter(str(self._tb_local), flush_secs=30, filename_suffix=LIVE_SUFFIX)
    self._mirrors, self._synced_at = [], time.monotonic()

  def write(self, record: dict) -> None:
    """Writes one record: {"step": int, ...scalars}."""
    if not self.enabled:
      return
    clean = {k: _finite_or_none(v) for k, v in record.items()}
    self._file.append(clean)
    _add_scalars(self._tb, clean)
    if self._mirrors is not None and time.monotonic() - self._synced_at >= runs.REMOTE_FLUSH_S:
      self._sync_events()

  def flush(self) -> None:
    """Makes every record written so far readable in metrics.jsonl (see `runs.MetricsAppender`) and, on GCS,
    in tb/."""
    if self.enabled:
      self._file.flush()
      if self._mirrors is not None:
        self._sync_events()

  def _sync_events(self) -> None:
    """On GCS: appends what the local event files gained to their objects in tb/."""
    self._tb.flush()
    known = {m.local.name for m in self._mirrors}
    self._mirrors += [storage.AppendMirror(f, self._run_dir / "tb" / f.name)
                      for f in sorted(self._tb_local.iterdir()) if f.name not in known]
    for mirror in self._mirrors:
      mirror.sync()
    self._synced_at = time.monotonic()

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
      if self._mirrors is not None:
        self._sync_events()


def _add_scalars(tb: SummaryWriter, record: dict) -> None:
  for key, value in record.items():
    if key != "step" and isinstance(value, (int, float)):
      tb.add_scalar(key, value, global_step=record["step"])


def _cut_back(run_dir: storage.AnyPath, step: int) -> list[dict]:
  """Cuts metrics.jsonl to `step` and rewrites tb/ from it (a new tb/ swapped in whole); returns the records."""
  kept = runs.truncate_metrics(run_dir, step)
  if storage.is_remote(run_dir):  # no renames on GCS: tb/ is a mirror, so it is simply written again
    if (run_dir / "tb").exists():
      (run_dir / "tb").rmtree()
    staged = _fresh_local_dir(run_dir, "tb-history")
    _write_events(staged, kept)
    for f in sorted(staged.iterdir()):
      storage.append_bytes(run_dir / "tb" / f.name, f.read_bytes())
    shutil.rmtree(staged)
    return kept
  fresh, tb, old = run_dir / "tb.rewrite", run_dir / "tb", run_dir / "tb.old"
  shutil.rmtree(fresh, ignore_errors=True)
  _write_events(fresh, kept)
  shutil.rmtree(old, ignore_errors=True)
  if tb.exists():
    tb.rename(old)
  fresh.rename(tb)
  shutil.rmtree(old, ignore_errors=True)
  return kept


def _write_events(tb: storage.AnyPath, records: list[dict]) -> None:
  writer = SummaryWriter(str(tb), filename_suffix=HISTORY_SUFFIX)
  for record in records:
    _add_scalars(writer, record)
  writer.close()


def _fresh_local_dir(run_dir: storage.AnyPath, name: str) -> Path:
  """An empty local directory for files of a gs:// run directory to be written before they are uploaded."""
  local = storage.local_dir(run_dir) / name
  shutil.rmtree(local, ignore_errors=True)
  local.mkdir(parents=True)
  return local


def _finite_or_none(v):
  """JSON has no NaN/inf: those become null (the divergence guard reports them in status.json)."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v
