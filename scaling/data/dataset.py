"""`make_dataset` (gin: `data`): the one place a run's corpus, splits and tokenizer are chosen."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import gin
import grain
import numpy as np

from scaling.data import pipeline
from scaling.data import preparation
from scaling.data import stdlib_corpus
from scaling.data import tokenizers
from scaling.data.packing import BOUNDARIES
from scaling.errors import UserError

SOURCES = ("stdlib", "text", "tfds")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A corpus with its tokenizer: train batches as a checkpointable stream, validation as a fixed list."""

  name: str
  tokenizer: tokenizers.Tokenizer
  train_texts: Sequence[bytes]
  validation_texts: Sequence[bytes]
  boundaries: str = "segments"
  prefetch: int = 2
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def train_iterator(self, seq_len: int, global_batch: int, seed: int = 0, process_index: int = 0,
                     process_count: int = 1) -> grain.DatasetIterator:
    """Returns this process's endless, deterministic stream of [global_batch / process_count, seq_len] batches."""
    spec = pipeline.StreamSpec(seq_len=seq_len, global_batch=global_batch, seed=seed,
                               process_index=process_index, process_count=process_count,
                               boundaries=self.boundaries)
    return pipeline.train_batches(self.train_texts, self.tokenizer, spec, self.prefetch)

  def eval_batches(self, seq_len: int, batch_size: int, num_tokens: int | None = None, process_index: int = 0,
                   process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """Returns this process's share of the fixed validation set: its first num_tokens targets, in full."""
    return pipeline.validation_batches(
        self.validation_texts, self.tokenizer, seq_len=seq_len, batch_size=batch_size, num_tokens=num_tokens,
        process_index=process_index, process_count=process_count, boundaries=self.boundaries, name=self.name)


def _stdlib(data_dir: str) -> tuple[str, Sequence[bytes], Sequence[bytes], dict[str, Any]]:
  builder, seconds = stdlib_corpus.load(data_dir)
  sources = builder.as_data_source()
  info = {"source": "stdlib", "data_dir": data_dir, "prepare_s": round(seconds, 3),
          **{k: v for k, v in builder.info.metadata.items()}}
  return (f"{builder.name}/{builder.builder_config.name}", pipeline.TextView(sources["train"], "text"),
          pipeline.TextView(sources["validation"], "text"), info)


def make_tokenizer(kind: str, model_file: str | None, vocab_size: int | None) -> tokenizers.Tokenizer:
  """Builds the configured tokenizer and checks it against an expected vocab size."""
  if kind == "bytes":
    tokenizer = tokenizers.ByteTokenizer()
  else:
    raise UserError(f"unknown tokenizer {kind!r} in data.tokenizer; expected 'bytes'")
  tokenizers.check_vocab_size(tokenizer, vocab_size, model_file or kind)
  return tokenizer


@gin.configurable("data")
def make_dataset(source: str = "stdlib", data_dir: str | None = None, tokenizer: str = "bytes",
                 tokenizer_model: str | None = None, vocab_size: int | None = None,
                 boundaries: str = "segments", prefetch: int = 2) -> Dataset:
  """Opens the configured corpus (preparing the embedded one on first use) with its tokenizer."""
  if source not in SOURCES:
    raise UserError(f"unknown data.source {source!r}; expected one of {', '.join(SOURCES)}")
  if boundaries not in BOUNDARIES:
    raise UserError(f"unknown data.boundaries {boundaries!r}; expected one of {', '.join(BOUNDARIES)}")
  data_dir = data_dir or preparation.default_data_dir()
  name, train, validation, info = _stdlib(data_dir)
  tok = make_tokenizer(tokenizer, tokenizer_model, vocab_size)
  return Dataset(name=name, tokenizer=tok, train_texts=train, validation_texts=validation,
                 boundaries=boundaries, prefetch=prefetch, info=info)
