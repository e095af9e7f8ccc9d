"""A TFDS builder over the user's own text files: `.txt` (one document per file) and `.jsonl` (one per line).

`data.files` is a directory, a glob, or a list of files and globs; `.gz` variants are read transparently.
The config is named after a fingerprint of the resolved files (path, size, mtime), so editing the corpus
prepares a new copy. Documents whose hash of "path:line" (or path, relative to the deepest directory holding
every file, so the split does not depend on where the corpus lives) is lowest form the validation split:
about 1%, raised as needed to hold at least min(1 MB, 5% of the corpus) and one document. A hash order is
a random order, so the split is spread over the whole corpus, however its files are laid out.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import os
import pathlib
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from scaling.data.preparation import LocalBuilder, prepare
from scaling.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
VALIDATION_PERCENT = 1
MIN_VALIDATION_BYTES = 1 << 20
MAX_VALIDATION_FRACTION = 0.05  # of the corpus's bytes, when raising the split to MIN_VALIDATION_BYTES
HASH_RANGE = 1 << 32


def _suffix(path: pathlib.Path) -> str | None:
  return next((s for s in SUFFIXES if path.name.endswith(s)), None)


def resolve_files(files: str | Sequence[str]) -> tuple[pathlib.Path, ...]:
  """Expands a directory, glob, or list of them into the sorted text files they name."""
  patterns = [files] if isinstance(files, (str, os.PathLike)) else list(files)
  if not patterns:
    raise UserError("data.files is empty; give a directory, a glob or a list of .txt/.jsonl files")
  found: set[pathlib.Path] = set()
  for pattern in map(str, patterns):
    path = pathlib.Path(pattern).expanduser()
    if path.is_dir():
      matches = [p for p in path.rglob("*") if p.is_file() and _suffix(p)]
    elif glob.has_magic(pattern):
      matches = [pathlib.Path(p) for p in glob.glob(str(path), recursive=True) if os.path.isfile(p)]
    elif path.is_file():
      matches = [path]
    else:
      raise UserError(f"data.files: {pattern} does not exist")
    if not matches:
      raise UserError(f"data.files: {pattern} holds no .txt, .jsonl or .gz text files")
    for match in matches:
      if not _suffix(match):
        raise UserError(f"data.files: {match} is not a .txt, .jsonl, .txt.gz or .jsonl.gz file")
      found.add(match.resolve())
  return tuple(sorted(found))


def _open_text(path: pathlib.Path):
  return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def read_documents(path: pathlib.Path, text_field: str) -> Iterator[tuple[str, bytes]]:
  """Yields (key, text) for the non-empty documents of one file; a bad JSON line is a UserError."""
  with _open_text(path) as f:
    if ".txt" in _suffix(path):
      text = f.read()
      if text.strip():
        yield str(path), text
      return
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        text = json.loads(line)[text_field]
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}:{number}: not a JSON line ({e})") from None
      except (KeyError, TypeError):
        raise UserError(f"{path}:{number}: no text field {text_field!r} (set data.text_field)") from None
      if not isinstance(text, str):
        raise UserError(f"{path}:{number}: field {text_field!r} is not a string")
      if text.strip():
        yield f"{path}:{number}", text.encode("utf-8")


def key_hash(key: str) -> int:
  """Returns a stable 32-bit hash of a document key."""
  return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def validation_bound(hashes: np.ndarray, sizes: np.ndarray) -> int:
  """Returns the key-hash bound below which documents are validation, so the split is never too small.

  The bound is VALIDATION_PERCENT of the hash range, raised until the split holds min(MIN_VALIDATION_BYTES,
  MAX_VALIDATION_FRACTION of the bytes) and one document, never taking the last training document.
  """
  order = np.argsort(hashes, kind="stable")
  cumulative = np.cumsum(sizes[order])
  target = min(MIN_VALIDATION_BYTES, int(cumulative[-1] * MAX_VALIDATION_FRACTION))
  count = min(int(np.searchsorted(cumulative, target)) + 1, len(hashes) - 1)
  return max(HASH_RANGE * VALIDATION_PERCENT // 100, int(hashes[order[count - 1]]) + 1)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """The resolved files, their fingerprint, and how the documents split."""

  files: tuple[pathlib.Path, ...]
  text_field: str
  fingerprint: str
  num_documents: int
  split_bytes: dict
  validation_below: int
  root: str = ""

  def is_validation(self, key: str) -> bool:
    """Tells whether a document belongs to the validation split (by its key relative to the corpus root)."""
    return key_hash(split_key(key, self.root)) < self.validation_below


def corpus_root(paths: Sequence[pathlib.Path]) -> str:
  """The deepest directory holding every file: split keys are relative to it, so they do not depend on where
  the corpus lives."""
  return os.path.commonpath([str(p.parent) for p in paths])


def split_key(key: str, root: str) -> str:
  """A document key ('path' or 'path:line') relative to the corpus root, the part the split hashes."""
  return key[len(root) + 1:] if root and key.startswith(root + os.sep) else key


def scan(files: str | Sequence[str], text_field: str = "text") -> Corpus:
  """Resolves and reads the files once: checks them, fingerprints them and fixes the split."""
  paths = resolve_files(files)
  digest = hashlib.sha256(text_field.encode())
  for path in paths:
    stat = path.stat()
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  root = corpus_root(paths)
  hashes, sizes = [], []
  for path in paths:
    for key, text in read_documents(path, text_field):
      hashes.append(key_hash(split_key(key, root)))
      sizes.append(len(text))
  if len(hashes) < 2:
    raise UserError(f"data.files: {', '.join(map(str, paths))} hold {len(hashes)} non-empty documents; need at least 2")
  hashes, sizes = np.array(hashes, np.int64), np.array(sizes, np.int64)
  bound = validation_bound(hashes, sizes)
  validation_bytes = int(sizes[hashes < bound].sum())
  return Corpus(files=paths, text_field=text_field, fingerprint=digest.hexdigest(), num_documents=len(hashes),
                split_bytes={"train": int(sizes.sum()) - validation_bytes, "validation": validation_bytes},
                validation_below=bound, root=root)


class TextFiles(LocalBuilder):
  """The user's text files, one document per .txt file or per .jsonl line, as raw UTF-8 bytes."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Documents from .txt/.jsonl(.gz) files; ~1% validation by key hash.",
                   "2.0.0": "Validation: lowest key hashes, ~1% raised to min(1 MB, 5%) of the corpus."}
  DESCRIPTION = "Local text files given by data.files."

  def config_name(self) -> str:
    return self._corpus.fingerprint[:12]

  def config_description(self) -> str:
    return f"{len(self._corpus.files)} local text files"

  def metadata(self) -> dict:
    return {
        "files": [str(p) for p in self._corpus.files[:1000]],
        "num_files": len(self._corpus.files),
        "fingerprint": self._corpus.fingerprint,
        "text_field": self._corpus.text_field,
        "num_documents": self._corpus.num_documents,
        "split_bytes": self._corpus.split_bytes,
        "validation_percent": VALIDATION_PERCENT,
        "validation_below": self._corpus.validation_below,
    }

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(False), "validation": self._generate_examples(True)}

  def _generate_examples(self, validation: bool):
    for path in self._corpus.files:
      for key, text in read_documents(path, self._corpus.text_field):
        if self._corpus.is_validation(key) == validation:
          yield key, {"text": text, "key": key}


def load(files: str | Sequence[str], text_field: str, data_dir: str) -> tuple[TextFiles, float]:
  """Returns the prepared builder over `files` under `data_dir`, preparing it once."""
  corpus = scan(files, text_field)
  return prepare(lambda: TextFiles(corpus=corpus, data_dir=data_dir, file_format="array_record"))
