"""Tests of scaling.fit.load: run directories under each convention, tables with a column mapping, errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.errors import UserError
from scaling.fit import load

FPT = {"6N": 6 * 1e6, "6N_total": 6 * 1.5e6, "chinchilla": 9.5e6, "xla": None}


def make_run(root, run_id, n=1e6, state="done", evals=((100, 1000, 5.0), (200, 2000, 4.0))):
  d = root / run_id
  d.mkdir(parents=True)
  (d / "run.json").write_text(json.dumps({
      "run_id": run_id, "params_total": n * 1.5, "params_embedding": n * 0.5, "params_non_embedding": n,
      "tokens_planned": 2000, "flops_per_token": {k: (v * n / 1e6 if v else None) for k, v in FPT.items()},
      "seq_len": 128, "global_batch": 8, "seed": 0}))
  lines = []
  for step, tokens, loss in evals:
    lines.append({"step": step - 50, "tokens": tokens - 500, "train_loss": loss + 1})
    lines.append({"step": step, "tokens": tokens, "train_loss": loss + 0.5, "eval_loss": loss})
  (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  (d / "status.json").write_text(json.dumps({"state": state, "step": evals[-1][0]}))
  return d


def test_run_directories_under_each_convention(tmp_path):
  make_run(tmp_path, "small", n=1e6)
  make_run(tmp_path, "big", n=4e6, state="running")
  df, conv = load.load([str(tmp_path)], convention="6N")
  assert conv["name"] == "6N" and "params_non_embedding" in conv["N"]
  assert len(df) == 4 and set(df["run"]) == {"small", "big"}
  small = df[df["run"] == "small"].sort_values("D")
  np.testing.assert_allclose(small["N"], 1e6)
  np.testing.assert_allclose(small["C"], 6e6 * small["D"])
  assert small["final"].tolist() == [False, True]
  assert not df[df["run"] == "big"]["final"].any()  # a running run has no final point yet
  np.testing.assert_allclose(small["N_chinchilla"], 1.5e6)  # every convention is kept alongside
  np.testing.assert_allclose(small["C_6N_total"], 9e6 * small["D"])
  assert "C_xla" not in df.columns  # null in run.json
  df2, conv2 = load.load([str(tmp_path / "small")], convention="chinchilla")
  np.testing.assert_allclose(df2["N"], 1.5e6)
  np.testing.assert_allclose(df2["C"], 9.5e6 * df2["D"])
  assert conv2["flops_per_nd"] == pytest.approx(9.5e6 / 1.5e6)


def test_run_directory_errors_name_the_file(tmp_path):
  make_run(tmp_path, "r")
  with pytest.raises(UserError, match="flops_per_token.*xla.*null"):
    load.load([str(tmp_path)], convention="xla")
  with pytest.raises(UserError, match="unknown for run directories"):
    load.load([str(tmp_path)], convention="7N")
  bad = make_run(tmp_path, "nan", evals=((100, 1000, float("nan")),))
  with pytest.raises(UserError, match=r"nan/metrics.jsonl:2: eval_loss"):
    load.load([str(bad)])
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no run.json"):
    load.load([str(tmp_path / "empty")])


def test_tables_with_a_column_mapping(tmp_path):
  path = tmp_path / "sweep.csv"
  pd.DataFrame({"params": [1e6, 1e6, 2e6], "tokens": [1e8, 2e8, 2e8], "val_loss": [4.0, 3.5, 3.2],
                "model": ["s", "s", "m"], "lr": [1e-3, 1e-3, 1e-3]}).to_csv(path, index=False)
  df, conv = load.load([str(path)], load.parse_columns("N=params,D=tokens,loss=val_loss,run=model+lr"))
  assert conv["C"] == "6 * N * D (computed)" and conv["N"] == "column params"
  np.testing.assert_allclose(df["C"], 6 * df["N"] * df["D"])
  assert df["run"].tolist() == ["s/0.001", "s/0.001", "m/0.001"]
  assert df["final"].tolist() == [False, True, True]  # the last checkpoint of each run
  assert "params" in df.columns  # raw columns stay available to --filter
  assert len(load.load([str(path)], load.parse_columns("N=params,D=tokens,loss=val_loss"), query="tokens > 1.5e8")[0]) == 2


@pytest.mark.parametrize("values, message", [
    ({"N": [1e6, -1.0], "D": [1e8, 1e8], "loss": [3.0, 3.0]}, "column 'N' is not positive at row 3"),
    ({"N": [1e6, 1e6], "D": [1e8, 1e8], "loss": [3.0, float("nan")]}, "column 'loss' is NaN"),
    ({"N": [1e6, 1e6], "D": [1e8, 1e8], "loss": [3.0, "x"]}, "column 'loss' is NaN or not a number"),
])
def test_bad_values_name_file_column_and_row(tmp_path, values, message):
  path = tmp_path / "t.csv"
  pd.DataFrame(values).to_csv(path, index=False)
  df, _ = load.load([str(path)])
  with pytest.raises(UserError, match=message) as e:
    load.require(df, ["N", "D", "loss"], "law chinchilla")
  assert str(path) in str(e.value)


def test_mapping_and_input_errors(tmp_path):
  path = tmp_path / "t.csv"
  pd.DataFrame({"a": [1.0]}).to_csv(path, index=False)
  with pytest.raises(UserError, match="no column 'params'"):
    load.load([str(path)], load.parse_columns("N=params"))
  with pytest.raises(UserError, match="not NAME=column"):
    load.parse_columns("N")
  with pytest.raises(UserError, match="needs column 'D'"):
    load.require(load.load([str(path)])[0], ["D"], "law chinchilla")
  with pytest.raises(UserError, match="no such file"):
    load.load([str(tmp_path / "missing.csv")])
  make_run(tmp_path / "runs", "r")
  with pytest.raises(UserError, match="cannot be fitted together"):
    load.load([str(path), str(tmp_path / "runs")])


def test_select_final_or_all(tmp_path):
  make_run(tmp_path, "r")
  df, _ = load.load([str(tmp_path)])
  assert len(load.select(df, "final")) == 1 and len(load.select(df, "all")) == 2
  with pytest.raises(UserError, match="no finished run"):
    load.select(df.assign(final=False), "final")


def test_unique_tokens_of_data_constrained_runs_become_U(tmp_path):
  d = make_run(tmp_path, "repeated")
  meta = json.loads((d / "run.json").read_text())
  (d / "run.json").write_text(json.dumps({**meta, "unique_tokens": 500, "epochs": 4.0}))
  make_run(tmp_path, "fresh")
  df, _ = load.load([str(tmp_path)])
  np.testing.assert_allclose(df[df["run"] == "repeated"]["U"], 500)
  assert df[df["run"] == "fresh"]["U"].isna().all()


def test_default_convention_counts_embeddings_output_layer_and_attention(tmp_path):
  make_run(tmp_path, "r", n=1e6)
  df, conv = load.load([str(tmp_path)])
  assert conv["name"] == "chinchilla" and "attention" in conv["why"]
  np.testing.assert_allclose(df["N"], 1.5e6)
  np.testing.assert_allclose(df["C"], 9.5e6 * df["D"])


def test_a_missing_status_is_pending_and_read_through_runs(tmp_path):
  d = make_run(tmp_path, "r")
  (d / "status.json").unlink()
  df, _ = load.load([str(tmp_path)])
  assert set(df["state"]) == {"pending"} and not df["final"].any()


def test_sweep_budget_and_epochs_come_from_run_json(tmp_path):
  d = make_run(tmp_path, "r")
  meta = json.loads((d / "run.json").read_text())
  (d / "run.json").write_text(json.dumps({**meta, "epochs": 2.0, "sweep": {"budget": 3e15, "convention": "chinchilla"}}))
  df, _ = load.load([str(tmp_path)])
  np.testing.assert_allclose(df["budget"], 3e15)
  np.testing.assert_allclose(df["epochs"], 2.0)


def test_load_reads_run_directories_only_through_runs_py():
  source = (Path(load.__file__)).read_text()
  assert "read_text" not in source.split("def _load_runs")[1].split("def _flops_per_nd")[0]
  assert "runs.read_metrics" in source and "runs.read_status" in source and "runs.read_run_info" in source


def test_run_directories_of_a_sweep_group_by_their_planned_budget(tmp_path):
  from scaling.fit import isoflop
  for i, (budget, tokens) in enumerate([(1e13, 1000), (1e13, 1400), (1e13, 700), (4e13, 2600), (4e13, 3900), (4e13, 2000)]):
    d = make_run(tmp_path, f"r{i}", n=1e6 * (i % 3 + 1), evals=((100, tokens, 4.0 - 0.1 * i),))
    meta = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps({**meta, "sweep": {"budget": budget, "convention": "chinchilla"}}))
  df, _ = load.load([str(tmp_path)])
  found = isoflop.budgets_found(df, 0.1)
  assert [(r["C"], r["points"]) for r in found] == [(1e13, 3), (4e13, 3)]
  assert found[0]["found_by"] == "sweep budget (run.json)"
  df6, _ = load.load([str(tmp_path)], convention="6N")  # planned in another count: grouped by it, C from the points
  found6 = isoflop.budgets_found(df6, 0.1)
  assert [r["points"] for r in found6] == [3, 3] and found6[0]["C"] != 1e13
  assert found6[0]["C_min"] <= found6[0]["C"] <= found6[0]["C_max"]


def test_a_branch_gives_only_the_points_after_its_branch_step(tmp_path):
  make_run(tmp_path, "parent", evals=((100, 1000, 5.0), (200, 2000, 4.0)))
  branch = make_run(tmp_path, "branch", evals=((100, 1000, 5.0), (200, 2000, 4.0), (300, 3000, 3.5)))
  info = json.loads((branch / "run.json").read_text())
  (branch / "run.json").write_text(json.dumps({**info, "parent": {"run_id": "parent", "step": 200}}))
  df, _ = load.load([str(tmp_path)], convention="6N")
  assert sorted(df[df["run"] == "branch"]["step"]) == [300]  # 100 and 200 are the parent's records
  assert sorted(df[df["run"] == "parent"]["step"]) == [100, 200]
