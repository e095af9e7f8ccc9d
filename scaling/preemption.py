"""Preemption: SIGTERM (what TPU VMs and SLURM send) stops training at a step boundary, after a checkpoint.

One process: a Python SIGTERM handler sets a flag that the loop reads after every step.
Several processes (`jax.distributed` initialised): JAX's preemption sync manager already catches SIGTERM
on any process (a Python handler would replace its own), tells the others through the coordination
service, and `reached_preemption_sync_point(step)` turns true on every process at the same step: the
first step boundary all of them can still reach. The loop must ask at every step, from the same start.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Context manager: `reached(step)` tells whether to save and stop after `step` steps."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self) -> PreemptionWatch:
    if not jax.distributed.is_initialized() and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self.received = True

  def reached(self, step: int) -> bool:
    """True at the step boundary where this run (every process of it) should save and exit."""
    if jax.distributed.is_initialized():
      self.received = multihost_utils.reached_preemption_sync_point(step)
    return self.received
