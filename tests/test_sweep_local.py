"""The local launcher end to end: concurrent sweeps, kill -9 and resume, a failing run, device division."""

import os
import signal
import subprocess
import sys
import time

import pytest
from ckpt_testlib import REPO, scaling_env  # noqa: F401  (a pytest fixture)
from sweep_testlib import curve, run_ids, run_sweep, starts, state, sweep_args

from scaling.errors import UserError
from scaling.sweep import claims, local

GRID4 = ("grid.tokens = [10240, 20480]",)


@pytest.mark.slow
def test_two_concurrent_sweeps_run_every_run_exactly_once(tmp_path, scaling_env):
  root = tmp_path / "sweep"
  procs = [subprocess.Popen(sweep_args(root, *GRID4), env=scaling_env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  ids = run_ids(root)
  assert len(ids) == 4
  for rid in ids:
    assert state(root, rid) == "done"
    assert starts(root, rid) == 1, rid
    steps = [r["step"] for r in curve(root / rid)]
    assert steps == sorted(set(steps))
    assert claims.read(root / rid) is None  # released


@pytest.mark.slow
def test_kill_9_midway_then_the_same_command_resumes_exactly(tmp_path, scaling_env):
  # Longest first: the 200-step run trains, then the 120-step one, which is killed midway (a run of a few
  # dozen steps can finish between two looks).
  long_runs = ("grid.params = [16000]", "grid.tokens = [30720, 51200]", "sweep.seeds = [0]")
  reference = tmp_path / "reference"
  assert run_sweep(scaling_env, reference, *long_runs).returncode == 0
  root = tmp_path / "sweep"
  sweep = subprocess.Popen(sweep_args(root, *long_runs), env=scaling_env, cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  ids = None
  deadline = time.time() + 300
  while time.time() < deadline:
    time.sleep(0.2)
    ids = run_ids(root) if root.exists() else []
    # Kill once one run is done and the other has a checkpoint and metrics past it.
    if len(ids) == 2 and sorted(state(root, r) for r in ids) == ["done", "running"]:
      running = next(r for r in ids if state(root, r) == "running")
      records = curve(root / running)
      if records and records[-1]["step"] >= 25:
        break
  else:
    pytest.fail("the sweep never reached the middle of its second run")
  holder = claims.read(root / running)
  sweep.send_signal(signal.SIGKILL)  # the sweep process only: its worker dies with it (PR_SET_PDEATHSIG)
  sweep.wait(timeout=30)
  for _ in range(50):
    if not claims.alive(holder):
      break
    time.sleep(0.2)
  assert not claims.alive(holder)  # a claim left by a dead process...
  finished = next(r for r in ids if r != running)

  again = run_sweep(scaling_env, root, *long_runs)
  assert again.returncode == 0, again.stderr
  assert starts(root, finished) == 1  # the finished run is not trained again
  assert starts(root, running) == 2  # the interrupted run is taken over...
  log = (root / running / "train.log").read_text()
  assert "resuming" in log  # ...and resumes from its checkpoint
  worker_logs = "".join(p.read_text() for p in (root / "workers").glob("*.log"))
  assert "taking over a dead claim" in worker_logs
  for rid in ids:
    assert curve(root / rid) == curve(reference / rid)  # bit-exact against the uninterrupted sweep


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, scaling_env):
  root = tmp_path / "sweep"
  result = run_sweep(scaling_env, root, "sweep.parts = [@grid(), @bad/grid()]", "bad/grid.params = [16000]",
                     "bad/grid.tokens = [10240]", "bad/grid.bindings = ['train.learning_rate = 1e9']",
                     extra=("--workers=2",))
  assert result.returncode == 1, result.stderr
  states = {rid: state(root, rid) for rid in run_ids(root)}
  assert sorted(states.values()) == ["done", "done", "failed"]
  failed = next(r for r, s in states.items() if s == "failed")
  assert "non-finite" in result.stderr and failed in result.stderr
  from scaling import runs
  assert "training diverged" in runs.read_status(root / failed)["reason"]


def test_devices_are_divided_between_workers(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  slots = local.device_slots(2, platform="cpu")
  assert [s.cores for s in slots] == [(0, 1), (2, 3)]
  assert all("--xla_force_host_platform_device_count=4" in s.env["XLA_FLAGS"] for s in slots)
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
  gpu = local.device_slots(4, platform="gpu")
  assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["0,1", "2,3", "4,5", "6,7"]
  with pytest.raises(UserError, match="more than this machine's 4 CPU cores"):
    local.device_slots(5, platform="cpu")
  with pytest.raises(UserError, match="workers=1"):
    local.device_slots(2, platform="tpu")


@pytest.mark.slow
def test_ctrl_c_preempts_the_runs_and_the_same_command_resumes(tmp_path, scaling_env):
  root = tmp_path / "sweep"
  bindings = ("grid.params = [16000]", "grid.tokens = [40960]")
  sweep = subprocess.Popen(sweep_args(root, *bindings), env=scaling_env, cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline:
    time.sleep(0.3)
    ids = run_ids(root) if root.exists() else []
    if ids and curve(root / ids[0]) and curve(root / ids[0])[-1]["step"] >= 15:
      break
  else:
    pytest.fail("the run never started")
  os.killpg(sweep.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
  _, err = sweep.communicate(timeout=120)
  assert sweep.returncode == 128 + signal.SIGINT, err
  assert "run the same command to resume" in err
  (rid,) = ids
  assert state(root, rid) == "preempted"  # saved at a step boundary, not failed
  again = run_sweep(scaling_env, root, *bindings)
  assert again.returncode == 0, again.stderr
  assert state(root, rid) == "done" and "resuming" in (root / rid / "train.log").read_text()


def test_a_worker_binds_itself_to_its_cores_and_dies_with_its_launcher(tmp_path):
  """What `local._spawn` asks of each worker, done by the worker itself (no preexec_fn after JAX's threads)."""
  child = ("import os, time; from scaling.sweep import local; local.bind_to_launcher(); "
           "print(os.getpid(), sorted(os.sched_getaffinity(0)), flush=True); time.sleep(60)")
  launcher = (f"import os, subprocess, sys, time; from scaling.sweep import local; "
              f"env = {{**os.environ, local.PARENT_ENV: str(os.getpid()), local.CORES_ENV: '0'}}; "
              f"subprocess.Popen([sys.executable, '-c', {child!r}], env=env); time.sleep(60)")
  proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, cwd=REPO)
  pid, cores = proc.stdout.readline().split(" ", 1)
  assert cores.strip() == "[0]"
  proc.kill()  # SIGKILL: the launcher cannot clean up; the kernel ends the worker (PR_SET_PDEATHSIG)
  proc.wait()
  for _ in range(50):
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      break
    time.sleep(0.1)
  else:
    os.kill(int(pid), signal.SIGKILL)
    pytest.fail("the worker outlived its launcher")
