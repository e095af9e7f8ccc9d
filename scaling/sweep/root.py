"""The sweep root on disk: `sweep.gin` (the resolved spec), and per run `spec.json` (the locked run spec) and
`spec.gin` (the sweep's text plus the run's bindings: `scaling train --gin_file=ROOT/<id>/spec.gin` trains
that run alone). The run directory's own files (config.gin, run.json, ...) belong to `scaling.runs`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
import ml_collections

from scaling import runs, storage
from scaling.storage import AnyPath
from scaling.errors import UserError

SWEEP_GIN, SPEC_JSON, SPEC_GIN, TRAIN_LOG = "sweep.gin", "spec.json", "spec.gin", "train.log"
WORKER_LOGS = "workers"


def check_root(root: AnyPath) -> AnyPath:
  """A usable sweep root: a directory (or creatable) or a gs:// URL, and not itself a run directory."""
  root = storage.path(root)
  if storage.is_remote(root) or not root.is_dir():
    root = runs.check_run_dir(root, "--root")  # for a gs:// root it checks the bucket first, before any listing
  if runs.is_run_dir(root):
    raise UserError(f"--root {root} is a run directory, not a sweep root")
  return root


def run_gin(sweep_text: str, spec: ml_collections.ConfigDict) -> str:
  """A run's spec.gin: the sweep's resolved text, then the run's own bindings (later bindings win)."""
  role = f", {spec.role}" if spec.role else ""
  lines = [sweep_text.rstrip("\n"), "", f"# --- run {spec.run_id} ({spec.part}{role}): its own bindings ---",
           *spec.bindings]
  return "\n".join(lines) + "\n"


def write(root: AnyPath, sweep_text: str, specs: Sequence[ml_collections.ConfigDict]) -> None:
  """Writes sweep.gin and every run's spec.json and spec.gin (only what changed; run files are untouched)."""
  root.mkdir(parents=True, exist_ok=True)
  _write_if_changed(root / SWEEP_GIN, sweep_text)
  for spec in specs:
    run_dir = root / spec.run_id
    run_dir.mkdir(exist_ok=True)
    _write_if_changed(run_dir / SPEC_JSON, spec.to_json(indent=2, sort_keys=True) + "\n")
    _write_if_changed(run_dir / SPEC_GIN, run_gin(sweep_text, spec))


def _write_if_changed(path: AnyPath, text: str) -> None:
  if not path.exists() or storage.read_text(path) != text:
    runs.write_text_atomic(path, text)


def read_spec(run_dir: AnyPath) -> ml_collections.ConfigDict:
  """A run's locked spec (a misspelt field is then an error); a corrupt one is a UserError naming it."""
  path = storage.path(run_dir) / SPEC_JSON
  spec = ml_collections.ConfigDict(runs.read_json(path))
  spec.lock()
  return spec


def read_specs(root: AnyPath) -> list[ml_collections.ConfigDict]:
  """Every run spec under a sweep root, in a stable order (part, budget, N, tokens, seed)."""
  root = storage.path(root)
  if not root.is_dir():
    raise UserError(f"{root}: {'a file, not a sweep root' if root.exists() else 'no such sweep root'}")
  specs = [read_spec(p.parent) for p in sorted(root.glob(f"*/{SPEC_JSON}"))]
  if not specs:
    raise UserError(f"{root}: not a sweep root (no <run_id>/{SPEC_JSON} under it)")
  return sorted(specs, key=order)


def order(spec: ml_collections.ConfigDict) -> tuple:
  return (spec.part, spec.budget, spec.N, spec.role != "cooldown_parent", spec.tokens, spec.seed)


def branch_from(root: AnyPath, spec: ml_collections.ConfigDict) -> str | None:
  """The `--branch_from` of a cooldown branch (its parent's checkpoint at the branch step), else None."""
  return f"{storage.path(root) / spec.parent}@{spec.branch_step}" if spec.parent else None


def train_command(root: AnyPath, spec: ml_collections.ConfigDict) -> list[str]:
  """The `scaling train` command line that trains this run alone."""
  run_dir = storage.path(root) / spec.run_id
  args = ["scaling", "train", f"--gin_file={run_dir / SPEC_GIN}", f"--run_dir={run_dir}", f"--mesh={spec.mesh}"]
  branch = branch_from(root, spec)
  return args + ([f"--branch_from={branch}"] if branch else [])


def python_command() -> list[str]:
  """How to start a `scaling` subcommand with this interpreter."""
  return [sys.executable, "-m", "scaling"]


def dumps(spec: ml_collections.ConfigDict) -> str:
  return json.dumps(spec.to_dict(), sort_keys=True)
