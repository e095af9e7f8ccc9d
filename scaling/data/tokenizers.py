"""Tokenizers: raw bytes (the default) and SentencePiece models, with an identity for run.json.

Every tokenizer maps a document's bytes to int32 ids and knows how many bytes of text each id
stands for (`token_bytes`), so losses can be reported in bits per byte across tokenizers.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Protocol

import numpy as np

from scaling.errors import UserError


class Tokenizer(Protocol):
  """What the pipeline needs from a tokenizer."""

  vocab_size: int
  eos_id: int
  pad_id: int
  token_bytes: np.ndarray

  def encode(self, text: bytes) -> np.ndarray:
    """Returns the int32 ids of one document, without EOS."""

  def identity(self) -> dict:
    """Returns {"kind", "vocab_size", "hash"} for run.json."""


class ByteTokenizer:
  """One id per UTF-8 byte (0-255), EOS = 256 (ends a document; as an input it starts the next), PAD = 257."""

  vocab_size = 258
  eos_id = 256
  pad_id = 257

  def __init__(self):
    self.token_bytes = np.concatenate([np.ones(256, np.float32), np.zeros(2, np.float32)])

  def encode(self, text: bytes) -> np.ndarray:
    """Returns the bytes of `text` as int32 ids."""
    return np.frombuffer(text, dtype=np.uint8).astype(np.int32)

  def decode(self, ids: np.ndarray) -> bytes:
    """Returns the bytes of the byte ids in `ids`, dropping specials."""
    ids = np.asarray(ids)
    return ids[ids < 256].astype(np.uint8).tobytes()

  def identity(self) -> dict:
    """Returns the identity recorded in run.json."""
    spec = f"bytes:eos={self.eos_id}:pad={self.pad_id}".encode()
    return {"kind": "bytes", "vocab_size": self.vocab_size,
            "hash": hashlib.sha256(spec).hexdigest()[:16]}


def file_hash(path: str | pathlib.Path) -> str:
  """Returns the sha256 of a file's contents (first 16 hex digits)."""
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def check_vocab_size(tokenizer: Tokenizer, expected: int | None, what: str) -> None:
  """Raises UserError when a configured vocab size disagrees with the tokenizer's."""
  if expected is not None and expected != tokenizer.vocab_size:
    raise UserError(f"tokenizer {what} has vocab size {tokenizer.vocab_size}, but data.vocab_size = {expected}")
