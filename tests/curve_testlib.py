"""The nano runs that the learning-curve tests fit (analysis/partial_run.py's smallest family), trained once
per test session through `scaling train` and shared by the xdist workers; each test gets its own copy."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ckpt_testlib import REPO, trained_once


def knobs(steps: int) -> list[str]:
  """A nano model, `steps` steps of 16 x 64 tokens, cosine from peak LR 0.01 with its own 5% warmup; eval every
  20 steps on 8,192 tokens."""
  return ["model.size = 'nano'", "train.seq_len = 64", "train.global_batch = 16", f"train.tokens = {steps * 1024}",
          "train.learning_rate = 0.01", "train.eval_every = 20", "train.eval_tokens = 8192", "train.log_every = 20",
          "checkpoint.every_steps = 100000"]


def nano_run(steps: int, dest: Path) -> Path:
  """A copy at `dest` of the finished nano run of `steps` steps (on the tests' 8 simulated devices)."""
  args = lambda run_dir: [sys.executable, "-m", "scaling", "train", f"--run_dir={run_dir}",
                          *(f"--gin_bindings={k}" for k in knobs(steps))]
  run = trained_once(f"nano_{steps}", args, {**os.environ, "PYTHONPATH": str(REPO)})
  shutil.copytree(run, dest)
  return dest
