"""Tests of FLOP accounting: the analytic conventions against XLA's own count of the compiled step."""

import pytest

from scaling import flops, train
from scaling.model import ModelConfig, param_counts
from scaling.optim import OptimizerConfig

SHAPES = [
    ModelConfig(vocab_size=258, width=128, depth=3, heads=4, kv_heads=4, head_dim=32, mlp_width=512),
    ModelConfig(vocab_size=258, width=96, depth=2, heads=6, kv_heads=2, head_dim=16, mlp_width=384, mlp="gelu", tie_embeddings=True),
    ModelConfig(vocab_size=1024, width=64, depth=4, heads=2, kv_heads=1, head_dim=32, mlp_width=256),
]


@pytest.mark.parametrize("cfg", SHAPES)
def test_formulas_within_ten_percent_of_xla_cost_analysis(cfg):
  seq_len = 128
  xla = train.xla_flops_per_token(cfg, OptimizerConfig(), train.TrainConfig(tokens=10**6, global_batch=4, seq_len=seq_len))
  analytic = flops.flops_per_token(cfg, seq_len)
  assert xla is not None
  assert analytic["palm"] == pytest.approx(xla, rel=0.10)
  # Chinchilla counts the embedding lookup as a matmul (3 x 2VD); XLA's gather does no arithmetic.
  embedding_lookup = 3 * 2 * cfg.vocab_size * cfg.width
  assert analytic["chinchilla"] - embedding_lookup == pytest.approx(xla, rel=0.10)


def test_a_runs_own_unrolled_one_device_step_gives_the_same_xla_count():
  """The loop reads the count from the run's own lowering when it is the program the count is defined on."""
  import dataclasses

  import jax

  from scaling import sharding

  cfg, t = dataclasses.replace(SHAPES[0], unroll_layers=True), train.TrainConfig(tokens=10**6, global_batch=4, seq_len=128)
  one = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  program = train.build_program(cfg, OptimizerConfig(), t, one)
  assert train.counts_xla_flops(program, t)
  own = train.xla_flops_per_token(cfg, OptimizerConfig(), t, train.lower_train_step(program, t))
  assert own == train.xla_flops_per_token(cfg, OptimizerConfig(), t)
  assert not train.counts_xla_flops(train.build_program(SHAPES[0], OptimizerConfig(), t, one), t)  # a scanned stack
  assert not train.counts_xla_flops(program, dataclasses.replace(t, grad_accum=2))


def test_six_n_conventions_follow_the_parameter_counts():
  cfg = SHAPES[0]
  counts, f = param_counts(cfg), flops.flops_per_token(cfg, 256)
  assert f["6N"] == 6 * counts["non_embedding"]
  assert f["6N_total"] == 6 * counts["total"]
  assert f["palm"] > f["6N"]
