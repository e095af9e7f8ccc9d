"""The Cloud TPU launcher: a sweep's runs trained on TPU VM slices, driven through `gcloud`.

Each slice is one TPU VM of `tpu.accelerator_type` (`gcloud compute tpus tpu-vm create`, or a queued
resource with `tpu.queued`); `tpu.slices` slices train in parallel, each its share of the runs one after
another. A run is one multi-host job: `gcloud compute tpus tpu-vm ssh --worker=all` starts
`python -m scaling.launch.task` on every worker of the slice, and the workers join one `jax.distributed`
job (scaling/launch/distributed.py). When a run's job ends with the slice PREEMPTED (or TERMINATED; a
queued resource SUSPENDED or FAILED), the slice is deleted, created again and reinstalled, and the run
resumes from its checkpoint, at most `MAX_RECOVERIES` times per slice. The sweep root is a gs:// URL
(the usual case: workers and launcher read and write it directly), or a shared mount at the same path
(`tpu.root`) on every worker that is readable here too (where run states are read). The launcher's own
files (slice logs, the source archive) are kept in `storage.local_dir(root)`.

`scaling.config` imports this module so that gin knows the `tpu` knobs wherever a spec.gin is parsed
(a worker parses the sweep's text, `tpu.*` bindings included); it must therefore not import jax.
docs/launch_tpu.md shows a whole session; tests/data/fake_gcloud.py stands in for `gcloud` in the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import gin
import ml_collections

from scaling import runs, storage
from scaling.errors import UserError
from scaling.sweep import claims

MAX_RECOVERIES = 3  # slice recreations (or restarts of a stopped job) per slice before its runs are left
LOG_DIR = "tpu"  # ROOT/tpu/<slice>.log: every gcloud command of a slice and its output
ARCHIVE = "scaling-src.tar.gz"  # the project's source, copied into each worker's home directory
CLOCK_SKEW_S = 60.0  # a claim made this long before a job started may still be that job's (clocks differ)
SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", "scaling", "configs", "launch/tpu")


# --- accelerator types -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation: how its accelerator type names count, its hosts, peak and default runtime."""

  name: str  # 'v5e'
  prefix: str  # the accelerator type's prefix: 'v5litepod' in 'v5litepod-16'
  counts: str  # 'cores' (v4, v5p: N TensorCores, 2 per chip) or 'chips' (v5e, v6e: N chips)
  chips_per_host: int  # chips per TPU VM (worker) of a multi-host slice
  single_host_chips: int  # the largest slice that is one VM
  peak: float  # declared dense bf16 FLOP/s per chip
  runtime_version: str  # the TPU software version Google recommends for JAX
  sizes: tuple[int, ...] | None = None  # the N that exist; None: any multiple of 8


# Google's tables: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} (chips, VMs), .../runtimes (software versions).
GENERATIONS: dict[str, Generation] = {
    "v4": Generation("v4", "v4", "cores", 4, 4, 275e12, "tpu-ubuntu2204-base"),
    "v5e": Generation("v5e", "v5litepod", "chips", 4, 8, 197e12, "v2-alpha-tpuv5-lite", (1, 4, 8, 16, 32, 64, 128, 256)),
    "v5p": Generation("v5p", "v5p", "cores", 4, 4, 459e12, "v2-alpha-tpuv5"),
    "v6e": Generation("v6e", "v6e", "chips", 4, 8, 918e12, "v2-alpha-tpuv6e", (1, 4, 8, 16, 32, 64, 128, 256)),
}
CORES_PER_CHIP = 2  # v4 and v5p name TensorCores; each chip has two (one JAX device per chip)


@dataclasses.dataclass(frozen=True)
class Slice:
  """What an accelerator type is: its generation, chips (= JAX devices) and hosts (TPU VM workers)."""

  accelerator_type: str
  generation: Generation
  chips: int
  hosts: int

  @property
  def chips_per_host(self) -> int:
    """Chips (JAX devices) of each worker."""
    return self.chips // self.hosts

  @property
  def peak(self) -> float:
    """The slice's declared dense bf16 FLOP/s."""
    return self.chips * self.generation.peak


