"""Checkpoints of a run (Orbax CheckpointManager): state, data position and loop progress saved together.

A checkpoint `DIR/checkpoints/<step>/` holds three items, written and committed as one:
  state  the TrainState (step, parameters, optimizer state) as sharded arrays; restores onto any mesh;
         an unrolled model's layers are stacked as a scanned model's are (`stored_form`);
  data   each process's grain iterator state (one JSON file per process);
  meta   JSON: the run's identity, a fingerprint of the state, and the loop's `Progress` (the metrics
         window since the last metrics.jsonl record, batches skipped after rollbacks, rollbacks used).
The train step draws no random numbers (there is no dropout), so the seed in the identity and the data
iterator state are the run's whole random state.

Saves are asynchronous: `save` returns once the arrays are copied off the device, and Orbax writes them
to a temporary directory that is renamed into place when complete, so a killed save never looks like a
checkpoint. Old checkpoints are deleted only after a newer one is committed. On restore, a checkpoint
whose files are missing, unreadable or do not match the fingerprint is reported in one line and the
previous one is used; leftover temporary directories are removed when the manager opens.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gin
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from orbax.checkpoint import checkpoint_managers as policies

from scaling import storage
from scaling.errors import UserError

FORMAT = 1
DIVERGENCE_ACTIONS = ("stop", "rollback")
WINDOW_KEYS = ("train_loss", "grad_norm", "lr")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save, what to keep, and what to do when the loss or gradient norm stops being finite."""

  every_steps: int = 1000
  every_minutes: float = 30.0
  keep_last: int = 2
  keep_every: int = 0
  async_save: bool = True
  on_divergence: str = "stop"
  max_rollbacks: int = 3
  at_steps: tuple[int, ...] = ()

  def __post_init__(self):
    for name in ("every_steps", "keep_every", "max_rollbacks"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"checkpoint.{name} must be an integer >= 0 (0: off), got {value!r}")
    if not isinstance(self.keep_last, int) or isinstance(self.keep_last, bool) or self.keep_last < 1:
      raise ValueError(f"checkpoint.keep_last must be an integer >= 1, got {self.keep_last!r}")
    if isinstance(self.every_minutes, bool) or not isinstance(self.every_minutes, (int, float)) or self.every_minutes < 0:
      raise ValueError(f"checkpoint.every_minutes must be a number >= 0 (0: off), got {self.every_minutes!r}")
    if isinstance(self.at_steps, (str, bytes)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.at_steps):
      raise ValueError(f"checkpoint.at_steps must be a list of whole numbers > 0, got {self.at_steps!r}")
    object.__setattr__(self, "at_steps", tuple(sorted(set(self.at_steps))))
    if self.on_divergence not in DIVERGENCE_ACTIONS:
      raise ValueError(f"checkpoint.on_divergence must be one of {DIVERGENCE_ACTIONS}, got {self.on_divergence!r}")


@gin.configurable("checkpoint")
def checkpoint_config(
    every_steps: int = 1000,
    every_minutes: float = 30.0,
    keep_last: int = 2,
    keep_every: int = 0,
    async_save: bool = True,
    on_divergence: str = "stop",
    max_rollbacks: int = 3,
    at_steps: tuple[int, ...] = (),
) -> CheckpointConfig:
  """The gin knobs `checkpoint.*`: save intervals (steps, minutes), retention, the divergence guard, and
  `at_steps`: steps always saved and kept (the branch points of cooldown sweeps)."""
  return CheckpointConfig(every_steps, every_minutes, keep_last, keep_every, async_save, on_divergence, max_rollbacks,
                          tuple(at_steps))


@dataclasses.dataclass
class Progress:
  """The loop's bookkeeping saved with the state, so a resumed run writes exactly the records it would have."""

  window: list[dict[str, float]] = dataclasses.field(default_factory=list)
  window_elapsed_s: float = 0.0
  skipped: list[int] = dataclasses.field(default_factory=list)
  rollbacks: int = 0

  def to_json(self) -> dict:
    window = [{k: float(w[k]) for k in WINDOW_KEYS} for w in self.window]
    return {"window": window, "window_elapsed_s": self.window_elapsed_s, "skipped": list(self.skipped), "rollbacks": self.rollbacks}

  @classmethod
  def from_json(cls, obj: dict) -> Progress:
    """Window values come back as float32, the dtype the train step produced them in (exact round trip)."""
    window = [{k: np.float32(w[k]) for k in WINDOW_KEYS} for w in obj["window"]]
    return cls(window, float(obj["window_elapsed_s"]), [int(s) for s in obj["skipped"]], int(obj["rollbacks"]))


