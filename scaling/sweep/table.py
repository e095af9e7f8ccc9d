"""The table of a sweep's runs: what `--dry-run` plans, what `scaling status` and the live view show.

Rows come from run specs alone (planned sizes, budgets, steps, estimated time) or, for a sweep root,
also from each run's files through `scaling.runs` (state, step, losses, throughput) and its claim.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from scaling import runs, storage
from scaling.console import format_count, format_eta
from scaling.sweep import claims

PLAN_COLUMNS = ("run", "part", "shape", "N", "D", "C", "D/N", "batch", "lr", "steps", "est")
STATUS_COLUMNS = ("run", "part", "shape", "N", "D", "C", "D/N", "steps", "state", "step", "eval_loss", "tok/s")


def trained_flops(spec: ml_collections.ConfigDict) -> float:
  """The FLOPs a run itself trains: its C, less the steps a cooldown branch inherits from its parent."""
  return spec.C * (spec.steps - spec.branch_step) / spec.steps if spec.parent else spec.C


def plan_row(spec: ml_collections.ConfigDict, seconds_per_flop: float | None) -> dict:
  """The planned columns of one run (est: the time it trains, a branch from its branch step, at `seconds_per_flop`)."""
  scope = spec.get("scope", "")
  part = (f"{scope}/" if scope else "") + spec.part + (f"@{spec.budget:.2g}" if spec.budget else "")
  part += " parent" if spec.role == "cooldown_parent" else ""
  return {
      "run": spec.run_id, "part": part, "seed": str(spec.seed), "shape": f"{spec.shape.width}x{spec.shape.depth}", "N": format_count(spec.N),
      "D": format_count(spec.tokens_actual), "C": f"{spec.C:.3g}", "D/N": f"{spec.tokens_per_param:.3g}",
      "batch": str(spec.global_batch), "lr": f"{spec.learning_rate:.3g}", "steps": str(spec.steps),
      "est": format_eta(trained_flops(spec) * seconds_per_flop) if seconds_per_flop else "?",
  }


def columns(base: Sequence[str], specs: Sequence[ml_collections.ConfigDict]) -> tuple[str, ...]:
  """The columns to print: `base`, with a `seed` column after `part` when the sweep has several seeds."""
  if len({s.seed for s in specs}) < 2:
    return tuple(base)
  i = list(base).index("part") + 1
  return (*base[:i], "seed", *base[i:])


def run_state(run_dir: Path, now: float | None = None) -> dict:
  """A run's state as a sweep sees it: `running` only while a live process holds it, else `interrupted`."""
  status = runs.read_status(run_dir)
  state = status["state"]
  if state == "running" and not (runs.is_alive(status, now=now) or claims.alive(claims.read(run_dir), now=now)):
    state = "interrupted"
  elif state == "pending" and claims.alive(claims.read(run_dir), now=now):
    state = "starting"
  return {**status, "state": state}


def status_row(root: Path, spec: ml_collections.ConfigDict, now: float | None = None) -> dict:
  """The status columns of one run, from its run directory."""
  run_dir = storage.path(root) / spec.run_id
  status = run_state(run_dir, now)
  records = runs.read_metrics(run_dir)
  evals = [r for r in records if "eval_loss" in r]
  rates = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
  row = plan_row(spec, None)
  row.update({
      "state": status["state"], "step": str(records[-1]["step"] if records else status.get("step", 0)),
      "eval_loss": f"{evals[-1]['eval_loss']:.4f}" if evals else "", "tok/s": format_count(rates[-1]) if rates else "",
      "reason": status.get("reason", ""),
      "_records": records, "_status": status,
  })
  return row


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  """A plain fixed-width text table."""
  widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(lines)


def summary(rows: Sequence[dict], specs: Sequence[ml_collections.ConfigDict], workers: int = 1) -> dict:
  """Counts by state, and an ETA from the measured throughput (FLOP/s under the sweep's convention)."""
  counts: dict[str, int] = {}
  for r in rows:
    counts[r["state"]] = counts.get(r["state"], 0) + 1
  rates, overheads, remaining = [], [], 0.0
  for r, spec in zip(rows, specs):
    records = r["_records"]
    tok_s = [x["tokens_per_s"] for x in records if x.get("tokens_per_s")]
    if tok_s:
      rates.append(statistics.median(tok_s) * spec.flops_per_token)
    if r["_status"].get("startup_s") is not None:
      overheads.append(float(r["_status"]["startup_s"]))
    if r["state"] not in ("done", "failed"):
      done_tokens = records[-1]["tokens"] if records else 0
      remaining += max(spec.tokens_actual - done_tokens, 0) * spec.flops_per_token
  left = sum(1 for r in rows if r["state"] not in ("done", "failed", "running"))
  eta = None
  if rates:
    eta = (remaining / statistics.median(rates) + left * (statistics.median(overheads) if overheads else 0.0)) / max(workers, 1)
  return {"counts": counts, "eta_s": eta, "total": len(rows), "flops_remaining": remaining}


def summary_line(s: dict) -> str:
  order = ("done", "running", "starting", "pending", "interrupted", "preempted", "failed")
  parts = [f"{s['counts'][k]} {k}" for k in order if s["counts"].get(k)]
  finished = s["counts"].get("done", 0) + s["counts"].get("failed", 0)
  eta = f"  ETA {format_eta(s['eta_s'])}" if s["eta_s"] is not None and finished < s["total"] else ""
  return f"{s['total']} runs: " + ", ".join(parts) + eta