def _known_types() -> str:
  """The accelerator type names the launcher knows, for error messages."""
  return ("v4-N and v5p-N (N TensorCores, a multiple of 8; 2 per chip), v5litepod-N and v6e-N "
          "(N chips: 1, 4, 8, 16, ..., 256)")


def parse_accelerator(accelerator_type: str) -> Slice:
  """'v5litepod-16' -> v5e, 16 chips on 4 hosts; an unknown type is a UserError naming tpu.accelerator_type."""
  match = re.fullmatch(r"([a-z0-9]+)-(\d+)", str(accelerator_type).strip().lower())
  gen = next((g for g in GENERATIONS.values() if match and g.prefix == match.group(1)), None)
  n = int(match.group(2)) if match else 0
  valid = gen is not None and (n in gen.sizes if gen.sizes else n >= 8 and n % 8 == 0)
  if not valid:
    raise UserError(f"tpu.accelerator_type = {accelerator_type!r} is not a TPU type this launcher knows; "
                    f"known generations: {_known_types()}")
  chips = n // CORES_PER_CHIP if gen.counts == "cores" else n
  hosts = 1 if chips <= gen.single_host_chips else chips // gen.chips_per_host
  return Slice(str(accelerator_type).strip().lower(), gen, chips, hosts)


# --- the `tpu` knobs -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TpuConfig:
  """The `tpu.*` knobs (docs/launch_tpu.md)."""

  accelerator_type: str | None
  zone: str | None
  project: str | None
  runtime_version: str | None
  spot: bool
  reserved: bool
  queued: bool
  name_prefix: str
  slices: int
  workdir: str
  setup_command: str | None
  root: str | None
  expected_mfu: float
  env: tuple[tuple[str, str], ...]


@gin.configurable("tpu")
def tpu(accelerator_type: str | None = None, zone: str | None = None, project: str | None = None,
        runtime_version: str | None = None, spot: bool = False, reserved: bool = False, queued: bool = False,
        name_prefix: str = "scaling", slices: int = 1, workdir: str = "~/scaling", setup_command: str | None = None,
        root: str | None = None, expected_mfu: float = 0.4, env: Mapping[str, str] | None = None) -> TpuConfig:
  """The Cloud TPU launcher's settings, validated (ValueError naming the knob)."""
  if spot and reserved:
    raise ValueError("tpu.spot and tpu.reserved exclude each other: set one")
  if not re.fullmatch(r"[a-z][-a-z0-9]{0,39}", str(name_prefix)):
    raise ValueError(f"tpu.name_prefix = {name_prefix!r} must be lower-case letters, digits and '-' "
                     "(starting with a letter, at most 40)")
  if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
    raise ValueError(f"tpu.slices must be a whole number >= 1, got {slices!r}")
  if isinstance(expected_mfu, bool) or not isinstance(expected_mfu, (int, float)) or not 0 < expected_mfu <= 1:
    raise ValueError(f"tpu.expected_mfu must be in (0, 1], got {expected_mfu!r}")
  if not isinstance(workdir, str) or not workdir.strip():
    raise ValueError(f"tpu.workdir must be a directory path, got {workdir!r}")
  env = dict(env or {})
  bad = [k for k in env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k))]
  if bad:
    raise ValueError(f"tpu.env: {bad[0]!r} is not an environment variable name")
  return TpuConfig(accelerator_type, zone, project, runtime_version, bool(spot), bool(reserved), bool(queued),
                   str(name_prefix), slices, workdir.strip(), setup_command, root, float(expected_mfu),
                   tuple((str(k), str(v)) for k, v in env.items()))


def _required(cfg: TpuConfig) -> Slice:
  """The slice type, once the knobs a launch cannot do without are set (UserError naming the first missing)."""
  for knob, example in (("accelerator_type", "'v5litepod-16'"), ("zone", "'us-west4-a'"), ("project", "'my-project'")):
    if not getattr(cfg, knob):
      raise UserError(f"tpu.{knob} is required to launch on Cloud TPU: add `tpu.{knob} = {example}` to the sweep "
                      "file or --gin_bindings")
  return parse_accelerator(cfg.accelerator_type)


def find_gcloud(gcloud: str = "gcloud") -> str:
  """The gcloud executable (UserError when it is not installed)."""
  found = shutil.which(gcloud)
  if not found:
    raise UserError(f"{gcloud} not found on PATH; install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install)")
  return found


