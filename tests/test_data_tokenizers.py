"""Byte and SentencePiece tokenizers: ids, bytes per token, identity, and bad model files."""

import numpy as np
import pytest

from scaling.data import tokenizers
from scaling.data.dataset import make_tokenizer
from scaling.errors import UserError

WORDS = ["return", "def", "class", "self", "value", "héllo", "wörld", "import", "numpy", "lambda", "yield", "for"]
TEXTS = [" ".join(WORDS[(i * j) % len(WORDS)] + str(j % 7) for j in range(i % 40 + 5)).encode() + b"\n"
         for i in range(400)]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  out = tmp_path_factory.mktemp("sp") / "tok.model"
  return tokenizers.train_sentencepiece(TEXTS, out, vocab_size=300, model_type="bpe")


def test_byte_tokenizer_round_trips_and_counts_one_byte_per_id():
  tok = tokenizers.ByteTokenizer()
  ids = tok.encode("héllo".encode())
  assert ids.dtype == np.int32 and ids.tolist() == list("héllo".encode())
  assert tok.decode(np.append(ids, tok.eos_id)) == "héllo".encode()
  assert tok.token_bytes[ids].sum() == len("héllo".encode())
  assert tok.token_bytes[[tok.eos_id, tok.pad_id]].tolist() == [0, 0]
  assert tok.identity() == tokenizers.ByteTokenizer().identity()
  assert tok.identity()["vocab_size"] == 258


@pytest.mark.parametrize("model_type, vocab_size", [("bpe", 320), ("unigram", 300)])
def test_trained_sentencepiece_keeps_text_exactly_and_counts_bytes(tmp_path, model_type, vocab_size):
  path = tokenizers.train_sentencepiece(TEXTS, tmp_path / "m.model", vocab_size=vocab_size, model_type=model_type)
  tok = tokenizers.SentencePieceTokenizer(path)
  assert tok.vocab_size == vocab_size
  for text in TEXTS[:20] + ["unseen ✓ text\twith\ttabs".encode()]:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.token_bytes[ids].sum() == len(text)
  assert len(tok.encode(TEXTS[0])) < len(TEXTS[0]) / 2


def test_sentencepiece_identity_names_the_file_hash(sp_model, tmp_path):
  identity = tokenizers.SentencePieceTokenizer(sp_model).identity()
  assert identity["kind"] == "sentencepiece" and identity["vocab_size"] == 300
  assert identity["hash"] == tokenizers.file_hash(sp_model)


def test_missing_or_invalid_model_file_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="nope.model does not exist"):
    make_tokenizer("sentencepiece", str(tmp_path / "nope.model"), None)
  (tmp_path / "bad.model").write_bytes(b"not a model")
  with pytest.raises(UserError, match="bad.model is not a SentencePiece model"):
    make_tokenizer("sentencepiece", str(tmp_path / "bad.model"), None)


def test_vocab_size_mismatch_is_a_user_error(sp_model):
  assert make_tokenizer("sentencepiece", str(sp_model), 300).vocab_size == 300
  with pytest.raises(UserError, match="has vocab size 300, but data.vocab_size = 512"):
    make_tokenizer("sentencepiece", str(sp_model), 512)
  with pytest.raises(UserError, match="has vocab size 258"):
    make_tokenizer("bytes", None, 256)
  with pytest.raises(UserError, match="unknown data.tokenizer 'wordpiece'"):
    make_tokenizer("wordpiece", None, None)
