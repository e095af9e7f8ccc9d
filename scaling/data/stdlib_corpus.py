"""The embedded default corpus: the running interpreter's standard-library `*.py` files, as a TFDS builder.

The builder config is named after the Python version and a content hash of the files, so a different
interpreter (or an edited stdlib) prepares its own copy instead of silently reusing another's.
Documents go to the validation split by a hash of their relative path (about 5%, ~1.1 MB on 3.11), so
the split is fixed by the file set alone and spread over the whole library. The content hash is cached
by every file's (path, size, mtime_ns), so a warm start only stats the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import sysconfig

import tensorflow_datasets as tfds

from scaling.data.preparation import LocalBuilder, prepare

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
VALIDATION_PERCENT = 5
HASH_CACHE = "content_hashes.json"


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A snapshot of the files the builder reads: root, sorted relative paths and their content hash."""

  root: pathlib.Path
  files: tuple[str, ...]
  python_version: str
  content_hash: str
  num_bytes: int

  @property
  def config_name(self) -> str:
    """Names the TFDS config after the interpreter and the files, e.g. py3.11.7-1bb53de0c0c0."""
    return f"py{self.python_version}-{self.content_hash[:12]}"


def list_py_files(root: pathlib.Path) -> tuple[str, ...]:
  """Returns the sorted relative paths of non-empty `*.py` files under `root`, skipping installed packages."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
    relative = os.path.relpath(dirpath, root).replace(os.sep, "/")
    prefix = "" if relative == "." else f"{relative}/"
    for name in filenames:
      path = os.path.join(dirpath, name)
      if name.endswith(".py") and os.path.isfile(path) and os.path.getsize(path) > 0:
        found.append(prefix + name)
  return tuple(sorted(found))


def hash_files(root: pathlib.Path, files: tuple[str, ...]) -> tuple[str, int]:
  """Returns the sha256 over (path, length, content) of every file, and the total bytes."""
  digest = hashlib.sha256()
  total = 0
  for rel in files:
    data = (root / rel).read_bytes()
    total += len(data)
    digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little"))
    digest.update(data)
  return digest.hexdigest(), total


def stat_fingerprint(root: pathlib.Path, files: tuple[str, ...]) -> str:
  """Returns a sha256 over every file's (path, size, mtime_ns): what the cached content hash is keyed by."""
  digest = hashlib.sha256(str(root).encode())
  for rel in files:
    stat = os.stat(os.path.join(root, rel))
    digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  return digest.hexdigest()


def _read_cache(cache_file: pathlib.Path) -> dict:
  """Returns the hash cache's entries, or {} when it is missing or unreadable."""
  try:
    cache = json.loads(cache_file.read_text())
  except (OSError, ValueError):
    return {}
  return cache if isinstance(cache, dict) else {}


def _write_cache(cache_file: pathlib.Path, cache: dict) -> None:
  """Replaces the hash cache atomically; a read-only location just means no cache."""
  try:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, cache_file)
  except OSError:
    pass


def cached_hash_files(root: pathlib.Path, files: tuple[str, ...], cache_file: pathlib.Path | None) -> tuple[str, int]:
  """Returns hash_files(root, files), reusing the cached value while no file's path, size or mtime changed."""
  if cache_file is None:
    return hash_files(root, files)
  fingerprint = stat_fingerprint(root, files)
  cache = _read_cache(cache_file)
  entry = cache.get(str(root))
  if isinstance(entry, dict) and entry.get("stat") == fingerprint:
    return entry["content_hash"], entry["num_bytes"]
  content_hash, num_bytes = hash_files(root, files)
  cache[str(root)] = {"stat": fingerprint, "content_hash": content_hash, "num_bytes": num_bytes}
  _write_cache(cache_file, cache)
  return content_hash, num_bytes


def is_validation(relpath: str, percent: int = VALIDATION_PERCENT) -> bool:
  """Puts a document in the validation split when a hash of its path falls in the first `percent` of 100."""
  return int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16) % 100 < percent


def scan(root: str | pathlib.Path | None = None, cache_file: pathlib.Path | None = None) -> Corpus:
  """Lists and hashes the standard library of the running interpreter (or `root`), via the cache if given."""
  root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  files = list_py_files(root)
  content_hash, num_bytes = cached_hash_files(root, files, cache_file)
  return Corpus(root=root, files=files, python_version=platform.python_version(),
                content_hash=content_hash, num_bytes=num_bytes)


class StdlibSource(LocalBuilder):
  """Python standard-library source files, one document per file, as raw bytes."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Documents are whole *.py files; ~1% validation split by path hash.",
                   "2.0.0": "~5% validation split by path hash (>= 1 MB on Python 3.11)."}
  DESCRIPTION = "The Python standard library's own *.py files, read from the running interpreter."
  KEY = "path"

  def config_name(self) -> str:
    return self._corpus.config_name

  def config_description(self) -> str:
    return f"stdlib of Python {self._corpus.python_version} at {self._corpus.root}"

  def metadata(self) -> dict:
    return {
        "python_version": self._corpus.python_version,
        "content_hash": self._corpus.content_hash,
        "num_files": len(self._corpus.files),
        "num_bytes": self._corpus.num_bytes,
        "validation_percent": VALIDATION_PERCENT,
        "split_bytes": self._split_bytes(),
    }

  def _split_bytes(self) -> dict[str, int]:
    """Counts the text bytes of each split, for token counts and epoch accounting."""
    sizes = {"train": 0, "validation": 0}
    for rel in self._corpus.files:
      sizes["validation" if is_validation(rel) else "train"] += (self._corpus.root / rel).stat().st_size
    return sizes

  def _split_generators(self, dl_manager):
    del dl_manager
    validation = tuple(f for f in self._corpus.files if is_validation(f))
    train = tuple(f for f in self._corpus.files if not is_validation(f))
    return {"train": self._generate_examples(train), "validation": self._generate_examples(validation)}

  def _generate_examples(self, files):
    for rel in files:
      yield rel, {"text": (self._corpus.root / rel).read_bytes(), "path": rel}


def load(data_dir: str) -> tuple[StdlibSource, float]:
  """Returns the prepared builder of this interpreter's stdlib under `data_dir`, preparing it once."""
  corpus = scan(cache_file=pathlib.Path(data_dir) / StdlibSource.name / HASH_CACHE)
  return prepare(lambda: StdlibSource(corpus=corpus, data_dir=data_dir, file_format="array_record"))