# --- planning --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlicePlan:
  """One slice of the launch: its name and the runs it trains, in order, with their estimated seconds."""

  name: str
  runs: tuple[str, ...]
  seconds: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a launch will do: the slice type, the slices and their runs, where the workers see the root."""

  config: TpuConfig
  accelerator: Slice
  slices: tuple[SlicePlan, ...]
  remote_root: str
  archive: Path | None  # the source archive to copy to the workers (None: tpu.setup_command installs without it)

  @property
  def chip_hours(self) -> float:
    """The slices' estimated busy time x their chips."""
    return sum(sum(s.seconds) for s in self.slices) * self.accelerator.chips / 3600.0


def mesh_devices(mesh: str) -> tuple[int, bool]:
  """A mesh's device count without its -1 entry, and whether it has one ('2x-1x1' -> (2, True))."""
  try:
    dims = [int(d) for d in str(mesh).lower().split("x")]
  except ValueError:
    raise UserError(f"sweep.mesh = {mesh!r} must be DxFxT, e.g. '-1x1x1'") from None
  return math.prod(d for d in dims if d != -1), -1 in dims


def check_mesh(spec: ml_collections.ConfigDict, sl: Slice) -> None:
  """UserError naming the run and the slice when the run's mesh cannot be laid out on exactly its chips."""
  known, fill = mesh_devices(spec.mesh)
  if (fill and sl.chips % known == 0) or (not fill and known == sl.chips):
    return
  what = f"run {spec.run_id} ({spec.part} {spec.shape.width}x{spec.shape.depth}) has mesh {spec.mesh}"
  need = f"needs a multiple of {known} devices" if fill else f"needs exactly {known} devices"
  raise UserError(f"{what}, which {need}: it does not fit a {sl.accelerator_type} slice ({sl.chips} chips); "
                  "set sweep.mesh (e.g. '-1x1x1' fills the slice) or another tpu.accelerator_type")


def slice_names(prefix: str, root: Path, count: int) -> list[str]:
  """Slice names, stable per sweep root, so a second launch on the same root finds (reuses) its slices."""
  tag = hashlib.sha256(str(storage.absolute(root)).encode()).hexdigest()[:4]
  return [f"{prefix}-{tag}-{i}" for i in range(count)]


def _units(todo: Sequence[ml_collections.ConfigDict]) -> list[list[ml_collections.ConfigDict]]:
  """The runs in groups that must share a slice: a cooldown parent and its branches (which wait for it)."""
  groups: dict[str, list] = {}
  for spec in todo:
    key = spec.parent if spec.parent and spec.parent in groups else spec.run_id
    groups.setdefault(key, []).append(spec)
  return list(groups.values())


def _seconds(spec: ml_collections.ConfigDict, sl: Slice, mfu: float) -> float:
  """A run's estimated training time on the slice: its FLOPs over the slice's peak x MFU."""
  from scaling.sweep import table

  return table.trained_flops(spec) / (sl.peak * mfu)


def make_plan(cfg: TpuConfig, root: Path, specs: Sequence[ml_collections.ConfigDict], todo: Sequence[str]) -> Plan:
  """Assigns the runs to slices after checking every knob and mesh: the longest first to the least loaded
  slice (so the slices end together), then each slice's runs in the sweep's order."""
  sl = _required(cfg)
  wanted = set(todo)
  runs_todo = [s for s in specs if s.run_id in wanted]
  for spec in runs_todo:
    check_mesh(spec, sl)
  seconds = {s.run_id: _seconds(s, sl, cfg.expected_mfu) for s in runs_todo}
  loads: list[list[ml_collections.ConfigDict]] = [[] for _ in range(cfg.slices)]
  for unit in sorted(_units(runs_todo), key=lambda u: -sum(seconds[s.run_id] for s in u)):
    min(loads, key=lambda ls: sum(seconds[s.run_id] for s in ls)).extend(unit)
  order = {s.run_id: i for i, s in enumerate(runs_todo)}
  used = [sorted(ls, key=lambda s: order[s.run_id]) for ls in loads if ls]
  names = slice_names(cfg.name_prefix, root, len(used))
  slices = tuple(SlicePlan(n, tuple(s.run_id for s in ls), tuple(seconds[s.run_id] for s in ls))
                 for n, ls in zip(names, used))
  remote_root = cfg.root or str(storage.absolute(root))
  return Plan(cfg, sl, slices, remote_root, _archive_path(cfg, root))


