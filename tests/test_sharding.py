"""Tests of the mesh and the logical axis rules: mesh parsing, divisibility, and loss equality across meshes."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import random_batch
from scaling import sharding, train
from scaling.errors import UserError
from scaling.model import ModelConfig
from scaling.optim import OptimizerConfig


@pytest.mark.parametrize("text,shape", [("-1x1x1", (8, 1, 1)), ("2x2x2", (2, 2, 2)), ("1x-1x4", (1, 2, 4)), ("1x1x8", (1, 1, 8))])
def test_parse_mesh_fills_minus_one(text, shape):
  assert sharding.parse_mesh(text, 8) == shape


@pytest.mark.parametrize("text", ["2x2", "3x1x1", "-1x-1x2", "ax1x1", "0x1x8", "16x1x1"])
def test_parse_mesh_rejects_bad_shapes(text):
  with pytest.raises(UserError, match="--mesh"):
    sharding.parse_mesh(text, 8)


def test_rules_drop_axes_that_do_not_divide():
  mesh = sharding.make_mesh((2, 2, 2))
  assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
  assert sharding.logical_to_spec(("vocab", "embed"), (257, 64), mesh) == P(None, "fsdp")
  assert sharding.logical_to_spec(("act_batch", "act_seq"), (8, 16), mesh) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec(("act_batch", "act_seq"), (2, 16), mesh) == P("data", None)
  with pytest.raises(KeyError, match="no rule"):
    sharding.logical_to_spec(("nonsense",), (4,), mesh)


def _losses(mesh_shape, steps=5):
  cfg = ModelConfig(vocab_size=64, width=64, depth=2, heads=4, kv_heads=4, head_dim=16, mlp_width=128)
  tcfg = train.TrainConfig(tokens=steps * 8 * 32, global_batch=8, seq_len=32)
  devices = jax.devices()[: int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(mesh_shape, devices)
  program = train.build_program(cfg, OptimizerConfig(), tcfg, mesh)
  state = train.init_state(program, 0)
  step = train.compile_train_step(program, tcfg)
  rng = np.random.default_rng(1)
  losses = []
  for _ in range(steps):
    state, m = step(state, sharding.global_batch(random_batch(rng, 8, 32, 64, segments=True), mesh))
    losses.append(float(m["train_loss"]))
  return np.array(losses), state


def test_meshes_give_the_same_losses_and_shard_as_the_rules_say():
  reference, _ = _losses((1, 1, 1))
  for shape in [(8, 1, 1), (2, 2, 2), (1, 2, 4)]:
    losses, state = _losses(shape)
    np.testing.assert_allclose(losses, reference, rtol=1e-4)
    specs = {k: v.sharding.spec for k, v in state.params["blocks"].items() if hasattr(v, "sharding")}
    wq, w_up = state.params["blocks"]["wq"], state.params["blocks"]["w_up"]
    fsdp, tensor = ("fsdp" if shape[1] > 1 else None), ("tensor" if shape[2] > 1 else None)
    assert wq.sharding.spec == P(None, fsdp, tensor, None), specs
    assert w_up.sharding.spec == P(None, fsdp, tensor), specs
    mu = state.opt_state[1][0].mu["blocks"]["w_up"]
    assert mu.sharding.spec == w_up.sharding.spec
    if shape[1] * shape[2] > 1:
      assert w_up.addressable_shards[0].data.shape[1:] != w_up.shape[1:]


def test_simulated_devices_wait_for_slow_collectives_instead_of_aborting():
  """XLA aborted a 2x2x2 run on 2 loaded cores when a collective waited 40 s; importing scaling raises that to
  20 minutes whenever devices are simulated (conftest simulates 8 before scaling is imported)."""
  import os

  assert "--xla_cpu_collective_call_terminate_timeout_seconds=1200" in os.environ["XLA_FLAGS"]
  assert jax.device_count() == 8  # XLA accepted the flags: an unknown one aborts the process
