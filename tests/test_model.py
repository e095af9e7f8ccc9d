"""Tests of the Transformer: causality, segment isolation, GQA, remat, the chunked float32 loss, the mup
parameterisation's init scales and multipliers, and the closed-form parameter count."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import model as model_lib
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
  variants = [dict(remat="full"), dict(unroll_layers=True), dict(unroll_layers=True, remat="dots"), dict(attention_blocks=2),
              dict(attention_blocks=4)]
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


def test_attention_blocks_that_do_not_divide_the_sequence_raise(rng):
  cfg = dataclasses.replace(BASE, attention_blocks=3)
  with pytest.raises(ValueError, match="model.attention_blocks=3 does not divide the sequence length 16"):
    _logits(cfg, rng.integers(0, 64, (2, 16)))


@pytest.mark.parametrize("heads,kv_heads,blocks,dtype", [(4, 4, 1, jnp.float32), (6, 2, 4, jnp.float32), (4, 1, 2, jnp.bfloat16)])
def test_attention_matches_jax_dot_product_attention_in_values_and_gradients(rng, heads, kv_heads, blocks, dtype):
  """Our attention (normalised after the value product, max held constant) against jax.nn's, with packed
  segments, shared key/value heads and query blocks: the forward values and every input's gradient."""
  B, L, E = 2, 16, 8
  q, k, v = (jnp.asarray(rng.normal(size=(B, L, h, E)), dtype) for h in (heads, kv_heads, kv_heads))
  seg = jnp.asarray(np.repeat([[1, 1, 2, 3]], B, 0).repeat(L // 4, 1), jnp.int32)
  cot = jnp.asarray(rng.normal(size=(B, L, heads, E)), jnp.float32)

  def ours(q, k, v):
    return jnp.sum(model_lib.causal_attention(q, k, v, seg, blocks, 0.3).astype(jnp.float32) * cot)

  def reference(q, k, v):
    mask = seg[:, None, :, None] == seg[:, None, None, :]
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=0.3, is_causal=True)
    return jnp.sum(out.astype(jnp.float32) * cot)

  tol = dict(rtol=2e-2, atol=2e-2) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-5)
  (a, ga), (b, gb) = (jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v) for f in (ours, reference))
  np.testing.assert_allclose(float(a), float(b), **tol)
  for x, y in zip(ga, gb):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), **tol)


def _loss_and_grads(cfg, batch, z_loss=1e-3):
  model = Transformer(cfg, nnx.Rngs(0))
  graphdef, params = nnx.split(model)

  def loss(p):
    nll, z, w = nnx.merge(graphdef, p).loss_sums(
        batch["inputs"], batch["targets"], batch["weights"], batch["positions"], batch["segment_ids"], z_loss
    )
    return (nll + z) / w

  return jax.value_and_grad(loss)(params)


def test_chunked_loss_and_gradients_equal_the_unchunked(rng):
  from conftest import random_batch

  batch = {k: jnp.asarray(v) for k, v in random_batch(rng, 2, 16, BASE.vocab_size, segments=True).items()}
  batch["weights"] = batch["weights"].at[0, :5].set(0.0)
  ref_loss, ref_grads = _loss_and_grads(dataclasses.replace(BASE, loss_chunks=1), batch)
  model = Transformer(BASE, nnx.Rngs(0))
  logits = model(batch["inputs"], batch["positions"], batch["segment_ids"])
  nll, z, w = cross_entropy(logits, batch["targets"], batch["weights"], 1e-3)
  np.testing.assert_allclose(float(ref_loss), float((nll + z) / w), rtol=1e-6)
  for chunks in (2, 4, 16):
    loss, grads = _loss_and_grads(dataclasses.replace(BASE, loss_chunks=chunks), batch)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)


def test_automatic_loss_chunks_bound_the_logits_of_a_large_vocabulary():
  assert model_lib.auto_loss_chunks(8, 256, 258) == 1  # small vocabularies stay unchunked
  chunks = model_lib.auto_loss_chunks(8, 512, 32768)
  assert 512 % chunks == 0 and 8 * (512 // chunks) * 32768 <= model_lib.LOSS_CHUNK_ELEMENTS
  assert model_lib.auto_loss_chunks(8, 512, 32768, max_elements=8 * (512 // (chunks // 2)) * 32768 - 1) == chunks


def test_bfloat16_logits_accumulate_in_float32(rng):
  cfg = dataclasses.replace(BASE, vocab_size=4096, compute_dtype="bfloat16")
  model = Transformer(cfg, nnx.Rngs(0))
  inputs = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 16)))
  targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 16)))
  weights = jnp.ones((2, 16))
  x_BLD = model.hidden(inputs) * 8  # large logits make bf16 rounding visible
  w_DV = model.output_matrix()
  exact = cross_entropy(jnp.einsum("bld,dv->blv", x_BLD.astype(jnp.float32), w_DV.astype(jnp.float32)), targets, weights)[0]
  ours = model_lib.chunked_cross_entropy(x_BLD, w_DV, targets, weights, 0.0, 1)[0]
  old = cross_entropy(model_lib.project(x_BLD, w_DV).astype(jnp.float32), targets, weights)[0]
  assert model_lib.unembed_logits(x_BLD, w_DV).dtype == jnp.float32
  assert abs(float(ours - exact)) < 0.1 * abs(float(old - exact))