# --- the project on the workers --------------------------------------------------------------------


def checkout() -> Path | None:
  """The source checkout this package runs from (it has a pyproject.toml), or None for an installed wheel."""
  top = Path(__file__).resolve().parents[2]
  return top if (top / "pyproject.toml").is_file() and (top / "scaling").is_dir() else None


def _archive_path(cfg: TpuConfig, root: Path) -> Path | None:
  """Where the source archive is written (ROOT/tpu/), or None when tpu.setup_command installs without it."""
  if checkout() is None:
    if cfg.setup_command is None:
      raise UserError("tpu.setup_command: the default install copies this source checkout to the workers, but "
                      "scaling runs from an installed package; set tpu.setup_command to install it on each worker")
    return None
  return storage.local_dir(storage.absolute(root)) / LOG_DIR / ARCHIVE


def write_archive(dest: Path) -> Path:
  """A tar.gz of the project's source (no caches, no venv): what the default install unpacks on each worker."""
  top = checkout()
  dest.parent.mkdir(parents=True, exist_ok=True)
  with tarfile.open(dest, "w:gz") as tar:
    for name in SOURCE_PATHS:
      if (top / name).exists() or (top / name).is_symlink():
        tar.add(top / name, arcname=name, filter=_no_caches)
  return dest


def _no_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
  """Leaves Python caches out of the source archive."""
  return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info


def shell_path(path: str) -> str:
  """A path for a remote shell: quoted, with a leading `~/` left for the shell to expand."""
  if path == "~" or path.startswith("~/"):
    return "~/" + shlex.quote(path[2:]) if len(path) > 2 else "~"
  return shlex.quote(path)


DEFAULT_SETUP = f"tar -xzf ~/{ARCHIVE} && bash launch/tpu/setup.sh"


def install_script(cfg: TpuConfig) -> str:
  """What each worker runs once per slice: into tpu.workdir, then tpu.setup_command (default: unpack, setup.sh)."""
  workdir = shell_path(cfg.workdir)
  return f"set -e; mkdir -p {workdir}; cd {workdir}; {cfg.setup_command or DEFAULT_SETUP}"


def task_script(cfg: TpuConfig, remote_root: str, run_id: str, hosts: int) -> str:
  """What each worker runs to train one run: its process of the job, `scaling.launch.task`.

  On a multi-host slice `--distributed` joins the workers' job (JAX finds them on a TPU VM); one host is
  one process driving all its chips, which needs no job to join.
  """
  env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (("PYTHONUNBUFFERED", "1"), *cfg.env))
  return (f"cd {shell_path(cfg.workdir)} && {env} exec .venv/bin/python -m scaling.launch.task "
          f"--root {shlex.quote(remote_root)} {run_id}{' --distributed' if hosts > 1 else ''}")


# --- gcloud command lines --------------------------------------------------------------------------


def _group(cfg: TpuConfig, gcloud: str) -> list[str]:
  """The command group the slice's own life goes through: TPU VMs, or queued resources."""
  return [gcloud, "compute", "tpus", "queued-resources" if cfg.queued else "tpu-vm"]


def _where(cfg: TpuConfig) -> list[str]:
  """Zone and project, explicit on every call so that no gcloud config default applies."""
  return [f"--zone={cfg.zone}", f"--project={cfg.project}"]


def create_command(cfg: TpuConfig, sl: Slice, name: str, gcloud: str = "gcloud") -> list[str]:
  """`tpu-vm create NAME ... --version=V`, or `queued-resources create NAME --node-id=NAME ... --runtime-version=V`."""
  version = cfg.runtime_version or sl.generation.runtime_version
  pricing = ["--spot"] if cfg.spot else ["--reserved"] if cfg.reserved else []
  if cfg.queued:
    return [*_group(cfg, gcloud), "create", name, f"--node-id={name}", *_where(cfg),
            f"--accelerator-type={sl.accelerator_type}", f"--runtime-version={version}", *pricing]
  return [*_group(cfg, gcloud), "create", name, *_where(cfg), f"--accelerator-type={sl.accelerator_type}",
          f"--version={version}", *pricing]


