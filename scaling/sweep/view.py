"""What `scaling sweep` shows while it runs: a live table (rich) on a terminal, plain lines elsewhere.

On a TTY: one line of counts (done, running, failed) with the ETA from measured throughput, then a row per
running run with its step, train and eval loss and tokens/s. Off a TTY: one line whenever a run changes
state, and the counts line every `every_s` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import ml_collections

from scaling import storage
from scaling.sweep import table


class SweepView:
  """Call `show(final)` periodically; it reads the run directories and redraws."""

  def __init__(self, root: Path, specs: Sequence[ml_collections.ConfigDict], workers: int,
               stream: TextIO | None = None, live: bool | None = None, every_s: float = 60.0):
    self._root, self._specs, self._workers = storage.path(root), list(specs), workers
    self._stream = stream or sys.stderr
    self._live_wanted = self._stream.isatty() if live is None else live
    self._live = None
    self._states: dict[str, str] = {}
    self._every_s, self._last_line = every_s, 0.0

  def rows(self) -> list[dict]:
    return [table.status_row(self._root, s) for s in self._specs]

  def show(self, final: bool = False) -> list[dict]:
    rows = self.rows()
    s = table.summary(rows, self._specs, self._workers)
    if self._live_wanted:
      self._draw_live(rows, s, final)
    else:
      self._print_changes(rows, s, final)
    return rows

  def _print_changes(self, rows: list[dict], s: dict, final: bool) -> None:
    for r in rows:
      before = self._states.get(r["run"])
      if before != r["state"] and (before is not None or r["state"] not in ("pending", "done", "failed")):
        extra = f" eval_loss {r['eval_loss']}" if r["state"] == "done" and r["eval_loss"] else ""
        extra += f" ({r['reason']})" if r["state"] == "failed" and r.get("reason") else ""
        print(f"scaling sweep: {r['run']} {r['part']} {r['shape']}: {r['state']}{extra}", file=self._stream, flush=True)
      self._states[r["run"]] = r["state"]
    if final or time.monotonic() - self._last_line >= self._every_s:
      self._last_line = time.monotonic()
      print(f"scaling sweep: {table.summary_line(s)}", file=self._stream, flush=True)

  def _draw_live(self, rows: list[dict], s: dict, final: bool) -> None:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, padding=(0, 1))
    for c in ("run", "part", "shape", "step", "train_loss", "eval_loss", "tok/s"):
      grid.add_column(c)
    for r in rows:
      if r["state"] in ("running", "starting"):
        last = r["_records"][-1] if r["_records"] else {}
        train = f"{last['train_loss']:.4f}" if last.get("train_loss") is not None else ""
        grid.add_row(r["run"], r["part"], r["shape"], f"{r['step']}/{r['steps']}", train, r["eval_loss"], r["tok/s"])
    failed = [f"{r['run']}: {r.get('reason', '')}" for r in rows if r["state"] == "failed"]
    body = Group(Text(f"scaling sweep: {table.summary_line(s)}"), grid, *(Text(f"failed {f}") for f in failed))
    if self._live is None:
      self._live = Live(body, console=Console(file=self._stream), refresh_per_second=2, transient=False)
      self._live.start()
    self._live.update(body)
    if final:
      self._live.stop()
      self._live = None
