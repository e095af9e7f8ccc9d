"""Shared by the sweep tests: the tiny sweep spec, `scaling sweep` launches, and reading a sweep root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ckpt_testlib import CURVE_KEYS, REPO

from scaling import runs

TINY = REPO / "tests" / "data" / "sweeps" / "tiny.gin"


def sweep_args(root: Path, *bindings: str, extra: tuple[str, ...] = ()) -> list[str]:
  """The `scaling sweep` command line of the tiny sweep with extra bindings."""
  return [sys.executable, "-m", "scaling", "sweep", str(TINY), f"--root={root}", *extra,
          *(f"--gin_bindings={b}" for b in bindings)]


def run_sweep(env: dict, root: Path, *bindings: str, extra: tuple[str, ...] = (), timeout: float = 600) -> subprocess.CompletedProcess:
  return subprocess.run(sweep_args(root, *bindings, extra=extra), env=env, capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)


def run_ids(root: Path) -> list[str]:
  return sorted(p.parent.name for p in Path(root).glob("*/spec.json"))


def spec(root: Path, run_id: str) -> dict:
  return json.loads((Path(root) / run_id / "spec.json").read_text())


def starts(root: Path, run_id: str) -> int:
  """How many times a worker started training this run (one header line in train.log per start)."""
  log = Path(root) / run_id / "train.log"
  return sum(1 for line in log.read_text().splitlines() if line.startswith("=== ")) if log.exists() else 0


def curve(run_dir: Path) -> list[dict]:
  """The timing-independent part of a run's metrics."""
  return [{k: r[k] for k in CURVE_KEYS if k in r} for r in runs.read_metrics(run_dir)]


def state(root: Path, run_id: str) -> str:
  return runs.read_status(Path(root) / run_id)["state"]
