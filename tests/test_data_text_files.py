"""The builder over local text files: .txt, .jsonl and .gz, given as a directory, glob or list."""

import gzip
import json

import numpy as np
import pytest

from scaling.data import text_files
from scaling.errors import UserError


def _write_corpus(root):
  root.mkdir(parents=True, exist_ok=True)
  (root / "a.txt").write_text("first document\nwith two lines\n")
  (root / "b.txt.gz").write_bytes(gzip.compress("second document, gzipped\n".encode()))
  lines = [json.dumps({"text": f"jsonl document {i} é", "id": i}) for i in range(250)]
  (root / "c.jsonl").write_text("\n".join(lines[:200]) + "\n\n")
  (root / "d.jsonl.gz").write_bytes(gzip.compress("\n".join(lines[200:]).encode()))
  (root / "blank.txt").write_text("  \n")
  return {"first document\nwith two lines\n", "second document, gzipped\n"} | {f"jsonl document {i} é" for i in range(250)}


def _read_all(builder):
  texts = {}
  for split, source in builder.as_data_source().items():
    texts[split] = [source[i]["text"].decode() for i in range(len(source))]
  return texts


def test_builder_reads_txt_jsonl_and_gz_into_disjoint_splits(tmp_path):
  expected = _write_corpus(tmp_path / "corpus")
  builder, seconds = text_files.load(str(tmp_path / "corpus"), "text", str(tmp_path / "tfds"))
  assert seconds > 0
  texts = _read_all(builder)
  assert set(texts["train"]) | set(texts["validation"]) == expected
  assert len(texts["train"]) + len(texts["validation"]) == len(expected)
  assert 1 <= len(texts["validation"]) < 15
  assert builder.info.metadata["num_documents"] == len(expected)
  assert builder.info.file_format.value == "array_record"
  assert text_files.load(str(tmp_path / "corpus"), "text", str(tmp_path / "tfds"))[1] == 0.0


def test_globs_and_lists_select_files(tmp_path):
  _write_corpus(tmp_path / "corpus")
  assert [p.name for p in text_files.resolve_files(str(tmp_path / "corpus" / "*.jsonl*"))] == ["c.jsonl", "d.jsonl.gz"]
  listed = text_files.resolve_files([str(tmp_path / "corpus" / "a.txt"), str(tmp_path / "corpus" / "c.jsonl")])
  assert [p.name for p in listed] == ["a.txt", "c.jsonl"]


def test_a_tiny_corpus_still_gets_one_validation_document(tmp_path):
  (tmp_path / "x.txt").write_text("only train?")
  (tmp_path / "y.txt").write_text("or validation")
  corpus = text_files.scan([str(tmp_path / "x.txt"), str(tmp_path / "y.txt")])
  assert corpus.split_bytes["validation"] > 0 and corpus.split_bytes["train"] > 0


def test_editing_a_file_changes_the_fingerprint(tmp_path):
  _write_corpus(tmp_path)
  before = text_files.scan(str(tmp_path)).fingerprint
  (tmp_path / "a.txt").write_text("edited document, longer than before\n")
  assert text_files.scan(str(tmp_path)).fingerprint != before


@pytest.mark.parametrize("setup, files, message", [
    (lambda d: None, "missing.txt", "missing.txt does not exist"),
    (lambda d: None, "*.nothing", r"\*.nothing holds no"),
    (lambda d: (d / "x.csv").write_text("a,b"), "x.csv", "x.csv is not a .txt"),
    (lambda d: (d / "e.txt").write_text(""), "e.txt", "0 non-empty documents"),
    (lambda d: (d / "j.jsonl").write_text('{"body": "x"}\n'), "j.jsonl", r"j.jsonl:1: no text field 'text'"),
    (lambda d: (d / "k.jsonl").write_text("{not json\n"), "k.jsonl", "k.jsonl:1: not a JSON line"),
])
def test_bad_files_are_user_errors_naming_the_file(tmp_path, setup, files, message):
  setup(tmp_path)
  with pytest.raises(UserError, match=message):
    text_files.scan(str(tmp_path / files))


def test_a_corpus_of_few_large_files_gets_a_validation_split_of_several_spread_files(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(60):
    (tmp_path / f"book{i:02d}.txt").write_bytes(bytes(rng.integers(97, 123, size=100_000, dtype=np.uint8)))
  corpus = text_files.scan(str(tmp_path))
  chosen = sorted(p.name for p in corpus.files if corpus.is_validation(str(p)))
  assert 0.04 <= corpus.split_bytes["validation"] / (60 * 100_000) <= 0.07 and len(chosen) >= 3
  assert chosen[0] < "book30" < chosen[-1]
