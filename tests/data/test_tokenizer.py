"""Byte tokenizer: exact ids, padding, truncation, round trip."""
import numpy as np
import pytest

from sora_jax.data import tokenizer


def test_encode_layout_and_mask():
  tok = tokenizer.get_tokenizer("byte")
  assert tok.vocab_size == 259
  ids, mask = tok.encode(["ab", ""], max_len=6)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (2, 6)
  np.testing.assert_array_equal(ids[0], [1, ord("a") + 3, ord("b") + 3, 2, 0, 0])
  np.testing.assert_array_equal(ids[1], [1, 2, 0, 0, 0, 0])
  np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 0, 0])
  single, _ = tok.encode("ab", max_len=6)
  np.testing.assert_array_equal(single, ids[:1])


def test_round_trip_truncation_and_unicode():
  tok = tokenizer.ByteTokenizer()
  texts = ["a red circle moves left", "zwei Würfel – blau", "x" * 100]
  ids, mask = tok.encode(texts, max_len=32)
  assert ids.max() < tok.vocab_size
  out = tok.decode(ids)
  assert out[:2] == texts[:2]
  assert out[2] == "x" * 30 and mask[2].all() and ids[2, -1] == tok.eos_id
  # A cut inside a multi-byte char is dropped rather than decoded to garbage.
  cut = tok.decode(tok.encode("ab€", max_len=5)[0])[0]
  assert cut == "ab"


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="text_len"):
    tokenizer.ByteTokenizer().encode("a", max_len=1)
  with pytest.raises(ValueError, match="unknown tokenizer"):
    tokenizer.get_tokenizer("t5")
