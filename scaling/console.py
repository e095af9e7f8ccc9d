"""What `scaling train` shows while it runs: a live line (rich) on a terminal, plain lines elsewhere.

On a TTY the line shows step/steps, tokens, train loss, last eval loss, tokens/s, MFU and the ETA, and is
redrawn at every metrics record. Off a TTY (logs, CI, SLURM output files), one plain line is printed every
`every` records and at every evaluation, so a log shows progress without flooding.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_eta(seconds: float | None) -> str:
  """'1h02m', '3m05s', '42s' or '?' for an unknown ETA."""
  if seconds is None or seconds != seconds or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  if seconds >= 60:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds}s"


def format_count(n: float) -> str:
  """A count with a k, M or B suffix: 410k, 1.2M."""
  for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return f"{int(n)}"


def progress_line(record: dict, steps: int, last_eval: float | None, eta_s: float | None) -> str:
  """One line of progress for a metrics record."""
  parts = [f"step {record['step']}/{steps}", f"tokens {format_count(record.get('tokens', 0))}"]
  if record.get("train_loss") is not None:
    parts.append(f"train_loss {record['train_loss']:.4f}")
  if last_eval is not None:
    parts.append(f"eval_loss {last_eval:.4f}")
  if record.get("tokens_per_s"):
    parts.append(f"{format_count(record['tokens_per_s'])} tok/s")
  if record.get("mfu") is not None:
    parts.append(f"MFU {record['mfu']:.1%}")
  parts.append(f"ETA {format_eta(eta_s)}")
  return "  ".join(parts)


class TrainDisplay:
  """Shows the progress of one run; `show(record)` after each metrics record, `close()` at the end."""

  def __init__(self, steps: int, enabled: bool = True, every: int = 10, stream: TextIO | None = None,
               live: bool | None = None):
    self._steps = steps
    self._enabled = enabled
    self._every = max(1, every)
    self._stream = stream or sys.stderr
    self._live_wanted = self._stream.isatty() if live is None else live
    self._live = None
    self._count = 0
    self._last_eval: float | None = None
    self._start: tuple[float, int] | None = None

  def _eta(self, step: int) -> float | None:
    """Seconds left at the measured rate since the first record shown (compile time excluded)."""
    now = time.perf_counter()
    if self._start is None:
      self._start = (now, step)
      return None
    t0, s0 = self._start
    if step <= s0:
      return None
    return (now - t0) / (step - s0) * (self._steps - step)

  def show(self, record: dict) -> None:
    if not self._enabled:
      return
    self._count += 1
    if record.get("eval_loss") is not None:
      self._last_eval = record["eval_loss"]
    line = progress_line(record, self._steps, self._last_eval, self._eta(record["step"]))
    if self._live_wanted:
      self._update_live(line)
    elif self._count % self._every == 0 or record.get("eval_loss") is not None or record["step"] == self._steps:
      print(f"scaling train: {line}", file=self._stream, flush=True)

  def _update_live(self, line: str) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    if self._live is None:
      self._live = Live(Text(line), console=Console(file=self._stream), refresh_per_second=4, transient=False)
      self._live.start()
    else:
      self._live.update(Text(line))

  def close(self) -> None:
    if self._live is not None:
      self._live.stop()
      self._live = None
