"""The Cloud TPU launcher up to the `gcloud` boundary, with tests/data/fake_gcloud.py standing in for gcloud.

Unit tests: accelerator types, bad input stopping before any gcloud call, planning, the dry run, the
recorded gcloud calls of a launch against the documented syntax, failures and recovery with a stub
trainer. End to end (slow): a 4-host "pod" (v5litepod-16, one CPU device per host) trains a run of the
tiny sweep through `launch`, and a preempted pod is recreated and its run resumes to the same losses.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ckpt_testlib import REPO, scaling_env, session_once  # noqa: F401  (scaling_env: a fixture)
from scaling import config, runs, storage
from scaling.errors import UserError
from scaling.launch import tpu
from scaling.sweep import expand, root as root_lib
from sweep_testlib import TINY, curve

FAKE = REPO / "tests" / "data" / "fake_gcloud.py"
WHERE = ("tpu.zone = 'us-west4-a'", "tpu.project = 'my-project'")
POD = ("tpu.accelerator_type = 'v5litepod-16'", *WHERE)
ONE_RUN = ("grid.params = [16000]",)
# Documented syntax (cloud.google.com/sdk/gcloud/reference/compute/tpus/...): the flags each call must carry.
REQUIRED = {
    ("tpu-vm", "create"): ("--zone", "--project", "--accelerator-type", "--version"),
    ("queued-resources", "create"): ("--zone", "--project", "--accelerator-type", "--runtime-version", "--node-id"),
    ("tpu-vm", "describe"): ("--zone", "--project", "--format"),
    ("queued-resources", "describe"): ("--zone", "--project", "--format"),
    ("tpu-vm", "scp"): ("--zone", "--project", "--worker"),
    ("tpu-vm", "ssh"): ("--zone", "--project", "--worker", "--command"),
    ("tpu-vm", "delete"): ("--zone", "--project", "--quiet"),
    ("queued-resources", "delete"): ("--zone", "--project", "--quiet", "--force"),
}


class Fake:
  """The stand-in's files: the call log and the VM state."""

  def __init__(self, tmp: Path):
    self.dir = tmp
    self.log = tmp / "calls.jsonl"
    self.state = tmp / "state.json"
    self.preempt = tmp / "preempt"

  def calls(self) -> list[list[str]]:
    return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

  def vms(self) -> dict:
    return json.loads(self.state.read_text()) if self.state.exists() else {}


def _install_fake(tmp: Path, mp: pytest.MonkeyPatch, env: dict | None = None) -> Fake:
  """Puts a `gcloud` link to the stand-in first on PATH, with its log and state under tmp."""
  fake = Fake(tmp)
  bin_dir = tmp / "bin"
  bin_dir.mkdir(parents=True)
  (bin_dir / "gcloud").symlink_to(FAKE)
  for key, value in (env or {}).items():
    mp.setenv(key, value)
  mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  mp.setenv("FAKE_GCLOUD_LOG", str(fake.log))
  mp.setenv("FAKE_GCLOUD_STATE", str(fake.state))
  mp.setenv("FAKE_GCLOUD_PREEMPT", str(fake.preempt))
  mp.setenv("FAKE_GCLOUD_DEVICES_PER_HOST", "1")
  return fake


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Fake:
  return _install_fake(tmp_path / "gcloud", monkeypatch)


def _sweep(root: Path, *bindings: str, write: bool = True) -> list:
  """Expands the tiny sweep with bindings (as `scaling sweep` does) and writes its root.

  sweep.gin gets the bindings, `tpu.*` ones included: the workers parse it (scaling.config knows `tpu`).
  """
  sweep_spec, base = expand.load([str(TINY)], list(bindings))
  specs = expand.expand(sweep_spec, base)
  if write:
    text = config.inline_includes(str(TINY)) + "\n".join(bindings) + "\n"
    root_lib.write(root, text, specs)
  return specs


def _launch(root: Path, specs: list, *, dry_run: bool = False, lines: list | None = None, **kwargs) -> int:
  said = [] if lines is None else lines
  return tpu.launch(root, specs, [s.run_id for s in specs], dry_run=dry_run, say=said.append, poll_s=0.05, **kwargs)


