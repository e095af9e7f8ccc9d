"""The SLURM launcher: pending runs of a sweep root as job arrays, one array task per run, watched to the end.

`scaling sweep SPEC --root=DIR --launcher=slurm` submits one array per node count (`sbatch`, from the
template `launch/slurm/array.sbatch`); array task i runs `srun python -m scaling.launch.task` on every node
of its allocation for line i of the array's runs file. `DIR/slurm/jobs.json` maps each run to its array
task. While it watches (the default; `--detach` only submits), the launcher reads `squeue`, writes what
SLURM says into each run's status (`pending` with the SLURM state as reason; the trainer itself writes
`running`, `done`, `preempted`), and resubmits a run whose task ended without finishing it (cancelled,
preempted, out of time, node failure) at most `MAX_SUBMISSIONS` times; it resumes from its checkpoint. A
run that is done, or whose task is queued or running, is never submitted again.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gin
import ml_collections

from scaling import runs
from scaling.errors import UserError

TEMPLATE = Path(__file__).resolve().parents[2] / "launch" / "slurm" / "array.sbatch"
MAX_SUBMISSIONS = 3  # submissions of one run (the first and two resubmissions) before it is recorded failed
JOBS_JSON = "jobs.json"
MAX_QUEUE_ERRORS = 20  # consecutive failed queue reads before the watching launcher gives up
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING")


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
  """Where and how array tasks run (gin `slurm.*`)."""

  partition: str | None
  account: str | None
  qos: str | None
  time: str
  gpus_per_node: int
  cpus_per_node: int | None
  max_nodes: int
  max_hours_per_run: float | None
  device_kind: str | None
  expected_mfu: float
  signal_s: int
  sbatch_lines: tuple[str, ...]
  setup: tuple[str, ...]
  python: str | None
  poll_s: float


@gin.configurable("slurm")
def slurm(partition: str | None = None, account: str | None = None, qos: str | None = None, time: str = "4:00:00",
          gpus_per_node: int = 0, cpus_per_node: int | None = None, max_nodes: int = 1,
          max_hours_per_run: float | None = None, device_kind: str | None = None, expected_mfu: float = 0.4,
          signal_s: int = 120, sbatch_lines: Sequence[str] = (), setup: Sequence[str] = (),
          python: str | None = None, poll_s: float = 15.0) -> SlurmConfig:
  """SLURM knobs: the partition/account/QOS/time limit of every array task, GPUs and CPUs per node, extra
  `#SBATCH` lines (`sbatch_lines`), shell lines run before the task (`setup`: `module load ...`), the Python
  on the nodes (default: this interpreter, on a shared file system). A run whose mesh leaves the device
  count open (`-1`) gets the fewest nodes, up to `max_nodes`, whose estimated time (at `expected_mfu` of
  `device_kind`'s declared peak) fits `max_hours_per_run`; SIGTERM comes `signal_s` before the time limit.
  The launcher reads the queue every `poll_s` seconds while it watches."""
  for knob, value in (("gpus_per_node", gpus_per_node), ("max_nodes", max_nodes), ("signal_s", signal_s)):
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if knob == "gpus_per_node" else 1):
      raise ValueError(f"slurm.{knob} must be a whole number >= {0 if knob == 'gpus_per_node' else 1}, got {value!r}")
  if cpus_per_node is not None and (isinstance(cpus_per_node, bool) or not isinstance(cpus_per_node, int) or cpus_per_node < 1):
    raise ValueError(f"slurm.cpus_per_node must be a whole number >= 1, got {cpus_per_node!r}")
  if not isinstance(time, str) or not time:
    raise ValueError(f"slurm.time must be a SLURM time limit such as '4:00:00', got {time!r}")
  if not 0 < expected_mfu <= 1:
    raise ValueError(f"slurm.expected_mfu must be in (0, 1], got {expected_mfu!r}")
  if not poll_s > 0:
    raise ValueError(f"slurm.poll_s must be positive, got {poll_s!r}")
  if max_hours_per_run is not None and not max_hours_per_run > 0:
    raise ValueError(f"slurm.max_hours_per_run must be positive, got {max_hours_per_run!r}")
  check_device_kind(device_kind, gpus_per_node)
  lines = tuple(sbatch_lines) if not isinstance(sbatch_lines, str) else (sbatch_lines,)
  for line in lines:
    if not line.startswith("#SBATCH "):
      raise ValueError(f"slurm.sbatch_lines must be '#SBATCH ...' lines, got {line!r}")
  return SlurmConfig(partition, account, qos, time, gpus_per_node, cpus_per_node, max_nodes, max_hours_per_run,
                     device_kind, float(expected_mfu), signal_s, lines,
                     tuple(setup) if not isinstance(setup, str) else (setup,), python, float(poll_s))


def check_device_kind(device_kind: str | None, gpus_per_node: int) -> None:
  """`slurm.device_kind` must name a device of the peak table (the error lists its GPUs), and only on GPU
  nodes (its peak is per GPU)."""
  from scaling import hardware

  if device_kind is None:
    return
  known = ", ".join(sorted({k.upper() for k in hardware.DEVICE_PEAKS if not k.startswith("tpu")}))
  if not isinstance(device_kind, str) or hardware.declared_peak(device_kind) is None:
    raise ValueError(f"slurm.device_kind {device_kind!r} is not a device with a known peak (one of {known})")
  if gpus_per_node == 0:
    raise ValueError(f"slurm.device_kind = {device_kind!r} needs slurm.gpus_per_node >= 1 (its peak is per GPU); "
                     "leave it unset on CPU nodes")


def read_config() -> SlurmConfig:
  """The `slurm.*` knobs of the parsed sweep file (one clear line when one is invalid)."""
  try:
    return slurm()
  except ValueError as e:
    raise UserError(str(e)) from None


# --- planning ------------------------------------------------------------------------------------------


def mesh_devices(mesh: str) -> int | None:
  """The device count a mesh fixes ('2x4x1' -> 8), or None when an entry is -1 (whatever the job has)."""
  dims = [int(d) for d in mesh.split("x")]
  return None if -1 in dims else math.prod(dims)


def peak_per_device(cfg: SlurmConfig) -> float | None:
  from scaling import hardware

  return hardware.declared_peak(cfg.device_kind) if cfg.device_kind else None


def run_hours(spec: ml_collections.ConfigDict, devices: int, cfg: SlurmConfig) -> float | None:
  """Estimated hours of one run on `devices` devices at `slurm.expected_mfu` (None without a known peak)."""
  from scaling.sweep import table

  peak = peak_per_device(cfg)
  return table.trained_flops(spec) / (devices * peak * cfg.expected_mfu) / 3600 if peak else None


def nodes_for(spec: ml_collections.ConfigDict, cfg: SlurmConfig) -> int:
  """How many nodes a run's task gets: what its mesh needs, else the fewest that meet max_hours_per_run."""
  fixed = mesh_devices(spec.mesh)
  if fixed is not None:
    if cfg.gpus_per_node == 0:
      return 1  # CPU nodes: the mesh is simulated or spread over one node's cores
    nodes = math.ceil(fixed / cfg.gpus_per_node)
    if nodes > cfg.max_nodes:
      raise UserError(f"run {spec.run_id}: its mesh {spec.mesh} needs {nodes} nodes of {cfg.gpus_per_node} GPUs, "
                      f"more than slurm.max_nodes = {cfg.max_nodes}")
    return nodes
  nodes = 1
  if cfg.max_hours_per_run and cfg.gpus_per_node:
    while nodes < cfg.max_nodes and (run_hours(spec, nodes * cfg.gpus_per_node, cfg) or 0) > cfg.max_hours_per_run:
      nodes *= 2
    nodes = min(nodes, cfg.max_nodes)
  return nodes


def plan(specs: Sequence[ml_collections.ConfigDict], cfg: SlurmConfig) -> dict[int, list[ml_collections.ConfigDict]]:
  """Runs grouped by node count: one job array per group (an array's tasks share their resources)."""
  groups: dict[int, list] = {}
  for spec in specs:
    groups.setdefault(nodes_for(spec, cfg), []).append(spec)
  return dict(sorted(groups.items()))


def plan_lines(groups: dict[int, list], cfg: SlurmConfig) -> list[str]:
  """The plan as text: per array its runs, nodes and estimated hours; the total device-hours."""
  out, total = [], 0.0
  per_node = cfg.gpus_per_node or 1
  unit = "GPU" if cfg.gpus_per_node else "node"
  for nodes, specs in groups.items():
    hours = [run_hours(s, nodes * per_node, cfg) for s in specs]
    known = [h for h in hours if h is not None]
    total += sum(h * nodes * per_node for h in known)
    est = f", {sum(known):.3g} h of runs" if known else ""
    per = f"{cfg.gpus_per_node} GPU(s) per node" if cfg.gpus_per_node else "CPU nodes"
    out.append(f"array of {len(specs)} run(s), {nodes} node(s) each ({per}){est}")
  if cfg.device_kind and peak_per_device(cfg):
    out.append(f"total: {total:.4g} {unit}-hours on {cfg.device_kind} at MFU {cfg.expected_mfu:g} (slurm.expected_mfu)")
  elif cfg.gpus_per_node:
    out.append("total: set slurm.device_kind (e.g. 'H100') for time and GPU-hour estimates")
  return out


# --- the batch script ----------------------------------------------------------------------------------


def sbatch_script(root: Path, runs_file: Path, count: int, nodes: int, cfg: SlurmConfig, job_name: str,
                  after: Sequence[str] = ()) -> str:
  """The array's batch script: the template with this array's values filled in (`after`: tasks to wait for)."""
  lines = [f"#SBATCH --{k}={v}" for k, v in (("partition", cfg.partition), ("account", cfg.account), ("qos", cfg.qos)) if v]
  if after:
    lines.append(f"#SBATCH --dependency=afterany:{':'.join(after)}")
  if cfg.gpus_per_node:
    lines.append(f"#SBATCH --gpus-per-node={cfg.gpus_per_node}")
  if cfg.cpus_per_node:
    lines.append(f"#SBATCH --cpus-per-task={cfg.cpus_per_node}")
  lines += cfg.sbatch_lines
  values = {
      "JOB_NAME": job_name, "ARRAY": f"0-{count - 1}", "NODES": str(nodes), "LOG_DIR": str(root / "slurm"),
      "TIME": cfg.time, "SIGNAL_S": str(cfg.signal_s), "SBATCH_LINES": "\n".join(lines), "SETUP": "\n".join(cfg.setup),
      "PYTHON": cfg.python or sys.executable, "ROOT": str(root), "RUNS_FILE": str(runs_file),
  }
  text = TEMPLATE.read_text()
  for key, value in values.items():
    text = text.replace(f"@{key}@", value)
  return text


# --- SLURM commands ------------------------------------------------------------------------------------


def _command(name: str) -> str:
  path = shutil.which(name)
  if path is None:
    raise UserError(f"{name} not found on PATH: --launcher=slurm runs on a SLURM login node (or install slurm-wlm)")
  return path


def _run(args: list[str]) -> str:
  done = subprocess.run(args, capture_output=True, text=True, timeout=120)
  if done.returncode != 0:
    raise UserError(f"{' '.join(args[:2])} failed ({done.returncode}): {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
  return done.stdout


def submit(script: Path) -> str:
  """Submits a batch script; returns the job id."""
  return _run([_command("sbatch"), "--parsable", str(script)]).strip().split(";")[0]


def queue() -> dict[str, tuple[str, str]]:
  """This user's queued and running array tasks: 'JOB_TASK' -> (state, reason)."""
  out = _run([_command("squeue"), "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
  tasks = {}
  for line in out.splitlines():
    if line.count("|") == 2:
      task, state, reason = line.strip().split("|")
      tasks[task] = (state, reason)
  return tasks


def ended_state(task: str) -> str:
  """How a task that left the queue ended (sacct where accounting runs, else scontrol, else 'ENDED')."""
  for args in ((["sacct", "-n", "-X", "-P", "-j", task, "-o", "State"]), (["scontrol", "-o", "show", "job", task])):
    if shutil.which(args[0]) is None:
      continue
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode == 0 and done.stdout.strip():
      text = done.stdout.strip()
      if args[0] == "sacct":
        return text.splitlines()[0].split()[0]
      for field in text.split():
        if field.startswith("JobState="):
          return field.split("=", 1)[1]
  return "ENDED"


# --- the launcher --------------------------------------------------------------------------------------


def _jobs_path(root: Path) -> Path:
  return root / "slurm" / JOBS_JSON


def read_jobs(root: Path) -> dict[str, dict]:
  """run id -> {"task": 'JOB_INDEX', "submissions": k}: what was submitted for each run."""
  path = _jobs_path(root)
  return runs.read_json(path) if path.exists() else {}


def _submit_arrays(root: Path, specs: Sequence[ml_collections.ConfigDict], cfg: SlurmConfig, jobs: dict,
                   say: Callable[[str], None]) -> None:
  (root / "slurm").mkdir(parents=True, exist_ok=True)
  # Cooldown branches whose parent is not done go in arrays of their own that wait for the parents' tasks.
  waiting = [s for s in specs if s.parent and runs.read_status(root / s.parent)["state"] != "done"]
  for branches, batch in ((False, [s for s in specs if s not in waiting]), (True, waiting)):
    for nodes, group in plan(batch, cfg).items():
      after = sorted({jobs[s.parent]["task"] for s in group if s.parent in jobs}) if branches else []
      _submit_array(root, group, nodes, cfg, jobs, after, say)


def _submit_array(root: Path, group: Sequence[ml_collections.ConfigDict], nodes: int, cfg: SlurmConfig, jobs: dict,
                  after: Sequence[str], say: Callable[[str], None]) -> None:
  number = len(list((root / "slurm").glob("array-*.sbatch"))) + 1
  base = root / "slurm" / f"array-{number}-{nodes}n{'-after' if after else ''}"
  runs_file, script = base.with_suffix(".runs"), base.with_suffix(".sbatch")
  runs.write_text_atomic(runs_file, "".join(f"{s.run_id}\n" for s in group))
  runs.write_text_atomic(script, sbatch_script(root, runs_file, len(group), nodes, cfg, f"scaling-{root.name}", after))
  job = submit(script)
  for i, s in enumerate(group):
    previous = jobs.get(s.run_id, {})
    jobs[s.run_id] = {"task": f"{job}_{i}", "submissions": previous.get("submissions", 0) + 1, "nodes": nodes}
    runs.set_status(root / s.run_id, "pending", runs.read_status(root / s.run_id).get("step", 0),
                      f"SLURM job {job}_{i}: submitted")
  runs.write_json_atomic(_jobs_path(root), jobs)
  say(f"scaling sweep: slurm: submitted job {job} (array 0-{len(group) - 1}, {nodes} node(s) per task): "
      f"{len(group)} run(s); sbatch {script}")


def sync(root: Path, specs: Sequence[ml_collections.ConfigDict], cfg: SlurmConfig, say: Callable[[str], None]) -> list:
  """One pass: statuses from the queue, then submission of the runs that need it; returns the runs still open."""
  jobs, tasks = read_jobs(root), queue()
  todo = []
  for spec in specs:
    run_dir = root / spec.run_id
    status = runs.read_status(run_dir)
    if status["state"] in ("done", "failed"):
      continue
    job = jobs.get(spec.run_id)
    if job and job["task"] in tasks:
      state, reason = tasks[job["task"]]
      if state == "PENDING" and status["state"] != "running":
        runs.set_status(run_dir, "pending", status.get("step", 0), f"SLURM job {job['task']}: PENDING ({reason})")
      continue
    if job:
      ended = ended_state(job["task"])
      status = runs.read_status(run_dir)
      if status["state"] in ("done", "failed"):
        continue
      if job["submissions"] >= MAX_SUBMISSIONS:
        runs.set_status(run_dir, "failed", status.get("step", 0),
                        f"SLURM job {job['task']} ended ({ended}) {job['submissions']} times without finishing it")
        say(f"scaling sweep: slurm: {spec.run_id} failed: submitted {job['submissions']} times")
        continue
      runs.set_status(run_dir, "preempted", status.get("step", 0), f"SLURM job {job['task']} ended ({ended}); resubmitting")
      say(f"scaling sweep: slurm: {spec.run_id}: job {job['task']} ended ({ended}) before the run was done; resubmitting")
    todo.append(spec)
  if todo:
    _submit_arrays(root, todo, cfg, jobs, say)
  return [s for s in specs if runs.read_status(root / s.run_id)["state"] not in ("done", "failed")]


def dry_run(root: Path, specs: Sequence[ml_collections.ConfigDict], say: Callable[[str], None] = print) -> int:
  """Prints the arrays `launch` would submit: the plan, each batch script and its sbatch command."""
  cfg = read_config()
  groups = plan(specs, cfg)
  for line in plan_lines(groups, cfg):
    say(line)
  for nodes, group in groups.items():
    runs_file = root / "slurm" / f"array-<k>-{nodes}n.runs"
    say(f"\n# {runs_file} (one run id per line): {' '.join(s.run_id for s in group)}")
    say(f"$ sbatch --parsable {runs_file.with_suffix('.sbatch')}")
    say(sbatch_script(root, runs_file, len(group), nodes, cfg, f"scaling-{root.name}"))
  return 0


def preflight(specs: Sequence[ml_collections.ConfigDict]) -> SlurmConfig:
  """Everything that can be wrong before a submission: the knobs, the SLURM commands, each run's allocation."""
  cfg = read_config()
  _command("sbatch")
  _command("squeue")
  for spec in specs:
    nodes_for(spec, cfg)
  return cfg


def launch(root: Path, specs: Sequence[ml_collections.ConfigDict], *, detach: bool = False,
           show: Callable[[bool], None] = lambda final: None, say: Callable[[str], None] = print) -> int:
  """Submits the runs not done and, unless `detach`, watches them to the end; returns the exit status."""
  cfg = preflight(specs)
  jobs = read_jobs(root)
  queued = queue()
  already = [s for s in specs if s.run_id in jobs and jobs[s.run_id]["task"] in queued]
  if already:
    say(f"scaling sweep: slurm: {len(already)} run(s) already queued or running "
        f"(jobs {', '.join(sorted({jobs[s.run_id]['task'].split('_')[0] for s in already}))}); not submitted again")
  open_runs = sync(root, specs, cfg, say)
  if detach:
    say("scaling sweep: slurm: detached; `scaling status ROOT` shows progress, the same command resubmits what ended early")
    return 0
  errors = 0
  try:
    while open_runs:
      show(False)
      time.sleep(cfg.poll_s)
      try:
        open_runs = sync(root, specs, cfg, say)
        errors = 0
      except UserError as e:  # a busy or restarting slurmctld: try again, give up after a while
        errors += 1
        if errors >= MAX_QUEUE_ERRORS:
          raise
        say(f"scaling sweep: slurm: {e}; trying again in {cfg.poll_s:g} s")
    show(True)
  except KeyboardInterrupt:
    say("scaling sweep: slurm: stopped watching; the jobs stay queued (scancel them to stop), run the same command to watch again")
    return 130
  failed = [s for s in specs if runs.read_status(root / s.run_id)["state"] == "failed"]
  return 1 if failed else 0
