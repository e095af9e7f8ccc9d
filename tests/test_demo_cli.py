"""`scaling demo --quick` end to end (the CI smoke test of the main job), its resume, and bad input.

It asserts the files, the fits and a finite prediction, not the prediction's accuracy: toy runs are too noisy
for that (the accuracy of the full `scaling demo` is measured in docs/demo.md).
"""

import json
import math
import subprocess
import sys

import pytest
from ckpt_testlib import REPO, scaling_env  # noqa: F401  (a pytest fixture)
from sweep_testlib import run_ids, starts, state


def _demo(env, root, *extra, timeout=900):
  return subprocess.run([sys.executable, "-m", "scaling", "demo", "--quick", f"--root={root}", *extra], env=env,
                        capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_quick_demo_sweeps_fits_predicts_trains_the_target_and_reports(tmp_path, scaling_env):
  root = tmp_path / "demo"
  out = _demo(scaling_env, root)
  assert out.returncode == 0, out.stderr[-3000:]
  last = out.stdout.strip().splitlines()[-1]
  assert last.startswith("scaling demo: prediction error ")  # the last line printed is the prediction error
  for stage in ("[1/4] IsoFLOP sweep", "[2/4] every budget's minimum is bracketed", "prediction at C = ",
                "[3/4] training the predicted optimum", "[4/4] report"):
    assert stage in out.stderr

  specs = {rid: json.loads((root / rid / "spec.json").read_text()) for rid in run_ids(root)}
  sweep = [rid for rid, s in specs.items() if s["part"] == "isoflop"]
  (target,) = [rid for rid, s in specs.items() if s["scope"] == "target"]
  assert len({specs[r]["budget"] for r in sweep}) == 3 and len(sweep) == 15
  assert all(state(root, rid) == "done" for rid in specs)

  fit3 = json.loads((root / "demo" / "fit_approach3.json").read_text())
  fit2 = json.loads((root / "demo" / "fit_approach2.json").read_text())
  assert fit3["approach"] == 3 and fit2["approach"] == 2 and sorted(fit3["runs"]) == sorted(sweep)
  assert all(math.isfinite(v) for v in fit3["params"].values()) and "intervals" in fit3
  assert fit3["convention"]["name"] == "chinchilla"

  pred = json.loads((root / "demo" / "prediction.json").read_text())
  assert pred["C"] == pytest.approx(4 * max(specs[r]["budget"] for r in sweep))  # demo_quick.gin's target_factor
  lo, hi = pred["loss"]["interval"]
  assert math.isfinite(pred["loss"]["value"]) and lo <= pred["loss"]["value"] <= hi
  t = specs[target]
  assert (f"{t['shape']['width']}x{t['shape']['depth']}", t["tokens"]) == (pred["target"]["shape"], pred["target"]["D"])
  assert t["C"] == pytest.approx(pred["C"], rel=0.01)  # the trained run spends the target budget
  # The target trains with a batch and LR the sweep trained with, whatever the size rules say at 10x.
  assert (t["global_batch"], t["learning_rate"]) == (pred["target"]["global_batch"], pred["target"]["learning_rate"])
  assert t["global_batch"] <= max(specs[r]["global_batch"] for r in sweep)
  assert min(specs[r]["learning_rate"] for r in sweep) <= t["learning_rate"] <= max(specs[r]["learning_rate"] for r in sweep)
  assert pred["target"]["rules"]["global_batch"] >= t["global_batch"]
  measured = [r for r in map(json.loads, (root / target / "metrics.jsonl").read_text().splitlines())
              if "eval_loss" in r][-1]["eval_loss"]
  assert f"measured {measured:.4f}" in last

  page = (root / "report.html").read_text()
  assert "prediction error" in page and page.count("data:image/png;base64,") >= 6
  assert "approach 2: IsoFLOP minima" in page and "approach 3: parametric fit" in page

  again = _demo(scaling_env, root, timeout=300)  # everything is done: nothing is trained again
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.strip().splitlines()[-1] == last
  assert all(starts(root, rid) == 1 for rid in specs)


@pytest.mark.parametrize("extra, message", [
    (("--workers=0",), "--workers must be at least 1"),
    (("--gin_bindings=demo.level = 2.0",), "demo.level must be between 0 and 1"),
    (("--gin_bindings=demo.levle = 0.5",), "demo.levle"),
    (("--gin_bindings=isoflop.budgets = [-1e11]",), "isoflop.budgets"),
    (("--gin_bindings=isoflop.sizes = 2",), "the demo needs 3+ IsoFLOP budgets with 3+ sizes each"),
    (("--gin_bindings=model.min_depth = 0",), "model.min_depth and model.max_depth must be whole numbers"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, scaling_env, extra, message):
  root = tmp_path / "demo"
  out = _demo(scaling_env, root, *extra, timeout=120)
  assert out.returncode == 2, out.stderr
  assert out.stderr.count("\n") == 1 and message in out.stderr
  assert not root.exists()
