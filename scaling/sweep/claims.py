"""Claims: which process is running a run of a sweep, as an atomically created `ROOT/<run_id>/claim` file.

A claim holds host, pid, a token and a heartbeat refreshed while its holder works. A claim whose holder
is dead (its pid is gone on this host, or its heartbeat is older than `runs.STALE_AFTER_S`) is taken over.
Check-and-take-over runs under an exclusive `flock` on `ROOT/.claims.lock`, so two `scaling sweep`
processes on one root (one host or a shared file system with working locks) never hold the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from scaling import runs

CLAIM, LOCK = "claim", ".claims.lock"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
  with open(Path(root) / LOCK, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read(run_dir: Path) -> dict | None:
  """The run's claim, or None when nobody claims it (an unreadable claim counts as dead)."""
  try:
    return json.loads((Path(run_dir) / CLAIM).read_text())
  except FileNotFoundError:
    return None
  except (OSError, json.JSONDecodeError):
    return {"heartbeat": 0.0}


def alive(claim: dict | None, now: float | None = None, stale_after_s: float = runs.STALE_AFTER_S) -> bool:
  """Whether a claim's holder still lives: a fresh heartbeat and, on this host, an existing pid."""
  if not claim:
    return False
  now = time.time() if now is None else now
  if now - float(claim.get("heartbeat", 0.0)) > stale_after_s:
    return False
  if claim.get("host") == socket.gethostname() and "pid" in claim:
    return runs.pid_alive(claim["pid"])
  return True


class Claim:
  """A claim this process holds: refreshed every `interval_s` in the background until `release`."""

  def __init__(self, run_dir: Path, record: dict, interval_s: float):
    self.run_dir = Path(run_dir)
    self.record = record
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(interval_s,), name="scaling-claim", daemon=True)
    self._thread.start()

  @property
  def taken_over(self) -> dict | None:
    """The dead holder's claim this one replaced (None for a fresh claim)."""
    return self.record.get("took_over")

  def _mine(self) -> bool:
    current = read(self.run_dir)
    return bool(current) and current.get("token") == self.record["token"]

  def _beat(self, interval_s: float) -> None:
    while not self._stop.wait(interval_s):
      with _locked(self.run_dir.parent):
        if not self._mine():
          return
        self.record["heartbeat"] = time.time()
        runs.write_json_atomic(self.run_dir / CLAIM, self.record)

  def release(self) -> None:
    """Stops the heartbeat and removes the claim (if it is still this one's)."""
    self._stop.set()
    self._thread.join()
    with _locked(self.run_dir.parent):
      if self._mine():
        (self.run_dir / CLAIM).unlink()


def try_claim(run_dir: Path, interval_s: float = runs.HEARTBEAT_S) -> Claim | None:
  """Claims the run for this process, taking over a dead holder's claim; None when a live process holds it."""
  run_dir = Path(run_dir)
  with _locked(run_dir.parent):
    existing = read(run_dir)
    if existing is not None:
      if alive(existing):
        return None
      (run_dir / CLAIM).unlink(missing_ok=True)
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "heartbeat": now,
              "claimed": now, "attempt": int(existing.get("attempt", 0)) + 1 if existing else 1}
    if existing is not None:
      record["took_over"] = {k: existing.get(k) for k in ("host", "pid", "heartbeat")}
    fd = os.open(run_dir / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
      json.dump(record, f)
      f.flush()
      os.fsync(f.fileno())
  return Claim(run_dir, record, interval_s)
