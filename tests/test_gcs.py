"""gs:// run directories and sweep roots, end to end on a local GCS emulator (tests/gcs_emulator.py).

The emulator stands in for GCS: the real gcsfs and TensorStore (orbax) clients speak to it over HTTP, as
they would to storage.googleapis.com.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ckpt_testlib import REPO, curve, run_to_end, scaling_env, trained_once, train_args  # noqa: F401  (scaling_env: a fixture)
from sweep_testlib import run_sweep

from scaling import runs, storage
from scaling.fit import load
from scaling.errors import UserError
from scaling.sweep import claims

GCS_ENV = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "GOOGLE_CLOUD_PROJECT",
           "FSSPEC_GCS_TOKEN", "FSSPEC_GS_TOKEN", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
# train_args runs ckpt_testlib.TINY: 480 steps (122,880 tokens / 256 a step), a checkpoint every 16, records every 5.


@pytest.fixture
def gcs_env(gcs_emulator, scaling_env) -> dict[str, str]:
  return {**scaling_env, **{k: os.environ[k] for k in GCS_ENV}}


def test_the_run_contract_on_gcs(gcs_root):
  run = storage.path(gcs_root) / "r1"
  assert runs.read_status(run)["state"] == "pending" and runs.read_metrics(run) == []
  runs.write_run_info(run, {"run_id": "r1"})
  assert runs.read_run_info(run)["run_id"] == "r1" and runs.is_run_dir(run)
  runs.set_status(run, "running", 3, "x")
  assert runs.read_status(run)["state"] == "running"
  appender = runs.MetricsAppender(run, flush_s=3600)
  appender.append({"step": 1, "train_loss": 2.0})
  appender.append({"step": 2, "train_loss": 1.5})
  assert runs.read_metrics(run) == []  # an object is written whole: records wait for the next flush
  appender.flush()
  assert [r["step"] for r in runs.read_metrics(run)] == [1, 2]
  appender.append({"step": 3})
  appender.close()
  assert [r["step"] for r in runs.read_metrics(run)] == [1, 2, 3]
  again = runs.MetricsAppender(run, flush_s=0)  # a resumed writer keeps what is there
  again.append({"step": 4})
  with pytest.raises(ValueError):
    again.append({"step": 4})
  again.close()
  assert [r["step"] for r in runs.truncate_metrics(run, 2)] == [1, 2]
  assert [r["step"] for r in runs.read_metrics(run)] == [1, 2]
  keeper = runs.StatusKeeper(run, interval_s=3600)
  keeper.set("running", 0, "starting")
  keeper.update(step=5)  # progress alone, just after a write: held (runs.REMOTE_STATUS_S)
  assert runs.read_status(run)["step"] == 0 and keeper.step == 5
  keeper.set("done", 10)  # a state change: written at once
  assert runs.read_status(run)["state"] == "done" and runs.read_status(run)["step"] == 10
  (storage.path(gcs_root) / "object").write_text("x")
  with pytest.raises(UserError, match="is a file"):
    runs.check_run_dir(f"{gcs_root}/object")


def test_claims_on_gcs_one_holder_take_over_and_release(gcs_root):
  run = storage.path(gcs_root) / "r1"
  first = claims.try_claim(run)
  assert first is not None and claims.try_claim(run) is None
  first.release()
  assert claims.read(run) is None
  dead = {"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time() - 10_000, "claimed": 0, "attempt": 1}
  storage.write_text_atomic(run / "claim.3", json.dumps(dead))
  taken = claims.try_claim(run)
  assert taken is not None and taken.number == 4 and taken.taken_over["host"] == "elsewhere"
  assert taken.record["attempt"] == 2
  taken.release()


def test_racing_processes_get_one_claim_on_gcs(gcs_root, gcs_emulator):
  code = ("import sys, time; from scaling.sweep import claims; c = claims.try_claim(sys.argv[1]); "
          "print('got' if c else 'no', flush=True); time.sleep(2)")
  procs = [subprocess.Popen([sys.executable, "-c", code, f"{gcs_root}/r1"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(6)]
  answers = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert sorted(answers) == ["got"] + ["no"] * 5


def _wait_for_checkpoint(run_dir, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
  """Waits until a checkpoint at `step` or later is being written (status.json shows progress only every
  10 s on GCS, and the tiny run is quicker than that)."""
  deadline = time.monotonic() + timeout

  def reached() -> bool:
    directory = run_dir / "checkpoints"
    return directory.exists() and any(p.name.isdigit() and int(p.name) >= step for p in directory.iterdir())

  while not reached():
    assert proc.poll() is None, f"the run exited ({proc.returncode}) before step {step}"
    assert time.monotonic() < deadline
    time.sleep(0.05)


@pytest.mark.slow
def test_a_gcs_run_is_preempted_resumes_and_equals_the_same_run_on_disk(tmp_path, gcs_root, gcs_env):
  local = trained_once("tiny", train_args, gcs_env)  # read only; the GCS variables change nothing on disk
  remote = storage.path(gcs_root) / "run"
  with open(tmp_path / "remote.log", "w") as log:
    proc = subprocess.Popen(train_args(remote), cwd=REPO, env=gcs_env, stdout=log, stderr=subprocess.STDOUT)
  _wait_for_checkpoint(remote, 64, proc)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  status = runs.read_status(remote)
  assert status["state"] == "preempted", (tmp_path / "remote.log").read_text()[-2000:]
  # every record up to the checkpoint (records every 5 steps) was flushed before it was saved
  assert max(r["step"] for r in runs.read_metrics(remote)) == status["step"] - status["step"] % 5
  output = run_to_end(train_args(remote), gcs_env, tmp_path / "resume.log")
  assert f"resuming {remote} from its checkpoint at step {status['step']}" in output
  assert runs.read_status(remote)["state"] == "done"
  assert curve(remote) == curve(local)
  steps = sorted(int(p.name) for p in (remote / "checkpoints").iterdir() if p.name.isdigit())
  assert steps and steps[-1] == 480
  assert (remote / "config.gin").read_text() == (local / "config.gin").read_text()
  assert any((remote / "tb").iterdir())
  branch = storage.path(gcs_root) / "branch"  # a branch of a gs:// run, with the parent's own schedule, goes on as it did
  run_to_end(train_args(branch, extra=(f"--branch_from={remote}@80",)), gcs_env, tmp_path / "branch.log")
  assert curve(branch) == curve(local) and runs.read_run_info(branch)["parent"]["run_dir"] == str(remote)


@pytest.mark.slow
def test_a_sweep_on_a_gcs_root_trains_every_run_as_on_disk(tmp_path, gcs_root, gcs_env):
  on_disk = run_sweep(gcs_env, tmp_path / "sweep")
  assert on_disk.returncode == 0, on_disk.stderr[-3000:]
  done = run_sweep(gcs_env, gcs_root, extra=("--workers=2",))
  assert done.returncode == 0, done.stderr[-3000:]
  root = storage.path(gcs_root)
  ids = sorted(p.parent.name for p in root.glob("*/spec.json"))
  assert ids == sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/spec.json")) and len(ids) == 2
  for rid in ids:
    assert runs.read_status(root / rid)["state"] == "done"
    assert curve(root / rid) == curve(tmp_path / "sweep" / rid)
    assert claims.read(root / rid) is None  # released
    assert (root / rid / "train.log").read_text().startswith("=== ")
  again = run_sweep(gcs_env, gcs_root)
  assert again.returncode == 0 and "2 done, 0 to train" in again.stderr
  status = subprocess.run([sys.executable, "-m", "scaling", "status", gcs_root], env=gcs_env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert status.returncode == 0 and status.stdout.count("done") >= 2, status.stderr[-2000:]
  points, convention = load.load([gcs_root])  # what `scaling fit gs://...` fits
  on_disk_points, on_disk_convention = load.load([str(tmp_path / "sweep")])
  columns = ["N", "D", "C", "loss"]
  assert len(points) >= 2 and points[columns].equals(on_disk_points[columns])
  assert convention["name"] == on_disk_convention["name"]


def test_a_missing_bucket_is_one_line_before_anything_is_written(tmp_path, gcs_env):
  out = run_sweep(gcs_env, "gs://no-such-bucket/sweep")
  assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].endswith(
      "gs://no-such-bucket/sweep: no bucket gs://no-such-bucket (or these credentials may not see it)"), out.stderr
  train = subprocess.run(train_args("gs://no-such-bucket/run"), env=gcs_env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert train.returncode == 2 and "no bucket gs://no-such-bucket" in train.stderr and "Traceback" not in train.stderr


def test_slurm_refuses_a_gcs_root(tmp_path, gcs_env):
  out = run_sweep(gcs_env, "gs://bucket/sweep", extra=("--launcher=slurm", "--dry-run"))
  assert out.returncode == 2 and "--launcher=slurm needs --root on a file system" in out.stderr
