"""SIGTERM on a 2-process run (jax.distributed over loopback): both processes save the same step and exit."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from scaling import runs
from ckpt_testlib import scaling_env  # noqa: F401  (a pytest fixture)
from ckpt_testlib import committed_steps, curve, launch, train_args

PROCESSES = 2
STEPS = 160  # a shorter run than the tiny default: every step of two processes pays for a gloo all-reduce


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_pair(run_dir, env, logs) -> list:
  """Starts both processes of one run the way SLURM would (its variables drive jax.distributed)."""
  port = str(_free_port())
  procs = []
  for i, log in enumerate(logs):
    slurm = dict(env, SLURM_JOB_ID="1", SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS=str(PROCESSES),
                 SLURM_PROCID=str(i), SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=port)
    args = train_args(run_dir, f"train.tokens = {STEPS * 8 * 32}", extra=("--distributed",))
    procs.append(launch(args, slurm, log))
  return procs


def _records(run_dir) -> int:
  return len(runs.read_metrics(run_dir))


@pytest.mark.slow
def test_sigterm_on_one_of_two_processes_saves_the_same_step_on_both_and_resumes(tmp_path, scaling_env):
  run_dir = tmp_path / "run"
  logs = [tmp_path / f"p{i}.log" for i in range(PROCESSES)]
  procs = _start_pair(run_dir, scaling_env, logs)
  deadline = time.monotonic() + 240
  while _records(run_dir) < 3:
    assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.01)
  procs[1].send_signal(signal.SIGTERM)
  for p in procs:
    p.wait(timeout=240)
  outputs = [log.read_text() for log in logs]
  assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
  steps = [int(re.search(rf"preempted at step (\d+) \(process {i} of 2\)", out).group(1)) for i, out in enumerate(outputs)]
  assert steps[0] == steps[1]
  status = runs.read_status(run_dir)
  assert (status["state"], status["step"]) == ("preempted", steps[0])
  assert committed_steps(run_dir)[-1] == steps[0]
  data_files = sorted(p.name for p in (run_dir / "checkpoints" / str(steps[0]) / "data").glob("process_*.json"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]

  procs = _start_pair(run_dir, scaling_env, [tmp_path / f"resume{i}.log" for i in range(PROCESSES)])
  for p in procs:
    p.wait(timeout=300)
  assert [p.returncode for p in procs] == [0, 0], (tmp_path / "resume0.log").read_text()[-3000:]
  assert f"resuming {run_dir} from its checkpoint at step {steps[0]}" in (tmp_path / "resume0.log").read_text()
  assert runs.read_status(run_dir)["state"] == "done"
  assert [r["step"] for r in curve(run_dir)] == list(range(0, STEPS + 1, 5))  # step-0 evaluation first
