"""`scaling sweep`, `scaling status` and `scaling config show`: run a sweep, look at one, print a config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scaling import storage
from scaling.errors import UserError


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "sweep", help="expand a sweep spec into run directories and train every run not done yet",
      description="Expand SPEC.gin into ROOT/<run_id>/ and train every run that is not done (docs/sweeps.md).")
  p.add_argument("spec", metavar="SPEC.gin", help="the sweep's gin file (a path, or a name under configs/)")
  p.add_argument("--root", required=True, help="the sweep root: one run directory per run, plus sweep.gin")
  p.add_argument("--launcher", default="local", choices=["local", "slurm", "tpu"],
                 help="where runs train: local (this machine), slurm (job arrays), tpu (Cloud TPU VMs via gcloud)")
  p.add_argument("--workers", type=int, default=1,
                 help="local: worker processes; the devices are divided between them")
  p.add_argument("--detach", action="store_true",
                 help="slurm: submit and return instead of watching the jobs to the end")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print the table of runs and the total compute; write nothing")
  p.add_argument("--gin_bindings", action="append", default=[], help="extra binding, e.g. 'isoflop.sizes = 7'")
  p.add_argument("--prior_fit", default=None, metavar="FIT.json",
                 help="a fit.json whose compute-optimal N* each IsoFLOP budget's sizes should bracket (warns)")
  p.add_argument("--retry_failed", action="store_true", help="train failed runs again (from their checkpoints)")
  p.set_defaults(func=sweep)

  s = subparsers.add_parser("status", help="print a sweep's table from its run directories",
                            description="The table of a sweep root's runs: plan, state, step, last eval loss.")
  s.add_argument("root", metavar="ROOT")
  s.set_defaults(func=status)

  c = subparsers.add_parser("config", help="print a resolved gin config", description="scaling config show FILE_OR_NAME")
  csub = c.add_subparsers(dest="config_command", metavar="show", required=True)
  show = csub.add_parser("show", help="print the bindings a gin file resolves to (includes and overrides applied)")
  show.add_argument("name", metavar="FILE_OR_NAME", help="a gin file, or a name under configs/ such as sweeps/cpu_isoflop")
  show.add_argument("--gin_bindings", action="append", default=[])
  show.add_argument("--inline", action="store_true", help="print the text with includes inlined instead")
  c.set_defaults(func=config_show)


def seconds_per_flop(expected_mfu: float) -> tuple[float | None, str]:
  """Seconds per FLOP of this machine at `expected_mfu` of its peak (None when no peak is known), and a
  description of the hardware."""
  import jax

  from scaling import hardware

  peak, source = hardware.peak_flops(jax.devices())
  if not peak:
    return None, "no peak known for this device"
  return 1.0 / (peak * expected_mfu), f"{jax.device_count()} x {jax.devices()[0].device_kind}, peak {peak:.3g} FLOP/s ({source})"


def bracket_warnings(specs, fit_path: str) -> list[str]:
  """IsoFLOP budgets whose sizes do not bracket a prior fit's compute-optimal N*."""
  from scaling.fit import predict

  fit_ = predict.read(fit_path)
  out = []
  budgets = sorted({s.budget for s in specs if s.part == "isoflop"})
  for budget in budgets:
    ns = [s.N for s in specs if s.part == "isoflop" and s.budget == budget]
    n_star = predict.optimum_at(fit_, budget)["N"]["value"]
    if not min(ns) <= n_star <= max(ns):
      out.append(f"budget {budget:.3g}: sizes span N = {min(ns):.3g}..{max(ns):.3g}, but {fit_path} puts the "
                 f"optimum at N* = {n_star:.3g}; move the centre (isoflop.prior_fit) or widen isoflop.spread")
  return out


