"""`scaling sweep --dry-run`, `scaling status`, `scaling config show`, and `scaling fit` on a sweep root."""

import json

import pytest
from ckpt_testlib import scaling_env  # noqa: F401  (a pytest fixture)
from conftest import run_cli
from sweep_testlib import TINY, run_ids, run_sweep

ISOFLOP = ("sweep.parts = [@isoflop()]", "isoflop.budgets = [2e10, 4e10]", "isoflop.sizes = 3", "isoflop.spread = 4")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, scaling_env):
  root = tmp_path / "root"
  result = run_cli("sweep", str(TINY), f"--root={root}", "--dry-run", *(f"--gin_bindings={b}" for b in ISOFLOP),
                   env=scaling_env)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].split() == ["run", "part", "shape", "N", "D", "C", "D/N", "batch", "lr", "steps", "est"]
  assert sum(1 for l in lines if "isoflop@2e+10" in l) == 3 and sum(1 for l in lines if "isoflop@4e+10" in l) == 3
  assert any(l.startswith("6 runs,") and "FLOPs in total (chinchilla convention)" in l for l in lines)
  assert any("at MFU 0.3 (sweep.expected_mfu)" in l for l in lines)
  assert not root.exists()


def test_dry_run_warns_when_sizes_miss_a_prior_optimum(tmp_path, scaling_env):
  fit = tmp_path / "fit.json"
  # A Chinchilla law (A = e^14, B = e^2, E = 1) whose optimum at these budgets lies far above the swept sizes.
  theta = {"a": 14.0, "b": 2.0, "e": 0.0, "alpha": 0.5, "beta": 0.5}
  fit.write_text(json.dumps({"law": "chinchilla", "approach": 3, "theta": theta, "params": {},
                             "convention": {"name": "chinchilla", "flops_per_nd": 6.0}}))
  result = run_cli("sweep", str(TINY), "--root=unused", "--dry-run", f"--prior_fit={fit}",
                   *(f"--gin_bindings={b}" for b in ISOFLOP), env=scaling_env)
  assert result.returncode == 0, result.stderr
  warnings = [l for l in result.stdout.splitlines() if l.startswith("warning: budget")]
  assert len(warnings) == 2 and "optimum at N* =" in warnings[0]


def test_config_show_resolves_names_and_includes(scaling_env):
  shown = run_cli("config", "show", "sweeps/cpu_grid", env=scaling_env)
  assert shown.returncode == 0, shown.stderr
  assert "sweep.name = 'cpu_grid'" in shown.stdout and "optimizer.b2 = 0.95" in shown.stdout
  inline = run_cli("config", "show", "experiments/default.gin", "--inline", env=scaling_env)
  assert "include" not in inline.stdout.replace("# --- begin include", "").replace("# --- end include", "")
  assert "model.mlp = 'swiglu'" in inline.stdout
  missing = run_cli("config", "show", "no_such_config", env=scaling_env)
  assert missing.returncode == 2 and "no gin file or config named 'no_such_config'" in missing.stderr


@pytest.mark.slow
def test_an_isoflop_sweep_root_loads_into_fit_grouped_by_planned_budget(tmp_path, scaling_env):
  root = tmp_path / "iso"
  result = run_sweep(scaling_env, root, *ISOFLOP, extra=("--workers=2",))
  assert result.returncode == 0, result.stderr
  assert "fit it with: scaling fit" in result.stderr
  # The root carries its resolved spec: includes inlined, so it reproduces the sweep elsewhere.
  text = (root / "sweep.gin").read_text()
  assert "include '" not in text.replace("# --- begin include '", "").replace("# --- end include '", "")
  again = run_cli("sweep", str(root / "sweep.gin"), f"--root={tmp_path / 'elsewhere'}", "--dry-run", env=scaling_env)
  assert again.returncode == 0
  assert sorted(l.split()[0] for l in again.stdout.splitlines()[1:7]) == run_ids(root)

  status = run_cli("status", str(root), env=scaling_env)
  assert status.returncode == 0 and "6 runs: 6 done" in status.stdout
  assert status.stdout.splitlines()[0].split()[-4:] == ["state", "step", "eval_loss", "tok/s"]

  from scaling.fit import isoflop, load

  df, conv = load.load([str(root)])
  final = load.select(df, "final")
  found = isoflop.budgets_found(final, 0.1)
  assert [(b["C"], b["points"], b["sizes"], b["found_by"]) for b in found] == [
      (2e10, 3, 3, "sweep budget (run.json)"), (4e10, 3, 3, "sweep budget (run.json)")]
  assert conv["name"] == "chinchilla"
  out = tmp_path / "fit.json"
  fitted = run_cli("fit", str(root), f"--out={out}", "--law=kaplan_N", env=scaling_env)
  assert fitted.returncode == 0, fitted.stderr
  assert json.loads(out.read_text())["n_points"] == 6


def test_status_of_something_that_is_not_a_sweep_root(tmp_path, scaling_env):
  result = run_cli("status", str(tmp_path), env=scaling_env)
  assert result.returncode == 2 and "not a sweep root" in result.stderr


def test_bad_roots_and_too_many_workers_stop_before_the_root_is_written(tmp_path, scaling_env):
  """One line naming the flag, exit 2, nothing written (too many workers used to be found after the root was)."""
  root = tmp_path / "root"
  result = run_cli("sweep", str(TINY), f"--root={root}", "--workers=999", env=scaling_env)
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
      "scaling sweep: error: --workers=999 is more than this machine's " + result.stderr.split("machine's ")[1].strip()]
  assert not root.exists()
  afile = tmp_path / "o.txt"
  afile.write_text("x")
  result = run_cli("sweep", str(TINY), f"--root={afile / 'sub'}", env=scaling_env)
  assert result.returncode == 2 and f"error: --root {afile / 'sub'}: {afile} is a file" in result.stderr
  result = run_cli("status", str(afile), env=scaling_env)
  assert result.returncode == 2 and result.stderr.strip() == f"scaling status: error: {afile}: a file, not a sweep root"
