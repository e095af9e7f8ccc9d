"""Tests of the train step: determinism, gradient accumulation, learning on a learnable stream, and the mup coordinate check."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import random_batch
from scaling import sharding, train
from scaling.model import ModelConfig, activation_rms
from scaling.optim import OptimizerConfig, learning_rate_schedule

CFG = ModelConfig(vocab_size=32, width=32, depth=2, heads=2, kv_heads=2, head_dim=16, mlp_width=64)


def _run(tcfg, batches, cfg=CFG, mesh_shape=(1, 1, 1)):
  mesh = sharding.make_mesh(mesh_shape, jax.devices()[: int(np.prod(mesh_shape))])
  program = train.build_program(cfg, OptimizerConfig(), tcfg, mesh)
  state = train.init_state(program, tcfg.seed)
  step = train.compile_train_step(program, tcfg)
  losses = []
  for b in batches:
    state, m = step(state, sharding.global_batch(b, mesh))
    losses.append(float(m["train_loss"]))
  return np.array(losses), state


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [random_batch(rng, 8, 16, CFG.vocab_size) for _ in range(n)]


def test_same_config_and_seed_give_identical_losses():
  tcfg = train.TrainConfig(tokens=4 * 8 * 16, global_batch=8, seq_len=16)
  a, _ = _run(tcfg, _batches(4))
  b, _ = _run(tcfg, _batches(4))
  np.testing.assert_array_equal(a, b)
  c, _ = _run(dataclasses.replace(tcfg, seed=1), _batches(4))
  assert not np.array_equal(a, c)


def test_budget_and_peak_lr_are_arguments_of_one_compiled_program():
  """A sweep's neighbours (another token budget or peak LR) lower to the same train step, so the compilation
  cache serves them; each still trains on its own schedule, the one `learning_rate_schedule` gives."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  base = train.TrainConfig(tokens=40 * 8 * 16, global_batch=8, seq_len=16, learning_rate=1e-3)
  variants = [base, dataclasses.replace(base, tokens=10 * 8 * 16), dataclasses.replace(base, learning_rate=3e-3)]
  opt = OptimizerConfig(warmup_fraction=0.2)
  texts, lrs = set(), []
  for tcfg in variants:
    program = train.build_program(CFG, opt, tcfg, mesh)
    lowered = train.lower_train_step(program, tcfg)
    texts.add(lowered.as_text())
    state, step = train.init_state(program, 0), train.compile_train_step(program, tcfg, lowered)
    got = []
    for b in _batches(3):
      state, m = step(state, sharding.global_batch(b, mesh))
      got.append(float(m["lr"]))
    expected = [float(v) for v in learning_rate_schedule(opt, tcfg.learning_rate, tcfg.steps)(jnp.arange(3))]
    np.testing.assert_allclose(got, expected, rtol=2e-7)
    lrs.append(got)
  assert len(texts) == 1
  assert lrs[0] != lrs[1] and lrs[0] != lrs[2]  # warmup over 8 vs 2 steps; 3x the peak
  assert lrs[2] == pytest.approx([3 * v for v in lrs[0]], rel=1e-6)


def test_initialisation_equals_the_default_compilation_bit_for_bit():
  """init_state compiles with cheaper options on CPU; the parameters must not change by a bit."""
  for cfg in (CFG, dataclasses.replace(CFG, parameterization="mup", base_width=16)):
    tcfg = train.TrainConfig(tokens=4 * 8 * 16, global_batch=8, seq_len=16)
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    program = train.build_program(cfg, OptimizerConfig(), tcfg, mesh)
    state = train.init_state(program, 3)
    with jax.set_mesh(mesh):
      default = jax.jit(train.initial_state_fn(program, 3), out_shardings=program.state_shardings)()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(default), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mup_runs_are_deterministic_and_differ_from_standard():
  tcfg = train.TrainConfig(tokens=3 * 8 * 16, global_batch=8, seq_len=16)
  mup = dataclasses.replace(CFG, parameterization="mup", base_width=16)
  a, _ = _run(tcfg, _batches(3), cfg=mup)
  b, _ = _run(tcfg, _batches(3), cfg=mup)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, _run(tcfg, _batches(3))[0])


