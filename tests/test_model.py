"""Tests of the Transformer: causality, segment isolation, GQA, remat and the closed-form parameter count."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import ModelConfig, Transformer, cross_entropy, param_counts, tree_param_counts

BASE = ModelConfig(vocab_size=64, width=32, depth=2, heads=4, kv_heads=2, head_dim=8, mlp_width=64)


def _logits(cfg, inputs, seed=0, **kw):
  model = Transformer(cfg, nnx.Rngs(seed))
  return np.asarray(model(jnp.asarray(inputs), **kw))


@pytest.mark.parametrize(
    "cfg", [BASE, dataclasses.replace(BASE, mlp="gelu", tie_embeddings=True, kv_heads=4, attention_blocks=4)]
)
def test_changing_token_t_never_changes_earlier_logits(cfg, rng):
  inputs = rng.integers(0, cfg.vocab_size, (2, 16))
  before = _logits(cfg, inputs)
  for t in (0, 7, 15):
    changed = inputs.copy()
    changed[:, t] = (changed[:, t] + 1) % cfg.vocab_size
    after = _logits(cfg, changed)
    np.testing.assert_array_equal(after[:, :t], before[:, :t])
    assert not np.allclose(after[:, t:], before[:, t:])


def test_segments_do_not_see_each_other(rng):
  inputs = rng.integers(0, 64, (1, 16))
  seg = np.array([[1] * 8 + [2] * 8])
  pos = np.array([list(range(8)) * 2])
  packed = _logits(BASE, inputs, positions_BL=jnp.asarray(pos), segment_ids_BL=jnp.asarray(seg))
  alone = _logits(BASE, inputs[:, 8:])
  np.testing.assert_allclose(packed[:, 8:], alone, rtol=1e-5, atol=1e-5)


def test_remat_unroll_and_attention_blocks_do_not_change_the_function(rng):
  inputs = rng.integers(0, 64, (2, 16))
  seg = jnp.asarray(np.array([[1] * 5 + [2] * 11, [1] * 12 + [2] * 4]))
  pos = jnp.asarray(np.array([list(range(5)) + list(range(11)), list(range(12)) + list(range(4))]))
  ref = _logits(BASE, inputs)
  ref_seg = _logits(BASE, inputs, positions_BL=pos, segment_ids_BL=seg)
  variants = [dict(remat="full"), dict(unroll_layers=True), dict(attention_blocks=2), dict(attention_blocks=4),
              dict(attention_blocks=3)]  # 3 does not divide 16: falls back to one block
  for kw in variants:
    cfg = dataclasses.replace(BASE, **kw)
    np.testing.assert_allclose(_logits(cfg, inputs), ref, rtol=1e-5, atol=1e-5, err_msg=str(kw))
    got = _logits(cfg, inputs, positions_BL=pos, segment_ids_BL=seg)
    np.testing.assert_allclose(got, ref_seg, rtol=1e-5, atol=1e-5, err_msg=str(kw))


def test_bfloat16_compute_keeps_float32_params_and_logits(rng):
  cfg = dataclasses.replace(BASE, compute_dtype="bfloat16")
  model = Transformer(cfg, nnx.Rngs(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  inputs = rng.integers(0, 64, (2, 16))
  logits = model(jnp.asarray(inputs))
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logits), _logits(BASE, inputs), atol=0.05)


@pytest.mark.parametrize(
    "cfg",
    [
        BASE,
        dataclasses.replace(BASE, mlp="gelu"),
        dataclasses.replace(BASE, tie_embeddings=True),
        dataclasses.replace(BASE, kv_heads=1, heads=8, head_dim=4, depth=3),
        ModelConfig(vocab_size=258, width=256, depth=4, heads=4, kv_heads=4, head_dim=64, mlp_width=1024, mlp="gelu"),
    ],
)
def test_parameter_formula_equals_parameter_tree(cfg):
  abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  assert tree_param_counts(nnx.state(abstract, nnx.Param)) == param_counts(cfg)


def test_cross_entropy_of_uniform_logits_is_log_vocab():
  logits = jnp.zeros((2, 3, 256))
  nll, z, w = cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)), z_loss=1e-4)
  assert float(nll / w) == pytest.approx(np.log(256), rel=1e-6)
  assert float(z / w) == pytest.approx(1e-4 * np.log(256) ** 2, rel=1e-5)


def test_invalid_config_names_the_knob():
  with pytest.raises(ValueError, match="model.heads=6 must be a multiple of model.kv_heads=4"):
    dataclasses.replace(BASE, heads=6, kv_heads=4)
  with pytest.raises(ValueError, match="model.width must be a positive integer"):
    dataclasses.replace(BASE, width=-3)
