"""Model FLOP utilisation of the train step on this machine, as a ratio to a matmul peak measured in the same run.

Shapes match nanodo's at ~3M and ~20M parameters (d=256, 4 layers, MLP 1024; d=448, 8 layers, MLP 1792;
GELU MLP, seq 256, batch 8, byte vocabulary, float32, AdamW). Model FLOPs per token follow the `palm`
convention of scaling/flops.py: 6 x (non-embedding + output-layer parameters) + 12 x depth x width x seq.
The peak is the best float32 matmul rate measured before and after each model, so load from other jobs
lowers both sides alike. Last line: {"metric": "mfu_20M", "value": ...}.

  python bench/train_step.py [--steps 30] [--unroll_layers]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from scaling import flops, hardware, model, optim, sharding, train

SHAPES = {"3M": dict(width=256, depth=4, heads=4, mlp_width=1024), "20M": dict(width=448, depth=8, heads=7, mlp_width=1792)}


def random_batch(rng: np.random.Generator, batch: int, seq_len: int, vocab: int) -> dict[str, np.ndarray]:
  tokens = rng.integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
  ones = np.ones((batch, seq_len), np.float32)
  return {
      "inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": ones, "bytes": ones,
      "segment_ids": np.ones((batch, seq_len), np.int32),
      "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy(),
  }


def time_steps(name: str, shape: dict, steps: int, unroll: bool, seq_len: int = 256, batch: int = 8) -> dict:
  """Seconds per train step (best of `steps` after warm-up: least disturbed by other jobs) and model FLOPs per step."""
  cfg = model.ModelConfig(vocab_size=258, head_dim=64, kv_heads=shape["heads"], mlp="gelu", unroll_layers=unroll, **shape)
  tcfg = train.TrainConfig(tokens=steps * batch * seq_len * 10, global_batch=batch, seq_len=seq_len)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  program = train.build_program(cfg, optim.OptimizerConfig(), tcfg, mesh)
  state = train.init_state(program, 0)
  step = train.compile_train_step(program, tcfg)
  rng = np.random.default_rng(0)
  batches = [sharding.global_batch(random_batch(rng, batch, seq_len, cfg.vocab_size), mesh) for _ in range(4)]
  for i in range(3):
    state, m = step(state, batches[i % 4])
  jax.block_until_ready(state)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, m = step(state, batches[i % 4])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - start)
  per_token = flops.flops_per_token(cfg, seq_len)[flops.MFU_CONVENTION]
  return {
      "name": name,
      "params_non_embedding": model.param_counts(cfg)["non_embedding"],
      "step_s": float(np.min(times)),
      "model_flops_per_step": per_token * batch * seq_len,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--unroll_layers", action="store_true", help="unroll the layer scan")
  args = parser.parse_args()
  results = {}
  for name, shape in SHAPES.items():
    before = hardware.measure_cpu_peak()
    r = time_steps(name, shape, args.steps, args.unroll_layers)
    peak = max(before, hardware.measure_cpu_peak())
    achieved = r["model_flops_per_step"] / r["step_s"]
    results[name] = achieved / peak
    print(
        f"{name}: {r['params_non_embedding'] / 1e6:.2f}M non-embedding params, {r['step_s'] * 1e3:.1f} ms/step, "
        f"{achieved / 1e9:.1f} GFLOP/s model, peak {peak / 1e9:.1f} GFLOP/s f32 matmul, MFU {results[name]:.3f}"
    )
  print(json.dumps({"metric": "mfu_20M", "value": round(results["20M"], 4), "mfu_3M": round(results["3M"], 4),
                    "unroll_layers": args.unroll_layers, "targets": {"3M": 0.45, "20M": 0.65}}))


if __name__ == "__main__":
  main()