@dataclasses.dataclass
class Restored:
  """A checkpoint loaded into the current mesh: its step, the TrainState and the loop's progress."""

  step: int
  state: Any
  progress: Progress


def _save_policy(cfg: CheckpointConfig) -> policies.SaveDecisionPolicy:
  """Every `every_steps` steps, or when `every_minutes` have passed (decided on process 0), or at preemption."""
  rules: list[policies.SaveDecisionPolicy] = []
  if cfg.every_steps:
    rules.append(policies.FixedIntervalPolicy(cfg.every_steps))
  if cfg.every_minutes:
    rules.append(policies.ContinuousCheckpointingPolicy(minimum_interval_secs=max(1, round(cfg.every_minutes * 60))))
  if cfg.at_steps:
    rules.append(policies.SpecificStepsPolicy(steps=cfg.at_steps))
  rules.append(policies.PreemptionCheckpointingPolicy())
  return policies.AnySavePolicy(rules)


def _keep_policy(cfg: CheckpointConfig) -> policies.PreservationPolicy:
  """The latest `keep_last`, plus every step divisible by `keep_every` (for learning-curve analysis)."""
  rules: list[policies.PreservationPolicy] = [policies.LatestN(n=cfg.keep_last)]
  if cfg.keep_every:
    rules.append(policies.EveryNSteps(interval_steps=cfg.keep_every))
  if cfg.at_steps:
    rules.append(policies.CustomSteps(steps=cfg.at_steps))
  return policies.AnyPreservationPolicy(rules)


def _is_layer_list(node: Any) -> bool:
  """Whether a state node holds an unrolled model's layers (keys 0..depth-1) rather than stacked ones."""
  return isinstance(node, Mapping) and len(node) > 0 and all(isinstance(k, int) for k in node.keys())


def _map_layer_lists(tree: Any, fn: Callable[[nnx.State], nnx.State]) -> Any:
  """Applies `fn` to the `blocks` entry of every parameter-shaped state (params, Adam's mu and nu) that lists layers."""

  def visit(node):
    if isinstance(node, nnx.State) and "blocks" in node and _is_layer_list(node["blocks"]):
      return nnx.State({**dict(node.items()), "blocks": fn(node["blocks"])})
    return node

  return jax.tree.map(visit, tree, is_leaf=lambda x: isinstance(x, nnx.State))


def _stack_leaves(*xs: Any) -> Any:
  """One [depth, ...] array (or abstract array, sharded like a layer with the depth axis whole) from per-layer ones."""
  if isinstance(xs[0], jax.ShapeDtypeStruct):
    sharding = xs[0].sharding
    if isinstance(sharding, NamedSharding):
      sharding = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return jax.ShapeDtypeStruct((len(xs), *xs[0].shape), xs[0].dtype, sharding=sharding)
  return jnp.stack(xs)


def _stack_layers(layers: nnx.State) -> nnx.State:
  return jax.tree.map(_stack_leaves, *[layers[i] for i in range(len(layers))])


def from_stored_form(stored: Any, target: Any) -> Any:
  """The inverse of `stored_form`: a restored state in the tree and shardings of `target` (abstract arrays).

  Each leaf of `target` is found in `stored` by its key path; a layer's leaf `blocks/<i>/...` is row i of
  the stacked `blocks/...`. One jitted program slices and places them all (on every process alike).
  """
  flat_stored, _ = jax.tree_util.tree_flatten_with_path(stored)
  index = {jax.tree_util.keystr(path): i for i, (path, _) in enumerate(flat_stored)}
  flat_target, treedef = jax.tree_util.tree_flatten_with_path(target)
  picks = []
  for path, _ in flat_target:
    keys, row = list(path), None
    for j in range(len(keys) - 1):
      if getattr(keys[j], "key", None) == "blocks" and isinstance(getattr(keys[j + 1], "key", None), int):
        row = keys.pop(j + 1).key
        break
    picks.append((index[jax.tree_util.keystr(tuple(keys))], row))
  if all(row is None for _, row in picks):
    return stored
  take = jax.jit(lambda xs: [xs[i] if row is None else xs[i][row] for i, row in picks],
                 out_shardings=[t.sharding for _, t in flat_target])
  return jax.tree.unflatten(treedef, take([leaf for _, leaf in flat_stored]))


