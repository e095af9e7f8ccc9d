"""The sweep table: part labels with gin scopes, a seed column when seeds vary, and a branch's trained FLOPs."""

from pathlib import Path

from scaling.sweep import expand, table

TINY = str(Path(__file__).parent / "data" / "sweeps" / "tiny.gin")


def _expand(*bindings: str):
  sweep, base = expand.load([TINY], bindings)
  return expand.expand(sweep, base)


def test_scoped_parts_are_labelled_and_seeds_get_a_column():
  specs = _expand("sweep.parts = [@grid(), @b2/grid()]", "b2/grid.bindings = ['optimizer.b2 = 0.99']",
                  "sweep.seeds = [0, 1]")
  labels = sorted({table.plan_row(s, None)["part"] for s in specs})
  assert labels == ["b2/grid", "grid"] and len(specs) == 8
  assert table.columns(table.PLAN_COLUMNS, specs)[:3] == ("run", "part", "seed")
  assert "seed" not in table.columns(table.PLAN_COLUMNS, [s for s in specs if s.seed == 0])
  assert {s.scope for s in specs} == {"", "b2"}
  assert any("sweep_point.scope = 'b2'" in b for s in specs for b in s.bindings)


def test_a_branch_trains_only_the_steps_after_its_branch_step():
  specs = _expand("sweep.parts = [@cooldowns()]", "grid.params = None", "cooldowns.params = [16000]",
                  "cooldowns.tokens = [10240, 20480]")
  branches = [s for s in specs if s.parent]
  assert branches and all(0 < s.branch_step < s.steps for s in branches)
  for s in branches:
    assert table.trained_flops(s) == s.C * (s.steps - s.branch_step) / s.steps
  parent = next(s for s in specs if s.role == "cooldown_parent")
  assert table.trained_flops(parent) == parent.C
