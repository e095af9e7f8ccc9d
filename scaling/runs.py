"""The run directory contract (see DESIGN.md): config.gin, run.json, metrics.jsonl, status.json, tb/.

Every file that is replaced is replaced atomically (write to a temporary file, then rename), so a
reader or a killed process never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATES = ("pending", "running", "done", "failed", "preempted")


def write_json_atomic(path: Path, obj: Any) -> None:
  """Writes JSON to `path` via a temporary file and rename."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
  """Writes text to `path` via a temporary file and rename."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_text(text)
  tmp.replace(path)


def _jsonable(x):
  if hasattr(x, "item"):
    return x.item()
  if isinstance(x, (set, tuple)):
    return list(x)
  return str(x)


def read_json(path: Path) -> Any:
  with open(path) as f:
    return json.load(f)


def set_status(run_dir: Path, state: str, step: int, reason: str = "") -> None:
  """Replaces status.json with {"state", "reason", "step", "time"}."""
  if state not in STATES:
    raise ValueError(f"unknown run state {state!r}")
  write_json_atomic(Path(run_dir) / "status.json", {"state": state, "reason": reason, "step": int(step), "time": time.time()})


def read_status(run_dir: Path) -> dict:
  """The run's status, or pending when it has none yet."""
  try:
    return read_json(Path(run_dir) / "status.json")
  except FileNotFoundError:
    return {"state": "pending", "reason": "", "step": 0}


def read_metrics(run_dir: Path) -> list[dict]:
  """All records of metrics.jsonl (a torn last line from a killed writer is ignored)."""
  path = Path(run_dir) / "metrics.jsonl"
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return records


def truncate_metrics(run_dir: Path, step: int) -> list[dict]:
  """Cuts metrics.jsonl back to the records at or before `step` (atomically); returns them."""
  kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
  write_text_atomic(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
  return kept


def read_run_info(run_dir: Path) -> dict:
  """The run's run.json (identity and sizes)."""
  return read_json(Path(run_dir) / "run.json")
