"""Peak FLOP/s of the devices a run uses, the denominator of model FLOP utilisation.

Accelerators use the vendor's dense bfloat16 figure per chip. A CPU has no such figure, so a float32
matmul probe measures the whole machine once and caches the result (simulated host devices share the
same cores, so the peak is the machine's, not per device).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from scaling import cache

# Words of `device.device_kind` (lower-case) -> dense bf16 peak FLOP/s per chip.
# Longest match wins ("tpu v5 lite" before "tpu v5"); a key matches whole words only ("h1000" is no "h100").
DEVICE_PEAKS: dict[str, float] = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,
    "tpu v6e": 918e12,
    "a100": 312e12,
    "h100 pcie": 756e12,
    "h100": 989e12,
    "h200": 989e12,
    "gh200": 989e12,
}


def declared_peak(device_kind: str) -> float | None:
  """The declared per-chip peak for a device kind, or None when the kind is not in the table."""
  kind = device_kind.lower()
  matches = [k for k in DEVICE_PEAKS if re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", kind)]
  return DEVICE_PEAKS[max(matches, key=len)] if matches else None


def measure_cpu_peak(size: int = 1536, repeats: int = 30) -> float:
  """Float32 matmul FLOP/s of this machine: the best of `repeats` timed products of two square matrices.

  Best-of-many, because on a shared machine single timings swing by 2x with other tenants' load.
  """
  x = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  y = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(x, y).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(x, y).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def _cache_path() -> Path:
  return cache.cache_root() / "cpu_peak.json"


def _cpu_key() -> str:
  model = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{model}|{os.cpu_count()}|jax {jax.__version__}"


def cpu_peak(use_cache: bool = True) -> float:
  """The cached CPU matmul peak for this machine, measuring (and caching) it on first use."""
  path, key = _cache_path(), _cpu_key()
  if use_cache:
    try:
      cached = json.loads(path.read_text())
      if cached.get("key") == key:
        return float(cached["flops_per_s"])
    except (OSError, ValueError, KeyError):
      pass
  peak = measure_cpu_peak()
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "flops_per_s": peak}))
    tmp.replace(path)
  except OSError:
    pass
  return peak


def peak_flops(devices: list[jax.Device]) -> tuple[float | None, str]:
  """Total peak FLOP/s of `devices` and where the figure comes from."""
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    return cpu_peak(), "cpu f32 matmul probe (whole machine)"
  per_chip = declared_peak(kind)
  if per_chip is None:
    return None, f"no declared peak for {kind!r}"
  return per_chip * len(devices), f"declared dense bf16 peak of {kind}"
