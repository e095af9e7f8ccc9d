"""scaling.checkpoint in one process: save/restore, retention, corrupt and foreign checkpoints, metrics cut-back."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path

import gin
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from ckpt_testlib import tensorboard_steps
from conftest import random_batch
from scaling import checkpoint, config, runs, sharding, train
from scaling.errors import UserError
from scaling.metrics import MetricsWriter
from scaling.model import ModelConfig
from scaling.optim import OptimizerConfig

IDENTITY = {"model": {"width": 32}, "seed": 0}


class Harness:
  """A Checkpointer over a small two-array state on one device, with a real grain iterator as the data."""

  def __init__(self, directory: Path, identity: dict = IDENTITY, **cfg):
    self.mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    replicated = NamedSharding(self.mesh, PartitionSpec())
    abstract = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
    self.data = iter(grain.MapDataset.range(1000).to_iter_dataset())
    self.lines: list[str] = []
    cfg = checkpoint.CheckpointConfig(**{"every_minutes": 0, **cfg})
    self.ckpts = checkpoint.Checkpointer(directory, cfg, abstract, jax.tree.map(lambda _: replicated, abstract),
                                         self.mesh, identity, self.lines.append)

  def state(self, step: int) -> dict:
    w = jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32) * (step + 1)
    return {"w": w, "step": jnp.int32(step)}

  def save(self, step: int, progress: checkpoint.Progress | None = None) -> None:
    next(self.data)
    self.ckpts.save(step, self.state(step), self.data, progress or checkpoint.Progress())
    self.ckpts.wait()


@pytest.fixture
def harness(tmp_path):
  """Makes Harnesses over tmp_path/ckpt and closes their managers (threads) after the test."""
  made: list[Harness] = []

  def make(**kwargs) -> Harness:
    made.append(Harness(tmp_path / "ckpt", **kwargs))
    return made[-1]

  yield make
  for h in made:
    h.ckpts.close()


def _largest_file(step_dir: Path) -> Path:
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_config_rejects_bad_values_with_the_knob_name():
  gin.clear_config()
  gin.bind_parameter("checkpoint.keep_last", 0)
  with pytest.raises(UserError, match="checkpoint.keep_last must be an integer >= 1"):
    config.build(checkpoint.checkpoint_config)
  gin.clear_config()
  with pytest.raises(ValueError, match="checkpoint.on_divergence must be one of"):
    checkpoint.CheckpointConfig(on_divergence="ignore")


def test_progress_round_trips_float32_exactly_through_json():
  window = [{"train_loss": np.float32(1 / 3), "grad_norm": np.float32(7.1e-5), "lr": np.float32(3e-3)}]
  progress = checkpoint.Progress(window, 1.5, [21, 21], 2)
  back = checkpoint.Progress.from_json(json.loads(json.dumps(progress.to_json())))
  assert back == progress
  assert all(type(v) is np.float32 for v in back.window[0].values())


def test_fingerprint_is_exact_and_sees_one_flipped_bit():
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  fingerprint = checkpoint.make_fingerprint(mesh)
  tree = {"a": jnp.linspace(0, 1, 1000, dtype=jnp.float32), "b": jnp.ones((3,), jnp.bfloat16), "c": jnp.bool_(True)}
  flipped = dict(tree, a=tree["a"].at[500].set(jnp.nextafter(tree["a"][500], 2.0)))
  assert fingerprint(tree) == fingerprint(jax.tree.map(jnp.copy, tree))
  assert fingerprint(tree) != fingerprint(flipped)


def test_the_host_fingerprint_equals_the_devices_sum_on_every_mesh():
  """One CPU process sums in NumPy; a checkpoint it saved must verify wherever it is restored, and back."""
  rng = np.random.default_rng(0)
  tree = {"a": jnp.asarray(rng.normal(size=(8, 64)), jnp.float32), "b": jnp.asarray(rng.normal(size=(8, 6)), jnp.bfloat16),
          "c": jnp.bool_(True), "d": jnp.asarray(rng.integers(-9, 9, (8,)), jnp.int32), "e": jnp.float32(2.5)}
  host = checkpoint.make_fingerprint(sharding.make_mesh((1, 1, 1), jax.devices()[:1]))(tree)
  mesh = sharding.make_mesh((jax.device_count(), 1, 1))
  spread = {k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data") if v.ndim else PartitionSpec()))
            for k, v in tree.items()}
  assert host == [int(v) for v in np.asarray(checkpoint.device_sums(mesh)(spread))]
  assert host == checkpoint.make_fingerprint(mesh)(spread)


def test_save_and_restore_state_data_position_and_progress(harness):
  h = harness()
  progress = checkpoint.Progress([{"train_loss": np.float32(2.5), "grad_norm": np.float32(1), "lr": np.float32(0)}], 0.25)
  h.save(1)
  h.save(2, progress)
  for _ in range(5):
    next(h.data)
  restored = h.ckpts.restore_latest(h.data)
  assert (restored.step, restored.progress) == (2, progress)
  np.testing.assert_array_equal(restored.state["w"], h.state(2)["w"])
  assert next(h.data) == 2  # the iterator continues after the two elements drawn before the save
  assert h.lines == []


def test_interval_and_retention_keep_last_k_and_every_m(harness):
  h = harness(every_steps=3, keep_last=2, keep_every=4)
  assert [s for s in range(1, 10) if h.ckpts.should_save(s)] == [3, 6, 9]
  for step in range(1, 10):
    h.save(step)
  assert h.ckpts.steps() == [4, 8, 9]


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_corrupt_latest_falls_back_to_the_previous_with_one_line(tmp_path, harness, damage):
  h = harness()
  h.save(1)
  h.save(2)
  target = _largest_file(tmp_path / "ckpt" / "2")
  content = target.read_bytes()
  if damage == "truncate":
    target.write_bytes(content[: len(content) // 2])
  else:  # same length, different bytes in the middle: only the fingerprint can tell
    middle = len(content) // 2
    target.write_bytes(content[:middle] + bytes(b ^ 0x55 for b in content[middle:middle + 64]) + content[middle + 64:])
  restored = h.ckpts.restore_latest(h.data)
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state["w"], h.state(1)["w"])
  assert len(h.lines) == 1 and "\n" not in h.lines[0]
  assert h.lines[0].startswith(f"checkpoint {tmp_path / 'ckpt' / '2'} is incomplete or corrupt (")
  assert h.lines[0].endswith("); trying the previous one")
  assert h.ckpts.steps() == [1]  # the broken one is gone, so step 2 can be saved again
  h.save(2)
  assert h.ckpts.restore_latest(h.data).step == 2


def test_corrupt_checkpoint_without_a_good_predecessor_is_a_user_error(tmp_path, harness):
  h = harness()
  h.save(5)
  (tmp_path / "ckpt" / "5" / "meta" / "metadata").write_text("{not json")
  with pytest.raises(UserError, match=r"checkpoint .*/5 is incomplete or corrupt \(meta unreadable: .*\) and no "
                                      "earlier checkpoint is usable"):
    h.ckpts.restore_latest(h.data)
  assert h.ckpts.steps() == [5]  # kept for inspection


def test_checkpoint_of_another_configuration_is_refused_and_kept(harness):
  harness().save(3)
  other = harness(identity={"model": {"width": 64}, "seed": 0})
  with pytest.raises(UserError, match=r"different configuration \(model.width: saved 32, now 64\)"):
    other.ckpts.restore_latest(other.data)
  assert other.ckpts.steps() == [3]


def test_unfinished_save_directories_are_reported_and_removed(tmp_path, harness):
  harness().save(1)
  (tmp_path / "ckpt" / "2.orbax-checkpoint-tmp").mkdir()
  h = harness()
  assert h.lines == [f"removing 1 unfinished checkpoint save(s) in {tmp_path / 'ckpt'}: 2.orbax-checkpoint-tmp"]
  h.save(3)
  assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "3"]


def test_metrics_and_tensorboard_are_cut_back_to_the_resume_step(tmp_path):
  writer = MetricsWriter(tmp_path)
  for step in (4, 8, 12, 16):
    writer.write({"step": step, "train_loss": 1.0 / step})
  writer.close()
  resumed = MetricsWriter(tmp_path, start_step=8)
  assert [r["step"] for r in resumed.kept] == [4, 8]
  resumed.write({"step": 12, "train_loss": 0.5})
  assert [r["step"] for r in resumed.rewind(4)] == [4]
  resumed.write({"step": 8, "train_loss": 0.25})
  resumed.close()
  assert [r["step"] for r in runs.read_metrics(tmp_path)] == [4, 8]
  assert sorted(tensorboard_steps(tmp_path)) == [4, 8]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]


def test_unrolled_and_scanned_layers_share_one_checkpoint_layout(tmp_path):
  """An unrolled model keeps its layers apart, a scanned one stacks them; checkpoints hold the stacked form.

  So an unrolled run's checkpoint restores into the scanned layout and back (on another mesh too), and
  checkpoints written when unrolled models stacked their layers still load. The restored state runs a step.
  """
  cfg = ModelConfig(vocab_size=32, width=32, depth=3, heads=2, kv_heads=2, head_dim=16, mlp_width=64)
  tcfg = train.TrainConfig(tokens=10**4, global_batch=8, seq_len=16)
  ckpt_cfg = checkpoint.CheckpointConfig(every_minutes=0, async_save=False)

  def setup(unroll: bool, mesh_shape: tuple[int, int, int]):
    mesh = sharding.make_mesh(mesh_shape, jax.devices()[: int(np.prod(mesh_shape))])
    program = train.build_program(dataclasses.replace(cfg, unroll_layers=unroll), OptimizerConfig(), tcfg, mesh)
    return program, mesh

  def checkpointer(directory: Path, program, mesh) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(directory, ckpt_cfg, program.abstract_state, program.state_shardings, mesh, IDENTITY)

  unrolled, mesh_u = setup(True, (1, 2, 2))
  scanned, mesh_s = setup(False, (2, 2, 1))
  state_u, state_s = train.init_state(unrolled, 0), train.init_state(scanned, 0)
  assert "wq" in state_s.params["blocks"] and 0 in state_u.params["blocks"]
  for i in range(cfg.depth):
    np.testing.assert_array_equal(state_u.params["blocks"][i]["wq"][...], state_s.params["blocks"]["wq"][...][i])

  data = lambda: iter(grain.MapDataset.range(10).to_iter_dataset())
  for source, target, state, directory in ((unrolled, scanned, state_u, "from_unrolled"),
                                           (scanned, unrolled, state_s, "from_scanned")):
    mesh_from, mesh_to = (mesh_u, mesh_s) if source is unrolled else (mesh_s, mesh_u)
    saver = checkpointer(tmp_path / directory, source, mesh_from)
    saver.save(2, state, data(), checkpoint.Progress())
    saver.close()
    loader = checkpointer(tmp_path / directory, target, mesh_to)
    restored = loader.restore_latest(data())
    loader.close()
    assert restored.step == 2
    assert jax.tree.structure(restored.state) == jax.tree.structure(target.abstract_state)
    want = state_s if target is scanned else state_u
    jax.tree.map(np.testing.assert_array_equal, restored.state, want)
    batch = sharding.global_batch(random_batch(np.random.default_rng(0), 8, 16, cfg.vocab_size), mesh_to)
    _, metrics = train.compile_train_step(target, tcfg)(restored.state, batch)
    assert np.isfinite(float(metrics["train_loss"]))


def test_a_failed_restore_quiets_the_reads_it_abandons_and_nothing_else(caplog, capsys):
  """What a restore of a corrupt checkpoint leaves behind, as `scaling train` printed it (hundreds of lines
  after the one-line report, in about half the runs): asyncio's reports of Orbax tasks, gathers and
  TensorStore futures whose exception nobody retrieved, and a read coroutine never awaited."""
  checkpoint._quiet_abandoned_reads()
  log = logging.getLogger("asyncio")
  read_error = ValueError('OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database at local file "/x/state/"')
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    log.error("Task exception was never retrieved\nfuture: <Task finished name='Task-209' coro=<async_deserialize() "
              "done, defined at /venv/site-packages/orbax/checkpoint/_src/serialization/serialization.py:394>>")
    log.error("_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture finished exception="
              "Exception('Encountered error while reading array index: (slice(0, 3, 1),)')>")
    log.error("Future exception was never retrieved\nfuture: <Future finished>", exc_info=read_error)
    log.error("Task exception was never retrieved\nfuture: <Task finished coro=<mine() done>>")
  assert [r.getMessage().splitlines()[0] for r in caplog.records] == ["Task exception was never retrieved"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    checkpoint._quiet_abandoned_reads()  # its warning filter goes in front of the one just added
    warnings.warn("coroutine '_read_array_index_and_device_put' was never awaited", RuntimeWarning)
    warnings.warn("coroutine 'mine' was never awaited", RuntimeWarning)
  assert [str(w.message) for w in caught] == ["coroutine 'mine' was never awaited"]


  def call_soon_threadsafe():  # where asyncio raises it, as TensorStore's callback thread printed it
    raise RuntimeError("Event loop is closed")

  for fail in (call_soon_threadsafe, lambda: (_ for _ in ()).throw(RuntimeError("Event loop is closed"))):
    try:
      fail()
    except RuntimeError as e:
      sys.excepthook(type(e), e, e.__traceback__)
  assert capsys.readouterr().err.count("RuntimeError: Event loop is closed") == 1  # the second, raised elsewhere