def stored_form(state: Any) -> Any:
  """The state as checkpoints hold it: an unrolled model's layers stacked into [depth, ...] arrays.

  So a checkpoint has one layout whether the layers run unrolled or scanned (and checkpoints written
  before unrolled models kept their layers apart still load). Stacking copies the parameters and the
  optimizer state once per save; unrolling is meant for CPU and shallow models, where that is small.
  """
  return _map_layer_lists(state, _stack_layers)


def _leaf_sum(x: jax.Array) -> jax.Array:
  """The sum of an array's bit patterns as uint32 words (wrapping): exact, and independent of sharding."""
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jnp.sum(jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32), dtype=jnp.uint32)


def _host_leaf_sum(x: np.ndarray) -> int:
  """`_leaf_sum` of an array already in host memory, in NumPy: the same wrapping uint32 sum of bit patterns."""
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
  return int(np.sum(np.ascontiguousarray(x).reshape(-1).view(unsigned), dtype=np.uint32))


def device_sums(mesh: jax.sharding.Mesh) -> Callable[[Any], jax.Array]:
  """The jitted `_leaf_sum` of every array of a tree, stacked and replicated over the mesh."""
  return jax.jit(lambda tree: jnp.stack([_leaf_sum(x) for x in jax.tree.leaves(tree)]),
                 out_shardings=NamedSharding(mesh, PartitionSpec()))


def make_fingerprint(mesh: jax.sharding.Mesh) -> Callable[[Any], list[int]]:
  """A function giving one uint32 checksum per array of a tree; equal on every process and every mesh.

  A single process on CPU sums in NumPy, since its arrays are in host memory already: that saves compiling a
  reduction over the whole state for every run (a cold start's cost in a sweep). Elsewhere the devices sum.
  """
  sums = device_sums(mesh)
  on_host = jax.process_count() == 1 and mesh.devices.flat[0].platform == "cpu"

  def fingerprint(tree) -> list[int]:
    if on_host:
      return [_host_leaf_sum(np.asarray(x)) for x in jax.tree.leaves(tree)]
    return [int(v) for v in np.asarray(sums(tree).addressable_data(0))]

  return fingerprint


def _one_line(error: BaseException, limit: int = 240) -> str:
  """The innermost cause of an error (Orbax wraps TensorStore's precise message), on one line."""
  seen = {id(error)}
  while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
    error = inner
    seen.add(id(error))
  text = " ".join(str(error).split()) or type(error).__name__
  return f"{type(error).__name__}: {text[:limit]}"


def _is_abandoned_read(unraisable) -> bool:
  """Orbax's leftovers of a failed restore: read coroutines it dropped, and their callbacks into its closed loop."""
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and code.co_name == "_read_array_index_and_device_put":
    return True
  return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"


