"""The run directory contract (docs/architecture.md): config.gin, run.json, metrics.jsonl, status.json.

This module is the only code that reads or writes those files; the trainer, the metrics writer, the
fitter and the tests go through it, so every reader agrees on what a torn line or a missing status means:
- a missing status.json is `pending`; an unreadable one is a UserError naming the file;
- metrics.jsonl is append-only; a torn *last* line (a writer killed mid-write) is ignored, a torn line
  anywhere else is a UserError naming the line;
- every file that is replaced is replaced whole (`storage.write_text_atomic`: a rename on a local disk,
  one upload on GCS), so a reader or a killed process never sees half a file.
A run directory may be a local path or a gs:// URL (`scaling.storage`). On GCS each append to
metrics.jsonl is an upload and a compose, so records are appended in groups: at most every
`REMOTE_FLUSH_S` and whenever the trainer asks (before every checkpoint, at the end), which keeps every
record up to the newest checkpoint.
status.json carries the host, pid and a heartbeat time, refreshed while the run is running, so a runner
can tell a dead run (its pid is gone on this host, or its heartbeat is stale) from a live one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from scaling import storage
from scaling.errors import UserError
from scaling.storage import AnyPath

FORMAT_VERSION = 1
STATES = ("pending", "running", "done", "failed", "preempted")
HEARTBEAT_S = 30.0  # how often a running run refreshes its heartbeat
STALE_AFTER_S = 180.0  # a heartbeat older than this means the run is dead
REMOTE_FLUSH_S = 30.0  # on GCS, how often the records (and TensorBoard events) written since are appended
REMOTE_STATUS_S = 10.0  # on GCS, the least time between two writes of status.json for progress alone
CONFIG, RUN_INFO, METRICS, STATUS = "config.gin", "run.json", "metrics.jsonl", "status.json"


def _jsonable(x):
  if hasattr(x, "item"):
    return x.item()
  if isinstance(x, (set, tuple)):
    return list(x)
  return str(x)


def write_text_atomic(path: AnyPath, text: str) -> None:
  """Replaces the file at `path` whole (see `storage.write_text_atomic`)."""
  storage.write_text_atomic(storage.path(path), text)


def write_json_atomic(path: AnyPath, obj: Any) -> None:
  """Writes JSON to `path` atomically (numpy scalars and tuples become JSON numbers and lists)."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: AnyPath) -> Any:
  """Reads a JSON file; a corrupt one is a UserError naming it (a missing one raises FileNotFoundError)."""
  path = storage.path(path)
  try:
    return json.loads(storage.read_text(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e})") from None


# --- config.gin and run.json ---------------------------------------------------------------------------


def write_config(run_dir: AnyPath, text: str) -> None:
  """Writes the operative gin config of a run."""
  write_text_atomic(storage.path(run_dir) / CONFIG, text)


def read_config(run_dir: AnyPath) -> str | None:
  """The run's operative gin config, or None when it has none yet."""
  path = storage.path(run_dir) / CONFIG
  return storage.read_text(path) if path.exists() else None


def write_run_info(run_dir: AnyPath, info: dict) -> None:
  """Writes run.json (identity and sizes), stamped with the format version."""
  write_json_atomic(storage.path(run_dir) / RUN_INFO, {**info, "format_version": FORMAT_VERSION})


def read_run_info(run_dir: AnyPath) -> dict | None:
  """run.json, or None when the run has not written it yet; a newer format is a UserError."""
  path = storage.path(run_dir) / RUN_INFO
  if not path.exists():
    return None
  info = read_json(path)
  if not isinstance(info, dict):
    raise UserError(f"{path} is not a JSON object")
  if info.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
    raise UserError(f"{path} has format_version {info['format_version']}; this version reads {FORMAT_VERSION}")
  return info


def is_run_dir(path: AnyPath) -> bool:
  """True for a directory holding a run (its run.json or status.json)."""
  path = storage.path(path)
  return (path / RUN_INFO).exists() or (path / STATUS).exists()


# --- status.json ---------------------------------------------------------------------------------------


