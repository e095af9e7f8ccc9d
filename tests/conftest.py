"""Test set-up: 8 simulated CPU devices (set before jax is imported) and small shared helpers."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# gcsfs picks its filesystem class when first imported, which a test may do before the GCS emulator starts:
# the plain one, since the default first asks a bucket's type over gRPC, which the emulator does not serve.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

# One directory for the whole session, shared by the xdist workers (they inherit the controller's environment):
# a persistent XLA compilation cache for this process and the processes tests start, and a prepared corpus
# (scaling_env). The fitter and the tiny models compile the same programs in many tests and processes, so the
# suite compiles each once; it starts empty, as on a fresh machine, and is removed at the end.
_OWN_SHARED = "SCALING_TEST_SHARED" not in os.environ
if _OWN_SHARED:
  os.environ["SCALING_TEST_SHARED"] = tempfile.mkdtemp(prefix="scaling-tests-")
SHARED = os.environ["SCALING_TEST_SHARED"]
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(SHARED, "xla_cache"))
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pytest_unconfigure(config) -> None:
  if _OWN_SHARED and not hasattr(config, "workerinput"):  # the process that made the shared directory
    shutil.rmtree(SHARED, ignore_errors=True)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
  """Runs `python -m scaling ARGS` as a user would, with this checkout on the path."""
  full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
  return subprocess.run(
      [sys.executable, "-m", "scaling", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
  )


def random_batch(rng: np.random.Generator, batch: int, seq_len: int, vocab: int, segments: bool = False) -> dict:
  """A batch in the data layer's format from random tokens (optionally two documents per row)."""
  tokens = rng.integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
  seg = np.ones((batch, seq_len), np.int32)
  pos = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()
  if segments:
    cut = seq_len // 2
    seg[:, cut:] = 2
    pos[:, cut:] -= cut
  ones = np.ones((batch, seq_len), np.float32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": ones, "bytes": ones, "segment_ids": seg, "positions": pos}


@pytest.fixture
def rng() -> np.random.Generator:
  return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_gin_config():
  """Every test starts and ends with no gin bindings: configurables called directly must see their defaults."""
  import gin

  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def gcs_emulator():
  """A local GCS (tests/gcs_emulator.py) for this test process, with the environment that points gcsfs
  and TensorStore at it (inherited by the processes tests start); yields the bucket."""
  import socket
  import time

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  bucket = "scaling-test"
  proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port), bucket],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or proc.poll() is not None:
        proc.kill()
        raise RuntimeError("the GCS emulator did not start")
      time.sleep(0.1)
  url = f"http://127.0.0.1:{port}"
  # Anonymous access (the emulator needs no credentials; fsspec reads FSSPEC_GCS_TOKEN in the processes the
  # tests start), and gcsfs's plain filesystem (see the top of this file).
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
         "GOOGLE_CLOUD_PROJECT": "scaling-test", "FSSPEC_GCS_TOKEN": "anon", "FSSPEC_GS_TOKEN": "anon",
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  import fsspec

  for protocol in ("gs", "gcs"):
    fsspec.config.conf.setdefault(protocol, {})["token"] = "anon"
  try:
    yield bucket
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.kill()
    proc.wait()


@pytest.fixture
def gcs_root(gcs_emulator, request) -> str:
  """A fresh gs:// prefix in the emulator's bucket, unique to the test."""
  import uuid

  return f"gs://{gcs_emulator}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
