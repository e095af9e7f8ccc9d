#!/usr/bin/env python3
"""A stand-in `gcloud` for the TPU launcher tests: `compute tpus tpu-vm ...` and `compute tpus queued-resources ...`.

Put a directory holding a `gcloud` link to this file first on PATH. It checks every call against the
documented syntax of the commands it knows (cloud.google.com/sdk/gcloud/reference/compute/tpus/...):
an unknown command or flag, a missing required flag or a wrong number of positionals exits 2 with a
gcloud-like `ERROR: (gcloud.compute.tpus....)` line; a missing or existing resource exits 1. It needs
--zone and --project on every call (it has no gcloud config to fall back on).

Environment:
  FAKE_GCLOUD_LOG      every call is appended here as one JSON line (argv without the program)
  FAKE_GCLOUD_STATE    a JSON file: {"tpu-vm": {name: {state, accelerator_type, ...}}, "queued-resources": {...}};
                       beside it, hosts/<name>/worker<i>/ is each worker's home directory (scp copies there)
  FAKE_GCLOUD_PREEMPT  a file naming a VM: during the next `ssh` to it that trains a run (--root ROOT RUN),
                       once ROOT/RUN/checkpoints/<step> exists the workers get SIGTERM; when they have ended
                       the VM is PREEMPTED (its queued resource SUSPENDED), the file is removed, and ssh
                       exits 255
  FAKE_GCLOUD_DEVICES_PER_HOST  CPU devices per worker (default: the host's chips)

`ssh NAME --worker=all --command=CMD` runs CMD with `bash -c` as one local process per host, in parallel,
each in its own session and home, with TPU_WORKER_ID, TPU_WORKER_HOSTNAMES (localhost, once per host),
JAX_COORDINATOR_PORT (a free port), JAX_PLATFORMS=cpu and XLA_FLAGS forcing its devices; it exits 1 when
a worker failed. A created VM is CREATING until the first `describe`; a queued resource goes ACCEPTED,
PROVISIONING, then ACTIVE (with its node READY) over three.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

V, B = "value", "bool"
WIDE = {"--project": V, "--format": V, "--quiet": B, "-q": B, "--verbosity": V, "--account": V, "--configuration": V,
        "--flatten": V, "--log-http": B, "--impersonate-service-account": V, "--billing-project": V,
        "--access-token-file": V, "--trace-token": V, "--user-output-enabled": B, "--flags-file": V, "--help": B}
SSH_COMMON = {"--zone": V, "--worker": V, "--dry-run": B, "--force-key-file-overwrite": B, "--internal-ip": B,
              "--plain": B, "--ssh-key-file": V, "--strict-host-key-checking": V, "--ssh-key-expiration": V,
              "--ssh-key-expire-after": V}
NODE_CREATE = {"--zone": V, "--accelerator-type": V, "--version": V, "--async": B, "--boot-disk": V, "--data-disk": V,
               "--description": V, "--internal-ips": B, "--labels": V, "--metadata": V, "--metadata-from-file": V,
               "--network": V, "--preemptible": B, "--queue-count": V, "--range": V, "--reserved": B, "--scopes": V,
               "--service-account": V, "--shielded-secure-boot": B, "--spot": B, "--subnetwork": V, "--tags": V,
               "--topology": V, "--type": V}
QUEUED_CREATE = {"--zone": V, "--runtime-version": V, "--accelerator-type": V, "--topology": V, "--type": V,
                 "--node-id": V, "--node-count": V, "--node-prefix": V, "--async": B, "--boot-disk": V,
                 "--data-disk": V, "--description": V, "--guaranteed": B, "--internal-ips": B, "--labels": V,
                 "--metadata": V, "--metadata-from-file": V, "--network": V, "--range": V, "--reserved": B,
                 "--scopes": V, "--service-account": V, "--shielded-secure-boot": B, "--spot": B, "--subnetwork": V,
                 "--tags": V, "--valid-after-duration": V, "--valid-after-time": V, "--valid-until-duration": V,
                 "--valid-until-time": V, "--reservation-host-folder": V, "--reservation-host-organization": V,
                 "--reservation-host-project": V}
# (group, verb) -> (flags, required flags (each a tuple of alternatives), positionals (min, max))
COMMANDS = {
    ("tpu-vm", "create"): (NODE_CREATE, [("--version",)], (1, 1)),
    ("tpu-vm", "describe"): ({"--zone": V}, [], (1, 1)),
    ("tpu-vm", "delete"): ({"--zone": V, "--async": B}, [], (1, 1)),
    ("tpu-vm", "ssh"): ({**SSH_COMMON, "--command": V, "--output-directory": V, "--ssh-flag": V}, [], (1, 1)),
    ("tpu-vm", "scp"): ({**SSH_COMMON, "--compress": B, "--recurse": B, "--scp-flag": V}, [], (2, 99)),
    ("queued-resources", "create"): (QUEUED_CREATE, [("--runtime-version",), ("--accelerator-type", "--type"),
                                                     ("--node-id", "--node-count")], (1, 1)),
    ("queued-resources", "describe"): ({"--zone": V}, [], (1, 1)),
    ("queued-resources", "delete"): ({"--zone": V, "--async": B, "--force": B}, [], (1, 1)),
}
# Accelerator type prefix -> (counts TensorCores, chips per host of a multi-host slice, largest one-host slice)
GENERATIONS = {"v4": (True, 4, 4), "v5p": (True, 4, 4), "v5litepod": (False, 4, 8), "v6e": (False, 4, 8)}


class Fail(Exception):
  """A gcloud error: its message line and exit status."""

  def __init__(self, command: str, message: str, code: int):
    super().__init__(f"ERROR: (gcloud.{command}) {message}")
    self.code = code


def parse(argv: list[str]) -> tuple[str, str, dict, list[str]]:
  """(group, verb, flags, positionals) of a call, checked against the documented syntax."""
  if argv[:2] != ["compute", "tpus"] or len(argv) < 4 or (argv[2], argv[3]) not in COMMANDS:
    raise Fail(".".join(argv[:4]), f"Invalid choice: {' '.join(argv[:4])!r}: the stand-in knows only "
               f"compute tpus {{tpu-vm, queued-resources}} {{create, describe, delete, ssh, scp}}", 2)
  group, verb = argv[2], argv[3]
  command = f"compute.tpus.{group}.{verb}"
  allowed, required, (lo, hi) = COMMANDS[(group, verb)]
  allowed = {**allowed, **WIDE}
  flags: dict[str, str | bool] = {}
  positionals: list[str] = []
  rest = iter(argv[4:])
  for arg in rest:
    if arg == "--":
      break  # SSH_ARGS follow
    if not arg.startswith("-"):
      positionals.append(arg)
      continue
    name, eq, value = arg.partition("=")
    if name not in allowed:
      raise Fail(command, f"unrecognized arguments: {arg}", 2)
    if allowed[name] == B:
      if eq:
        raise Fail(command, f"argument {name}: ignored explicit argument {value!r}", 2)
      flags[name] = True
    else:
      if not eq:
        value = next(rest, None)
        if value is None:
          raise Fail(command, f"argument {name}: expected one argument", 2)
      flags[name] = value
  for alternatives in (*required, ("--zone",), ("--project",)):
    if not any(a in flags for a in alternatives):
      raise Fail(command, f"argument {' | '.join(alternatives)}: Must be specified.", 2)
  if not lo <= len(positionals) <= hi:
    raise Fail(command, f"expected {lo}{'+' if hi > lo else ''} positional argument(s), got {positionals}", 2)
  return group, verb, flags, positionals


def hosts_of(accelerator_type: str) -> tuple[int, int]:
  """(hosts, chips per host) of an accelerator type, or raise."""
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", accelerator_type)
  if not m or m.group(1) not in GENERATIONS:
    raise ValueError(accelerator_type)
  cores, per_host, single = GENERATIONS[m.group(1)]
  chips = int(m.group(2)) // 2 if cores else int(m.group(2))
  hosts = 1 if chips <= single else chips // per_host
  return hosts, chips // hosts


# --- state ------------------------------------------------------------------------------------------


def state_path() -> Path:
  return Path(os.environ["FAKE_GCLOUD_STATE"])


@contextlib.contextmanager
def locked_state():
  """The state file, read and written back under an exclusive lock (several gcloud calls may overlap)."""
  path = state_path()
  with open(f"{path}.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    state.setdefault("tpu-vm", {})
    state.setdefault("queued-resources", {})
    yield state
    path.write_text(json.dumps(state, indent=1, sort_keys=True))


def log_call(argv: list[str]) -> None:
  log = os.environ.get("FAKE_GCLOUD_LOG")
  if log:
    with open(log, "a") as f:
      f.write(json.dumps(argv) + "\n")


def host_home(name: str, worker: int) -> Path:
  home = state_path().parent / "hosts" / name / f"worker{worker}"
  home.mkdir(parents=True, exist_ok=True)
  return home


# --- commands ---------------------------------------------------------------------------------------


def _accelerator(command: str, flags: dict) -> str:
  accelerator = str(flags.get("--accelerator-type") or flags.get("--type") or "v2-8")
  try:
    hosts_of(accelerator)
  except ValueError:
    raise Fail(command, f"INVALID_ARGUMENT: unknown accelerator type {accelerator!r}", 1) from None
  return accelerator


def create(group: str, flags: dict, name: str) -> None:
  command = f"compute.tpus.{group}.create"
  accelerator = _accelerator(command, flags)
  with locked_state() as state:
    if name in state[group]:
      raise Fail(command, f"ALREADY_EXISTS: {group} {name} already exists", 1)
    record = {"accelerator_type": accelerator, "zone": flags["--zone"], "project": flags["--project"],
              "spot": "--spot" in flags, "reserved": "--reserved" in flags}
    if group == "tpu-vm":
      state[group][name] = {**record, "state": "CREATING", "version": flags["--version"]}
    else:
      state[group][name] = {**record, "state": "ACCEPTED", "node_id": flags.get("--node-id", name),
                            "runtime_version": flags["--runtime-version"]}
  print(f"Create request issued for: [{name}]", file=sys.stderr)


def describe(group: str, flags: dict, name: str) -> None:
  with locked_state() as state:
    record = state[group].get(name)
    if record is None:
      raise Fail(f"compute.tpus.{group}.describe", f"NOT_FOUND: {group} {name} was not found", 1)
    shown = dict(record)
    if group == "tpu-vm" and record["state"] == "CREATING":
      record["state"] = "READY"
    elif group == "queued-resources":
      following = {"ACCEPTED": "PROVISIONING", "PROVISIONING": "ACTIVE"}.get(record["state"])
      if following:
        record["state"] = following
      if following == "ACTIVE":
        state["tpu-vm"][record["node_id"]] = {k: record[k] for k in ("accelerator_type", "zone", "project", "spot")}
        state["tpu-vm"][record["node_id"]].update(state="READY", queued_resource=name)
      shown["state"] = {"state": shown["state"]}
  fmt = flags.get("--format", "")
  m = re.fullmatch(r"value\(([\w.]+)\)", fmt)
  if m:
    value = shown
    for key in m.group(1).split("."):
      value = value.get(key, "") if isinstance(value, dict) else ""
    print(value)
  else:
    print(json.dumps({"name": name, **shown}, indent=1))


def delete(group: str, flags: dict, name: str) -> None:
  command = f"compute.tpus.{group}.delete"
  with locked_state() as state:
    record = state[group].get(name)
    if record is None:
      raise Fail(command, f"NOT_FOUND: {group} {name} was not found", 1)
    if group == "queued-resources":
      node = state["tpu-vm"].get(record["node_id"])
      if node and record["state"] not in ("ACCEPTED", "FAILED", "SUSPENDED") and "--force" not in flags:
        raise Fail(command, f"FAILED_PRECONDITION: {name} has a node; delete it first or pass --force", 1)
      state["tpu-vm"].pop(record["node_id"], None)
    del state[group][name]
  print(f"Deleted [{name}].", file=sys.stderr)


def _node(command: str, name: str) -> dict:
  with locked_state() as state:
    node = state["tpu-vm"].get(name)
  if node is None:
    raise Fail(command, f"NOT_FOUND: tpu-vm {name} was not found", 1)
  if node["state"] != "READY":
    raise Fail(command, f"{name} is {node['state']}: ssh: connect to host {name}: Connection refused", 255)
  return node


def _workers(flags: dict, hosts: int, command: str) -> list[int]:
  worker = str(flags.get("--worker", "0"))
  if worker == "all":
    return list(range(hosts))
  ids = [int(w) for w in worker.split(",") if w.strip().isdigit()]
  if not ids or any(i >= hosts for i in ids):
    raise Fail(command, f"argument --worker: {worker!r} is not 'all' or worker ids below {hosts}", 2)
  return ids


def scp(flags: dict, positionals: list[str]) -> None:
  """Copies local sources into `hosts/<name>/worker<i>/<dest>` (a worker's home) for each worker."""
  command = "compute.tpus.tpu-vm.scp"
  *sources, dest = positionals
  name, colon, remote = dest.partition(":")
  if not colon or any(":" in s for s in sources):
    raise Fail(command, "the stand-in copies local files to one VM (SRC... NAME:DEST)", 2)
  node = _node(command, name)
  hosts, _ = hosts_of(node["accelerator_type"])
  for i in _workers(flags, hosts, command):
    base = host_home(name, i) / remote.removeprefix("~").lstrip("/")
    for source in map(Path, sources):
      if not source.exists():
        raise Fail(command, f"{source}: No such file or directory", 1)
      into = base / source.name if not remote or remote.endswith("/") or base.is_dir() else base
      if source.is_dir():
        if "--recurse" not in flags:
          raise Fail(command, f"{source}: not a regular file (use --recurse)", 1)
        shutil.copytree(source, into, dirs_exist_ok=True)
      else:
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, into)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker_env(i: int, hosts: int, devices: int, port: int, home: Path) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS"))}
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
  env.update(TPU_WORKER_ID=str(i), TPU_WORKER_HOSTNAMES=",".join(["localhost"] * hosts), JAX_COORDINATOR_PORT=str(port),
             JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
             HOME=str(home))
  return env