def _check_syntax(calls: list[list[str]]) -> None:
  """Every recorded call is a documented `gcloud compute tpus ...` command with its required flags."""
  for argv in calls:
    assert argv[:2] == ["compute", "tpus"], argv
    key = (argv[2], argv[3])
    assert key in REQUIRED, argv
    flags = {a.split("=", 1)[0] for a in argv[4:] if a.startswith("--")}
    assert set(REQUIRED[key]) <= flags, (argv, set(REQUIRED[key]) - flags)
    if key[1] in ("ssh", "scp"):
      assert "--worker=all" in argv, argv
    if key == ("queued-resources", "create"):
      assert f"--node-id={argv[4]}" in argv, argv


def _verbs(calls: list[list[str]]) -> list[str]:
  return [f"{c[2]} {c[3]}" for c in calls]


# --- accelerator types and the knobs ---------------------------------------------------------------


@pytest.mark.parametrize("name, generation, chips, hosts", [
    ("v5litepod-1", "v5e", 1, 1), ("v5litepod-8", "v5e", 8, 1), ("v5litepod-16", "v5e", 16, 4),
    ("v5litepod-256", "v5e", 256, 64), ("v4-8", "v4", 4, 1), ("v4-32", "v4", 16, 4), ("v4-128", "v4", 64, 16),
    ("v5p-8", "v5p", 4, 1), ("v5p-64", "v5p", 32, 8), ("v6e-8", "v6e", 8, 1), ("v6e-16", "v6e", 16, 4),
])
def test_accelerator_types_count_chips_and_hosts_as_google_documents(name, generation, chips, hosts):
  sl = tpu.parse_accelerator(name)
  assert (sl.generation.name, sl.chips, sl.hosts) == (generation, chips, hosts)
  assert sl.chips_per_host * sl.hosts == sl.chips


def test_peaks_and_runtime_versions_per_generation():
  g = tpu.GENERATIONS
  assert [g[k].peak for k in ("v4", "v5e", "v5p", "v6e")] == [275e12, 197e12, 459e12, 918e12]
  assert [g[k].runtime_version for k in ("v4", "v5e", "v5p", "v6e")] == [
      "tpu-ubuntu2204-base", "v2-alpha-tpuv5-lite", "v2-alpha-tpuv5", "v2-alpha-tpuv6e"]


@pytest.mark.parametrize("name", ["v3-8", "v5litepod-12", "v4-12", "v6e", "tpu", "v5e-16"])
def test_an_unknown_accelerator_type_names_the_knob_and_the_generations(name):
  with pytest.raises(UserError, match=r"tpu\.accelerator_type.*v5litepod-N"):
    tpu.parse_accelerator(name)


@pytest.mark.parametrize("binding, match", [
    ("tpu.slices = 0", "tpu.slices"), ("tpu.expected_mfu = 1.5", "tpu.expected_mfu"),
    ("tpu.name_prefix = 'Big_Name'", "tpu.name_prefix"), ("tpu.env = {'1X': 'y'}", "tpu.env"),
])
def test_bad_knob_values_are_one_line_user_errors(binding, match):
  config.parse([], [binding])
  with pytest.raises(UserError, match=match):
    config.build(tpu.tpu)


def test_spot_and_reserved_exclude_each_other():
  config.parse([], ["tpu.spot = True", "tpu.reserved = True"])
  with pytest.raises(UserError, match="tpu.spot and tpu.reserved exclude each other"):
    config.build(tpu.tpu)


# --- bad input stops before any gcloud call ---------------------------------------------------------


