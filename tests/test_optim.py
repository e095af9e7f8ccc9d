"""Tests of the learning-rate schedules, the weight-decay mask and per-parameter learning-rate multipliers."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import ModelConfig, Transformer, lr_multiplier
from scaling.optim import OptimizerConfig, decay_mask, learning_rate_schedule, make_optimizer


def _lrs(schedule, steps=100, **kw):
  fn = learning_rate_schedule(OptimizerConfig(schedule=schedule, **kw), 1.0, steps)
  return np.array([float(fn(s)) for s in range(steps)])


def test_cosine_warms_up_then_decays_to_the_final_fraction():
  lr = _lrs("cosine", warmup_fraction=0.1, final_lr_fraction=0.1)
  np.testing.assert_allclose(lr[:10], np.arange(1, 11) / 10, rtol=1e-6)  # the first step is not zero
  assert lr[9] == pytest.approx(1.0)
  assert np.all(np.diff(lr[9:]) < 0)
  assert lr[-1] == pytest.approx(0.1, rel=1e-6)  # exactly the final fraction at the last step


def test_wsd_is_constant_then_cools_down_over_the_last_fraction():
  lr = _lrs("wsd", warmup_fraction=0.0, cooldown_fraction=0.2, final_lr_fraction=0.1)
  np.testing.assert_allclose(lr[:80], 1.0)
  assert np.all(np.diff(lr[79:]) < 0) and lr[-1] == pytest.approx(0.1, rel=1e-6)
  np.testing.assert_allclose(np.diff(lr[79:]), -0.9 / 20, rtol=1e-5)  # linear over the last 20 steps


def test_multistep_drops_at_its_milestones_in_equal_ratios_to_the_final_fraction():
  lr = _lrs("multistep", warmup_fraction=0.05, final_lr_fraction=0.1)  # 8-1-1 by default
  np.testing.assert_allclose(lr[:5], np.arange(1, 6) / 5, rtol=1e-6)
  np.testing.assert_allclose(lr[4:80], 1.0)
  np.testing.assert_allclose(lr[80:90], 0.1 ** 0.5, rtol=1e-6)
  np.testing.assert_allclose(lr[90:], 0.1, rtol=1e-6)
  lr = _lrs("multistep", steps=10, warmup_fraction=0.0, final_lr_fraction=0.01, milestones=[0.25, 0.5, 0.96])
  np.testing.assert_allclose(lr, [1, 1, 1, 0.01 ** (1 / 3), 0.01 ** (1 / 3), 0.01 ** (2 / 3), 0.01 ** (2 / 3),
                                  0.01 ** (2 / 3), 0.01 ** (2 / 3), 0.01], rtol=1e-6)  # the last stage starts by the last step
  assert OptimizerConfig(schedule="multistep", milestones=[0.5]).milestones == (0.5,)  # as run.json gives it
  for bad in ([], [0.9, 0.8], [0.0], [1.0], [0.5, 0.5], "0.8", [True]):
    with pytest.raises(ValueError, match="milestones"):
      OptimizerConfig(schedule="multistep", milestones=bad)
  with pytest.raises(ValueError, match="final_lr_fraction > 0"):
    OptimizerConfig(schedule="multistep", final_lr_fraction=0.0)


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "multistep", "constant"])
def test_no_step_has_zero_learning_rate(schedule):
  for steps in (1, 3, 20):
    final = 1e-3 if schedule == "multistep" else 0.0  # multistep's equal ratios need a final LR above 0
    assert np.all(_lrs(schedule, steps=steps, warmup_fraction=0.5, final_lr_fraction=final)[:-1] > 0)
    assert _lrs(schedule, steps=steps, warmup_fraction=0.5)[0] > 0


def test_warmup_steps_override_the_fraction_and_let_a_cooldown_branch_from_a_long_run():
  long = _lrs("constant", steps=1000, warmup_steps=10, warmup_fraction=0.3)
  np.testing.assert_allclose(long[:10], np.arange(1, 11) / 10, rtol=1e-6)
  branch = _lrs("wsd", steps=200, warmup_steps=10, warmup_fraction=0.3, cooldown_fraction=0.2, final_lr_fraction=0.0)
  np.testing.assert_array_equal(branch[:160], long[:160])  # identical up to the cooldown: a branch equals straight-through
  assert branch[-1] == 0.0


def _one_update(params, multiplier=None):
  names = ("embed", "unembed", "final_norm", "attn_norm", "mlp_norm", "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
  opt = make_optimizer(OptimizerConfig(clip_norm=0.0), lambda step: 1e-2, multiplier, names if multiplier else ())
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  return updates


def test_lr_multipliers_scale_each_parameter_update_and_its_weight_decay():
  base = ModelConfig(vocab_size=16, width=8, depth=2, heads=2, kv_heads=2, head_dim=4, mlp_width=16)
  mup = dataclasses.replace(base, parameterization="mup", base_width=2)  # m = 4
  params = nnx.state(Transformer(base, nnx.Rngs(0)), nnx.Param)
  plain, scaled = _one_update(params), _one_update(params, functools.partial(lr_multiplier, mup))
  for name in ("wq", "wo", "w_up", "w_down"):
    np.testing.assert_allclose(scaled["blocks"][name][...], 0.25 * plain["blocks"][name][...], rtol=1e-6)
  for key in ("embed", "unembed", "final_norm"):
    np.testing.assert_allclose(scaled[key][...], plain[key][...], rtol=1e-6)
  assert jax.tree.structure(plain) == jax.tree.structure(scaled)


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


@pytest.mark.parametrize(
    "bad", [dict(schedule="linear"), dict(warmup_fraction=1.5), dict(weight_decay=-1.0), dict(warmup_steps=-1),
            dict(warmup_steps=2.5)]
)
def test_bad_knobs_are_named(bad):
  with pytest.raises(ValueError, match="optimizer." + next(iter(bad))):
    OptimizerConfig(**bad)
