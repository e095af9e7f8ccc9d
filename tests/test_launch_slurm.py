"""The SLURM launcher against a real one-node SLURM cluster (slurmctld + slurmd on localhost).

The cluster needs root and Debian's slurm-wlm (`.ci/run` installs it with launch/slurm/install_local_cluster.sh);
where it cannot start, the cluster tests are skipped and say why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_testlib import REPO, scaling_env  # noqa: F401  (fixture)
from scaling import runs
from scaling.errors import UserError
from scaling.launch import slurm
from scaling.sweep import expand
from slurm_testlib import local_slurm, slurm_available
from sweep_testlib import TINY, curve, run_ids, run_sweep, sweep_args

# Two runs of 160 steps, a checkpoint every 10: long enough to cancel one midway.
SWEEP = ("grid.tokens = [40960]", "slurm.poll_s = 1.0")
needs_slurm = pytest.mark.skipif(not slurm_available(), reason="no local SLURM (needs root and slurm-wlm)")


def _specs(*bindings: str):
  sweep, base = expand.load([str(TINY)], bindings)
  return expand.expand(sweep, base)


def test_allocations_follow_the_mesh_and_the_time_budget():
  specs = _specs("sweep.mesh = '2x4x1'", "slurm.gpus_per_node = 4", "slurm.max_nodes = 2")
  cfg = slurm.read_config()
  assert {slurm.nodes_for(s, cfg) for s in specs} == {2}
  specs = _specs("sweep.mesh = '4x4x1'", "slurm.gpus_per_node = 4", "slurm.max_nodes = 2")
  with pytest.raises(UserError, match="needs 4 nodes of 4 GPUs, more than slurm.max_nodes = 2"):
    slurm.nodes_for(specs[0], slurm.read_config())
  # An open mesh gets the fewest nodes (doubling) whose estimate fits max_hours_per_run.
  specs = _specs("slurm.gpus_per_node = 8", "slurm.max_nodes = 64", "slurm.device_kind = 'H100'",
                 "slurm.expected_mfu = 1e-12", "slurm.max_hours_per_run = 1.0")
  cfg = slurm.read_config()
  for s in specs:
    nodes = slurm.nodes_for(s, cfg)
    hours = slurm.run_hours(s, nodes * 8, cfg)
    assert hours <= 1.0 or nodes == 64
    assert nodes == 1 or slurm.run_hours(s, nodes // 2 * 8, cfg) > 1.0
  assert any("GPU-hours on H100" in line for line in slurm.plan_lines(slurm.plan(specs, cfg), cfg))


@pytest.mark.parametrize("bindings,message", [
    (("slurm.gpus_per_node = 8", "slurm.device_kind = 'H1000'"), r"slurm.device_kind 'H1000' is not a device with a known peak \(one of A100, GH200, H100, H100 PCIE, H200\)"),
    (("slurm.gpus_per_node = 8", "slurm.device_kind = 'banana'"), "slurm.device_kind 'banana' is not a device"),
    (("slurm.device_kind = 'H100'",), r"slurm.device_kind = 'H100' needs slurm.gpus_per_node >= 1 \(its peak is per GPU\)"),
])
def test_an_unknown_device_kind_or_one_on_cpu_nodes_is_refused(bindings, message):
  _specs(*bindings)
  with pytest.raises(UserError, match=message):
    slurm.read_config()


def test_cpu_nodes_are_planned_as_cpu_nodes():
  specs = _specs()
  cfg = slurm.read_config()
  assert slurm.plan_lines(slurm.plan(specs, cfg), cfg) == ["array of 2 run(s), 1 node(s) each (CPU nodes)"]


def test_the_batch_script_carries_the_knobs(tmp_path):
  specs = _specs("slurm.partition = 'gpu'", "slurm.account = 'lab'", "slurm.qos = 'high'", "slurm.time = '2:00:00'",
                 "slurm.gpus_per_node = 8", "slurm.sbatch_lines = ['#SBATCH --constraint=h100']",
                 "slurm.setup = ['module load cuda']")
  text = slurm.sbatch_script(tmp_path, tmp_path / "a.runs", len(specs), 1, slurm.read_config(), "scaling-x", ["7_0"])
  for line in ("#SBATCH --array=0-1", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
               "#SBATCH --time=2:00:00", "#SBATCH --gpus-per-node=8", "#SBATCH --constraint=h100",
               "#SBATCH --signal=TERM@120", "#SBATCH --dependency=afterany:7_0", "module load cuda",
               "#SBATCH --ntasks-per-node=1"):
    assert line in text.splitlines(), line
  assert "-m scaling.launch.task" in text and "@" not in text.replace("TERM@120", "")


def test_bad_cluster_input_exits_2_before_anything_is_written(tmp_path, scaling_env):
  root = tmp_path / "root"
  env = {**scaling_env, "PATH": str(Path(sys.executable).parent)}  # no sbatch here
  result = subprocess.run(sweep_args(root, extra=("--launcher=slurm",)), env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
  assert result.returncode == 2 and "sbatch not found on PATH" in result.stderr, result.stderr
  assert not root.exists()
  result = subprocess.run(sweep_args(root, "slurm.time = ''", extra=("--launcher=slurm", "--dry-run")), env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 2 and "slurm.time must be" in result.stderr, result.stderr
  assert result.stdout == "", "a bad cluster knob is reported before the plan table is printed"


def test_dry_run_prints_the_sbatch_array(tmp_path, scaling_env):
  result = subprocess.run(sweep_args(tmp_path / "r", extra=("--launcher=slurm", "--dry-run")), env=scaling_env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert "$ sbatch --parsable" in result.stdout and "#SBATCH --array=0-1" in result.stdout
  # The cluster's plan, not this CPU's: no est column and no time at this machine's peak.
  assert " est" not in result.stdout.splitlines()[0] and "estimate:" not in result.stdout
  assert "array of 2 run(s), 1 node(s) each (CPU nodes)" in result.stdout
  assert not (tmp_path / "r").exists()


def _queue(env: dict) -> list[str]:
  out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], env=env, capture_output=True, text=True, check=True)
  return out.stdout.split("\n")[:-1]


def _wait(check, timeout: float, what: str) -> None:
  deadline = time.time() + timeout
  while not check():
    assert time.time() < deadline, what
    time.sleep(0.5)


@needs_slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_matches_the_local_launcher_and_survives_scancel(tmp_path, scaling_env):
  local = tmp_path / "local"
  assert run_sweep(scaling_env, local, *SWEEP).returncode == 0
  root = tmp_path / "slurm_root"
  with local_slurm(tmp_path / "cluster") as cluster_env:
    env = {**scaling_env, "SLURM_CONF": cluster_env["SLURM_CONF"], "PATH": cluster_env["PATH"]}
    held = subprocess.run(sweep_args(root, *SWEEP, "slurm.sbatch_lines = ['#SBATCH --hold']",
                                     extra=("--launcher=slurm", "--detach")), env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert held.returncode == 0 and "submitted job" in held.stderr, held.stderr
    jobs = slurm.read_jobs(root)
    assert sorted(jobs) == run_ids(local) and len(_queue(env)) == 2
    # While the array is queued, the same command submits nothing.
    again = subprocess.run(sweep_args(root, *SWEEP, extra=("--launcher=slurm", "--detach")), env=env,
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and "already queued" in again.stderr and "submitted job" not in again.stderr
    assert slurm.read_jobs(root) == jobs and len(_queue(env)) == 2
    assert "PENDING (JobHeld" in runs.read_status(root / run_ids(root)[0])["reason"]  # SLURM's state, in status.json
    job = next(iter(jobs.values()))["task"].split("_")[0]
    subprocess.run(["scontrol", "release", job], env=env, check=True)
    # Cancel one task after its run's first checkpoint; the watching launcher resubmits it and it resumes.
    victim = run_ids(root)[0]
    _wait(lambda: [p for p in (root / victim / "checkpoints").glob("*") if p.name.isdigit()], 300, "no checkpoint")
    assert runs.read_status(root / victim)["state"] == "running"
    subprocess.run(["scancel", jobs[victim]["task"]], env=env, check=True)
    _wait(lambda: jobs[victim]["task"] not in " ".join(_queue(env)), 120, "scancel did not end the task")
    watch = subprocess.run(sweep_args(root, *SWEEP, extra=("--launcher=slurm",)), env=env, capture_output=True,
                           text=True, timeout=600, cwd=REPO)
    assert watch.returncode == 0, watch.stderr
    assert f"{victim}: job {jobs[victim]['task']} ended" in watch.stderr and "resubmitting" in watch.stderr
  assert slurm.read_jobs(root)[victim]["submissions"] == 2
  assert "resuming" in (root / victim / "train.log").read_text()
  for rid in run_ids(local):
    assert runs.read_status(root / rid)["state"] == "done"
    assert curve(root / rid) == curve(local / rid), rid
    assert json.loads((root / rid / "spec.json").read_text())["run_id"] == rid