class _AbandonedReadTasks(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" reports of the reads a failed restore leaves behind
  (Orbax's tasks and gathers, TensorStore's futures); every other record passes."""

  MARKS = ("/orbax/checkpoint/", "OCDBT database", "Encountered error while reading array index")

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    if "exception was never retrieved" not in text.split("\n", 1)[0]:
      return True
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not any(mark in text for mark in self.MARKS)


_ABANDONED_READ_TASKS = _AbandonedReadTasks()


def _quiet_abandoned_reads() -> None:
  """Keeps a failed restore to its one-line report: Orbax's abandoned reads would print dozens of tracebacks.

  They reach `sys.unraisablehook` (some only when collected, later), `sys.excepthook` (results arriving
  in a closed loop), asyncio's logger (tasks and futures whose exception nobody retrieved) or a
  RuntimeWarning (a read never awaited); this wraps the hooks and filters the logger and the warning,
  passing every other report on unchanged. Installed before a restore, since some arrive during it.
  """
  logging.getLogger("asyncio").addFilter(_ABANDONED_READ_TASKS)  # once: a filter already there is not added again
  warnings.filterwarnings("ignore", "coroutine '_read_array_index_and_device_put' was never awaited", RuntimeWarning)
  previous, printer = sys.unraisablehook, sys.excepthook
  if getattr(previous, "quiets_abandoned_reads", False):
    return

  def hook(unraisable) -> None:
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  def excepthook(kind, value, tb) -> None:  # TensorStore's callbacks into Orbax's closed loop print through it
    if not _is_callback_into_closed_loop(value, tb):
      printer(kind, value, tb)

  hook.quiets_abandoned_reads = True
  sys.unraisablehook, sys.excepthook = hook, excepthook


def _is_callback_into_closed_loop(value: BaseException, tb) -> bool:
  """A RuntimeError 'Event loop is closed' raised by `call_soon_threadsafe`: a read's result arriving after
  Orbax closed the loop of a failed restore."""
  if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
    return False
  names = []
  while tb is not None:
    names.append(tb.tb_frame.f_code.co_name)
    tb = tb.tb_next
  return "call_soon_threadsafe" in names


def step_directories(run_dir: storage.AnyPath) -> list[int]:
  """The steps of a run's checkpoint directories, read from their names (committed or not; no Orbax)."""
  directory = storage.path(run_dir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def first_difference(saved: Any, current: Any, path: str = "") -> str | None:
  """The first key where two JSON values differ, as 'key: saved X, now Y', or None when equal."""
  if isinstance(saved, dict) and isinstance(current, dict):
    for key in sorted(set(saved) | set(current)):
      found = first_difference(saved.get(key), current.get(key), f"{path}.{key}" if path else str(key))
      if found:
        return found
    return None
  if saved != current:
    return f"{path}: saved {saved!r}, now {current!r}"
  return None


def all_processes_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (a collective on multi-process runs)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))


