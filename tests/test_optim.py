"""Tests of the learning-rate schedules and the weight-decay mask."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import ModelConfig, Transformer
from scaling.optim import OptimizerConfig, decay_mask, learning_rate_schedule


def _lrs(schedule, steps=100, **kw):
  fn = learning_rate_schedule(OptimizerConfig(schedule=schedule, **kw), 1.0, steps)
  return np.array([float(fn(s)) for s in range(steps)])


def test_cosine_warms_up_then_decays_to_the_final_fraction():
  lr = _lrs("cosine", warmup_fraction=0.1, final_lr_fraction=0.1)
  assert lr[0] == 0 and lr[5] == pytest.approx(0.5)
  assert lr[10] == pytest.approx(1.0)
  assert np.all(np.diff(lr[10:]) <= 1e-9)
  assert lr[-1] == pytest.approx(0.1, abs=0.01)


def test_wsd_is_constant_then_cools_down_over_the_last_fraction():
  lr = _lrs("wsd", warmup_fraction=0.0, cooldown_fraction=0.2, final_lr_fraction=0.0)
  np.testing.assert_allclose(lr[:80], 1.0)
  assert np.all(np.diff(lr[80:]) < 0) and lr[-1] == pytest.approx(0.05)


def test_constant_schedule():
  np.testing.assert_allclose(_lrs("constant", warmup_fraction=0.0), 1.0)


def test_weight_decay_skips_norm_scales():
  cfg = ModelConfig(vocab_size=16, width=8, depth=2, heads=2, kv_heads=2, head_dim=4, mlp_width=16)
  params = nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param)
  mask = decay_mask(params)
  assert mask["blocks"]["wq"].get_value() is True
  assert mask["embed"].get_value() is True
  for name in ("attn_norm", "mlp_norm"):
    assert mask["blocks"][name].get_value() is False
  assert mask["final_norm"].get_value() is False


@pytest.mark.parametrize("bad", [dict(schedule="linear"), dict(warmup_fraction=1.5), dict(weight_decay=-1.0)])
def test_bad_knobs_are_named(bad):
  with pytest.raises(ValueError, match="optimizer." + next(iter(bad))):
    OptimizerConfig(**bad)