MUP = dataclasses.replace(BASE, parameterization="mup", base_width=32)


def _params(cfg):
  return nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param)


def test_mup_at_base_width_initialises_exactly_like_standard():
  jax.tree.map(np.testing.assert_array_equal, _params(MUP), _params(BASE))


def test_mup_init_scales_follow_the_width_multiplier():
  wide = dataclasses.replace(MUP, width=128, heads=16, kv_heads=8, mlp_width=256)  # m = 4
  std = {name: model_lib.init_std(wide, name) for name in ("wq", "w_up", "wo", "w_down", "embed", "unembed", "final_norm")}
  assert std["wq"] == pytest.approx(BASE.init_std / 2) and std["w_up"] == pytest.approx(BASE.init_std / 2)
  assert std["wo"] == pytest.approx(BASE.init_std / 2 / np.sqrt(2 * BASE.depth)) == std["w_down"]
  assert std["embed"] == 1.0 and std["final_norm"] is None
  assert std["unembed"] == pytest.approx(1 / np.sqrt(32))  # the base width's std, at every width
  params = _params(wide)
  sample_std = float(np.std(np.asarray(params["blocks"]["w_up"][...])))
  assert sample_std == pytest.approx(BASE.init_std / 2 * 0.88, rel=0.05)  # truncated at 2 sigma: std x 0.88
  standard_wide = dataclasses.replace(wide, parameterization="standard")
  assert model_lib.init_std(standard_wide, "wq") == BASE.init_std
  assert model_lib.init_std(standard_wide, "unembed") == pytest.approx(1 / np.sqrt(128))


def test_mup_multipliers():
  wide = dataclasses.replace(MUP, width=128, heads=16, kv_heads=8, mlp_width=256)
  assert wide.width_multiplier == 4.0
  for name in model_lib.HIDDEN_MATRICES:
    assert model_lib.lr_multiplier(wide, name) == 0.25
    assert model_lib.lr_multiplier(BASE, name) == 1.0
  for name in ("embed", "unembed", "attn_norm", "mlp_norm", "final_norm"):
    assert model_lib.lr_multiplier(wide, name) == 1.0
  assert model_lib.output_multiplier(wide) == 0.25 and model_lib.output_multiplier(BASE) == 1.0
  assert model_lib.attention_scale(BASE) is None
  assert model_lib.attention_scale(wide) == pytest.approx(1 / np.sqrt(wide.head_dim))  # head size fixed across widths
  grown_heads = dataclasses.replace(wide, base_head_dim=2)  # head size 4x the base one's: 1/head_dim scaling
  assert model_lib.attention_scale(grown_heads) == pytest.approx(np.sqrt(2) / 8)


def test_mup_output_multiplier_and_attention_scale_reach_the_logits(rng):
  inputs = rng.integers(0, 64, (2, 16))
  model = Transformer(MUP, nnx.Rngs(0))
  x_BLD = model.hidden(jnp.asarray(inputs))
  np.testing.assert_allclose(_logits(MUP, inputs), np.asarray(x_BLD @ model.unembed[...]), rtol=1e-5, atol=1e-5)
  wide = dataclasses.replace(MUP, base_width=16)  # m = 2: same init draws (hidden std / sqrt 2), logits halved
  wide_model = Transformer(wide, nnx.Rngs(0))
  np.testing.assert_allclose(
      _logits(wide, inputs), 0.5 * np.asarray(wide_model.hidden(jnp.asarray(inputs)) @ wide_model.unembed[...]), rtol=1e-5, atol=1e-5
  )
  standard_scale = dataclasses.replace(BASE, init_std=0.5)
  mup_scale = dataclasses.replace(MUP, init_std=0.5)
  np.testing.assert_array_equal(_logits(standard_scale, inputs), _logits(mup_scale, inputs))  # the same function at base
  grown_heads = dataclasses.replace(mup_scale, base_head_dim=2)  # sqrt(2)/8, not 1/sqrt(8)
  assert not np.allclose(_logits(standard_scale, inputs), _logits(grown_heads, inputs), atol=1e-3)


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(parameterization="mu"), "model.parameterization must be one of"),
     (dict(parameterization="mup"), "needs model.base_width"),
     (dict(parameterization="mup", base_width=16, tie_embeddings=True), "untied embeddings"),
     (dict(base_width=0), "model.base_width must be a positive integer"),
     (dict(base_head_dim=-8), "model.base_head_dim must be a positive integer"),
     (dict(loss_chunks=0), "model.loss_chunks must be a positive integer")],
)
def test_bad_parameterization_knobs_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(BASE, **kwargs)