def describe_command(cfg: TpuConfig, name: str, gcloud: str = "gcloud") -> list[str]:
  """Prints the slice's state (a queued resource's is under `state.state`)."""
  field = "state.state" if cfg.queued else "state"
  return [*_group(cfg, gcloud), "describe", name, *_where(cfg), f"--format=value({field})"]


def delete_command(cfg: TpuConfig, name: str, gcloud: str = "gcloud") -> list[str]:
  """Deletes the slice without asking (a queued resource with its node: --force)."""
  force = ["--force"] if cfg.queued else []
  return [*_group(cfg, gcloud), "delete", name, *_where(cfg), *force, "--quiet"]


def copy_command(cfg: TpuConfig, name: str, archive: Path, gcloud: str = "gcloud") -> list[str]:
  """Copies the source archive into the home directory of every worker."""
  return [gcloud, "compute", "tpus", "tpu-vm", "scp", "--recurse", str(archive), f"{name}:{ARCHIVE}", *_where(cfg),
          "--worker=all"]


def ssh_command(cfg: TpuConfig, name: str, script: str, gcloud: str = "gcloud") -> list[str]:
  """Runs a shell command on every worker of the slice at once."""
  return [gcloud, "compute", "tpus", "tpu-vm", "ssh", name, *_where(cfg), "--worker=all", f"--command={script}"]


def slice_commands(plan: Plan, sp: SlicePlan, gcloud: str = "gcloud") -> list[list[str]]:
  """Every gcloud command a slice's launch runs when nothing goes wrong, in order."""
  cfg = plan.config
  copy = [copy_command(cfg, sp.name, plan.archive, gcloud)] if plan.archive else []
  return [describe_command(cfg, sp.name, gcloud), create_command(cfg, plan.accelerator, sp.name, gcloud),
          describe_command(cfg, sp.name, gcloud), *copy, ssh_command(cfg, sp.name, install_script(cfg), gcloud),
          *(ssh_command(cfg, sp.name, task_script(cfg, plan.remote_root, rid, plan.accelerator.hosts), gcloud)
            for rid in sp.runs),
          delete_command(cfg, sp.name, gcloud)]


# --- the dry run -----------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
  """'1 run', '2 runs': the plan and the progress lines count many things."""
  return f"{n} {word}{'' if n == 1 else 's'}"


def plan_lines(plan: Plan, specs: Mapping[str, ml_collections.ConfigDict], gcloud: str = "gcloud") -> list[str]:
  """The plan as text: the slice type, per slice its runs and estimates, the total, every gcloud command."""
  from scaling.console import format_eta

  sl, cfg = plan.accelerator, plan.config
  count = sum(len(s.runs) for s in plan.slices)
  out = [f"{_plural(count, 'run')} on {_plural(len(plan.slices), 'slice')} of {sl.accelerator_type} "
         f"({sl.generation.name}: {sl.chips} chips on {_plural(sl.hosts, 'host')} of {sl.chips_per_host}, "
         f"{sl.generation.peak / 1e12:g} TFLOP/s bf16 per chip), estimates at MFU {cfg.expected_mfu:g} (tpu.expected_mfu)"]
  for sp in plan.slices:
    out += [""]
    out.append(f"slice {sp.name} ({sl.accelerator_type}, {_plural(sl.hosts, 'host')}): {_plural(len(sp.runs), 'run')}, "
               f"est {format_eta(sum(sp.seconds))}")
    for rid, sec in zip(sp.runs, sp.seconds):
      s = specs[rid]
      shape = f"{s.shape.width}x{s.shape.depth}"
      out.append(f"  {rid}  {s.part:<9} {shape:<7} mesh {s.mesh:<8} C {s.C:.3g}  est {format_eta(sec)}")
  longest = max((sum(s.seconds) for s in plan.slices), default=0.0)
  out += [""]
  out.append(f"total: {plan.chip_hours:.3g} chip-hours ({_plural(len(plan.slices), 'slice')} x {sl.chips} chips), "
             f"about {format_eta(longest)} end to end; the workers use the root {plan.remote_root}")
  for sp in plan.slices:
    out += [""]
    out.append(f"gcloud commands for {sp.name} (describe, create unless it is READY, wait, copy, install, "
               "one job per run, delete):")
    out += [f"  {shlex.join(c)}" for c in slice_commands(plan, sp, gcloud)]
  return out


