"""Cost of checkpointing every 50 steps, as a ratio of training time with saves to time without.

A ~20M-parameter model (bench/train_step.py's 20M shape: d=448, 8 layers, GELU MLP 1792, float32,
AdamW; batch 4 x 128 tokens by default, so that a step takes ~1 s on 2 CPU cores and a save weighs
more, not less, than at bench/train_step.py's 8 x 256) trains on the embedded corpus through `scaling.checkpoint.Checkpointer`, the
one the training loop uses (fingerprint, state + data-iterator state + progress, asynchronous Orbax
save). Segments of `--every` steps alternate between plain and saving; a saving segment is one save
followed by `--every` steps and a wait for that save to be committed, so it carries every cost of one
checkpoint (the blocking copy, the background write competing for the CPU, any wait). Alternating
segments see the same load from other jobs; the value is the median over pairs of (saving / plain), and
the ratio of the sums is printed beside it. Last line: {"metric": "checkpoint_overhead_20M", "value": ...}.

  python bench/checkpoint.py [--every 50] [--pairs 3] [--batch 4] [--seq_len 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from scaling import checkpoint, model, optim, sharding, train
from scaling.data import make_dataset

SHAPE = dict(width=448, depth=8, heads=7, mlp_width=1792)


def run_segment(step_fn, state, data, mesh, steps: int):
  """Runs `steps` train steps on batches from `data`; returns the new state when all are done."""
  for _ in range(steps):
    state, metrics = step_fn(state, sharding.global_batch(next(data), mesh))
  jax.block_until_ready(metrics)
  return state


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--every", type=int, default=50, help="steps between checkpoints")
  parser.add_argument("--pairs", type=int, default=3, help="(plain, saving) segment pairs to time")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq_len", type=int, default=128)
  args = parser.parse_args()

  cfg = model.ModelConfig(vocab_size=258, head_dim=64, kv_heads=SHAPE["heads"], mlp="gelu", **SHAPE)
  tcfg = train.TrainConfig(tokens=10**9, global_batch=args.batch, seq_len=args.seq_len)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  program = train.build_program(cfg, optim.OptimizerConfig(), tcfg, mesh)
  state = train.init_state(program, 0)
  step_fn = train.compile_train_step(program, tcfg)
  data = make_dataset().train_iterator(seq_len=args.seq_len, global_batch=args.batch)
  ckpt_cfg = checkpoint.CheckpointConfig(every_steps=args.every, every_minutes=0, keep_last=2)
  with tempfile.TemporaryDirectory() as tmp:
    ckpts = checkpoint.Checkpointer(Path(tmp) / "checkpoints", ckpt_cfg, program.abstract_state,
                                    program.state_shardings, mesh, {"bench": "checkpoint"})
    state = run_segment(step_fn, state, data, mesh, 5)  # warm-up
    ckpts.save(5, state, data, checkpoint.Progress())  # first save compiles the fingerprint
    ckpts.wait()
    plain, saving, blocking = [], [], []
    step = 5
    for _ in range(args.pairs):
      start = time.perf_counter()
      state = run_segment(step_fn, state, data, mesh, args.every)
      plain.append(time.perf_counter() - start)
      step += args.every
      start = time.perf_counter()
      ckpts.save(step, state, data, checkpoint.Progress())
      blocking.append(time.perf_counter() - start)
      state = run_segment(step_fn, state, data, mesh, args.every)
      ckpts.wait()
      saving.append(time.perf_counter() - start)
      step += args.every
    ckpts.close()
    size = sum(f.stat().st_size for f in (Path(tmp) / "checkpoints").rglob("*") if f.is_file()) / 2
  ratio = float(np.median([s / p for s, p in zip(saving, plain)]))
  ratio_of_sums = sum(saving) / sum(plain)
  params = model.param_counts(cfg)["total"]
  print(f"{params / 1e6:.1f}M params, checkpoint {size / 1e6:.0f} MB, {args.every} steps: "
        f"plain {np.median(plain):.2f}s, with one save {np.median(saving):.2f}s "
        f"(blocking part {np.median(blocking) * 1e3:.0f} ms); median ratio {ratio:.3f}, ratio of sums {ratio_of_sums:.3f}")
  print(json.dumps({"metric": "checkpoint_overhead_20M", "value": round(ratio, 4), "every_steps": args.every,
                    "ratio_of_sums": round(ratio_of_sums, 4), "pairs": args.pairs, "batch": args.batch, "seq_len": args.seq_len, "plain_s": [round(x, 3) for x in plain],
                    "saving_s": [round(x, 3) for x in saving], "blocking_s": [round(x, 3) for x in blocking],
                    "params": params, "checkpoint_mb": round(size / 1e6, 1)}))


if __name__ == "__main__":
  main()