class Checkpointer:
  """The run's CheckpointManager: periodic asynchronous saves, and restores that skip corrupt checkpoints.

  `identity` (JSON: model, optimizer, train and data settings) is saved with every checkpoint; restoring
  one saved by a different configuration or process count is a UserError, never a silent mix.
  """

  def __init__(self, directory: storage.AnyPath, cfg: CheckpointConfig, abstract_state: Any, state_shardings: Any,
               mesh: jax.sharding.Mesh, identity: dict, say: Callable[[str], None] = lambda _: None,
               branch_check: Callable[[dict, dict], str | None] | None = None):
    self.directory = storage.absolute(storage.path(directory))
    self.cfg = cfg
    self._identity = identity
    self._say = say
    self._branch_check = branch_check
    self._target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state, state_shardings)
    self._stored_target = stored_form(self._target)  # what Orbax reads; `from_stored_form` turns it into _target
    self._fingerprint = make_fingerprint(mesh)
    leftovers = ocp.step.tmp_checkpoints(self.directory) if self.directory.exists() else []
    if leftovers:
      say(f"removing {len(leftovers)} unfinished checkpoint save(s) in {self.directory}: {', '.join(sorted(leftovers))}")
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=_save_policy(cfg),
        preservation_policy=_keep_policy(cfg),
        enable_async_checkpointing=cfg.async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    """Committed checkpoint steps, oldest first."""
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether the interval rules ask for a checkpoint after `step` steps."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, data: grain.DatasetIterator, progress: Progress) -> None:
    """Starts saving a checkpoint of `state` after `step` steps; returns once the arrays are off the device."""
    stored = stored_form(state)
    meta = {
        "format": FORMAT,
        "step": step,
        "identity": self._identity,
        "processes": jax.process_count(),
        "fingerprint": self._fingerprint(stored),
        "progress": progress.to_json(),
        "saved_at": time.time(),
    }
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(stored),
        data=grain.checkpoint.CheckpointSave(data),
        meta=ocp.args.JsonSave(meta),
    )
    self._manager.save(step, args=args, force=True)

  def wait(self) -> None:
    """Blocks until the save in flight (if any) is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the save in flight, then releases the manager's threads."""
    self._manager.close()

  def _check_compatible(self, step: int, meta: dict) -> None:
    """A checkpoint from another configuration or process count is an error, not corruption."""
    where = self.directory / str(step)
    if meta.get("format") != FORMAT:
      raise UserError(f"{where} has checkpoint format {meta.get('format')!r}; this version reads {FORMAT}")
    difference = first_difference(meta.get("identity"), self._identity)
    if difference:
      raise UserError(f"{where} was saved by a run with a different configuration ({difference}); "
                      "use a new --run_dir or the original config")
    if meta.get("processes") != jax.process_count():
      raise UserError(f"{where} was saved by {meta.get('processes')} processes, this run has {jax.process_count()}; "
                      "the data-iterator state is per process")

  def _try_restore(self, step: int, data: grain.DatasetIterator) -> tuple[Restored | None, str]:
    """Loads one checkpoint into the current shardings; (None, reason) when it is incomplete or corrupt."""
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # noqa: BLE001  (any failure to read means the checkpoint is unusable)
      return None, f"meta unreadable: {_one_line(e)}"
    self._check_compatible(step, meta)
    _quiet_abandoned_reads()
    try:
      loaded = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(self._stored_target), data=grain.checkpoint.CheckpointRestore(data)))
    except Exception as e:  # noqa: BLE001
      gc.collect()  # the dropped read coroutines, now rather than at some later moment
      return None, _one_line(e)
    if self._fingerprint(loaded.state) != meta["fingerprint"]:
      return None, "its arrays do not match the fingerprint saved with them"
    return Restored(step, from_stored_form(loaded.state, self._target), Progress.from_json(meta["progress"])), ""

  def restore_branch(self, parent_dir: storage.AnyPath, step: int | None, data: grain.DatasetIterator) -> Restored:
    """Loads another run's checkpoint (newest, or at `step`) to start a branch from: state, data position, window.

    The parent's directory is opened read-only; its identity must pass `branch_check` (same model, data
    order and batch geometry), while the token budget and the schedule may differ.
    """
    directory = storage.absolute(storage.path(parent_dir)) / "checkpoints"
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # Orbax warns that a read-only manager is read-only, in two lines
    try:
      manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    finally:
      absl_log.setLevel(level)
    try:
      steps = sorted(manager.all_steps())
      if not steps:
        raise UserError(f"--branch_from: {parent_dir} has no committed checkpoint")
      step = steps[-1] if step is None else step
      if step not in steps:
        raise UserError(f"--branch_from: {parent_dir} has no checkpoint at step {step}; it has {steps}")
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
      if meta.get("processes") != jax.process_count():
        raise UserError(f"--branch_from: {directory / str(step)} was saved by {meta.get('processes')} processes, "
                        f"this run has {jax.process_count()}")
      difference = self._branch_check(meta.get("identity") or {}, self._identity) if self._branch_check else None
      if difference:
        raise UserError(f"--branch_from: {directory / str(step)} was saved by another model or data order ({difference})")
      loaded = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(self._stored_target), data=grain.checkpoint.CheckpointRestore(data)))
    finally:
      manager.close()
    if self._fingerprint(loaded.state) != meta["fingerprint"]:
      raise UserError(f"--branch_from: {directory / str(step)} is corrupt (its arrays do not match their fingerprint)")
    progress = Progress.from_json(meta["progress"])
    return Restored(step, from_stored_form(loaded.state, self._target), Progress(progress.window, progress.window_elapsed_s))

  def restore_latest(self, data: grain.DatasetIterator) -> Restored | None:
    """Restores the newest usable checkpoint (and the data iterator); None when there is none at all.

    Each unusable checkpoint is reported in one line and deleted once an older one has loaded (a newer
    save at that step would otherwise be refused); if none loads, a UserError names the newest one.
    """
    self.wait()
    bad: list[tuple[int, str]] = []
    for step in reversed(self.steps()):
      restored, reason = self._try_restore(step, data)
      if not all_processes_agree(restored is not None):
        reason = reason or "unusable on another process"
        self._say(f"checkpoint {self.directory / str(step)} is incomplete or corrupt ({reason}); trying the previous one")
        bad.append((step, reason))
        continue
      for broken, _ in bad:
        self._manager.delete(broken)
      return restored
    if bad:
      step, reason = bad[0]
      raise UserError(f"checkpoint {self.directory / str(step)} is incomplete or corrupt ({reason}) "
                      "and no earlier checkpoint is usable")
    return None