# --- running ---------------------------------------------------------------------------------------


class SliceLost(Exception):
  """A slice that cannot go on (recreated too often, cannot be created, or the launch was interrupted)."""


@dataclasses.dataclass
class Context:
  """What every slice's driver shares: the plan, the local root, the specs, how to speak and run gcloud."""

  plan: Plan
  root: Path
  specs: Mapping[str, ml_collections.ConfigDict]
  say: Callable[[str], None]
  gcloud: str
  poll_s: float
  stop: threading.Event = dataclasses.field(default_factory=threading.Event)


READY = {False: "READY", True: "ACTIVE"}  # by tpu.queued
DEAD = {False: {"PREEMPTED", "TERMINATED"}, True: {"SUSPENDING", "SUSPENDED", "FAILED"}}
STUCK = {"STOPPED", "STOPPING", "HIDDEN", "HIDING"}  # waiting does not make these READY


class SliceDriver:
  """Creates (or reuses) one slice, installs the project, trains its runs in order, recovers, deletes it."""

  def __init__(self, ctx: Context, sp: SlicePlan):
    self.ctx, self.sp, self.cfg = ctx, sp, ctx.plan.config
    self.log = storage.local_dir(ctx.root) / LOG_DIR / f"{sp.name}.log"
    self.created = False  # by this launch: deleted at its end
    self.found = False  # there before this launch: left running at its end
    self.recoveries = 0
    self.proc: subprocess.Popen | None = None

  def say(self, text: str) -> None:
    """One progress line."""
    self.ctx.say(f"scaling sweep: tpu: {text}")

  def gcloud(self, args: list[str], capture: bool = False, even_if_stopped: bool = False) -> tuple[int, str]:
    """Runs one gcloud command, its output appended to the slice's log; (exit status, stdout if captured)."""
    if self.ctx.stop.is_set() and not even_if_stopped:
      raise SliceLost("interrupted")
    self.log.parent.mkdir(parents=True, exist_ok=True)
    with open(self.log, "a") as log:
      log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(args)}\n")
      log.flush()
      self.proc = subprocess.Popen(args, stdout=subprocess.PIPE if capture else log, stderr=log,
                                   stdin=subprocess.DEVNULL, text=True)
      out, _ = self.proc.communicate()
      code, self.proc = self.proc.returncode, None
      if capture:
        log.write(out or "")
    return code, (out or "").strip()

  def state(self) -> str | None:
    """The slice's state (READY, PREEMPTED, ...; a queued resource's ACTIVE, SUSPENDED, ...), None when absent."""
    code, out = self.gcloud(describe_command(self.cfg, self.sp.name, self.ctx.gcloud), capture=True)
    if code != 0 or not out:
      return None
    return out.splitlines()[-1].strip().upper() or None

  def up(self) -> None:
    """Makes the slice READY (ACTIVE): reuses it, waits for it, or (re)creates it."""
    sl, ready, last = self.ctx.plan.accelerator, READY[self.cfg.queued], None
    while True:
      state = self.state()
      self.found = self.found or (state is not None and not self.created)
      if state == ready:
        if not self.created:
          self.say(f"reusing {self.sp.name} ({sl.accelerator_type}, {state})")
        return
      if state is None:
        self.say(f"creating {self.sp.name} ({sl.accelerator_type}, {_plural(sl.hosts, 'host')}) ...")
        self.created = True
        code, _ = self.gcloud(create_command(self.cfg, sl, self.sp.name, self.ctx.gcloud))
        if code:
          raise SliceLost(f"creating {self.sp.name} failed (gcloud exit {code}); see {self.log}")
      elif state in DEAD[self.cfg.queued]:
        self.say(f"{self.sp.name} is {state}: deleting it to create it again")
        self.delete()
      elif state in STUCK:
        raise SliceLost(f"{self.sp.name} is {state}; start or delete it, then launch again")
      else:
        if state != last:
          self.say(f"{self.sp.name} is {state}; waiting for {ready}")
        self.ctx.stop.wait(self.ctx.poll_s)
      last = state

  def install(self) -> None:
    """Copies the project to every worker and installs it (tpu.setup_command)."""
    plan = self.ctx.plan
    self.say(f"installing the project on {self.sp.name} ({_plural(plan.accelerator.hosts, 'worker')})")
    if plan.archive is not None:
      code, _ = self.gcloud(copy_command(self.cfg, self.sp.name, plan.archive, self.ctx.gcloud))
      if code:
        raise SliceLost(f"copying the project to {self.sp.name} failed (gcloud exit {code}); see {self.log}")
    code, _ = self.gcloud(ssh_command(self.cfg, self.sp.name, install_script(self.cfg), self.ctx.gcloud))
    if code:
      raise SliceLost(f"installing the project on {self.sp.name} failed (exit {code}); see {self.log}")

  def delete(self) -> None:
    """Deletes the slice, even after an interrupt (a failure is reported: the launch is ending or recovering)."""
    self.say(f"deleting {self.sp.name}")
    code, _ = self.gcloud(delete_command(self.cfg, self.sp.name, self.ctx.gcloud), even_if_stopped=True)
    if code:
      self.say(f"deleting {self.sp.name} failed (gcloud exit {code}); delete it by hand: "
               f"{shlex.join(delete_command(self.cfg, self.sp.name))}")

  def recover(self, why: str, recreate: bool) -> None:
    """Within the slice's budget of MAX_RECOVERIES: brings a lost slice back (delete, create, install)."""
    if self.recoveries >= MAX_RECOVERIES:
      raise SliceLost(f"{why}; {self.sp.name} was recovered {MAX_RECOVERIES} times already, leaving its runs")
    self.recoveries += 1
    self.say(f"{why}; {'recreating' if recreate else 'running it again on'} {self.sp.name} "
             f"({self.recoveries} of {MAX_RECOVERIES})")
    if recreate:
      self.up()
      self.install()

  def run_all(self) -> None:
    """The slice's whole life; a lost slice leaves its remaining runs as they are."""
    try:
      self.up()
      self.install()
      for i, rid in enumerate(self.sp.runs):
        self.train(rid, i)
    except SliceLost as e:
      self.say(f"{self.sp.name}: {e}")
    finally:
      if self.created:
        self.delete()
      elif self.found:
        self.say(f"leaving {self.sp.name} running (it was there before this launch); delete it with: "
                 f"{shlex.join(delete_command(self.cfg, self.sp.name))}")

  def train(self, run_id: str, index: int) -> None:
    """Trains one run on the slice until it is done, fails, or the slice is lost for good."""
    from scaling.console import format_eta

    run_dir, spec = self.ctx.root / run_id, self.ctx.specs[run_id]
    label = f"{self.sp.name}: {run_id} ({spec.part} {spec.shape.width}x{spec.shape.depth})"
    while True:
      if runs.read_status(run_dir)["state"] == "done":
        self.say(f"{label}: done already")
        return
      if spec.parent and runs.read_status(self.ctx.root / spec.parent)["state"] != "done":
        _fail(run_dir, f"its parent run {spec.parent} is not done")
        self.say(f"{label}: failed: its parent run {spec.parent} is not done")
        return
      self.say(f"{label}: training ({index + 1}/{len(self.sp.runs)}, est {format_eta(self.sp.seconds[index])})")
      start = time.time()
      script = task_script(self.cfg, self.ctx.plan.remote_root, run_id, self.ctx.plan.accelerator.hosts)
      code, _ = self.gcloud(ssh_command(self.cfg, self.sp.name, script, self.ctx.gcloud))
      status = runs.read_status(run_dir)
      if status["state"] == "done":
        self.say(f"{label}: done in {format_eta(time.time() - start)}{_last_eval(run_dir)}")
        return
      slice_state = self.state()
      if slice_state != READY[self.cfg.queued]:
        claims.release_lost(run_dir, start - CLOCK_SKEW_S)  # the lost job's claim, so the rerun can claim
        self.recover(f"{label}: the job exited {code} and {self.sp.name} is {slice_state or 'gone'}", recreate=True)
      elif status["state"] == "preempted":
        self.recover(f"{label}: the job stopped at a checkpoint (SIGTERM, exit {code}) on a {slice_state} slice",
                     recreate=False)
      else:
        reason = status.get("reason") if status["state"] == "failed" else None
        if not reason:
          reason = f"tpu: the job on {self.sp.name} exited {code} (see {self.log})"
          _fail(run_dir, reason)
        self.say(f"{label}: failed: {reason}")
        return


