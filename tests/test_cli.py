"""The `scaling` command line: a bad argument is one line naming it, with exit status 2 (argparse printed its
usage block first)."""

import pytest

from scaling.cli import main


@pytest.mark.parametrize("argv, line", [
    (["sweep", "x.gin", "--dry-run"],
     "scaling sweep: error: the following arguments are required: --root (see scaling sweep --help)"),
    (["sweep", "x.gin", "--root=r", "--launcher=foo"], "scaling sweep: error: argument --launcher: invalid choice: 'foo'"),
    (["fit", "r.csv", "--bogus-flag"], "scaling fit: error: unrecognized arguments: --bogus-flag (see scaling fit --help)"),
    (["--bogus"], "scaling: error: unrecognized arguments: --bogus (see scaling --help)"),
    (["nope"], "scaling: error: argument COMMAND: invalid choice: 'nope'"),
])
def test_a_bad_argument_is_one_line_and_exit_2(argv, line, capsys):
  with pytest.raises(SystemExit) as exit_:
    main(argv)
  err = capsys.readouterr().err
  assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(line), err


def test_an_error_raised_inside_a_configurable_is_one_line(tmp_path, capsys):
  """gin appends "In call to configurable 'slurm' (<function ...>)" to the error; the line names the knob alone."""
  from conftest import REPO

  code = main(["sweep", str(REPO / "configs" / "sweeps" / "gpu_node_isoflop.gin"), f"--root={tmp_path / 'r'}",
               "--launcher=slurm", "--dry-run", "--gin_bindings=slurm.gpus_per_node = -1"])
  err = capsys.readouterr().err
  assert code == 2 and err.strip().splitlines() == [
      "scaling sweep: error: slurm.gpus_per_node must be a whole number >= 0, got -1"], err
