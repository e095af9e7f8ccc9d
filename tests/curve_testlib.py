"""The nano runs that the learning-curve tests fit (analysis/partial_run.py's smallest family), trained once
per test session through `scaling train` and shared by the xdist workers; each test gets its own copy."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from conftest import run_cli

from scaling import runs


def knobs(steps: int) -> list[str]:
  """A nano model, `steps` steps of 16 x 64 tokens, cosine from peak LR 0.01 with its own 5% warmup; eval every
  20 steps on 8,192 tokens."""
  return ["model.size = 'nano'", "train.seq_len = 64", "train.global_batch = 16", f"train.tokens = {steps * 1024}",
          "train.learning_rate = 0.01", "train.eval_every = 20", "train.eval_tokens = 8192", "train.log_every = 20",
          "checkpoint.every_steps = 100000"]


def nano_run(steps: int, dest: Path) -> Path:
  """A copy at `dest` of the finished nano run of `steps` steps, trained on first use (under a file lock)."""
  shared = Path(os.environ["SCALING_TEST_SHARED"]) / "nano_runs"
  shared.mkdir(exist_ok=True)
  run = shared / f"nano_{steps}"
  with open(shared / f"nano_{steps}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (runs.is_run_dir(run) and runs.read_status(run)["state"] == "done"):
      shutil.rmtree(run, ignore_errors=True)
      result = run_cli("train", f"--run_dir={run}", *[f"--gin_bindings={k}" for k in knobs(steps)])
      assert result.returncode == 0, result.stderr[-3000:]
  shutil.copytree(run, dest)
  return dest