def test_gradient_accumulation_matches_one_big_batch():
  tcfg = train.TrainConfig(tokens=3 * 8 * 16, global_batch=8, seq_len=16)
  full, s1 = _run(tcfg, _batches(3))
  accum, s4 = _run(dataclasses.replace(tcfg, grad_accum=4), _batches(3), mesh_shape=(2, 1, 1))
  np.testing.assert_allclose(accum, full, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(s4.params["embed"][...]), np.asarray(s1.params["embed"][...]), rtol=1e-4, atol=1e-6)


def test_loss_falls_on_a_learnable_stream():
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(40):
    b = random_batch(rng, 8, 16, CFG.vocab_size)
    b["targets"] = (b["inputs"] + 1) % CFG.vocab_size  # next token = this token + 1
    batches.append(b)
  losses, _ = _run(train.TrainConfig(tokens=40 * 8 * 16, global_batch=8, seq_len=16, learning_rate=1e-2), batches)
  assert losses[-1] < 0.3 * losses[0]


def test_steps_cover_the_budget_within_one_batch():
  tcfg = train.TrainConfig(tokens=1000, global_batch=4, seq_len=16)
  assert tcfg.steps == 16 and 0 <= tcfg.steps * tcfg.tokens_per_step - 1000 < tcfg.tokens_per_step


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(tokens=-5), "train.tokens must be a positive integer"), (dict(tokens="many"), "train.tokens"),
     (dict(tokens=10, learning_rate=0), "train.learning_rate"), (dict(tokens=10, global_batch=6, grad_accum=4), "divisible")],
)
def test_bad_train_knobs_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    train.TrainConfig(**kwargs)


def _coordinates_after_training(width: int, parameterization: str, steps: int = 10) -> dict[str, float]:
  """A coordinate check at one width: after `steps` Adam steps (LR 1e-3) on a copy-the-previous-token stream,
  the RMS of the embedding output and of every block's attention and MLP outputs, and the RMS of the logits'
  change from init (mup's logits at init shrink like 1/sqrt(m) by design; their update must not)."""
  cfg = ModelConfig(vocab_size=64, width=width, depth=2, heads=width // 16, kv_heads=width // 16, head_dim=16,
                    mlp_width=4 * width, mlp="gelu", parameterization=parameterization, base_width=64)
  opt = OptimizerConfig(schedule="constant", warmup_fraction=0.0, weight_decay=0.0, clip_norm=0.0)
  tcfg = train.TrainConfig(tokens=steps * 2 * 16, global_batch=2, seq_len=16, learning_rate=1e-3)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  program = train.build_program(cfg, opt, tcfg, mesh)
  state, step = train.init_state(program, 0), train.compile_train_step(program, tcfg)
  initial_params = jax.tree.map(np.array, state.params)  # the train step donates its input
  rng = np.random.default_rng(0)
  for _ in range(steps):
    b = random_batch(rng, 2, 16, cfg.vocab_size)
    b["targets"] = np.roll(b["inputs"], 1, axis=1)
    state, _ = step(state, sharding.global_batch(b, mesh))
  inputs = jnp.asarray(b["inputs"])
  trained, initial = nnx.merge(program.graphdef, state.params), nnx.merge(program.graphdef, initial_params)
  out = {k: float(v) for k, v in activation_rms(trained, inputs).items() if k != "logits"}
  out["logits_update"] = float(jnp.sqrt(jnp.mean(jnp.square(trained(inputs) - initial(inputs)))))
  return out


def _spread(runs: dict[int, dict[str, float]], smallest: int) -> dict[str, float]:
  """max / min over the widths from `smallest` on, per coordinate."""
  kept = [r for w, r in runs.items() if w >= smallest]
  return {k: max(r[k] for r in kept) / min(r[k] for r in kept) for k in kept[0]}


def test_mup_coordinate_check_activations_stay_put_across_width_while_standard_grows():
  """mup (base 64): every coordinate within 1.5x over widths 128-512, the blocks' outputs also from width 64
  (width 64's logit update is 1.64x width 512's: a finite-width effect, docs/model.md). standard grows."""
  mup = {w: _coordinates_after_training(w, "mup") for w in (64, 128, 256, 512)}
  from_128 = _spread(mup, 128)
  assert all(s < 1.5 for s in from_128.values()), from_128
  from_64 = _spread(mup, 64)
  assert all(from_64[k] < 1.5 for k in from_64 if k.startswith(("block", "embedding"))), from_64
  standard = {w: _coordinates_after_training(w, "standard") for w in (128, 512)}
  spread = _spread(standard, 128)
  assert all(spread[k] > 3 and standard[512][k] > standard[128][k] for k in spread if k.startswith("block")), spread