@pytest.mark.parametrize("bindings, match", [
    (("tpu.accelerator_type = 'v9-8'", *WHERE), r"tpu\.accelerator_type = 'v9-8'.*known generations"),
    (("tpu.accelerator_type = 'v5litepod-16'", "tpu.project = 'p'"), r"tpu\.zone is required"),
    (("tpu.accelerator_type = 'v5litepod-16'", "tpu.zone = 'z'"), r"tpu\.project is required"),
    ((*WHERE,), r"tpu\.accelerator_type is required"),
    (("tpu.accelerator_type = 'v5litepod-4'", "sweep.mesh = '2x4x1'", *WHERE),
     r"run \w{10} \(grid 32x1\) has mesh 2x4x1, which needs exactly 8 devices: it does not fit a v5litepod-4 slice \(4 chips\)"),
    (("tpu.accelerator_type = 'v5litepod-16'", "sweep.mesh = '3x-1x1'", *WHERE), r"needs a multiple of 3 devices"),
])
def test_bad_input_is_a_user_error_before_any_gcloud_call(tmp_path, fake, bindings, match):
  specs = _sweep(tmp_path / "root", *ONE_RUN, *bindings, write=False)
  for dry_run in (True, False):
    with pytest.raises(UserError, match=match):
      _launch(tmp_path / "root", specs, dry_run=dry_run)
  assert fake.calls() == [] and not (tmp_path / "root").exists()


