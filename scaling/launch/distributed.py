"""Joining a multi-process JAX job: where the coordinator is, how many processes, and which one this is.

The settings come from the environment a launcher gives each process, checked in this order:
- explicit: `JAX_COORDINATOR_ADDRESS` (host:port), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`;
- SLURM (`srun`, one process per host): `SLURM_NTASKS`, `SLURM_PROCID`, the first host of
  `SLURM_STEP_NODELIST` (or `SLURM_JOB_NODELIST`) as coordinator;
- a Cloud TPU pod worker: `TPU_WORKER_ID` and `TPU_WORKER_HOSTNAMES` (worker 0 coordinates);
- on a real TPU VM with none of these, JAX's own detection (the VM's metadata server).
One process on one host needs none of this and gets `None`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from scaling.errors import UserError

DEFAULT_PORT = 8476  # JAX's coordinator port; `JAX_COORDINATOR_PORT` overrides it


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `jax.distributed.initialize` needs, and where it came from."""

  coordinator: str
  num_processes: int
  process_id: int
  source: str
  local_device_ids: tuple[int, ...] | None = None


def first_host(nodelist: str) -> str:
  """The first host of a SLURM node list: 'gpu[003-010,12],cpu1' -> 'gpu003'."""
  m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
  if not m:
    raise UserError(f"cannot read the SLURM node list {nodelist!r}")
  prefix, ranges = m.group(1), m.group(2)
  return prefix + (re.split(r"[,-]", ranges)[0] if ranges else "")


def _int(env: Mapping[str, str], key: str) -> int:
  try:
    return int(env[key])
  except (KeyError, ValueError):
    raise UserError(f"the environment sets up a multi-process job but {key}={env.get(key)!r} is not a whole number")


def _gpu_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
  """The GPUs this process drives (all of its host's, under one process per host); None off GPUs."""
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible:
    return tuple(range(len(visible.split(","))))
  if env.get("SLURM_GPUS_ON_NODE"):
    return tuple(range(_int(env, "SLURM_GPUS_ON_NODE")))
  return None


def settings(env: Mapping[str, str] = os.environ) -> Settings | None:
  """The multi-process settings the environment describes; None for a single process (or a TPU VM left to JAX)."""
  port = env.get("JAX_COORDINATOR_PORT", str(DEFAULT_PORT))
  if env.get("JAX_COORDINATOR_ADDRESS"):
    n = _int(env, "JAX_NUM_PROCESSES")
    return Settings(env["JAX_COORDINATOR_ADDRESS"], n, _int(env, "JAX_PROCESS_ID"), "JAX_COORDINATOR_ADDRESS")
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    # One port per job (as JAX picks it), so that array tasks sharing a host do not collide.
    port = env.get("JAX_COORDINATOR_PORT") or str(int(env["SLURM_JOB_ID"]) % 4096 + 61440)
    return Settings(f"{first_host(nodes)}:{port}", _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID"), "SLURM",
                    _gpu_ids(env))
  if env.get("TPU_WORKER_HOSTNAMES") and env.get("TPU_WORKER_ID") is not None:
    hosts = [h for h in env["TPU_WORKER_HOSTNAMES"].split(",") if h]
    if len(hosts) > 1:
      return Settings(f"{hosts[0]}:{port}", len(hosts), _int(env, "TPU_WORKER_ID"), "TPU_WORKER_HOSTNAMES")
  return None


def initialize(env: Mapping[str, str] = os.environ, force: bool = False) -> str | None:
  """Joins the job the environment describes (before any other JAX call); returns a line saying how, or None.

  `force` (`scaling train --distributed`) calls JAX's own detection when the environment names no job
  (a TPU VM's metadata server). CPU processes exchange collectives over gloo.
  """
  import jax

  s = settings(env)
  if s is None and not force:
    return None
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; GPUs and TPUs have their own
  if s is None:
    jax.distributed.initialize()
    return f"joined a {jax.process_count()}-process job found by JAX (process {jax.process_index()})"
  jax.distributed.initialize(coordinator_address=s.coordinator, num_processes=s.num_processes, process_id=s.process_id,
                             local_device_ids=list(s.local_device_ids) if s.local_device_ids is not None else None)
  return f"process {s.process_id} of {s.num_processes} (coordinator {s.coordinator}, from {s.source})"