def _preempt_target(name: str, script: str) -> Path | None:
  """ROOT/RUN/checkpoints when this ssh trains a run on the VM the preemption trigger names."""
  trigger = os.environ.get("FAKE_GCLOUD_PREEMPT")
  if not trigger or not Path(trigger).exists() or Path(trigger).read_text().strip() != name:
    return None
  words = shlex.split(script)
  if "--root" not in words:
    return None
  at = words.index("--root")
  return Path(words[at + 1]) / words[at + 2] / "checkpoints"


def _group_gone(pid: int) -> bool:
  try:
    os.killpg(pid, 0)
  except ProcessLookupError:
    return True
  return False


def _terminate(procs: list[subprocess.Popen], sig: int = signal.SIGTERM) -> None:
  """Signals every worker's whole process group, then waits for them all to end."""
  for p in procs:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(p.pid, sig)
  for p in procs:
    p.wait()
    while not _group_gone(p.pid):
      time.sleep(0.05)


def _preempt(name: str) -> None:
  with locked_state() as state:
    node = state["tpu-vm"][name]
    node["state"] = "PREEMPTED"
    qr = state["queued-resources"].get(node.get("queued_resource", ""))
    if qr:
      qr["state"] = "SUSPENDED"
  Path(os.environ["FAKE_GCLOUD_PREEMPT"]).unlink(missing_ok=True)