def test_a_missing_gcloud_is_the_first_error(tmp_path, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  specs = _sweep(tmp_path / "root", *ONE_RUN, *WHERE, write=False)  # no accelerator type either
  monkeypatch.setenv("PATH", str(empty))
  with pytest.raises(UserError, match="gcloud not found on PATH; install the Google Cloud SDK"):
    _launch(tmp_path / "root", specs, dry_run=True)


# --- planning and the dry run ----------------------------------------------------------------------


def test_runs_are_shared_between_slices_and_a_cooldown_stays_with_its_parent(tmp_path):
  specs = _sweep(tmp_path / "root", "sweep.parts = [@grid(), @cooldowns()]", "grid.params = [16000, 40000]",
                 "cooldowns.params = [16000]", "cooldowns.tokens = [5120, 10240]", "tpu.slices = 3", *POD, write=False)
  cfg = config.build(tpu.tpu)
  plan = tpu.make_plan(cfg, tmp_path / "root", specs, [s.run_id for s in specs])
  assert sorted(r for sp in plan.slices for r in sp.runs) == sorted(s.run_id for s in specs)
  by_id = {s.run_id: s for s in specs}
  home = {r: sp.name for sp in plan.slices for r in sp.runs}
  for s in specs:
    if s.parent:
      assert home[s.run_id] == home[s.parent]
      on_slice = next(sp.runs for sp in plan.slices if s.run_id in sp.runs)
      assert on_slice.index(s.parent) < on_slice.index(s.run_id)
  sl = tpu.parse_accelerator("v5litepod-16")
  for sp in plan.slices:
    for rid, sec in zip(sp.runs, sp.seconds):
      s = by_id[rid]
      flops = s.C * (s.steps - s.branch_step) / s.steps if s.parent else s.C
      assert sec == pytest.approx(flops / (16 * 197e12 * 0.4))
  assert plan.chip_hours == pytest.approx(sum(sum(sp.seconds) for sp in plan.slices) * sl.chips / 3600)
  assert len({sp.name for sp in plan.slices}) == 3 and all(sp.name.startswith("scaling-") for sp in plan.slices)
  assert tpu.slice_names("scaling", tmp_path / "root", 3) == [sp.name for sp in plan.slices]  # stable per root


def test_dry_run_prints_the_plan_and_every_gcloud_command_and_runs_nothing(tmp_path, fake):
  root = tmp_path / "root"
  specs = _sweep(root, *POD, "tpu.spot = True", "tpu.root = '/mnt/shared/sweep'", write=False)
  lines = []
  assert _launch(root, specs, dry_run=True, lines=lines) == 0
  text = "\n".join(lines)
  name = tpu.slice_names("scaling", root, 1)[0]
  assert "2 runs on 1 slice of v5litepod-16 (v5e: 16 chips on 4 hosts of 4, 197 TFLOP/s bf16 per chip)" in text
  assert f"slice {name} (v5litepod-16, 4 hosts): 2 runs" in text and "chip-hours" in text
  for s in specs:
    assert f"  {s.run_id}  grid" in text
    assert (f"gcloud compute tpus tpu-vm ssh {name} --zone=us-west4-a --project=my-project --worker=all "
            f"'--command=cd ~/scaling && PYTHONUNBUFFERED=1 exec .venv/bin/python -m scaling.launch.task "
            f"--root /mnt/shared/sweep {s.run_id} --distributed'") in text
  assert (f"gcloud compute tpus tpu-vm create {name} --zone=us-west4-a --project=my-project "
          "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --spot") in text
  assert f"gcloud compute tpus tpu-vm describe {name} --zone=us-west4-a --project=my-project '--format=value(state)'" in text
  assert f"gcloud compute tpus tpu-vm scp --recurse {root.absolute()}/tpu/scaling-src.tar.gz {name}:scaling-src.tar.gz" in text
  assert "tar -xzf ~/scaling-src.tar.gz && bash launch/tpu/setup.sh" in text
  assert f"gcloud compute tpus tpu-vm delete {name} --zone=us-west4-a --project=my-project --quiet" in text
  assert fake.calls() == [] and not root.exists()


def test_queued_resources_dry_run(tmp_path, fake):
  specs = _sweep(tmp_path / "root", *ONE_RUN, *POD, "tpu.queued = True", "tpu.reserved = True",
                 "tpu.runtime_version = 'v2-alpha-tpuv5-lite-custom'", write=False)
  lines = []
  _launch(tmp_path / "root", specs, dry_run=True, lines=lines)
  name = tpu.slice_names("scaling", tmp_path / "root", 1)[0]
  text = "\n".join(lines)
  assert (f"gcloud compute tpus queued-resources create {name} --node-id={name} --zone=us-west4-a "
          "--project=my-project --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite-custom --reserved") in text
  assert f"queued-resources describe {name} --zone=us-west4-a --project=my-project '--format=value(state.state)'" in text
  assert f"queued-resources delete {name} --zone=us-west4-a --project=my-project --force --quiet" in text
  assert f"tpu-vm ssh {name}" in text  # the node of a queued resource is named like it


def test_worker_commands_quote_paths_and_keep_home_relative():
  cfg = tpu.tpu(workdir="~/my dir", root="/mnt/a b", env={"SCALING_DATA_DIR": "/mnt/data x"})
  script = tpu.task_script(cfg, "/mnt/a b", "abc", hosts=4)
  assert script == ("cd ~/'my dir' && PYTHONUNBUFFERED=1 SCALING_DATA_DIR='/mnt/data x' exec .venv/bin/python "
                    "-m scaling.launch.task --root '/mnt/a b' abc --distributed")
  assert not tpu.task_script(cfg, "/r", "abc", hosts=1).endswith("--distributed")  # one host: one process, no job
  assert tpu.install_script(tpu.tpu(setup_command="pip install scaling")).endswith("cd ~/scaling; pip install scaling")


def test_the_source_archive_holds_the_project_and_setup_script(tmp_path):
  import tarfile

  names = tarfile.open(tpu.write_archive(tmp_path / "src.tar.gz")).getnames()
  assert {"pyproject.toml", "README.md", "scaling/launch/task.py", "launch/tpu/setup.sh", "configs"} <= set(names)
  assert not [n for n in names if "__pycache__" in n or n.startswith(".venv")]
  assert subprocess.run(["bash", "-n", str(REPO / "launch" / "tpu" / "setup.sh")]).returncode == 0


# --- launches with the stand-in (no training) ------------------------------------------------------


@pytest.mark.parametrize("queued", [False, True])
def test_a_launch_creates_waits_installs_and_deletes_with_documented_commands(tmp_path, fake, queued):
  root = tmp_path / "root"
  specs = _sweep(root, *ONE_RUN, *POD, f"tpu.queued = {queued}", "tpu.setup_command = 'echo installed'")
  runs.set_status(root / specs[0].run_id, "done", 40)  # nothing to train: the launch goes through its motions
  lines = []
  assert _launch(root, specs, lines=lines) == 0
  calls = fake.calls()
  _check_syntax(calls)
  group = "queued-resources" if queued else "tpu-vm"
  verbs = _verbs(calls)
  waits = 3 if queued else 2  # CREATING, READY; or ACCEPTED, PROVISIONING, ACTIVE
  assert verbs == [f"{group} describe", f"{group} create", *[f"{group} describe"] * waits, "tpu-vm scp",
                   "tpu-vm ssh", f"{group} delete"]
  assert fake.vms() == {"tpu-vm": {}, "queued-resources": {}}
  name = tpu.slice_names("scaling", root, 1)[0]
  assert (fake.dir / "hosts" / name / "worker3" / "scaling-src.tar.gz").exists()  # copied to each worker's home
  assert "installed" in (root / "tpu" / f"{name}.log").read_text()
  said = "\n".join(lines)
  assert f"scaling sweep: tpu: creating {name} (v5litepod-16, 4 hosts) ..." in said
  assert f"{specs[0].run_id} (grid 32x1): done already" in said and "1 run: 1 done" in said


def test_a_ready_vm_of_the_same_name_is_reused_and_left_running(tmp_path, fake):
  root = tmp_path / "root"
  specs = _sweep(root, *ONE_RUN, *POD, "tpu.setup_command = 'true'")
  runs.set_status(root / specs[0].run_id, "done", 40)
  name = tpu.slice_names("scaling", root, 1)[0]
  fake.state.write_text(json.dumps({"tpu-vm": {name: {"state": "READY", "accelerator_type": "v5litepod-16"}}}))
  lines = []
  assert _launch(root, specs, lines=lines) == 0
  assert "tpu-vm create" not in _verbs(fake.calls()) and "tpu-vm delete" not in _verbs(fake.calls())
  assert name in fake.vms()["tpu-vm"]
  assert any(f"reusing {name}" in l for l in lines) and any(f"leaving {name} running" in l for l in lines)


def test_a_failing_job_is_recorded_and_the_launch_goes_on(tmp_path, fake):
  root = tmp_path / "root"
  specs = _sweep(root, *POD, f"tpu.workdir = '{tmp_path / 'empty'}'", "tpu.setup_command = 'true'")
  lines = []
  assert _launch(root, specs, lines=lines) == 1
  verbs = _verbs(fake.calls())
  assert verbs.count("tpu-vm ssh") == 3 and verbs[-1] == "tpu-vm delete"  # install, then both runs were tried
  for s in specs:
    status = runs.read_status(root / s.run_id)
    assert status["state"] == "failed" and "exited 1" in status["reason"]
  assert "2 runs: 2 failed" in "\n".join(lines)
  assert "No such file or directory" in (root / "tpu" / f"{tpu.slice_names('scaling', root, 1)[0]}.log").read_text()


STUB_TRAINER = """#!/usr/bin/env bash
# Stands in for `.venv/bin/python -m scaling.launch.task --root ROOT RUN --distributed`: the first start
# saves a "checkpoint" and waits to be preempted; a start that finds the checkpoint finishes the run.
root=$4; run=$5
status() {{ [ "$TPU_WORKER_ID" = 0 ] && printf '{{"state": "%s", "step": %d, "reason": ""}}' "$1" "$2" > "$root/$run/status.json"; true; }}
if [ -d "$root/$run/checkpoints/10" ]; then echo "resuming from step 10"; status done 40; exit 0; fi
trap 'status preempted 11; exit 143' TERM
[ "$TPU_WORKER_ID" = 0 ] && mkdir -p "$root/$run/checkpoints/10"
sleep {sleep} & wait
"""


def _stub_workdir(tmp_path: Path, sleep: int = 60) -> Path:
  workdir = tmp_path / "stub"
  (workdir / ".venv" / "bin").mkdir(parents=True)
  python = workdir / ".venv" / "bin" / "python"
  python.write_text(STUB_TRAINER.format(sleep=sleep))
  python.chmod(python.stat().st_mode | stat.S_IXUSR)
  return workdir


@pytest.mark.parametrize("queued", [False, True])
def test_a_preempted_slice_is_recreated_and_the_run_goes_on(tmp_path, fake, queued):
  root = tmp_path / "root"
  workdir = _stub_workdir(tmp_path)
  specs = _sweep(root, *ONE_RUN, *POD, f"tpu.workdir = '{workdir}'", "tpu.setup_command = 'true'",
                 f"tpu.queued = {queued}")
  name = tpu.slice_names("scaling", root, 1)[0]
  fake.preempt.write_text(name)
  lines = []
  assert _launch(root, specs, lines=lines) == 0
  group = "queued-resources" if queued else "tpu-vm"
  verbs = _verbs(fake.calls())
  assert verbs.count(f"{group} create") == 2 and verbs.count(f"{group} delete") == 2 and verbs.count("tpu-vm scp") == 2
  assert runs.read_status(root / specs[0].run_id)["state"] == "done" and not fake.preempt.exists()
  dead = "SUSPENDED" if queued else "PREEMPTED"
  said = "\n".join(lines)
  assert f"the job exited 255 and {name} is {dead}; recreating {name} (1 of 3)" in said
  assert fake.vms()[group] == {}


def test_a_slice_preempted_beyond_its_budget_leaves_its_runs(tmp_path, fake, monkeypatch):
  monkeypatch.setattr(tpu, "MAX_RECOVERIES", 0)
  root = tmp_path / "root"
  specs = _sweep(root, *POD, f"tpu.workdir = '{_stub_workdir(tmp_path)}'", "tpu.setup_command = 'true'")
  fake.preempt.write_text(tpu.slice_names("scaling", root, 1)[0])
  lines = []
  assert _launch(root, specs, lines=lines) == 1
  said = "\n".join(lines)
  assert "recovered 0 times already, leaving its runs" in said and "2 runs: 1 pending, 1 preempted" in said
  assert _verbs(fake.calls())[-1] == "tpu-vm delete" and fake.vms()["tpu-vm"] == {}


def test_a_stopped_launch_ends_its_jobs_and_deletes_the_slices_it_created(tmp_path, fake):
  root = tmp_path / "root"
  specs = _sweep(root, *ONE_RUN, *POD, f"tpu.workdir = '{_stub_workdir(tmp_path, sleep=600)}'", "tpu.setup_command = 'true'")
  run_dir = root / specs[0].run_id
  timer = threading.Timer(0.1, _interrupt_when_checkpointed, (run_dir / "checkpoints" / "10",))
  timer.start()
  lines = []
  try:
    assert _launch(root, specs, lines=lines) == 128 + signal.SIGINT
  finally:
    timer.cancel()
  assert runs.read_status(run_dir)["state"] == "preempted"  # the workers got a SIGTERM and recorded it
  assert _verbs(fake.calls())[-1] == "tpu-vm delete" and fake.vms()["tpu-vm"] == {}
  assert any("interrupted" in l for l in lines)


def _interrupt_when_checkpointed(checkpoint: Path) -> None:
  while not checkpoint.exists():
    time.sleep(0.05)
  time.sleep(0.5)
  os.kill(os.getpid(), signal.SIGINT)


def test_the_worker_side_parses_a_spec_gin_with_tpu_knobs():
  """Workers parse sweep.gin, `tpu.*` bindings included, through scaling.config in a fresh process."""
  probe = "import gin, scaling.config; gin.parse_config(\"tpu.zone = 'z'\")"
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
  assert done.returncode == 0, done.stderr


# --- end to end with training (slow) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pod(scaling_env):
  """One run of the tiny sweep trained on a 4-host v5litepod-16 stand-in through `launch`, once per session
  (ckpt_testlib.session_once: the xdist workers running these tests share it)."""
  env_of = lambda tmp: {**scaling_env, "SCALING_CACHE_DIR": str(tmp / "scaling_cache")}

  def launch_pod(tmp: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
      _install_fake(tmp / "gcloud", mp, env_of(tmp))
      specs = _sweep(tmp / "root", *ONE_RUN, *POD, f"tpu.workdir = '{REPO}'", "tpu.setup_command = 'true'")
      lines = []
      code = _launch(tmp / "root", specs, lines=lines)
    (tmp / "outcome.json").write_text(json.dumps({"run": specs[0].run_id, "code": code, "lines": lines}))

  tmp = session_once("tpu_pod", launch_pod)
  done = json.loads((tmp / "outcome.json").read_text())
  return {"root": tmp / "root", "fake": Fake(tmp / "gcloud"), "env": env_of(tmp), **done}


@pytest.mark.slow
def test_a_pod_trains_a_run_end_to_end(pod):
  run_dir = pod["root"] / pod["run"]
  assert pod["code"] == 0, "\n".join(pod["lines"])
  assert runs.read_status(run_dir)["state"] == "done"
  info = runs.read_run_info(run_dir)
  assert info["devices"]["processes"] == 4 and info["devices"]["count"] == 4
  records = runs.read_metrics(run_dir)
  assert records[-1]["step"] == info["steps"] and "eval_loss" in records[-1]
  said = "\n".join(pod["lines"])
  assert f"{pod['run']} (grid 32x1): done in" in said and "1 run: 1 done" in said


@pytest.mark.slow
def test_a_real_launch_records_only_documented_gcloud_calls(pod):
  calls = pod["fake"].calls()
  _check_syntax(calls)
  assert _verbs(calls) == ["tpu-vm describe", "tpu-vm create", "tpu-vm describe", "tpu-vm describe", "tpu-vm scp",
                           "tpu-vm ssh", "tpu-vm ssh", "tpu-vm delete"]
  run = calls[6]
  assert run[-1] == (f"--command=cd {REPO} && PYTHONUNBUFFERED=1 exec .venv/bin/python -m scaling.launch.task "
                     f"--root {pod['root']} {pod['run']} --distributed")


@pytest.mark.slow
def test_a_preempted_pod_is_recreated_and_its_run_resumes_to_the_same_losses(pod, tmp_path, monkeypatch):
  fake = _install_fake(tmp_path / "gcloud", monkeypatch, pod["env"])
  root = tmp_path / "root"
  specs = _sweep(root, *ONE_RUN, *POD, f"tpu.workdir = '{REPO}'", "tpu.setup_command = 'true'")
  assert specs[0].run_id == pod["run"]
  fake.preempt.write_text(tpu.slice_names("scaling", root, 1)[0])
  lines = []
  assert _launch(root, specs, lines=lines) == 0, "\n".join(lines)
  run_dir = root / pod["run"]
  assert runs.read_status(run_dir)["state"] == "done" and not fake.preempt.exists()
  assert "resuming" in (run_dir / "train.log").read_text()
  assert curve(run_dir) == curve(pod["root"] / pod["run"])
  verbs = _verbs(fake.calls())
  assert verbs.count("tpu-vm create") == 2 and verbs.count("tpu-vm delete") == 2
  assert any("is PREEMPTED; recreating" in l for l in lines)


@pytest.mark.slow
def test_a_pod_on_a_gcs_root_trains_to_the_same_losses(pod, gcs_root, tmp_path, monkeypatch):
  """The usual TPU set-up: no shared mount, the root is a gs:// URL that the launcher and the 4 workers use."""
  fake = _install_fake(tmp_path / "gcloud", monkeypatch, pod["env"])
  root = storage.path(gcs_root)
  specs = _sweep(root, *ONE_RUN, *POD, f"tpu.workdir = '{REPO}'", "tpu.setup_command = 'true'")
  lines = []
  assert _launch(root, specs, lines=lines) == 0, "\n".join(lines)
  run_dir = root / pod["run"]
  assert runs.read_status(run_dir)["state"] == "done"
  assert curve(run_dir) == curve(pod["root"] / pod["run"])
  assert runs.read_run_info(run_dir)["devices"]["processes"] == 4
  ssh = [c for c in fake.calls() if c[2:4] == ["tpu-vm", "ssh"]][-1]
  assert ssh[-1].endswith(f"--root {gcs_root} {pod['run']} --distributed")
  assert (run_dir / "train.log").read_text().startswith("=== ")
  assert (storage.local_dir(root) / tpu.LOG_DIR).is_dir()  # the slice logs stay here, beside nothing remote