def sweep(args: argparse.Namespace) -> int:
  from scaling import runs
  from scaling.sweep import root as root_lib, table

  if args.workers < 1:
    raise UserError(f"--workers must be at least 1, got {args.workers}")
  if args.launcher == "slurm" and storage.is_remote(args.root):
    raise UserError(f"--launcher=slurm needs --root on a file system the nodes share (sbatch writes each task's "
                    f"output there), not {args.root}")
  sweep_spec, _, specs, text = expand_file(args.spec, args.gin_bindings)
  warnings = []
  for part in sweep_spec.parts:
    if getattr(part, "prior_fit", None):
      warnings += bracket_warnings(specs, part.prior_fit)
  if args.prior_fit:
    warnings += bracket_warnings(specs, args.prior_fit)
  if args.dry_run:
    # A cluster's plan comes first, so that its checks fail before anything is printed; its estimates
    # replace this machine's (the est column and the time at this CPU's peak mean nothing there).
    cluster = _cluster_plan_lines(args, storage.path(args.root), specs)
    per_flop, hardware = seconds_per_flop(sweep_spec.expected_mfu) if cluster is None else (None, None)
    # The workers divide the machine: a run gets 1/K of its peak, and the sweep as a whole all of it.
    per_run = per_flop * args.workers if per_flop else None
    rows = [table.plan_row(s, per_run) for s in specs]
    cols = table.columns(table.PLAN_COLUMNS, specs)
    print(table.format_table(rows, cols if cluster is None else tuple(c for c in cols if c != "est")))
    total = sum(table.trained_flops(s) for s in specs)
    est = f", about {table.format_eta(total * per_flop)} with {args.workers} worker(s)" if per_flop else ""
    branches = "; cooldown branches from their branch step" if any(s.parent for s in specs) else ""
    print(f"\n{len(specs)} runs, {total:.3g} FLOPs in total ({sweep_spec.convention} convention{branches}){est}")
    if cluster is None:
      print(f"estimate: {hardware}, at MFU {sweep_spec.expected_mfu:g} (sweep.expected_mfu); "
            f"each run on 1/{args.workers} of it (est column)")
    for w in warnings:
      print(f"warning: {w}")
    if cluster:
      print("\n" + "\n".join(cluster))
    return 0
  if args.launcher == "slurm":
    from scaling.launch import slurm

    slurm.preflight(specs)  # bad cluster input stops the sweep before its root is written
  if args.launcher == "tpu":
    from scaling.launch import tpu

    tpu.preflight(storage.absolute(storage.path(args.root)), specs)
  if args.launcher == "local":
    from scaling.sweep import local

    local.device_slots(args.workers)  # too many workers stops the sweep before its root is written
  root = root_lib.check_root(args.root)
  for w in warnings:
    print(f"scaling sweep: warning: {w}", file=sys.stderr)
  root_lib.write(root, text, specs)
  if args.retry_failed:
    retry_failed(root, specs)
  states = {s.run_id: runs.read_status(root / s.run_id)["state"] for s in specs}
  todo = longest_first(specs, states)
  done = sum(1 for v in states.values() if v == "done")
  how = f"with {args.workers} worker(s)" if args.launcher == "local" else f"on {args.launcher}"
  print(f"scaling sweep: {root}: {len(specs)} runs, {done} done, {len(todo)} to train {how}", file=sys.stderr, flush=True)
  code = 0
  if todo:
    code = _launch(args, root, specs, todo)
    if args.detach and args.launcher == "slurm":
      return code
  rows = [table.status_row(root, s) for s in specs]
  failed = [r for r in rows if r["state"] == "failed"]
  for r in failed:
    print(f"scaling sweep: failed {r['run']} ({r['part']} {r['shape']}): {r['reason']}", file=sys.stderr)
  if code:
    print("scaling sweep: stopped; run the same command to resume", file=sys.stderr)
    return code
  counts = "" if todo else f"{table.summary_line(table.summary(rows, specs))}; "  # else the view's last line says it
  print(f"scaling sweep: {counts}fit it with: scaling fit {root}", file=sys.stderr)
  return 1 if failed else 0


def expand_file(spec: str, bindings: list[str]) -> tuple[Any, Any, list, str]:
  """(sweep spec, base experiment, run specs, the sweep's resolved text) of a sweep gin file plus bindings."""
  from scaling import config
  from scaling.sweep import expand

  spec_file = str(config.resolve_gin_file(spec))
  sweep_spec, base = expand.load([spec_file], bindings)
  specs = expand.expand(sweep_spec, base)
  text = config.inline_includes(spec_file)
  if bindings:
    text += "\n# --- scaling sweep --gin_bindings ---\n" + "\n".join(bindings) + "\n"
  return sweep_spec, base, specs, text


