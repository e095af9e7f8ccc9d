"""A TFDS builder over the user's own text files: `.txt` (one document per file) and `.jsonl` (one per line).

`data.files` is a directory, a glob, or a list of files and globs; `.gz` variants are read transparently.
The config is named after a fingerprint of the resolved files (path, size, mtime), so editing the corpus
prepares a new copy. About 1% of documents, chosen by a hash of "path:line", form the validation split
(at least one document).
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

from scaling.data.preparation import LocalBuilder, prepare
from scaling.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
VALIDATION_PERCENT = 1


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


@dataclasses.dataclass(frozen=True)
class Corpus:
  """The resolved files, their fingerprint, and how the documents split."""

  files: tuple[pathlib.Path, ...]
  text_field: str
  fingerprint: str
  num_documents: int
  split_bytes: dict
  fallback_validation_key: str | None

  def is_validation(self, key: str) -> bool:
    """Tells whether a document belongs to the validation split."""
    return key_hash(key) % 100 < VALIDATION_PERCENT or key == self.fallback_validation_key


def scan(files: str | Sequence[str], text_field: str = "text") -> Corpus:
  """Resolves and reads the files once: checks them, fingerprints them and fixes the split."""
  paths = resolve_files(files)
  digest = hashlib.sha256(text_field.encode())
  for path in paths:
    stat = path.stat()
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  count, sizes, lowest, any_validation = 0, {"train": 0, "validation": 0}, None, False
  for path in paths:
    for key, text in read_documents(path, text_field):
      count += 1
      in_validation = key_hash(key) % 100 < VALIDATION_PERCENT
      any_validation |= in_validation
      sizes["validation" if in_validation else "train"] += len(text)
      if lowest is None or key_hash(key) < lowest[0]:
        lowest = (key_hash(key), key, len(text))
  if count < 2:
    raise UserError(f"data.files: {', '.join(map(str, paths))} hold {count} non-empty documents; need at least 2")
  fallback = None
  if not any_validation:
    fallback = lowest[1]
    sizes = {"train": sizes["train"] - lowest[2], "validation": lowest[2]}
  return Corpus(files=paths, text_field=text_field, fingerprint=digest.hexdigest(), num_documents=count,
                split_bytes=sizes, fallback_validation_key=fallback)


class TextFiles(LocalBuilder):
  """The user's text files, one document per .txt file or per .jsonl line, as raw UTF-8 bytes."""

  RELEASE_NOTES = {"1.0.0": "Documents from .txt/.jsonl(.gz) files; ~1% validation by key hash."}
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
