"""The local launcher: K worker processes on this machine, the devices divided between them, and a live view.

Devices: on CPU each worker is pinned to its share of the cores (and of the simulated host devices when
XLA_FLAGS forces several); on NVIDIA GPUs each gets its share of CUDA_VISIBLE_DEVICES. Workers die with
the launcher (PR_SET_PDEATHSIG), so a killed sweep leaves no orphan training; their claims then look dead
and the next `scaling sweep` takes the runs over, resuming from their checkpoints.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scaling import runs, storage
from scaling.errors import UserError
from scaling.sweep import root as root_lib

FORCED_DEVICES = re.compile(r"--xla_force_host_platform_device_count=(\d+)")
MAX_RESPAWNS = 3


@dataclasses.dataclass(frozen=True)
class Slot:
  """What one worker gets: environment overrides and the CPU cores it is pinned to."""

  env: dict[str, str]
  cores: tuple[int, ...]
  describe: str


def _gpus() -> list[str]:
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return [g for g in visible.split(",") if g.strip()]
  if shutil.which("nvidia-smi"):
    try:
      out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
      return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]
  return []


def _split(items: Sequence, k: int, i: int) -> list:
  """The i-th of k contiguous, nearly equal shares of `items`."""
  n = len(items)
  return list(items[i * n // k:(i + 1) * n // k])


def device_slots(workers: int, platform: str | None = None) -> list[Slot]:
  """Divides this machine's devices between `workers` workers (UserError when there are too few)."""
  platform = platform or os.environ.get("JAX_PLATFORMS", "").split(",")[0] or ("gpu" if _gpus() else "cpu")
  cores = sorted(os.sched_getaffinity(0))
  if platform in ("gpu", "cuda"):
    gpus = _gpus()
    if len(gpus) < workers:
      raise UserError(f"--workers={workers} needs at least one GPU each; this machine shows {len(gpus)}")
    return [Slot({"CUDA_VISIBLE_DEVICES": ",".join(_split(gpus, workers, i))}, tuple(_split(cores, workers, i)),
                 f"GPUs {','.join(_split(gpus, workers, i))}") for i in range(workers)]
  if platform == "tpu":
    if workers != 1:
      raise UserError("on a TPU VM one process drives all chips: use --workers=1")
    return [Slot({}, tuple(cores), "all TPU chips")]
  if workers > len(cores):
    raise UserError(f"--workers={workers} is more than this machine's {len(cores)} CPU cores")
  flags = os.environ.get("XLA_FLAGS", "")
  forced = FORCED_DEVICES.search(flags)
  slots = []
  for i in range(workers):
    mine = tuple(_split(cores, workers, i))
    env = {}
    describe = f"CPU cores {','.join(map(str, mine))}"
    if forced and int(forced.group(1)) > 1:
      share = max(1, int(forced.group(1)) // workers)
      env["XLA_FLAGS"] = FORCED_DEVICES.sub(f"--xla_force_host_platform_device_count={share}", flags)
      describe += f", {share} host devices"
    slots.append(Slot(env, mine, describe))
  return slots


PARENT_ENV, CORES_ENV = "SCALING_WORKER_PARENT", "SCALING_WORKER_CORES"


def bind_to_launcher() -> None:
  """Called first in a worker: keep to the cores the launcher gave it, and die with the launcher (Linux
  PR_SET_PDEATHSIG). Done by the worker itself, not in a `preexec_fn`, so the launcher can start workers
  after it has started JAX's threads (forking a multithreaded process to run Python code can deadlock)."""
  parent, cores = os.environ.pop(PARENT_ENV, None), os.environ.pop(CORES_ENV, None)
  if cores:
    os.sched_setaffinity(0, [int(c) for c in cores.split(",")])
  if parent:
    try:
      ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
      return
    if os.getppid() != int(parent):  # the launcher died before the worker could tie itself to it
      os._exit(1)


def _spawn(root: Path, run_ids: Sequence[str], slot: Slot, index: int) -> subprocess.Popen:
  logs = storage.local_dir(root) / root_lib.WORKER_LOGS  # beside a gs:// root: in the local cache
  logs.mkdir(parents=True, exist_ok=True)
  log = open(logs / f"worker{index}.log", "a")
  env = {**os.environ, **slot.env, PARENT_ENV: str(os.getpid()), CORES_ENV: ",".join(map(str, slot.cores))}
  return subprocess.Popen([sys.executable, "-m", "scaling.sweep.worker", f"--root={root}", *run_ids],
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def run(root: Path, run_ids: Sequence[str], workers: int, show: Callable[[bool], None],
        poll_s: float = 1.0) -> int:
  """Trains the runs with `workers` worker processes, calling `show(final)` to draw the view; returns the
  exit status (0, or 128 + the signal that stopped the sweep)."""
  slots = device_slots(workers)
  procs = [_spawn(root, run_ids, slot, i) for i, slot in enumerate(slots)]
  respawns = [0] * len(procs)
  stopped = {"signal": 0}

  def forward(signum, _frame) -> None:
    stopped["signal"] = signum
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)  # each saves a checkpoint at its next step boundary

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    while any(p.poll() is None for p in procs):
      show(False)
      time.sleep(poll_s)
      for i, p in enumerate(procs):
        code = p.poll()
        # A worker killed by a signal (a crash, the OOM killer) is replaced while runs are left.
        if code is not None and code < 0 and not stopped["signal"] and respawns[i] < MAX_RESPAWNS and _left(root, run_ids):
          respawns[i] += 1
          procs[i] = _spawn(root, run_ids, slots[i], i)
    show(True)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return 128 + stopped["signal"] if stopped["signal"] else 0


def _left(root: Path, run_ids: Sequence[str]) -> bool:
  return any(runs.read_status(root / rid)["state"] not in ("done", "failed") for rid in run_ids)
