"""The standard-library builder, run over a small tree the test writes."""

import json
import pathlib

import pytest

from scaling.data import stdlib_corpus


@pytest.fixture
def fake_stdlib(tmp_path):
  root = tmp_path / "lib" / "python3.x"
  files = {f"mod{i}.py": f"def f{i}():\n  return {i}\n" * (i + 1) for i in range(150)}
  files["pkg/__init__.py"] = "from . import sub\n"
  files["pkg/sub.py"] = "# -*- coding: latin-1 -*-\n".encode() + b"x = '\xe9'\n"
  for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
  (root / "empty.py").write_text("")
  (root / "notes.txt").write_text("not python")
  (root / "site-packages" / "thirdparty").mkdir(parents=True)
  (root / "site-packages" / "thirdparty" / "x.py").write_text("installed = True\n")
  (root / "__pycache__").mkdir()
  (root / "__pycache__" / "cached.py").write_text("cached = True\n")
  return root, files


def test_scan_lists_nonempty_py_files_outside_installed_packages(fake_stdlib):
  root, files = fake_stdlib
  corpus = stdlib_corpus.scan(root)
  assert corpus.files == tuple(sorted(files))
  assert corpus.num_bytes == sum(len(t if isinstance(t, bytes) else t.encode()) for t in files.values())
  assert corpus.config_name == f"py{corpus.python_version}-{corpus.content_hash[:12]}"


def test_content_hash_changes_with_any_file(fake_stdlib):
  root, _ = fake_stdlib
  before = stdlib_corpus.scan(root).content_hash
  (root / "mod3.py").write_text("changed\n")
  assert stdlib_corpus.scan(root).content_hash != before


def test_validation_split_is_a_fixed_percent_of_paths():
  paths = [f"dir{i // 100}/file{i}.py" for i in range(20_000)]
  chosen = [p for p in paths if stdlib_corpus.is_validation(p)]
  assert 0.045 < len(chosen) / len(paths) < 0.055
  assert chosen == [p for p in paths if stdlib_corpus.is_validation(p)]


def test_builder_writes_array_record_splits_by_file_and_records_the_hash(fake_stdlib, tmp_path):
  root, files = fake_stdlib
  corpus = stdlib_corpus.scan(root)
  builder = stdlib_corpus.StdlibSource(corpus=corpus, data_dir=str(tmp_path / "tfds"), file_format="array_record")
  builder.download_and_prepare()
  data_dir = pathlib.Path(builder.data_dir)
  assert data_dir.parts[-3:] == ("stdlib_source", corpus.config_name, "2.0.0")
  assert list(data_dir.glob("stdlib_source-train.array_record-*"))
  metadata = json.loads((data_dir / "metadata.json").read_text())
  assert metadata["content_hash"] == corpus.content_hash
  assert metadata["python_version"] == corpus.python_version
  sources = stdlib_corpus.StdlibSource(corpus=corpus, data_dir=str(tmp_path / "tfds")).as_data_source()
  read = {}
  for split, source in sources.items():
    for i in range(len(source)):
      path = source[i]["path"].decode()
      assert stdlib_corpus.is_validation(path) == (split == "validation")
      read[path] = source[i]["text"]
  expected = {k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()}
  assert read == expected
  assert metadata["split_bytes"]["validation"] == sum(len(v) for k, v in expected.items()
                                                      if stdlib_corpus.is_validation(k))


def test_a_warm_scan_reuses_the_cached_hash_until_a_file_changes(fake_stdlib, tmp_path, monkeypatch):
  root, _ = fake_stdlib
  cache = tmp_path / "cache" / "hashes.json"
  cold = stdlib_corpus.scan(root, cache_file=cache)
  real_hash_files = stdlib_corpus.hash_files
  monkeypatch.setattr(stdlib_corpus, "hash_files", lambda *a: pytest.fail("re-hashed an unchanged corpus"))
  assert stdlib_corpus.scan(root, cache_file=cache) == cold
  monkeypatch.setattr(stdlib_corpus, "hash_files", real_hash_files)
  (root / "mod3.py").write_text("edited, and longer than before\n")
  edited = stdlib_corpus.scan(root, cache_file=cache)
  assert edited.content_hash != cold.content_hash
  assert edited == stdlib_corpus.scan(root)


def test_this_interpreters_validation_split_holds_over_a_megabyte_from_across_the_library():
  corpus = stdlib_corpus.scan()
  chosen = [f for f in corpus.files if stdlib_corpus.is_validation(f)]
  assert sum((corpus.root / f).stat().st_size for f in chosen) > 1_000_000
  assert len({f.split("/")[0] for f in chosen}) >= 10
