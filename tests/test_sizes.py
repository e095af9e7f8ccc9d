"""Tests of the size table, the parameter-count rule and the `model` gin knobs."""

import math

import pytest

from scaling import sizes
from scaling.model import param_counts


def test_table_names_decode_to_consistent_shapes():
  for name, (width, depth, heads, mlp_width) in sizes.SIZES.items():
    cfg = sizes.model_config(vocab_size=258, size=name)
    assert (cfg.width, cfg.depth, cfg.heads, cfg.mlp_width) == (width, depth, heads, mlp_width)
    assert cfg.head_dim * cfg.heads == cfg.width


@pytest.mark.parametrize("target", [3e5, 1e6, 3e6, 2e7, 1e8, 1e9])
def test_params_rule_lands_near_the_target_with_bounded_aspect(target):
  cfg = sizes.model_config(vocab_size=258, params=target, head_dim=32 if target < 1e6 else 64)
  n = param_counts(cfg)["non_embedding"]
  assert abs(math.log(n / target)) < math.log(1.25)
  assert 32 <= cfg.width / cfg.depth <= 128
  assert cfg.head_dim in (32, 64)


def test_explicit_knobs_override_the_table():
  cfg = sizes.model_config(vocab_size=258, size="s", depth=2, kv_heads=2)
  assert (cfg.width, cfg.depth, cfg.kv_heads) == (512, 2, 2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(size="huge"), "model.size='huge' is not a known size"),
        (dict(size="s", params=1e6), "not both"),
        (dict(params=-5.0), "model.params must be a positive number"),
        (dict(width=64), "model.depth"),
        (dict(width=100, depth=2, heads=3), "not divisible by model.heads"),
        (dict(params=100), r"model.params=100 is out of reach .* nearest shape has 65,728 .* span 6.57e\+04 to 5.5e\+11"),
        (dict(params=1e14), r"model.params=1e\+14 is out of reach"),
        (dict(params=1e6, kv_heads=2), "model.params picks the whole shape: do not also set model.kv_heads"),
        (dict(params=1e6, width=256), "do not also set model.width"),
        (dict(params=1e6, depth=3), "do not also set model.depth"),
        (dict(size="s", parameterization="mup"), "needs model.base_width"),
        (dict(params=1e5, min_depth=3, max_depth=2), "model.min_depth and model.max_depth must be whole numbers"),
        (dict(params=1e5, min_depth=0), "model.min_depth and model.max_depth"),
        (dict(params=1e5, head_dim=64, min_aspect=16, max_aspect=24, min_depth=2, max_depth=2), "no shape with"),
    ],
)
def test_bad_model_knobs_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sizes.model_config(vocab_size=258, **kwargs)


def test_parameterization_knobs_reach_the_model_config():
  cfg = sizes.model_config(vocab_size=258, size="mini", parameterization="mup", base_width=128, loss_chunks=4)
  assert (cfg.parameterization, cfg.base_width, cfg.loss_chunks, cfg.width_multiplier) == ("mup", 128, 4, 2.0)
  assert sizes.model_config(vocab_size=258, size="mini").parameterization == "standard"
  assert cfg.base_head_dim == 64  # mini's head size, resolved so that run.json records it
  assert sizes.model_config(vocab_size=258, size="mini", parameterization="mup", base_width=128, base_head_dim=32).base_head_dim == 32
  assert sizes.model_config(vocab_size=258, size="mini").base_head_dim is None


def test_canonical_shapes_map_back_to_themselves():
  import random

  from scaling.sizes import canonical_shapes, shape_for_params

  rule = dict(head_dim=32, min_aspect=16.0, max_aspect=128.0)
  shapes = canonical_shapes(**rule)
  assert 0 < len(shapes)
  for width, depth, heads, mlp_width, n in random.Random(0).sample(shapes, 40) + shapes[:10]:
    assert shape_for_params(n, **rule) == (width, depth, heads, mlp_width)


def test_a_fixed_depth_family_scales_width_alone():
  """min_depth = max_depth: every shape the rule gives has that depth, and model.params picks among them."""
  from scaling.sizes import canonical_shapes

  rule = dict(head_dim=16, min_aspect=16.0, max_aspect=128.0, min_depth=2, max_depth=2)
  shapes = canonical_shapes(**rule)
  assert [(w, d) for w, d, *_ in shapes] == [(w, 2) for w in range(32, 257, 16)]
  cfg = sizes.model_config(vocab_size=256, params=1.3e5, **rule)
  assert (cfg.width, cfg.depth) == (64, 2)  # 131,392 non-embedding parameters: the nearest depth-2 shape
