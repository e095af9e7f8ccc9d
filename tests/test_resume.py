"""A killed run resumes exactly: kill -9 at random moments, SIGTERM, a corrupt latest checkpoint, other meshes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scaling import runs
from ckpt_testlib import scaling_env  # noqa: F401  (a pytest fixture)
from ckpt_testlib import (REPO, committed_steps, curve, launch, messages, run_to_end, saved_arrays, tensorboard_steps,
                          trained_once, train_args, unfinished_saves)

FINAL_STEP = 480
# When each of the ten kill -9 land: while the process starts (imports, compiles, restores), at a
# random moment of training, or as soon as an asynchronous save has a temporary directory on disk.
KILLS = ("save", "training", "startup", "save", "training", "save", "startup", "training", "save", "training")


def _last_step(run_dir: Path) -> int:
  """The step of the last complete metrics record (0 when none)."""
  return max([0] + [r["step"] for r in runs.read_metrics(run_dir)])


def _wait_until(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
  """Polls `condition` every 5 ms; the test fails if the process exits or time runs out first."""
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.poll() is None, f"the run exited (status {proc.returncode}) before the moment it was to be stopped at"
    assert time.monotonic() < deadline, "timed out waiting for the moment to stop the run"
    time.sleep(0.005)


def _stop_at(kind: str, proc: subprocess.Popen, run_dir: Path, rng: random.Random, sig: int) -> None:
  """Sends `sig` at a moment of the given kind: 'startup', 'training' or 'save' (both after new progress).

  'save' lets 0 or 1 asynchronous saves pass, then stops the run while the next one is being written.
  """
  if kind == "startup":
    time.sleep(rng.uniform(0.5, 4.0))
  else:
    before = _last_step(run_dir)
    _wait_until(lambda: _last_step(run_dir) > before, proc)
    if kind == "training":
      time.sleep(rng.uniform(0.0, 0.6))
    else:
      seen: set[str] = set()
      wanted = rng.randint(1, 2)

      def saving_the_wanted_one() -> bool:
        seen.update(unfinished_saves(run_dir))
        return len(seen) >= wanted and bool(unfinished_saves(run_dir))

      _wait_until(saving_the_wanted_one, proc)
  assert proc.poll() is None, "the run finished before it could be stopped"
  proc.send_signal(sig)
  proc.wait(timeout=120)


def _corrupt(step_dir: Path) -> None:
  """Truncates the largest array data file of a checkpoint to half its length."""
  largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


@pytest.mark.slow
def test_kill9_ten_times_then_corruption_and_sigterm_resumes_bit_for_bit(tmp_path, scaling_env):
  reference = trained_once("tiny", train_args, scaling_env)  # read only

  run_dir, rng = tmp_path / "interrupted", random.Random(4)
  newest, killed_mid_save, outputs = 0, 0, []
  for i, kind in enumerate(KILLS):
    proc = launch(train_args(run_dir), scaling_env, tmp_path / f"kill{i}.log")
    _stop_at(kind, proc, run_dir, rng, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    outputs.append((tmp_path / f"kill{i}.log").read_text())
    steps = committed_steps(run_dir)
    assert max(steps, default=0) >= newest, f"kill {i} ({kind}) lost the newest complete checkpoint"
    newest = max(steps, default=0)
    killed_mid_save += bool(unfinished_saves(run_dir))
  assert 0 < newest < FINAL_STEP
  assert killed_mid_save >= 1
  assert any("unfinished checkpoint save(s)" in line for out in outputs for line in messages(out))

  corrupted, previous = committed_steps(run_dir)[-1], committed_steps(run_dir)[-2]
  _corrupt(run_dir / "checkpoints" / str(corrupted))
  proc = launch(train_args(run_dir), scaling_env, tmp_path / "sigterm.log")
  _stop_at("training", proc, run_dir, rng, signal.SIGTERM)
  output = (tmp_path / "sigterm.log").read_text()
  assert proc.returncode == 0, output[-3000:]
  lines = messages(output)
  assert any(line.startswith(f"scaling train: checkpoint {run_dir / 'checkpoints' / str(corrupted)} is incomplete "
                             "or corrupt (") for line in lines), lines
  assert f"scaling train: resuming {run_dir} from its checkpoint at step {previous}" in lines
  status = runs.read_status(run_dir)
  assert status["state"] == "preempted"
  preempted = status["step"]
  assert committed_steps(run_dir)[-1] == preempted
  assert f"scaling train: preempted at step {preempted}: checkpoint saved; run the same command to resume" in lines

  output = run_to_end(train_args(run_dir), scaling_env, tmp_path / "final.log")
  assert f"scaling train: resuming {run_dir} from its checkpoint at step {preempted}" in messages(output)

  assert runs.read_status(run_dir)["state"] == "done"
  assert curve(run_dir) == curve(reference)
  assert [r["step"] for r in curve(run_dir)] == list(range(0, FINAL_STEP + 1, 5))  # step-0 evaluation first
  assert sorted(tensorboard_steps(run_dir)) == list(range(5, FINAL_STEP + 1, 5))
  for got, want in zip(saved_arrays(run_dir, FINAL_STEP), saved_arrays(reference, FINAL_STEP), strict=True):
    np.testing.assert_array_equal(got, want)
  assert unfinished_saves(run_dir) == []
  assert {80, 160, 240, 320, 400, 480} <= set(committed_steps(run_dir))  # keep_every = 80 survives keep_last = 2


@pytest.mark.slow
def test_checkpoint_from_2x2x2_restores_onto_1x1x8_and_one_device(tmp_path, scaling_env):
  env = dict(scaling_env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, str(REPO / "tests" / "ckpt_testlib.py"), "meshes", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  meshes = json.loads(result.stdout.splitlines()[-1])
  assert {name: m["mesh"] for name, m in meshes.items()} == {
      "2x2x2": {"data": 2, "fsdp": 2, "tensor": 2},
      "1x1x8": {"data": 1, "fsdp": 1, "tensor": 8},
      "1": {"data": 1, "fsdp": 1, "tensor": 1},
  }
  assert [m["devices"] for m in meshes.values()] == [8, 8, 1]
  assert all(m["step"] == 3 and m["data_step"] == 3 for m in meshes.values())
  for name in ("1x1x8", "1"):
    np.testing.assert_allclose(meshes[name]["losses"], meshes["2x2x2"]["losses"], rtol=2e-6)