def ssh(flags: dict, target: str) -> int:
  """Runs --command on the chosen workers as local processes; 255 when preempted, 1 when a worker failed."""
  command = "compute.tpus.tpu-vm.ssh"
  name = target.rpartition("@")[2]
  node = _node(command, name)
  if "--command" not in flags:
    raise Fail(command, "the stand-in runs only --command, not an interactive session", 2)
  hosts, chips = hosts_of(node["accelerator_type"])
  devices = int(os.environ.get("FAKE_GCLOUD_DEVICES_PER_HOST", chips))
  port = _free_port()
  script = str(flags["--command"])
  checkpoints = _preempt_target(name, script)
  procs = [subprocess.Popen(["bash", "-c", script], cwd=host_home(name, i), start_new_session=True,
                            env=_worker_env(i, hosts, devices, port, host_home(name, i)))
           for i in _workers(flags, hosts, command)]
  signal.signal(signal.SIGTERM, lambda *_: (_terminate(procs), sys.exit(143)))
  while any(p.poll() is None for p in procs):
    if checkpoints is not None and checkpoints.is_dir() and any(c.name.isdigit() for c in checkpoints.iterdir()):
      _terminate(procs)
      _preempt(name)
      print(f"Connection to {name} closed by remote host.", file=sys.stderr)
      return 255
    time.sleep(0.05)
  for p in procs:
    while not _group_gone(p.pid):
      time.sleep(0.05)
  return 0 if all(p.returncode == 0 for p in procs) else 1


def main(argv: list[str]) -> int:
  log_call(argv)
  try:
    group, verb, flags, positionals = parse(argv)
    if verb == "ssh":
      return ssh(flags, positionals[0])
    if verb == "scp":
      scp(flags, positionals)
    else:
      {"create": create, "describe": describe, "delete": delete}[verb](group, flags, positionals[0])
    return 0
  except Fail as e:
    print(e, file=sys.stderr)
    return e.code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
