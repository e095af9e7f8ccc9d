"""Does the best learning rate transfer across width? A 5-point LR grid at two widths, under mup and standard.

Trains on the embedded corpus through the real trainer (`scaling.config.parse` + `scaling.loop.run`), one
run directory per (parameterisation, width, learning rate) under --root, and prints the final eval loss
of each with, per parameterisation, whether the best LR at the small width is within one grid step of
the best at the large width. mup uses `model.base_width` = the small width, so it equals standard there.

  python analysis/mup_lr_transfer.py --root /tmp/mup_lr [--widths 64 256] [--tokens 2e5] [--param mup standard]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scaling import config, loop

LRS = (2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)  # factor 2 apart


def bindings(parameterization: str, width: int, base_width: int, lr: float, tokens: float, seq_len: int) -> list[str]:
  """gin bindings of one short run: small depth, head size 32, GELU MLP, evaluation only at the end."""
  return [
      f"model.width = {width}", "model.depth = 2", f"model.heads = {width // 32}", f"model.mlp_width = {4 * width}",
      "model.mlp = 'gelu'",
      f"model.parameterization = '{parameterization}'", f"model.base_width = {base_width}",
      "model.unroll_layers = True", "model.attention_blocks = 2",
      f"train.tokens = {int(tokens)}", f"train.seq_len = {seq_len}", "train.global_batch = 16",
      f"train.learning_rate = {lr}", "train.eval_every = 0", "train.eval_tokens = 32768", "train.log_every = 20",
      "checkpoint.every_steps = 0", "checkpoint.every_minutes = 0",
  ]


def train_one(root: Path, parameterization: str, width: int, base_width: int, lr: float, tokens: float, seq_len: int) -> float:
  """Final eval loss (nats/token) of one run; a finished run directory is read back, not retrained."""
  run_dir = root / f"{parameterization}_w{width}_lr{lr:g}"
  done = run_dir / "result.json"
  if done.exists():
    return json.loads(done.read_text())["eval_loss"]
  config.parse([str(config.DEFAULT_EXPERIMENT)], bindings(parameterization, width, base_width, lr, tokens, seq_len))
  record = loop.run(run_dir)
  loss = float(record.get("eval_loss", math.nan))
  done.write_text(json.dumps({"eval_loss": loss}))
  return loss


def best_index(losses: list[float]) -> int:
  """Grid index of the lowest finite loss (a diverged run counts as worst)."""
  return min(range(len(losses)), key=lambda i: losses[i] if math.isfinite(losses[i]) else math.inf)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, type=Path)
  parser.add_argument("--widths", type=int, nargs=2, default=(64, 256))
  parser.add_argument("--tokens", type=float, default=2e5)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--param", nargs="+", default=["mup", "standard"])
  args = parser.parse_args()
  small, large = args.widths
  table = {}
  for p in args.param:
    for w in (small, large):
      table[(p, w)] = [train_one(args.root, p, w, small, lr, args.tokens, args.seq_len) for lr in LRS]
      print(f"{p:8s} width {w:4d}: " + "  ".join(f"{lr:g}: {l:.4f}" for lr, l in zip(LRS, table[(p, w)])), flush=True)
  summary = {}
  print("\n| parameterisation | width | " + " | ".join(f"lr {lr:g}" for lr in LRS) + " | best lr |")
  print("| --- | --- | " + " | ".join("---" for _ in LRS) + " | --- |")
  for (p, w), losses in table.items():
    print(f"| {p} | {w} | " + " | ".join(f"{l:.4f}" for l in losses) + f" | {LRS[best_index(losses)]:g} |")
  for p in args.param:
    steps = abs(best_index(table[(p, small)]) - best_index(table[(p, large)]))
    summary[p] = {"best_lr_small": LRS[best_index(table[(p, small)])], "best_lr_large": LRS[best_index(table[(p, large)])],
                  "grid_steps_apart": steps, "transfers": steps <= 1}
    print(f"{p}: best LR at width {small} is {steps} grid step(s) from the best at width {large}: "
          f"{'within one step' if steps <= 1 else 'NOT within one step'}")
  print(json.dumps({"metric": "mup_lr_transfer", "widths": [small, large], "tokens": args.tokens, "summary": summary}))


if __name__ == "__main__":
  main()
