"""Token-length index of a split: where every document's unit ([EOS] + tokens) starts in the split's stream.

Random access to packed sequences needs each document's token offset. The index is `starts`, an int64
array of num_documents + 1 cumulative unit lengths (starts[-1] is the stream's length). Bytes need only
each document's length; other tokenizers encode the split once. The result is cached on disk next to the
prepared dataset, keyed by split, document count and tokenizer identity, so later starts just load it.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
from typing import Sequence

import numpy as np

from scaling.data.tokenizers import ByteTokenizer, Tokenizer

HOME_CACHE = "~/.cache/scaling/token_index"


def unit_lengths(texts: Sequence[bytes], tokenizer: Tokenizer) -> np.ndarray:
  """Returns the token count of every document's unit: len + 1 for bytes, encoded length + 1 otherwise."""
  if isinstance(tokenizer, ByteTokenizer):
    return np.fromiter((len(t) + 1 for t in texts), np.int64, count=len(texts))
  return np.fromiter((len(tokenizer.encode(t)) + 1 for t in texts), np.int64, count=len(texts))


def starts_from_lengths(lengths: np.ndarray) -> np.ndarray:
  """Returns the cumulative unit starts [0, l0, l0 + l1, ...] of unit lengths."""
  return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def cache_name(split: str, num_documents: int, tokenizer: Tokenizer) -> str:
  """Names the cache file after what determines the index: split, document count, tokenizer identity."""
  identity = tokenizer.identity()
  return f"{split}-{num_documents}-{identity['kind']}-{identity['hash']}.npy"


def cache_dirs(data_dir: str | None, dataset_name: str) -> list[pathlib.Path]:
  """Returns where an index may live: next to the prepared dataset (if local), then under ~/.cache/scaling."""
  dirs = [] if not data_dir or "://" in data_dir else [pathlib.Path(data_dir) / "token_index"]
  return dirs + [pathlib.Path(HOME_CACHE).expanduser() / dataset_name.replace("/", "_")]


def _save(path: pathlib.Path, starts: np.ndarray) -> bool:
  """Writes the index atomically (temp file, then rename); False when the directory is not writable."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
      np.save(f, starts)
    os.replace(f.name, path)
    return True
  except OSError:
    return False


def load_or_build(texts: Sequence[bytes], tokenizer: Tokenizer, split: str,
                  dirs: Sequence[pathlib.Path] = ()) -> np.ndarray:
  """Returns the split's unit starts, from the first cache in `dirs` that has them, else built and cached."""
  name = cache_name(split, len(texts), tokenizer)
  for directory in dirs:
    path = directory / name
    if path.is_file():
      starts = np.load(path, mmap_mode="r")
      if len(starts) == len(texts) + 1:
        return starts
  if dirs:
    print(f"scaling: indexing the {len(texts)} documents of the {split} split for {tokenizer.identity()['kind']} "
          f"tokens (once, cached in {dirs[0]})", file=sys.stderr, flush=True)
  starts = starts_from_lengths(unit_lengths(texts, tokenizer))
  for directory in dirs:
    if _save(directory / name, starts):
      break
  return starts
