"""Claims: one holder at a time, taken over when the holder's pid is gone or its heartbeat is stale."""

import json
import os
import socket
import subprocess
import sys
import time

from scaling.sweep import claims


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_one_holder_at_a_time_and_release(tmp_path):
  run = tmp_path / "r1"
  run.mkdir()
  first = claims.try_claim(run)
  assert first is not None and first.taken_over is None
  assert claims.try_claim(run) is None  # held by a live process (this one)
  record = claims.read(run)
  assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["attempt"] == 1
  first.release()
  assert claims.read(run) is None
  again = claims.try_claim(run)
  assert again is not None
  again.release()


def test_a_dead_holders_claim_is_taken_over(tmp_path):
  run = tmp_path / "r1"
  run.mkdir()
  dead = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "x", "heartbeat": time.time(), "attempt": 1}
  (run / "claim.1").write_text(json.dumps(dead))
  assert not claims.alive(dead)
  claim = claims.try_claim(run)
  assert claim is not None and claim.taken_over["pid"] == dead["pid"] and claim.record["attempt"] == 2
  claim.release()


def test_a_stale_heartbeat_is_dead_even_on_another_host(tmp_path):
  fresh = {"host": "elsewhere", "pid": 1, "heartbeat": time.time()}
  assert claims.alive(fresh)
  assert not claims.alive({**fresh, "heartbeat": time.time() - 10_000})
  assert not claims.alive({"heartbeat": 0.0})  # an unreadable claim


def test_the_heartbeat_refreshes_the_claim(tmp_path):
  run = tmp_path / "r1"
  run.mkdir()
  claim = claims.try_claim(run, interval_s=0.05)
  first = claims.read(run)["heartbeat"]
  time.sleep(0.3)
  assert claims.read(run)["heartbeat"] > first
  claim.release()
  assert claims.read(run) is None


def test_racing_processes_get_one_claim(tmp_path):
  run = tmp_path / "r1"
  run.mkdir()
  code = ("import sys, time; from scaling.sweep import claims; c = claims.try_claim(sys.argv[1]); "
          "print('got' if c else 'no', flush=True); time.sleep(1.5)")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()}) for _ in range(6)]
  answers = [p.communicate(timeout=60)[0].strip() for p in procs]
  assert sorted(answers) == ["got"] + ["no"] * 5
