"""Claims: which process is running a run of a sweep, as numbered files `ROOT/<run_id>/claim.<n>`.

A claim holds host, pid, a token and a heartbeat refreshed while its holder works. The current claim is
the highest-numbered file. Claiming creates the next number with an exclusive create (a hard link on a
local disk, an `ifGenerationMatch=0` upload on GCS, see `scaling.storage`), so of two processes that saw
the same current claim only one can follow it. Numbers are never reused (files are not deleted), so
this holds on a local disk, a shared file system and an object store alike, with no lock. A claim whose
holder is dead (its pid is gone on this host, or its heartbeat is older than `runs.STALE_AFTER_S`) is
taken over by the next number; a released claim is rewritten as `released` and the next one starts
afresh. A holder that finds a higher number than its own has been taken over and stops refreshing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid

from scaling import runs, storage

CLAIM = "claim"
_NUMBERED = re.compile(rf"^{CLAIM}\.(\d+)$")


def _numbers(run_dir: storage.AnyPath) -> list[int]:
  return sorted(int(m.group(1)) for p in run_dir.glob(f"{CLAIM}.*") if (m := _NUMBERED.match(p.name)))


def _read_file(path: storage.AnyPath) -> dict:
  try:
    record = json.loads(storage.read_text(path))
  except (OSError, json.JSONDecodeError):
    return {"heartbeat": 0.0}  # unreadable: counts as dead
  return record if isinstance(record, dict) else {"heartbeat": 0.0}


def current(run_dir: storage.AnyPath) -> tuple[int, dict | None]:
  """The highest claim number and its record (0 and None when the run was never claimed)."""
  run_dir = storage.path(run_dir)
  numbers = _numbers(run_dir)
  if not numbers:
    return 0, None
  return numbers[-1], _read_file(run_dir / f"{CLAIM}.{numbers[-1]}")


def read(run_dir: storage.AnyPath) -> dict | None:
  """The run's claim, or None when nobody claims it (never claimed, or released)."""
  _, record = current(run_dir)
  return None if record is None or record.get("released") else record


def alive(claim: dict | None, now: float | None = None, stale_after_s: float = runs.STALE_AFTER_S) -> bool:
  """Whether a claim's holder still lives: a fresh heartbeat and, on this host, an existing pid."""
  if not claim or claim.get("released"):
    return False
  now = time.time() if now is None else now
  if now - float(claim.get("heartbeat", 0.0)) > stale_after_s:
    return False
  if claim.get("host") == socket.gethostname() and "pid" in claim:
    return runs.pid_alive(claim["pid"])
  return True


def release_lost(run_dir: storage.AnyPath, since: float) -> None:
  """Marks released a claim made since `since` whose holder is known to be gone (a job on a lost machine)."""
  number, record = current(run_dir)
  if record and not record.get("released") and float(record.get("claimed", 0.0)) >= since:
    storage.write_text_atomic(storage.path(run_dir) / f"{CLAIM}.{number}", json.dumps({**record, "released": True}))


class Claim:
  """A claim this process holds: refreshed every `interval_s` in the background until `release`."""

  def __init__(self, run_dir: storage.AnyPath, number: int, record: dict, interval_s: float):
    self.run_dir = storage.path(run_dir)
    self.number = number
    self.record = record
    self._path = self.run_dir / f"{CLAIM}.{number}"
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(interval_s,), name="scaling-claim", daemon=True)
    self._thread.start()

  @property
  def taken_over(self) -> dict | None:
    """The dead holder's claim this one replaced (None for a fresh claim)."""
    return self.record.get("took_over")

  def _mine(self) -> bool:
    return _numbers(self.run_dir)[-1:] == [self.number]

  def _write(self, record: dict) -> None:
    storage.write_text_atomic(self._path, json.dumps(record))

  def _beat(self, interval_s: float) -> None:
    while not self._stop.wait(interval_s):
      with self._lock:
        if self._stop.is_set() or not self._mine():
          return
        self.record["heartbeat"] = time.time()
        self._write(self.record)

  def release(self) -> None:
    """Stops the heartbeat and marks the claim released (if it is still the current one)."""
    self._stop.set()
    self._thread.join()
    with self._lock:
      if self._mine():
        self._write({**self.record, "released": True})


def try_claim(run_dir: storage.AnyPath, interval_s: float = runs.HEARTBEAT_S) -> Claim | None:
  """Claims the run for this process, taking over a dead holder's claim; None when a live process holds it
  (or another process claimed it at the same moment)."""
  run_dir = storage.path(run_dir)
  number, existing = current(run_dir)
  if alive(existing):
    return None
  dead = existing is not None and not existing.get("released")
  now = time.time()
  record = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "heartbeat": now,
            "claimed": now, "attempt": int(existing.get("attempt", 0)) + 1 if dead else 1}
  if dead:
    record["took_over"] = {k: existing.get(k) for k in ("host", "pid", "heartbeat")}
  if not storage.create_exclusive(run_dir / f"{CLAIM}.{number + 1}", json.dumps(record)):
    return None
  return Claim(run_dir, number + 1, record, interval_s)
