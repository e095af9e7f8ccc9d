"""Token-length index of a split: where every document's unit ([EOS] + tokens) starts in the split's stream.

Random access to packed sequences needs each document's token offset. The index is `starts`, an int64
array of num_documents + 1 cumulative unit lengths (starts[-1] is the stream's length). Building it reads
the split once (bytes need only lengths; other tokenizers encode every document), so a split whose stream
fits STREAM_CACHE_BYTES also keeps the stream itself. Both are cached on disk next to the prepared dataset,
keyed by split, document count and tokenizer identity, so later starts just map them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import tempfile
from typing import Iterator, Sequence

import numpy as np

from scaling.data.tokenizers import ByteTokenizer, Tokenizer

HOME_CACHE = "~/.cache/scaling/token_index"
STREAM_CACHE_BYTES = 1 << 30  # a split's token stream is cached on disk up to this size


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """A split's unit starts and, when small enough to cache, its whole token stream."""

  starts: np.ndarray
  tokens: np.ndarray | None = None

  @property
  def num_tokens(self) -> int:
    """Returns the stream's length in tokens."""
    return int(self.starts[-1])


def stream_dtype(tokenizer: Tokenizer) -> np.dtype:
  """Returns the smallest unsigned dtype that holds every id of the tokenizer."""
  return np.min_scalar_type(tokenizer.vocab_size - 1)


def units(texts: Sequence[bytes], tokenizer: Tokenizer) -> Iterator[np.ndarray]:
  """Yields every document's unit, [EOS] + tokens, in the stream's dtype."""
  eos = np.array([tokenizer.eos_id], stream_dtype(tokenizer))
  for text in texts:
    yield np.concatenate([eos, tokenizer.encode(text).astype(eos.dtype)])


def starts_from_lengths(lengths: np.ndarray) -> np.ndarray:
  """Returns the cumulative unit starts [0, l0, l0 + l1, ...] of unit lengths."""
  return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def build(texts: Sequence[bytes], tokenizer: Tokenizer,
          max_stream_bytes: int | None = STREAM_CACHE_BYTES) -> SplitIndex:
  """Reads the split once: its unit starts, and its token stream unless that exceeds max_stream_bytes."""
  lengths, pieces, kept = np.zeros(len(texts), np.int64), [], 0
  for i, unit in enumerate(units(texts, tokenizer)):
    lengths[i] = len(unit)
    kept += unit.nbytes
    if pieces is not None and (max_stream_bytes is None or kept <= max_stream_bytes):
      pieces.append(unit)
    else:
      pieces = None
  tokens = np.concatenate(pieces) if pieces else None
  return SplitIndex(starts_from_lengths(lengths), tokens)


def cache_name(split: str, num_documents: int, tokenizer: Tokenizer) -> str:
  """Names the cache files after what determines the index: split, document count, tokenizer identity."""
  identity = tokenizer.identity()
  return f"{split}-{num_documents}-{identity['kind']}-{identity['hash']}"


def cache_dirs(data_dir: str | None, dataset_id: str) -> list[pathlib.Path]:
  """Returns where an index may live: next to the prepared dataset (if local), then under ~/.cache/scaling.

  `dataset_id` (name and version) names the fallback directory, for datasets in remote or read-only dirs.
  """
  dirs = [] if not data_dir or "://" in data_dir else [pathlib.Path(data_dir) / "token_index"]
  return dirs + [pathlib.Path(HOME_CACHE).expanduser() / dataset_id.strip("/").replace("/", "_")]


def _save(path: pathlib.Path, array: np.ndarray) -> bool:
  """Writes an array atomically (temp file, then rename); False when the directory is not writable."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
      np.save(f, array)
    os.replace(f.name, path)
    return True
  except OSError:
    return False


def _load(directory: pathlib.Path, name: str, num_documents: int) -> SplitIndex | None:
  """Maps a cached index (and its stream, if cached) from `directory`; None when absent or inconsistent."""
  path = directory / f"{name}.starts.npy"
  if not path.is_file():
    return None
  starts = np.load(path, mmap_mode="r")
  if len(starts) != num_documents + 1:
    return None
  stream_path = directory / f"{name}.tokens.npy"
  tokens = np.load(stream_path, mmap_mode="r") if stream_path.is_file() else None
  return SplitIndex(starts, tokens if tokens is not None and len(tokens) == starts[-1] else None)


def load_or_build(texts: Sequence[bytes], tokenizer: Tokenizer, split: str,
                  dirs: Sequence[pathlib.Path] = ()) -> SplitIndex:
  """Returns the split's index from the first cache in `dirs` that has it, else builds and caches it."""
  name = cache_name(split, len(texts), tokenizer)
  for directory in dirs:
    cached = _load(directory, name, len(texts))
    if cached is not None:
      return cached
  if dirs:
    print(f"scaling: indexing the {len(texts)} documents of the {split} split for {tokenizer.identity()['kind']} "
          f"tokens (once, cached in {dirs[0]})", file=sys.stderr, flush=True)
  built = build(texts, tokenizer)
  for directory in dirs:
    stream_saved = built.tokens is None or _save(directory / f"{name}.tokens.npy", built.tokens)
    if stream_saved and _save(directory / f"{name}.starts.npy", built.starts):
      break
  return built
