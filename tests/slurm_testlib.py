"""A throwaway one-node SLURM cluster on localhost for the launcher tests (needs root and slurm-wlm).

`local_slurm(tmp_dir)` writes a slurm.conf under tmp_dir, runs slurmctld and slurmd in the foreground as
children of this process, waits for the node to be idle and yields the environment (SLURM_CONF, PATH)
under which sbatch, squeue, scancel, scontrol and srun talk to that cluster. Each cluster has its own
ports, state and spool, so several can run side by side. There is no accounting (no slurmdbd): `sacct`
fails; use `job_states` (squeue, which keeps finished jobs for MinJobAge) or the jobcomp file
`tmp_dir/log/jobcomp.txt` (one line per finished job, kept across restarts). Install with
launch/slurm/install_local_cluster.sh.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SBIN = "/usr/sbin:/sbin"
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")


def slurm_available() -> bool:
  """Whether a local cluster can start here: the SLURM binaries are installed and we are root."""
  path = f"{os.environ.get('PATH', '')}:{SBIN}"
  return os.geteuid() == 0 and all(shutil.which(b, path=path) for b in BINARIES)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _has_auth_none() -> bool:
  """auth/none (no munged needed) ships with Debian's 22.05; newer SLURMs may have dropped it."""
  dirs = ("/usr/lib*/slurm*", "/usr/lib*/*/slurm*", "/usr/local/lib*/slurm*")  # Debian: /usr/lib/<arch>/slurm-wlm
  return any(glob.glob(f"{d}/auth_none.so") for d in dirs)


def _start_munge(run_dir: Path) -> tuple[subprocess.Popen, str]:
  """A private munged with a fresh key; returns the process and the AuthInfo line for slurm.conf."""
  key, sock = run_dir / "munge.key", run_dir / "munge.sock"
  subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
  proc = subprocess.Popen(["munged", "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                           f"--pid-file={run_dir / 'munged.pid'}", f"--seed-file={run_dir / 'munged.seed'}",
                           f"--log-file={run_dir / 'munged.log'}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
  _wait(lambda: sock.exists(), 10, "munged did not create its socket")
  return proc, f"AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={sock},cred_expire=10\n"


def _wait(ready, timeout: float, what: str) -> None:
  deadline = time.time() + timeout
  while not ready():
    if time.time() > deadline:
      raise TimeoutError(what)
    time.sleep(0.2)


def slurm_conf(tmp_dir: Path, run_dir: Path, node: str, cpus: int, auth: str) -> str:
  """The slurm.conf text: one node, one default partition `debug`, no cgroups, no accounting, fast requeue."""
  mem_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 // 2
  return f"""\
ClusterName=local
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
{auth}StateSaveLocation={tmp_dir}/state
SlurmdSpoolDir={run_dir}/spool
SlurmctldPidFile={run_dir}/slurmctld.pid
SlurmdPidFile={run_dir}/slurmd.pid
SlurmctldLogFile={tmp_dir}/log/slurmctld.log
SlurmdLogFile={tmp_dir}/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc={tmp_dir}/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=3600
KillWait=5
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _env(conf: Path) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not the job we may run inside
  return {**env, "SLURM_CONF": str(conf), "PATH": f"{env.get('PATH', '/usr/bin:/bin')}:{SBIN}"}


def _kill_leftovers(conf: Path) -> None:
  """SIGKILLs what slurmd leaves behind on shutdown (slurmstepd and job processes): those whose environment
  names this cluster's slurm.conf."""
  mark = f"SLURM_CONF={conf}".encode()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
      continue
    with contextlib.suppress(OSError):
      if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def local_slurm(tmp_dir, cpus: int = 2, extra_conf: str = "", timeout: float = 60):
  """Starts a one-node cluster under tmp_dir and yields its environment; stops it and its jobs on exit.

  extra_conf lines go at the end of slurm.conf (a repeated key takes the later value). Logs, state and the
  jobcomp file stay under tmp_dir/{log,state}; a second start on the same tmp_dir recovers the jobs.
  """
  tmp_dir = Path(tmp_dir).resolve()
  (tmp_dir / "log").mkdir(parents=True, exist_ok=True)
  (tmp_dir / "state").mkdir(exist_ok=True)
  # Spool and sockets live in a short /tmp path: a unix socket path has at most 107 bytes.
  run_dir = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
  (run_dir / "spool").mkdir()
  os.chmod(run_dir, 0o755)
  node = socket.gethostname().split(".")[0]  # slurmctld only runs on the host its SlurmctldHost names
  conf = tmp_dir / "slurm.conf"
  env = _env(conf)
  procs = []
  try:
    auth = "AuthType=auth/none\nCredType=cred/none\nAuthInfo=cred_expire=10\n"  # cred_expire: requeue delay
    if not _has_auth_none():
      munged, auth = _start_munge(run_dir)
      procs.append(munged)
    conf.write_text(slurm_conf(tmp_dir, run_dir, node, cpus, auth) + extra_conf)
    for daemon in ("slurmctld", "slurmd"):
      log = open(tmp_dir / "log" / f"{daemon}.out", "ab")  # noqa: SIM115 -- closed with the process
      procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=log, stderr=log))
      log.close()

    def idle() -> bool:
      for p in procs:
        if p.poll() is not None:
          raise RuntimeError(f"{p.args[0]} exited with {p.returncode}; see {tmp_dir / 'log'}")
      out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
      return out.stdout.strip() == "idle"

    _wait(idle, timeout, f"the SLURM node did not become idle; see {tmp_dir / 'log'}")
    yield env
  finally:
    if any(p.args[0] == "slurmctld" and p.poll() is None for p in procs):
      subprocess.run(["scancel", f"--user={getpass.getuser()}"], env=env, capture_output=True, timeout=30)
      with contextlib.suppress(TimeoutError):  # let the jobs end (SIGTERM, then SIGKILL after KillWait)
        _wait(lambda: not subprocess.run(["squeue", "-h", "-t", "R,CG,CF,S"], env=env, capture_output=True,
                                         text=True).stdout.strip(), 15, "jobs still running")
      subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=30)
    for p in reversed(procs):  # slurmd, slurmctld, then munged
      with contextlib.suppress(subprocess.TimeoutExpired):
        if p.args[0] == "munged":
          p.terminate()
        p.wait(timeout=15)
      p.kill()
      p.wait()
    _kill_leftovers(conf)
    shutil.rmtree(run_dir, ignore_errors=True)


def job_states(env: dict, job_id: str) -> dict[str, str]:
  """{'123_0': 'COMPLETED', ...}: the state of each task of an array job (or {'123': ...} for a plain job),
  pending tasks included one by one, finished ones while squeue keeps them (MinJobAge=3600 here)."""
  out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%i %T"], env=env,
                       capture_output=True, text=True, check=True).stdout
  return dict(line.split() for line in out.splitlines() if line.strip())
