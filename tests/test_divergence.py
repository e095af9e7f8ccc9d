"""The divergence guard: a NaN loss stops the run, or rolls back to the last checkpoint and skips the batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scaling import runs
from ckpt_testlib import scaling_env  # noqa: F401  (a pytest fixture)
from ckpt_testlib import REPO, committed_steps, curve


def _poisoned_run(tmp_path, env, positions: str, *bindings: str) -> subprocess.CompletedProcess:
  """Trains the tiny run with NaN batch weights at the given data positions (see ckpt_testlib)."""
  args = [sys.executable, str(REPO / "tests" / "ckpt_testlib.py"), "poison", str(tmp_path / "run"), positions, *bindings]
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _status(tmp_path) -> dict:
  return runs.read_status(tmp_path / "run")


@pytest.mark.slow
def test_nan_stops_the_run_with_the_step_and_reason(tmp_path, scaling_env):
  result = _poisoned_run(tmp_path, scaling_env, "21")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"scaling train: error: {tmp_path / 'run'}: training diverged: non-finite train_loss at step 21")
  status = _status(tmp_path)
  assert (status["state"], status["step"], status["reason"]) == ("failed", 21, "non-finite train_loss at step 21")
  assert committed_steps(tmp_path / "run") == [16]  # nothing saved after the NaN
  assert curve(tmp_path / "run")[-1]["step"] == 25 and curve(tmp_path / "run")[-1]["train_loss"] is None


@pytest.mark.slow
def test_nan_rolls_back_skips_the_batch_and_finishes(tmp_path, scaling_env):
  result = _poisoned_run(tmp_path, scaling_env, "21", "checkpoint.on_divergence = 'rollback'")
  assert result.returncode == 0, result.stderr[-3000:]
  assert ("scaling train: non-finite train_loss at step 21: rolled back to step 16, skipping the batch of step 21 "
          "(rollback 1 of 3)") in result.stderr.splitlines()
  status = _status(tmp_path)
  assert (status["state"], status["step"]) == ("done", 480)
  assert status["reason"] == "1 rollback(s); skipped the batch of step(s) [21]"
  records = curve(tmp_path / "run")
  assert [r["step"] for r in records] == list(range(0, 481, 5))  # the step-0 evaluation, then every 5 steps
  assert all(r["train_loss"] is not None and r["grad_norm"] is not None for r in records[1:])


@pytest.mark.slow
def test_rollbacks_are_limited_then_the_run_fails(tmp_path, scaling_env):
  bindings = ("checkpoint.on_divergence = 'rollback'", "checkpoint.max_rollbacks = 1")
  result = _poisoned_run(tmp_path, scaling_env, "21,22", *bindings)
  assert result.returncode == 2
  assert "rolled back to step 16, skipping the batch of step 21 (rollback 1 of 1)" in result.stderr
  status = _status(tmp_path)
  assert (status["state"], status["step"]) == ("failed", 21)
  assert status["reason"] == "non-finite train_loss at step 21 after 1 rollback(s)"
