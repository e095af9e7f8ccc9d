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


def test_a_builder_made_while_another_process_prepares_is_made_again(tmp_path):
  """The race a 4-process pod start hit: process B makes its builder before A has finished preparing (so it reads
  no dataset_info and has no splits), then finds the dataset prepared. prepare must not return that builder."""
  from scaling.data import text_files
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(20):
    (corpus / f"{i}.txt").write_text(f"document {i}\n" * (i + 1))
  scanned = text_files.scan(str(corpus), "text")
  make = lambda: text_files.TextFiles(corpus=scanned, data_dir=str(tmp_path / "tfds"), file_format="array_record")
  early = make()
  assert not early.info.splits
  text_files.load(str(corpus), "text", str(tmp_path / "tfds"))  # "process A" prepares meanwhile
  made = iter([early])
  builder, seconds = preparation.prepare(lambda: next(made, None) or make())
  assert seconds == 0.0 and builder is not early
  assert len(builder.as_data_source()["train"]) + len(builder.as_data_source()["validation"]) == 20
