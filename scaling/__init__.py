"""scaling: scaling-law experiments in JAX/Flax (train sweeps, fit power laws, predict)."""

__version__ = "0.1.0"

import os as _os

# Simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, a mesh on one machine) run their
# collectives on threads that a busy machine can starve: XLA aborts the process when one waits 40 s (seen
# on 2 loaded cores with 8 devices). Such a wait is slowness, not a deadlock, so wait up to 20 minutes.
# Set here, before any module imports jax; the flags exist in the jaxlib that pyproject.toml pins.
_FLAGS = _os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" in _FLAGS and "collective_call_terminate" not in _FLAGS:
  _os.environ["XLA_FLAGS"] = (_FLAGS + " --xla_cpu_collective_call_warn_stuck_timeout_seconds=120"
                              " --xla_cpu_collective_call_terminate_timeout_seconds=1200")

