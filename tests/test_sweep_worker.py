"""Workers: cooldown branches train from their parent's checkpoint and equal a run trained straight through."""

import subprocess
import sys
import time

import pytest
from ckpt_testlib import REPO, scaling_env  # noqa: F401  (a pytest fixture)
from sweep_testlib import curve, run_ids, run_sweep, spec, state

from scaling import runs, storage
from scaling.sweep import worker

COOLDOWNS = ("sweep.parts = [@cooldowns()]", "grid.params = None", "cooldowns.params = [16000]",
             "cooldowns.tokens = [10240, 20480]")


@pytest.mark.slow
def test_a_cooldown_branch_equals_a_run_trained_straight_through(tmp_path, scaling_env):
  root = tmp_path / "cool"
  result = run_sweep(scaling_env, root, *COOLDOWNS, extra=("--workers=2",))
  assert result.returncode == 0, result.stderr
  specs = {rid: spec(root, rid) for rid in run_ids(root)}
  parent = next(r for r, s in specs.items() if s["role"] == "cooldown_parent")
  branches = [r for r, s in specs.items() if s["role"] == "cooldown"]
  assert len(branches) == 2 and all(state(root, r) == "done" for r in specs)
  for rid in branches:
    info = runs.read_run_info(root / rid)
    assert info["parent"]["run_id"] == parent and info["parent"]["step"] == specs[rid]["branch_step"]
    assert info["sweep"]["role"] == "cooldown"
    # The same spec.gin trained from scratch, without the branch: the same curve, record for record.
    straight = tmp_path / f"straight_{rid}"
    args = [sys.executable, "-m", "scaling", "train", f"--gin_file={root / rid / 'spec.gin'}", f"--run_dir={straight}"]
    done = subprocess.run(args, env=scaling_env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert curve(root / rid) == curve(straight)
  assert runs.read_run_info(root / parent)["sweep"]["role"] == "cooldown_parent"


def test_a_run_that_fails_before_training_is_recorded_failed(tmp_path):
  root = tmp_path / "root"
  run = root / "r1"
  run.mkdir(parents=True)
  (run / "spec.json").write_text('{"run_id": "r1", "mesh": "-1x1x1", "parent": "", "branch_step": 0, '
                                 '"part": "grid", "role": "", "bindings": []}')
  (run / "spec.gin").write_text("no_such_configurable.knob = 1\n")
  assert worker.train_one(root, "r1") == {}
  status = runs.read_status(run)
  assert status["state"] == "failed" and "no_such_configurable" in status["reason"]
  assert "scaling train: error:" in (run / "train.log").read_text()


def test_on_gcs_the_run_log_is_appended_to_while_the_run_trains(gcs_root, tmp_path, monkeypatch):
  """A process cannot write to an object: its output goes to a local file, and what that gains is appended to
  the run's train.log every runs.REMOTE_FLUSH_S (it used to be uploaded only when the run stopped)."""
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(runs, "REMOTE_FLUSH_S", 0.05)
  run = storage.path(gcs_root) / "r1"
  log = run / "train.log"
  storage.write_text_atomic(log, "=== an earlier start\n")
  with worker._run_log(run):
    print("=== this start", flush=True)
    deadline = time.monotonic() + 60
    while "this start" not in storage.read_text(log) and time.monotonic() < deadline:
      time.sleep(0.05)
    seen_while_running = storage.read_text(log)
    print("its last line")
  assert seen_while_running == "=== an earlier start\n=== this start\n"
  assert storage.read_text(log) == "=== an earlier start\n=== this start\nits last line\n"
