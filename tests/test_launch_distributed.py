"""Multi-process training: settings from the environment, and real `jax.distributed` jobs over loopback.

Several local processes with 2 CPU devices each train the same run as one process with 8 devices; the
losses must agree, and a job with one process killed (-9) and then restarted resumes bit-exact.
"""

from __future__ import annotations

import socket
import time

import pytest

from ckpt_testlib import CURVE_KEYS, curve, launch, scaling_env, train_args  # noqa: F401  (fixture)
from scaling import runs
from scaling.errors import UserError
from scaling.launch import distributed

# 64 steps of 8 x 32 tokens, a checkpoint every 16 steps.
JOB = ("train.tokens = 16384", "train.eval_every = 32", "checkpoint.every_steps = 16", "checkpoint.keep_every = 0")


def test_explicit_settings_win_and_a_lone_process_needs_none():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2",
         "SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}
  s = distributed.settings(env)
  assert (s.coordinator, s.num_processes, s.process_id, s.source) == ("10.0.0.1:1234", 4, 2, "JAX_COORDINATOR_ADDRESS")
  assert distributed.settings({}) is None
  assert distributed.settings({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
  with pytest.raises(UserError, match="JAX_NUM_PROCESSES"):
    distributed.settings({"JAX_COORDINATOR_ADDRESS": "h:1"})


def test_slurm_and_tpu_pod_settings():
  slurm = {"SLURM_JOB_ID": "4100", "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "gpu[007-010],cpu1",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
  s = distributed.settings(slurm)
  assert (s.coordinator, s.num_processes, s.process_id) == (f"gpu007:{4100 % 4096 + 61440}", 4, 3)
  assert s.local_device_ids == tuple(range(8))  # one process per host drives all of its GPUs
  assert distributed.first_host("node5") == "node5" and distributed.first_host("n[12,15-20]") == "n12"
  tpu = {"TPU_WORKER_ID": "1", "TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1,t1k-w-2,t1k-w-3"}
  s = distributed.settings(tpu)
  assert (s.coordinator, s.num_processes, s.process_id) == ("t1k-w-0:8476", 4, 1)
  assert distributed.settings({"TPU_WORKER_ID": "0", "TPU_WORKER_HOSTNAMES": "only-one"}) is None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _job(run_dir, processes: int, devices: int, env: dict, logs, *bindings: str) -> list:
  """Starts `processes` local processes of one `scaling train` job, `devices` CPU devices each."""
  port = _free_port()
  procs = []
  for i in range(processes):
    penv = {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    if processes > 1:
      penv.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
    procs.append(launch(train_args(run_dir, *JOB, *bindings), penv, logs / f"{run_dir.name}_{i}.log"))
  return procs


def _wait(procs, logs, timeout: float = 600) -> None:
  for i, p in enumerate(procs):
    p.wait(timeout=timeout)
  codes = [p.returncode for p in procs]
  assert codes == [0] * len(procs), [f.read_text()[-2000:] for f in sorted(logs.glob("*.log"))]


def _close(a: list[dict], b: list[dict], rtol: float = 1e-4) -> bool:
  if [r["step"] for r in a] != [r["step"] for r in b]:
    return False
  return all(abs(x[k] - y[k]) <= rtol * abs(x[k]) for x, y in zip(a, b) for k in ("train_loss", "eval_loss") if k in x)


@pytest.mark.slow
def test_multi_process_jobs_train_what_one_process_trains_and_resume_bit_exact(tmp_path, scaling_env):
  logs = tmp_path / "logs"
  logs.mkdir()
  single = tmp_path / "single"
  _wait(_job(single, 1, 8, scaling_env, logs), logs)
  reference = curve(single)
  for processes in (2, 4):
    run_dir = tmp_path / f"p{processes}"
    _wait(_job(run_dir, processes, 2, scaling_env, logs), logs)
    assert _close(curve(run_dir), reference), (processes, curve(run_dir), reference)
    assert runs.read_run_info(run_dir)["devices"]["processes"] == processes
  # kill -9 one process of a 2-process job after its first checkpoint; the other is stopped as a scheduler
  # would; then the whole job starts again and must continue exactly where the uninterrupted job went.
  broken = tmp_path / "broken"
  procs = _job(broken, 2, 2, scaling_env, logs)
  deadline = time.time() + 300
  while not [p for p in (broken / "checkpoints").glob("*") if p.name.isdigit()] and time.time() < deadline:  # a finished save
    time.sleep(0.2)
  procs[1].kill()
  procs[0].kill()
  for p in procs:
    p.wait(timeout=60)
  assert runs.read_status(broken)["state"] != "done"
  _wait(_job(broken, 2, 2, scaling_env, logs), logs)
  assert "resuming" in (logs / "broken_0.log").read_text()
  assert curve(broken) == curve(tmp_path / "p2")
