"""Loading sweep results into one pandas DataFrame of points, whatever trainer produced them.

Inputs are sweep roots (directories holding run directories), run directories (the contract of docs/architecture.md:
run.json, metrics.jsonl, status.json) and tables (CSV, TSV, JSON). Every point has the canonical columns
`run`, `N` (parameters), `D` (tokens seen), `C` (training FLOPs), `loss` (nats per token), `step` and
`final` (the last evaluation of a finished run), plus any other mapped column (e.g. `U` unique tokens);
run directories also give `N_<convention>`, `C_<convention>` under every convention run.json supports.

The counting convention of N and C is explicit and never mixed: for run directories `--convention`
picks N and the FLOPs per token from run.json; for tables it is a label the user gives, recorded with the
column mapping. Tables and run directories cannot be fitted together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from scaling import runs, storage
from scaling.errors import UserError

CANONICAL = ("run", "N", "D", "C", "loss", "step", "final")
# convention -> (run.json key giving N, flops_per_token entry giving C / D)
CONVENTIONS = {
    "6N": ("params_non_embedding", "6N"),
    "6N_total": ("params_total", "6N_total"),
    "chinchilla": ("params_total", "chinchilla"),
    "xla": ("params_total", "xla"),
}
# Run directories count N and C with embeddings, the output layer and attention: for the small models of a
# CPU sweep, 6 N_non_embedding drops a large share of the FLOPs (a third at width 32, seq 128).
DEFAULT_CONVENTION = "chinchilla"
CONVENTION_NOTES = {
    "6N": "6 x non-embedding parameters per token (Kaplan et al.): leaves out the embeddings, the output layer "
          "and attention, a large share of the FLOPs of small models",
    "6N_total": "6 x all parameters per token: counts the embeddings and output layer, not attention",
    "chinchilla": "embeddings, output layer and attention counted (Hoffmann et al.): the FLOPs small models "
                  "really spend, so budgets and exponents are not biased by model size",
    "xla": "the compiled training step's own FLOP count (XLA cost analysis)",
}
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


def parse_columns(spec: str | None) -> dict[str, str]:
  """Parses `N=params,D=tokens,loss=val_loss` into {canonical: source}; `run=a+b` joins columns."""
  out: dict[str, str] = {}
  for item in filter(None, (s.strip() for s in (spec or "").split(","))):
    key, sep, val = item.partition("=")
    if not sep or not key.strip() or not val.strip():
      raise UserError(f"--columns: {item!r} is not NAME=column (e.g. --columns N=params,D=tokens,loss=val_loss)")
    out[key.strip()] = val.strip()
  return out


def load(inputs: Iterable[str], columns: Mapping[str, str] | None = None, convention: str | None = None,
         query: str | None = None, dropna: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
  """Loads every input into one DataFrame of points and describes the counting convention used.

  With `dropna`, rows with a missing value in a canonical or mapped column are dropped (and counted in
  the convention record) instead of being reported as bad input.
  """
  inputs = list(inputs)
  if not inputs:
    raise UserError("no INPUT given: pass a sweep root, run directories or CSV/JSON tables")
  tables, run_dirs = [], []
  for item in inputs:
    path = storage.path(item)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
      tables.append(path)
    elif path.is_dir():
      found = [path] if (path / "run.json").is_file() else _run_dirs_under(path)
      if not found:
        raise UserError(f"{path}: directory holds no run.json (not a run directory or sweep root)")
      run_dirs.extend(found)
    elif not path.exists():
      raise UserError(f"{path}: no such file or directory")
    else:
      raise UserError(f"{path}: not a table ({', '.join(TABLE_SUFFIXES)}), run directory or sweep root")
  if tables and run_dirs:
    raise UserError(f"{tables[0]} and {run_dirs[0]}: tables and run directories cannot be fitted together "
                    "(their counting conventions may differ); convert one to the other")
  if run_dirs:
    if columns:
      raise UserError("--columns applies to tables; run directories follow the run-directory contract")
    df, conv = _load_runs(run_dirs, convention or DEFAULT_CONVENTION)
  else:
    df, conv = _load_tables(tables, dict(columns or {}), convention)
  _numeric(df)
  if dropna:
    cols = [c for c in {"N", "D", "C", "loss", *(columns or {})} if c in df.columns and c != "run"]
    keep = df[cols].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    conv["dropped_rows"] = int((~keep).sum())
    df = df[keep].reset_index(drop=True)
  if query:
    try:
      df = df.query(query).reset_index(drop=True)
    except Exception as e:  # pandas raises many types for a bad expression
      raise UserError(f"--filter {query!r}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if df.empty:
      raise UserError(f"--filter {query!r}: no point left")
  return df, conv


def _run_dirs_under(path: storage.AnyPath) -> list[storage.AnyPath]:
  """The run directories under a directory: at any depth on disk; one level down (a sweep root's runs) on GCS,
  where a recursive listing would list every checkpoint object."""
  found = path.glob("*/run.json") if storage.is_remote(path) else path.rglob("run.json")
  return sorted(p.parent for p in found)


def _numeric(df: pd.DataFrame) -> None:
  """Converts numeric canonical columns to float in place where every present value is a number."""
  for col in ("N", "D", "C", "loss", "U", "step", "N_std", "D_std", "epochs", "budget"):
    if col in df.columns and df[col].dtype.kind not in "fc":
      conv = pd.to_numeric(df[col], errors="coerce")
      if conv.isna().sum() == df[col].isna().sum():
        df[col] = conv.astype(np.float64)


def require(df: pd.DataFrame, needed: Iterable[str], what: str) -> pd.DataFrame:
  """Checks the columns a fit needs: present, numeric, finite and positive; names the first offence."""
  for col in needed:
    if col not in df.columns:
      raise UserError(f"{input_name(df)}: {what} needs column {col!r}; it has {', '.join(input_columns(df))} "
                      f"(map it with --columns {col}=<column>)")
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
    for bad, why in ((np.isnan(values), "is NaN or not a number"), (values <= 0, "is not positive"),
                     (np.isinf(values), "is infinite")):
      if bad.any():
        i = int(np.flatnonzero(bad)[0])
        src = df["source"].iloc[i] if "source" in df.columns else "input"
        value = df[col].iloc[i]
        raise UserError(f"{src}: column {col!r} {why} at row {_row(df, i)} "
                        f"(value {(value.item() if hasattr(value, 'item') else value)!r})")
  return df


def input_name(df: pd.DataFrame) -> str:
  """The file(s) or directories a loaded table came from, for an error message."""
  sources = list(dict.fromkeys(map(str, df["source"]))) if "source" in df.columns else []
  return ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "") if sources else "the input"


def input_columns(df: pd.DataFrame) -> list[str]:
  """The columns the user's input has: a table's own header (`attrs['raw']`), else all but the loader's."""
  return list(map(str, df.attrs.get("raw") or [c for c in df.columns if c not in ("source", "row")]))


def _row(df: pd.DataFrame, i: int) -> str:
  return str(df["row"].iloc[i]) if "row" in df.columns else str(i)


def _load_tables(paths: list[Path], columns: dict[str, str], label: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
  frames = [_read_table(p, columns) for p in paths]
  df = pd.concat(frames, ignore_index=True)
  c_source = columns.get("C", "C" if all("C" in f.attrs.get("raw", ()) for f in frames) else None)
  if "C" not in df.columns and "N" in df.columns and "D" in df.columns:
    df["C"] = 6.0 * pd.to_numeric(df["N"], errors="coerce") * pd.to_numeric(df["D"], errors="coerce")
    c_source = "6 * N * D (computed)"
  conv = {"name": label or "as given", "source": "table", "N": f"column {columns.get('N', 'N')}",
          "D": f"column {columns.get('D', 'D')}", "C": f"column {c_source}" if c_source and "computed" not in c_source
          else (c_source or "absent"), "loss": f"column {columns.get('loss', 'loss')}",
          "flops_per_nd": _flops_per_nd(df)}
  return df, conv


def _read_table(path: Path, columns: Mapping[str, str]) -> pd.DataFrame:
  skipped = 0
  try:
    if path.suffix.lower() in (".json", ".jsonl"):
      raw = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
    else:
      skipped = _leading_comments(path)
      raw = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", skiprows=skipped)
  except Exception as e:  # parser errors come in many types
    raise UserError(f"{path}: cannot read table: {str(e).splitlines()[0]}") from None
  if raw.empty:
    raise UserError(f"{path}: table has no rows")
  df = pd.DataFrame(index=raw.index)
  for name, src in columns.items():
    parts = src.split("+")
    missing = [p for p in parts if p not in raw.columns]
    if missing:
      raise UserError(f"{path}: --columns {name}={src}: no column {missing[0]!r}; columns are {', '.join(map(str, raw.columns))}")
    df[name] = raw[parts[0]].astype(str) if len(parts) == 1 and name == "run" else (
        raw[parts].astype(str).agg("/".join, axis=1) if len(parts) > 1 else raw[parts[0]])
  for col in raw.columns:  # raw columns stay available (e.g. to --filter on), canonical names win
    if col not in df.columns:
      df[col] = raw[col]
  if "run" not in df.columns:
    df["run"] = [f"{path.stem}:{i}" for i in range(len(df))]
  df["run"] = df["run"].astype(str)
  df["source"] = str(path)
  df["row"] = np.arange(len(df)) + 2 + skipped  # the line number in a CSV with a header
  if "step" not in df.columns:
    df["step"] = 0
  if "final" not in df.columns:
    key = "D" if "D" in df.columns else "step"
    last = pd.to_numeric(df[key], errors="coerce").groupby(df["run"]).transform("max")
    df["final"] = pd.to_numeric(df[key], errors="coerce") >= last
  df.attrs["raw"] = tuple(raw.columns)
  return df


def _leading_comments(path: Path) -> int:
  """Number of `#` comment lines (e.g. a `# source:` line) before a CSV's header."""
  count = 0
  with open(path, errors="replace") as f:
    for line in f:
      if not line.startswith("#"):
        break
      count += 1
  return count


def _load_runs(dirs: list[Path], convention: str) -> tuple[pd.DataFrame, dict[str, Any]]:
  if convention not in CONVENTIONS:
    raise UserError(f"--convention={convention}: unknown for run directories; choose one of {', '.join(CONVENTIONS)}")
  n_key, c_key = CONVENTIONS[convention]
  rows = []
  for d in dirs:
    rows.extend(_run_points(d, n_key, c_key))
  if not rows:
    raise UserError(f"{dirs[0] if len(dirs) == 1 else dirs[0].parent}: no run has an eval_loss in metrics.jsonl yet")
  df = pd.DataFrame(rows)
  conv = {"name": convention, "source": "run directories", "N": f"run.json {n_key}", "D": "metrics.jsonl tokens",
          "C": f"run.json flops_per_token[{c_key!r}] x tokens", "loss": "metrics.jsonl eval_loss",
          "flops_per_nd": _flops_per_nd(df), "why": CONVENTION_NOTES[convention]}
  return df, conv


def _run_points(run_dir: Path, n_key: str, c_key: str) -> list[dict[str, Any]]:
  meta = _read_json(run_dir / "run.json", runs.read_run_info, run_dir)
  try:
    n = float(meta[n_key])
    fpt = meta["flops_per_token"][c_key]
  except (KeyError, TypeError):
    raise UserError(f"{run_dir / 'run.json'}: missing {n_key!r} or flops_per_token[{c_key!r}]") from None
  if fpt is None:
    raise UserError(f"{run_dir / 'run.json'}: flops_per_token[{c_key!r}] is null (choose another --convention)")
  status = str(_read_json(run_dir / "status.json", runs.read_status, run_dir).get("state", "pending"))
  run_id = str(meta.get("run_id", run_dir.name))
  metrics = run_dir / "metrics.jsonl"
  extra = _run_extras(meta, c_key)
  points = []
  # A branch's records up to its branch step are copies of its parent's: they are the parent's points.
  parent = meta.get("parent") if isinstance(meta.get("parent"), Mapping) else None
  inherited = int(parent.get("step", 0)) if parent else -1
  for lineno, rec in enumerate(runs.read_metrics(run_dir), 1):
    if not isinstance(rec, dict) or rec.get("eval_loss") is None or int(rec.get("step", 0)) <= inherited:
      continue
    loss = rec["eval_loss"]
    if not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss <= 0:
      raise UserError(f"{metrics}:{lineno}: eval_loss {loss!r} is not a positive finite number")
    tokens = float(rec.get("tokens", 0))
    if tokens <= 0:
      continue  # the step-0 evaluation: the initial parameters, no data seen (D = 0 has no place in a law of D)
    points.append({"run": run_id, "N": n, "D": tokens, "C": float(fpt) * tokens, "loss": float(loss),
                   "step": int(rec.get("step", 0)), "final": False, "state": status, "source": str(metrics),
                   "row": lineno, "seed": meta.get("seed"), "tokens_planned": meta.get("tokens_planned"),
                   **extra, **_all_conventions(meta, tokens)})
  # A cooldown sweep's constant-LR parent ends without a cooldown: its branches, not it, are the points of a law.
  role = (meta.get("sweep") or {}).get("role") if isinstance(meta.get("sweep"), Mapping) else None
  if points and status == "done" and role != "cooldown_parent":
    points[-1]["final"] = True
  return points


def _run_extras(meta: Mapping[str, Any], c_key: str) -> dict[str, Any]:
  """Optional per-run columns from run.json: U (unique_tokens), epochs, and a sweep's planned budget.

  `budget_in_C` says whether the planned budget was counted like C (same convention, or none named); when
  not, budgets still group the runs but the budget's compute is taken from the points' C.
  """
  out: dict[str, Any] = {}
  if meta.get("unique_tokens"):
    out["U"] = float(meta["unique_tokens"])
  if meta.get("epochs") is not None:
    out["epochs"] = float(meta["epochs"])
  sweep = meta.get("sweep")
  if isinstance(sweep, Mapping) and sweep.get("budget") is not None:
    out["budget"] = float(sweep["budget"])
    named = sweep.get("convention")
    out["budget_in_C"] = named is None or named == c_key or CONVENTIONS.get(str(named), (None, None))[1] == c_key
  return out


def _all_conventions(meta: Mapping[str, Any], tokens: float) -> dict[str, float]:
  """N_<convention> and C_<convention> for every convention run.json supports (for comparisons)."""
  out = {}
  for name, (n_key, c_key) in CONVENTIONS.items():
    fpt = (meta.get("flops_per_token") or {}).get(c_key)
    if meta.get(n_key) is not None and fpt is not None:
      out[f"N_{name}"], out[f"C_{name}"] = float(meta[n_key]), float(fpt) * tokens
  return out


def _read_json(path: Path, reader: Callable[[Path], Any], run_dir: Path) -> dict[str, Any]:
  """A run-directory JSON file read through scaling.runs, with read errors as one-line UserErrors."""
  try:
    out = reader(run_dir)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: cannot read JSON: {str(e).splitlines()[0]}") from None
  if not isinstance(out, dict):
    raise UserError(f"{path}: not a JSON object")
  return out


def _flops_per_nd(df: pd.DataFrame) -> float:
  """Median C / (N D) of the points: the k in C = k N D used to turn a budget into (N*, D*) pairs."""
  if not {"C", "N", "D"} <= set(df.columns):
    return 6.0
  ratio = pd.to_numeric(df["C"], errors="coerce") / (pd.to_numeric(df["N"], errors="coerce") *
                                                      pd.to_numeric(df["D"], errors="coerce"))
  ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
  return float(ratio.median()) if len(ratio) else 6.0


def select(df: pd.DataFrame, points: str) -> pd.DataFrame:
  """Keeps the final points of each run (`final`) or every checkpoint (`all`)."""
  if points == "all":
    return df.reset_index(drop=True)
  if points != "final":
    raise UserError(f"--points={points}: choose final or all")
  out = df[df["final"].astype(bool)].reset_index(drop=True)
  if out.empty:
    raise UserError("no finished run: no point is the final evaluation of a run in state done (try --points=all)")
  return out
