"""The embedded default corpus: the running interpreter's standard-library `*.py` files, as a TFDS builder.

The builder config is named after the Python version and a content hash of the files, so a different
interpreter (or an edited stdlib) prepares its own copy instead of silently reusing another's.
Documents go to the validation split by a hash of their relative path (about 1%), so the split is
fixed by the file set alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import platform
import sysconfig

from scaling.data.preparation import LocalBuilder, prepare

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
VALIDATION_PERCENT = 1


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
    for name in filenames:
      path = os.path.join(dirpath, name)
      if name.endswith(".py") and os.path.isfile(path) and os.path.getsize(path) > 0:
        found.append(pathlib.Path(path).relative_to(root).as_posix())
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


def is_validation(relpath: str, percent: int = VALIDATION_PERCENT) -> bool:
  """Puts a document in the validation split when a hash of its path falls in the first `percent` of 100."""
  return int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16) % 100 < percent


def scan(root: str | pathlib.Path | None = None) -> Corpus:
  """Lists and hashes the standard library of the running interpreter (or `root`)."""
  root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  files = list_py_files(root)
  content_hash, num_bytes = hash_files(root, files)
  return Corpus(root=root, files=files, python_version=platform.python_version(),
                content_hash=content_hash, num_bytes=num_bytes)


class StdlibSource(LocalBuilder):
  """Python standard-library source files, one document per file, as raw bytes."""

  RELEASE_NOTES = {"1.0.0": "Documents are whole *.py files; ~1% validation split by path hash."}
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
  corpus = scan()
  return prepare(lambda: StdlibSource(corpus=corpus, data_dir=data_dir, file_format="array_record"))
