"""storage: local paths and gs:// URLs (on a local GCS emulator), whole-file replace and exclusive create."""

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