def status_record(state: str, step: int, reason: str = "", **extra: Any) -> dict:
  """A status.json object for this process: state, reason, step, host, pid and a fresh heartbeat."""
  if state not in STATES:
    raise ValueError(f"unknown run state {state!r}")
  now = time.time()
  return {"state": state, "reason": reason, "step": int(step), "host": socket.gethostname(), "pid": os.getpid(),
          "heartbeat": now, "time": now, **extra}


def set_status(run_dir: AnyPath, state: str, step: int, reason: str = "", **extra: Any) -> dict:
  """Replaces status.json atomically; returns what it wrote."""
  record = status_record(state, step, reason, **extra)
  write_json_atomic(storage.path(run_dir) / STATUS, record)
  return record


def read_status(run_dir: AnyPath) -> dict:
  """The run's status; `pending` when it has none yet; a corrupt status.json is a UserError."""
  path = storage.path(run_dir) / STATUS
  try:
    status = read_json(path)
  except FileNotFoundError:
    return {"state": "pending", "reason": "", "step": 0}
  if not isinstance(status, dict) or status.get("state") not in STATES:
    raise UserError(f"{path} is corrupt: expected an object with a state in {STATES}")
  return status


def pid_alive(pid: int) -> bool:
  """True when a process with this pid exists on this host."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def is_alive(status: dict, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
  """Whether a `running` status belongs to a live process: its pid exists (on this host) and its heartbeat is fresh."""
  if status.get("state") != "running":
    return False
  now = time.time() if now is None else now
  if now - float(status.get("heartbeat", 0.0)) > stale_after_s:
    return False
  if status.get("host") == socket.gethostname() and "pid" in status:
    return pid_alive(status["pid"])
  return True


class StatusKeeper:
  """Owns a running run's status.json: state changes, plus a background heartbeat every `interval_s`.

  The heartbeat rewrites the current status with a fresh time, under the same lock as state changes,
  so it never brings back a state that was already replaced. On GCS, progress alone (`update`) is written
  at most every `REMOTE_STATUS_S` (each write is a synchronous upload, and GCS allows about one write per
  second to an object); the heartbeat writes what is newer. State changes are always written at once.
  """

  def __init__(self, run_dir: AnyPath, enabled: bool = True, interval_s: float = HEARTBEAT_S):
    self._run_dir = storage.path(run_dir)
    self._enabled = enabled
    self._interval_s = interval_s
    self._lock = threading.Lock()
    self._current: dict | None = None
    self._throttle_s = REMOTE_STATUS_S if storage.is_remote(self._run_dir) else 0.0
    self._written_at = float("-inf")
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def set(self, state: str, step: int, reason: str = "", **extra: Any) -> None:
    """Records a new state (keeping extra fields such as `startup_s`); `running` starts the heartbeat, others stop it."""
    if not self._enabled:
      return
    with self._lock:
      kept = _extras(self._current) if self._current else {}
      self._current = set_status(self._run_dir, state, step, reason, **{**kept, **extra})
      self._written_at = time.monotonic()
    if state == "running" and self._thread is None:
      self._thread = threading.Thread(target=self._beat, name="scaling-heartbeat", daemon=True)
      self._thread.start()
    elif state != "running":
      self.stop()

  def update(self, **extra: Any) -> None:
    """Adds fields to the current status (e.g. the step reached) without changing its state."""
    if not self._enabled or self._current is None:
      return
    with self._lock:
      args = (self._current["state"], extra.pop("step", self._current["step"]), self._current["reason"])
      fields = {**_extras(self._current), **extra}
      if time.monotonic() - self._written_at < self._throttle_s:
        self._current = status_record(*args, **fields)  # the heartbeat or the next update writes it
        return
      self._current = set_status(self._run_dir, *args, **fields)
      self._written_at = time.monotonic()

  @property
  def state(self) -> str | None:
    return None if self._current is None else self._current["state"]

  @property
  def step(self) -> int:
    return 0 if self._current is None else int(self._current["step"])

  def _beat(self) -> None:
    while not self._stop.wait(self._interval_s):
      with self._lock:
        if self._current is None or self._current["state"] != "running":
          return
        self._current = set_status(self._run_dir, "running", self._current["step"], self._current["reason"],
                                   **_extras(self._current))
        self._written_at = time.monotonic()

  def stop(self) -> None:
    """Stops the heartbeat thread (idempotent)."""
    self._stop.set()
    thread, self._thread = self._thread, None
    if thread is not None and thread is not threading.current_thread():
      thread.join()
    self._stop = threading.Event()


def _extras(status: dict) -> dict:
  """The fields of a status beyond those `status_record` sets itself."""
  own = ("state", "reason", "step", "host", "pid", "heartbeat", "time")
  return {k: v for k, v in status.items() if k not in own}


# --- metrics.jsonl -------------------------------------------------------------------------------------


def _line(record: dict) -> str:
  """A metrics record as one line of metrics.jsonl."""
  return json.dumps(record, sort_keys=True) + "\n"


def _parse_metrics(path: AnyPath, text: str) -> list[dict]:
  """Parses JSON lines: a torn last line is dropped, a bad line before the last is a UserError."""
  lines = text.splitlines()
  records = []
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines) and not text.endswith("\n"):
        break
      raise UserError(f"{path}:{number} is not a JSON record") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
      raise UserError(f"{path}:{number} is not a metrics record (an object with an integer step)")
    records.append(record)
  return records


def read_metrics(run_dir: AnyPath) -> list[dict]:
  """All complete records of metrics.jsonl, in order ([] when there is none)."""
  path = storage.path(run_dir) / METRICS
  if not path.exists():
    return []
  return _parse_metrics(path, storage.read_text(path))


def write_metrics(run_dir: AnyPath, records: list[dict]) -> None:
  """Replaces metrics.jsonl with `records` atomically."""
  write_text_atomic(storage.path(run_dir) / METRICS, "".join(_line(r) for r in records))


def truncate_metrics(run_dir: AnyPath, step: int) -> list[dict]:
  """Cuts metrics.jsonl back to the records at or before `step` (atomically); returns them."""
  kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
  write_metrics(run_dir, kept)
  return kept


class MetricsAppender:
  """Appends one JSON record per line to metrics.jsonl, flushed at once; never writes a step twice.

  On GCS the records wait in memory and are appended together (see the module doc): at most every `flush_s`,
  and on `flush`.
  """

  def __init__(self, run_dir: AnyPath, flush_s: float = REMOTE_FLUSH_S):
    self._path = storage.path(run_dir) / METRICS
    existing = read_metrics(run_dir)
    self._last_step = existing[-1]["step"] if existing else -1
    self._remote = storage.is_remote(self._path)
    if self._remote:
      self._pending: list[str] = []
      self._flush_s, self._flushed_at = flush_s, time.monotonic()
    else:
      self._file = open(self._path, "a")

  def append(self, record: dict) -> None:
    if record["step"] <= self._last_step:
      raise ValueError(f"{self._path}: step {record['step']} is not after the last record's step {self._last_step}")
    line = _line(record)
    self._last_step = record["step"]
    if not self._remote:
      self._file.write(line)
      self._file.flush()
      return
    self._pending.append(line)
    if time.monotonic() - self._flushed_at >= self._flush_s:
      self.flush()

  def flush(self) -> None:
    """Makes every appended record readable (a no-op on a local disk, where each is written at once)."""
    if self._remote and self._pending:
      storage.append_bytes(self._path, "".join(self._pending).encode())
      self._pending, self._flushed_at = [], time.monotonic()

  def close(self) -> None:
    if self._remote:
      self.flush()
    else:
      self._file.close()


def check_run_dir(run_dir: AnyPath, flag: str = "--run_dir") -> AnyPath:
  """A usable run directory path: not a file, and it (or the nearest existing ancestor, where the missing
  directories will be created) is a writable directory. A gs:// URL must not name an object; whether the
  bucket lets us write is known at the first write."""
  run_dir = storage.path(run_dir)
  storage.check_bucket(run_dir)
  if run_dir.exists() and not run_dir.is_dir():
    raise UserError(f"{flag} {run_dir} is a file, not a directory")
  if storage.is_remote(run_dir):
    return run_dir
  existing = run_dir.absolute()
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise UserError(f"{flag} {run_dir}: {existing} is a file, so the directory cannot be created")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f"{flag} {run_dir}: {existing} is not writable")
  return run_dir