def _fail(run_dir: Path, reason: str) -> None:
  """Records a failure unless the run is done or already failed (its own reason stays)."""
  status = runs.read_status(run_dir)
  if status["state"] not in ("done", "failed"):
    runs.set_status(run_dir, "failed", status.get("step", 0), reason)


def _last_eval(run_dir: Path) -> str:
  """', eval_loss 3.7026' for a finished run's line (empty when it has no evaluation)."""
  evals = [r["eval_loss"] for r in runs.read_metrics(run_dir) if "eval_loss" in r]
  return f", eval_loss {evals[-1]:.4f}" if evals else ""


@contextlib.contextmanager
def _stop_on_signals(ctx: Context, drivers: Sequence[SliceDriver]) -> Iterator[dict]:
  """SIGINT/SIGTERM stop the launch: running gcloud commands are ended and created slices deleted."""
  stopped = {"signal": 0}

  def handler(signum, _frame) -> None:
    stopped["signal"] = signum
    ctx.stop.set()
    for d in drivers:
      if d.proc is not None and d.proc.poll() is None:
        d.proc.terminate()

  if threading.current_thread() is not threading.main_thread():
    yield stopped
    return
  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield stopped
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _counts(root: Path, run_ids: Sequence[str]) -> dict[str, int]:
  """How many of the runs are in each state, from their status.json (the truth, whoever wrote it)."""
  states: dict[str, int] = {}
  for rid in run_ids:
    state = runs.read_status(root / rid)["state"]
    states[state] = states.get(state, 0) + 1
  return states