def retry_failed(root: Path, specs) -> None:
  """`--retry_failed`: failed runs become pending again (they resume from their checkpoints)."""
  from scaling import runs

  for s in specs:
    status = runs.read_status(root / s.run_id)
    if status["state"] == "failed":
      runs.set_status(root / s.run_id, "pending", status.get("step", 0), "retrying (--retry_failed)")


def longest_first(specs, states: dict[str, str]) -> list[str]:
  """The runs still to train, longest first (LPT): workers take them in this order, so the sweep does not end
  on one long run alone."""
  from scaling.sweep import table

  return [s.run_id for s in sorted(specs, key=lambda s: -table.trained_flops(s)) if states[s.run_id] not in ("done", "failed")]


def _cluster_plan_lines(args: argparse.Namespace, root: Path, specs) -> list[str] | None:
  """What the cluster launcher would submit or run, as lines, after all its checks (None: local)."""
  if args.launcher == "local":
    return None
  lines: list[str] = []
  if args.launcher == "slurm":
    from scaling.launch import slurm

    slurm.dry_run(storage.absolute(root), specs, say=lines.append)
  else:
    from scaling.launch import tpu

    tpu.launch(storage.absolute(root), specs, [s.run_id for s in specs], dry_run=True, say=lines.append)
  return lines


def _launch(args: argparse.Namespace, root: Path, specs, todo: list[str]) -> int:
  """Trains the runs still to do with the chosen launcher; returns its exit status."""
  from scaling.sweep import local
  from scaling.sweep.view import SweepView

  say = lambda line: print(line, file=sys.stderr, flush=True)
  if args.launcher == "slurm":
    from scaling.launch import slurm

    view = SweepView(root, specs, 1)
    return slurm.launch(storage.absolute(root), [s for s in specs if s.run_id in todo], detach=args.detach, show=view.show,
                        say=say)
  if args.launcher == "tpu":
    from scaling.launch import tpu

    return tpu.launch(storage.absolute(root), specs, todo, dry_run=False, say=say)
  return local.run(root, todo, args.workers, SweepView(root, specs, args.workers).show)


def status(args: argparse.Namespace) -> int:
  from scaling.sweep import root as root_lib, table

  root = storage.path(args.root)
  specs = root_lib.read_specs(root)
  rows = [table.status_row(root, s) for s in specs]
  print(table.format_table(rows, table.columns(table.STATUS_COLUMNS, specs)))
  print()
  running = sum(1 for r in rows if r["state"] == "running")  # the ETA assumes the workers now running go on
  print(table.summary_line(table.summary(rows, specs, workers=max(running, 1))))
  for r in rows:
    if r["state"] == "failed":
      print(f"failed {r['run']}: {r['reason']}")
  return 0


def resolve_name(name: str) -> str:
  """A gin file path, or a name under configs/ with or without `.gin` (e.g. `sweeps/cpu_isoflop`)."""
  from scaling import config

  for candidate in (name, f"{name}.gin"):
    try:
      return str(config.resolve_gin_file(candidate))
    except UserError:
      pass
  matches = sorted(p for p in config.CONFIGS.rglob("*.gin") if p.stem == Path(name).stem)
  if len(matches) == 1:
    return str(matches[0])
  known = ", ".join(str(p.relative_to(config.CONFIGS).with_suffix("")) for p in sorted(config.CONFIGS.rglob("*.gin")))
  raise UserError(f"no gin file or config named {name!r}" + (f" (ambiguous: {len(matches)} match)" if matches else "")
                  + f"; known: {known}")


def config_show(args: argparse.Namespace) -> int:
  import gin

  from scaling import config

  path = resolve_name(args.name)
  if args.inline:
    sys.stdout.write(config.inline_includes(path))
    return 0
  from scaling.sweep import expand

  expand.register_configurables()
  config.parse([path], args.gin_bindings)
  print(f"# {path}, resolved: every binding in effect (includes and later bindings applied)")
  sys.stdout.write(gin.config_str())
  return 0
