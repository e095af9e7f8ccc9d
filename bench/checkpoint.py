"""Cost of checkpointing every 50 steps, as a ratio of training time with saves to time without.

A ~20M-parameter model (bench/train_step.py's 20M shape: d=448, 8 layers, GELU MLP 1792, float32,
AdamW; batch 2 x 128 tokens by default, so that a step takes well under a second on 2 CPU cores and a
save weighs more, not less, than at bench/train_step.py's 8 x 256) trains on the embedded corpus
through `scaling.checkpoint.Checkpointer`, the one the training loop uses (fingerprint, state +
data-iterator state + progress, asynchronous Orbax save).

Other jobs on a shared machine change the step time by tens of percent within a minute, far more than
one save costs, so the cost of a save is measured in pairs of short segments run back to back: a plain
segment of `--segment` steps, and a saving segment (one save, the same number of steps, then a wait for
the save to be committed, so it carries every cost of a checkpoint: the blocking copy, the background
write competing for the CPU, any wait). The pairs alternate their order (ABBA) to cancel drift. With c
the median extra time of a saving segment and p the median plain step time, the ratio for a checkpoint
every `--every` steps is (every * p + c) / (every * p).
Last line: {"metric": "checkpoint_overhead_20M", "value": ...}.

  python bench/checkpoint.py [--every 50] [--segment 10] [--pairs 16] [--batch 2] [--seq_len 128]
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


class Trainer:
  """A 20M model's compiled step, state, data stream and Checkpointer, advanced a segment at a time."""

  def __init__(self, directory: Path, batch: int, seq_len: int):
    cfg = model.ModelConfig(vocab_size=258, head_dim=64, kv_heads=SHAPE["heads"], mlp="gelu", **SHAPE)
    self.params = model.param_counts(cfg)["total"]
    tcfg = train.TrainConfig(tokens=10**9, global_batch=batch, seq_len=seq_len)
    self.mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    program = train.build_program(cfg, optim.OptimizerConfig(), tcfg, self.mesh)
    self.state = train.init_state(program, 0)
    self.step_fn = train.compile_train_step(program, tcfg)
    self.data = make_dataset().train_iterator(seq_len=seq_len, global_batch=batch)
    ckpt_cfg = checkpoint.CheckpointConfig(every_steps=0, every_minutes=0, keep_last=2)
    self.ckpts = checkpoint.Checkpointer(directory, ckpt_cfg, program.abstract_state, program.state_shardings,
                                         self.mesh, {"bench": "checkpoint"})
    self.step = 0

  def steps(self, n: int) -> float:
    """Runs n train steps; returns their wall time."""
    start = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.step_fn(self.state, sharding.global_batch(next(self.data), self.mesh))
    jax.block_until_ready(metrics)
    self.step += n
    return time.perf_counter() - start

  def saving_steps(self, n: int) -> tuple[float, float]:
    """One save, n train steps, and the wait for the save's commit; returns (total, blocking part) wall time."""
    start = time.perf_counter()
    self.ckpts.save(self.step, self.state, self.data, checkpoint.Progress())
    blocking = time.perf_counter() - start
    self.steps(n)
    self.ckpts.wait()
    return time.perf_counter() - start, blocking


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--every", type=int, default=50, help="steps between checkpoints in the ratio")
  parser.add_argument("--segment", type=int, default=10, help="steps per timed segment")
  parser.add_argument("--pairs", type=int, default=16, help="(plain, saving) segment pairs")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq_len", type=int, default=128)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    t = Trainer(Path(tmp) / "checkpoints", args.batch, args.seq_len)
    t.steps(3)
    t.saving_steps(2)  # the first save compiles the fingerprint and starts Orbax's threads
    plain, saving, blocking = [], [], []
    for i in range(args.pairs):
      first_plain = i % 2 == 0
      if first_plain:
        plain.append(t.steps(args.segment))
      total, block = t.saving_steps(args.segment)
      saving.append(total)
      blocking.append(block)
      if not first_plain:
        plain.append(t.steps(args.segment))
    t.ckpts.close()
    newest = max((p for p in (Path(tmp) / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    size = sum(f.stat().st_size for f in newest.rglob("*") if f.is_file())
  step_s = float(np.median(plain)) / args.segment
  save_cost = float(np.median(np.subtract(saving, plain)))
  ratio = (args.every * step_s + save_cost) / (args.every * step_s)
  print(f"{t.params / 1e6:.1f}M params, checkpoint {size / 1e6:.0f} MB: step {step_s:.3f}s, one save costs "
        f"{save_cost:.2f}s (blocking part {np.median(blocking) * 1e3:.0f} ms; paired differences "
        f"{np.percentile(np.subtract(saving, plain), 25):.2f}..{np.percentile(np.subtract(saving, plain), 75):.2f}s "
        f"interquartile); every {args.every} steps: ratio {ratio:.4f}")
  print(json.dumps({"metric": "checkpoint_overhead_20M", "value": round(ratio, 4), "every_steps": args.every,
                    "step_s": round(step_s, 4), "save_cost_s": round(save_cost, 3),
                    "blocking_s": round(float(np.median(blocking)), 3), "pairs": args.pairs,
                    "segment": args.segment, "batch": args.batch, "seq_len": args.seq_len,
                    "plain_s": [round(x, 3) for x in plain], "saving_s": [round(x, 3) for x in saving],
                    "params": t.params, "checkpoint_mb": round(size / 1e6, 1)}))


if __name__ == "__main__":
  main()
