"""storage: local paths and gs:// URLs (on a local GCS emulator), whole-file replace and exclusive create."""

import threading

import pytest

from scaling import storage
from scaling.errors import UserError


def test_local_paths_and_urls_are_told_apart(tmp_path):
  assert not storage.is_remote(tmp_path) and not storage.is_remote("runs/a")
  assert storage.is_remote("gs://bucket/sweep")
  assert storage.absolute(storage.path("gs://bucket/sweep")) == storage.path("gs://bucket/sweep")
  with pytest.raises(UserError, match="only local paths and gs://"):
    storage.path("s3://bucket/sweep")


def test_a_remote_root_keeps_its_launcher_files_in_the_local_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
  assert storage.local_dir(tmp_path) == tmp_path
  local = storage.local_dir("gs://b/sweeps/one")
  assert local.is_relative_to(tmp_path / "cache") and local != storage.local_dir("gs://b/sweeps/two")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_replace_whole_and_create_only_once(where, tmp_path, request):
  root = storage.path(tmp_path if where == "local" else request.getfixturevalue("gcs_root"))
  f = root / "a" / "status.json"
  if where == "local":
    f.parent.mkdir()
  storage.write_text_atomic(f, "one")
  storage.write_text_atomic(f, "two")
  assert f.read_text() == "two"
  assert [p.name for p in f.parent.iterdir()] == ["status.json"]  # no temporary file left behind
  claim = root / "a" / "claim.1"
  assert storage.create_exclusive(claim, "first")
  assert not storage.create_exclusive(claim, "second")
  assert claim.read_text() == "first"


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_read_sees_one_whole_version_of_a_file_replaced_meanwhile(where, tmp_path, request):
  """A file object on GCS learns the object's size when opened and reads that many bytes later, so a status.json
  replaced in between (a heartbeat) reads as the new text cut to the old length: the torn JSON a sweep once
  reported. `storage.read_text` reads the object whole in one request, without asking its size."""
  root = storage.path(tmp_path if where == "local" else request.getfixturevalue("gcs_root"))
  f = root / "status.json"
  old, new = '{"state": "pending"}', '{"heartbeat": 1796613929.77, "state": "running", "step": 180}'
  storage.write_text_atomic(f, old)
  if where == "gcs":
    with f.open() as handle:
      storage.write_text_atomic(f, new)
      assert handle.read() == new[:len(old)]  # the hazard, as gcsfs has it
  stop = threading.Event()

  def heartbeat() -> None:
    while not stop.is_set():
      for text in (old, new):
        storage.write_text_atomic(f, text)

  writer = threading.Thread(target=heartbeat)
  writer.start()
  try:
    seen = [storage.read_text(f) for _ in range(100)]
  finally:
    stop.set()
    writer.join()
  assert set(seen) <= {old, new}, [t for t in seen if t not in (old, new)][:3]
  with pytest.raises(FileNotFoundError):
    storage.read_text(root / "missing.json")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_appends_and_a_mirror_of_a_growing_file(where, tmp_path, request):
  root = storage.path(tmp_path / "root" if where == "local" else request.getfixturevalue("gcs_root"))
  if where == "local":
    root.mkdir()
  f = root / "metrics.jsonl"
  storage.append_bytes(f, b"")  # nothing to append: nothing written
  assert not f.exists()
  storage.append_bytes(f, b"one\n")
  storage.append_bytes(f, b"two\n")
  assert storage.read_text(f) == "one\ntwo\n"
  assert [p.name for p in root.iterdir()] == ["metrics.jsonl"]  # no temporary object left behind
  local = tmp_path / "train.log"
  local.write_text("a\n")
  mirror = storage.AppendMirror(local, root / "train.log")
  mirror.sync()
  with open(local, "a") as out:
    out.write("b\n")
  mirror.sync()
  mirror.sync()
  assert storage.read_text(root / "train.log") == "a\nb\n"