def execute(ctx: Context) -> int:
  """Drives every slice in its own thread; 0 when every run is done, 1 otherwise, 128 + signal when stopped."""
  plan = ctx.plan
  if plan.archive is not None and plan.slices:
    write_archive(plan.archive)
  drivers = [SliceDriver(ctx, sp) for sp in plan.slices]
  threads = [threading.Thread(target=d.run_all, name=f"tpu-{d.sp.name}", daemon=True) for d in drivers]
  with _stop_on_signals(ctx, drivers) as stopped:
    for t in threads:
      t.start()
    while any(t.is_alive() for t in threads):
      for t in threads:
        t.join(timeout=0.2)
  run_ids = [rid for sp in plan.slices for rid in sp.runs]
  states = _counts(ctx.root, run_ids)
  counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
  ctx.say(f"scaling sweep: tpu: {_plural(len(run_ids), 'run')}: {counts or 'none'}")
  if stopped["signal"]:
    return 128 + stopped["signal"]
  return 0 if states.get("done", 0) == len(run_ids) else 1


def preflight(root: Path, specs: Sequence[ml_collections.ConfigDict], todo: Sequence[str] | None = None,
              gcloud: str = "gcloud") -> Plan:
  """Everything that can be wrong before a launch (gcloud installed, the knobs, each run's mesh); the plan."""
  from scaling import config

  find_gcloud(gcloud)
  todo = [s.run_id for s in specs] if todo is None else todo
  return make_plan(config.build(tpu), storage.path(root), specs, todo)


def launch(root: Path, specs: Sequence[ml_collections.ConfigDict], todo: Sequence[str], *, dry_run: bool,
           say: Callable[[str], None] = print, gcloud: str = "gcloud", poll_s: float = 10.0) -> int:
  """Trains the `todo` runs of a sweep root on Cloud TPU slices as the parsed `tpu.*` knobs say.

  Every check (gcloud installed, required knobs, meshes that fit the slice) runs before any gcloud
  command. With `dry_run`, prints the plan and every gcloud command and runs nothing. Returns 0 when
  every run is done, 1 when some are not (failed, or left on a lost slice), 128 + the signal when stopped.
  """
  plan = preflight(root, specs, todo, gcloud)
  by_id = {s.run_id: s for s in specs}
  if dry_run:
    for line in plan_lines(plan, by_id, gcloud):
      say(line)
    return 0
  return execute(Context(plan, storage.path(root), by_id, say, gcloud, poll_s))
