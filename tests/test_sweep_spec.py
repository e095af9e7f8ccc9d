"""Sweep knobs: each bad value is one clear line naming the knob; bad specs write nothing and exit 2."""

import pytest
from ckpt_testlib import scaling_env  # noqa: F401  (a pytest fixture)
from conftest import run_cli
from sweep_testlib import TINY

from scaling.sweep import spec


@pytest.mark.parametrize("call, match", [
    (lambda: spec.grid(sizes=[], tokens=[1e6]), "grid.sizes is empty"),
    (lambda: spec.grid(params=[1e5], tokens=[]), "grid.tokens is empty"),
    (lambda: spec.grid(sizes=["nano"], params=[1e5], tokens=[1e6]), "not both"),
    (lambda: spec.grid(params=[1e5]), "needs token budgets"),
    (lambda: spec.grid(params=[1e5], tokens=[1e6], tokens_per_param=[20]), "not both"),
    (lambda: spec.grid(params=[1e5], epochs=[2]), "grid.epochs needs grid.unique_tokens"),
    (lambda: spec.isoflop(budgets=[-1e12]), "isoflop.budgets must hold positive numbers"),
    (lambda: spec.isoflop(budgets=[1e12], sizes=0), "isoflop.sizes"),
    (lambda: spec.isoflop(budgets=[1e12], spread=0.5), "isoflop.spread"),
    (lambda: spec.isoflop(budgets=[1e12], centre=1e5, prior_fit="f.json"), "not both"),
    (lambda: spec.cooldowns(params=[1e5], tokens=[1e6], cooldown_fraction=1.5), "cooldown_fraction"),
    (lambda: spec.size_rules(learning_rate=(1.0, -0.5, "X")), "size_rules.learning_rate"),
    (lambda: spec.size_rules(batch_tokens=(-1.0, 0.3, "C")), "coefficient must be positive"),
    (lambda: spec.grid(params=[1e5], tokens=[1e6], bindings=["nonsense"]), "grid.bindings"),
    (lambda: spec.sweep_spec(name="x", parts=[]), "sweep.parts is empty"),
    (lambda: spec.sweep_spec(name="x", parts=[spec.isoflop(budgets=[1e12])], seeds=[0, 0]), "repeats a seed"),
    (lambda: spec.sweep_spec(name="x", parts=[spec.isoflop(budgets=[1e12])], convention="xla"), "sweep.convention"),
])
def test_bad_knobs_name_themselves(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("binding, match", [
    ("grid.tokens = []", "grid.tokens is empty"),
    ("sweep.parts = [@isoflop()]\nisoflop.budgets = [-1e12]", "isoflop.budgets must hold positive numbers"),
    ("grid.tokens = [1000]", "under sweep.min_steps"),
    ("grid.params = None\ngrid.sizes = ['huge']", "model.size='huge' is not a known size"),
    ("grid.sizes = ['nano']", "set grid.sizes (size names) or grid.params"),
    ("grid.tokns = [1]", "grid.tokns"),
])
def test_bad_specs_exit_2_with_one_line_and_write_nothing(tmp_path, scaling_env, binding, match):
  root = tmp_path / "root"
  result = run_cli("sweep", str(TINY), f"--root={root}", *(f"--gin_bindings={b}" for b in binding.split("\n")),
                   env=scaling_env)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("scaling sweep: error:"), result.stderr
  assert match in lines[0]
  assert not root.exists()


def test_sweep_point_is_none_outside_a_sweep():
  assert spec.sweep_point() is None
  assert spec.sweep_point(sweep="s", budget=1e12, convention="chinchilla")["budget"] == 1e12


def test_part_bindings_may_not_override_the_plan_but_may_set_the_learning_rate():
  from scaling.errors import UserError
  from scaling.sweep import expand

  with pytest.raises(UserError, match=r"grid.bindings: 'model.width = 64' sets model.width, which the sweep plans"):
    expand.load([str(TINY)], ["grid.bindings = ['model.width = 64']"])
  sweep, base = expand.load([str(TINY)], ["sweep.parts = [@grid(), @lr/grid()]", "lr/grid.bindings = ['train.learning_rate = 1e-3']"])
  specs = expand.expand(sweep, base)
  assert sorted({s.learning_rate for s in specs}) == [1e-3, 3e-3]
