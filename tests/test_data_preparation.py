"""Preparing local builders: once per data_dir, and safe when processes race."""

import os
import pathlib
import subprocess
import sys

from scaling.data import preparation

REPO = pathlib.Path(__file__).resolve().parents[1]

_PREPARE = """
import sys
from scaling.data import text_files
builder, _ = text_files.load(sys.argv[1], "text", sys.argv[2])
print(len(builder.as_data_source()["train"]) + len(builder.as_data_source()["validation"]))
"""


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path))
  assert preparation.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("SCALING_DATA_DIR")
  assert preparation.default_data_dir() == os.path.expanduser("~/.cache/scaling/tensorflow_datasets")


def test_racing_processes_prepare_once_and_both_read_the_data(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(300):
    (corpus / f"{i}.txt").write_text(f"document {i}\n" * (i + 1))
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(corpus), str(tmp_path / "tfds")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
  results = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], results
  assert [out.strip() for out, _ in results] == ["300", "300"]
  assert sum(err.count("scaling: preparing text_files/") for _, err in results) == 1
  assert len(list((tmp_path / "tfds" / "text_files").glob("*/2.0.0/dataset_info.json"))) == 1
