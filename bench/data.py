"""Input-pipeline headroom: pipeline tokens/s divided by the ~20M model's train-step tokens/s, in one run.

The pipeline side reads the default data config (embedded stdlib corpus, bytes, segment packing) with the
default prefetch (one background thread, no worker processes), preparing the corpus in a fresh data_dir
first. It reports start-up (make_dataset + first batch) cold, with preparation and the token-length index,
and warm, from the caches. The step side is the best step time of the ~20M model of bench/train_step.py at
the same batch shape.
Last line: {"metric": "data_over_step_20M", "value": ...}; the target is >= 20.

  python bench/data.py [--batches 400] [--steps 10] [--seq_len 256] [--global_batch 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from scaling.data import make_dataset


def startup_seconds(seq_len: int, global_batch: int, data_dir: str) -> float:
  """Returns the seconds make_dataset() plus the first training batch take."""
  start = time.perf_counter()
  ds = make_dataset(data_dir=data_dir)
  next(ds.train_iterator(seq_len=seq_len, global_batch=global_batch, seed=0))
  return time.perf_counter() - start


def pipeline_tokens_per_s(seq_len: int, global_batch: int, batches: int, data_dir: str) -> float:
  """Returns the tokens/s pulled from the default training iterator after 10 warm-up batches."""
  iterator = make_dataset(data_dir=data_dir).train_iterator(seq_len=seq_len, global_batch=global_batch, seed=0)
  for _ in range(10):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * global_batch * seq_len / (time.perf_counter() - start)


def step_tokens_per_s(seq_len: int, global_batch: int, steps: int) -> float:
  """Returns the ~20M model's train-step tokens/s (bench/train_step.py's best step time)."""
  from train_step import best_step_seconds  # bench/ is on sys.path when this script runs

  return global_batch * seq_len / best_step_seconds("20M", steps, seq_len=seq_len, batch=global_batch)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, default=400)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--global_batch", type=int, default=8)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as data_dir:
    cold_s = startup_seconds(args.seq_len, args.global_batch, data_dir)
    warm_s = startup_seconds(args.seq_len, args.global_batch, data_dir)
    pipeline = pipeline_tokens_per_s(args.seq_len, args.global_batch, args.batches, data_dir)
  print(f"pipeline: {pipeline:,.0f} tokens/s (stdlib, bytes, seq {args.seq_len}, batch {args.global_batch}); "
        f"make_dataset + first batch: {cold_s:.2f} s cold (preparing, indexing), {warm_s:.2f} s warm")
  step = step_tokens_per_s(args.seq_len, args.global_batch, args.steps)
  ratio = pipeline / step
  print(f"train step (~20M): {step:,.0f} tokens/s; pipeline / step = {ratio:.1f}x (target >= 20x)")
  print(json.dumps({"metric": "data_over_step_20M", "value": round(ratio, 1),
                    "pipeline_tokens_per_s": round(pipeline), "step_tokens_per_s": round(step),
                    "startup_cold_s": round(cold_s, 2), "startup_warm_s": round(warm_s, 2), "target": 20}))


if __name__ == "__main__":
  main()
