"""Byte tokenizer: exact ids, padding, truncation, round trip; T5 SentencePiece from local files."""
import io
import json
import pickle
import random

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

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
    tokenizer.get_tokenizer("gpt2")
  with pytest.raises(ValueError, match="t5_path"):
    tokenizer.get_tokenizer("t5")


def _corpus(n=50, seed=0):
  r = random.Random(seed)
  colors, shapes = ["red", "green", "blue", "yellow", "white"], ["circle", "square", "triangle"]
  moves = ["moves left", "moves right", "bounces", "falls down", "spins slowly", "grows"]
  return [f"a {r.choice(colors)} {r.choice(shapes)} {r.choice(moves)}" for _ in range(n)]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
  """A T5-like directory: a tiny spiece.model (T5's special ids) and a config.json."""
  d = tmp_path_factory.mktemp("t5")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=64, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
      minloglevel=2)
  (d / "spiece.model").write_bytes(model.getvalue())
  (d / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 64}))
  return d


def test_sentencepiece_round_trip_eos_padding(t5_dir):
  tok = tokenizer.get_tokenizer("t5", t5_dir)
  assert isinstance(tok, tokenizer.SentencePieceTokenizer)
  assert tok.pad_id == 0 and tok.eos_id == 1 and 8 < tok.vocab_size <= 64
  texts = ["a red circle moves left", "a blue square bounces", ""]
  ids, mask = tok.encode(texts, max_len=32)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (3, 32)
  assert ids.max() < tok.vocab_size
  assert tok.decode(ids) == texts
  n = mask.sum(1)
  for i in range(3):
    assert ids[i, n[i] - 1] == tok.eos_id and (ids[i, n[i]:] == 0).all()
    assert mask[i, :n[i]].all() and not mask[i, n[i]:].any()
    assert tok.eos_id not in ids[i, :n[i] - 1] and 0 not in ids[i, :n[i]]
  np.testing.assert_array_equal(ids[2, :2], [tok.eos_id, 0])
  # Real vocabulary, not bytes: different ids, and fewer of them than characters.
  byte_ids, byte_mask = tokenizer.ByteTokenizer().encode(texts, max_len=32)
  assert not np.array_equal(ids, byte_ids) and n[0] < byte_mask[0].sum()
  # A str is one row; truncation keeps eos last.
  np.testing.assert_array_equal(tok.encode(texts[0], max_len=32)[0], ids[:1])
  short, smask = tok.encode(texts[:1], max_len=4)
  np.testing.assert_array_equal(short[0], list(ids[0, :3]) + [tok.eos_id])
  assert smask.all()
  # Picklable for grain workers.
  again = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(again.encode(texts, max_len=32)[0], ids)
  with pytest.raises(ValueError, match="max_len"):
    tok.encode("a", max_len=0)


def test_tokenizer_for_text_config(t5_dir, tmp_path):
  text = ml_collections.ConfigDict(dict(encoder="bundled", t5_path=""))
  assert isinstance(tokenizer.tokenizer_for_text_config(text), tokenizer.ByteTokenizer)
  text.encoder, text.t5_path = "t5", str(t5_dir)
  tok = tokenizer.tokenizer_for_text_config(ml_collections.ConfigDict(dict(text=text)))
  assert isinstance(tok, tokenizer.SentencePieceTokenizer)
  # tokenizer.model is accepted too
  (tmp_path / "tokenizer.model").write_bytes((t5_dir / "spiece.model").read_bytes())
  assert tokenizer.get_tokenizer("sentencepiece", tmp_path).vocab_size == tok.vocab_size
  # A T5 directory without a tokenizer is refused, naming the setting and the file.
  (tmp_path / "tokenizer.model").unlink()
  (tmp_path / "config.json").write_text((t5_dir / "config.json").read_text())
  text.t5_path = str(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"config\.text\.t5_path.*spiece\.model"):
    tokenizer.tokenizer_for_text_config(text)
  text.t5_path = ""
  with pytest.raises(ValueError, match=r"config\.text\.t5_path"):
    tokenizer.tokenizer_for_text_config(text)
  # A tokenizer larger than the T5 embedding table belongs to other weights.
  (tmp_path / "spiece.model").write_bytes((t5_dir / "spiece.model").read_bytes())
  (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 8}))
  with pytest.raises(ValueError, match="vocab_size=8"):
    tokenizer.get_tokenizer("t5", tmp_path)


def test_word_tokenizer_gives_each_word_one_id():
  from sora_jax.data.tokenizer import WordTokenizer, tokenizer_for_text_config
  tok = WordTokenizer()
  ids, mask = tok.encode(["A red circle, red!", "a RED square"], 8)
  red = tok.word_id("red")
  assert ids[0].tolist() == [1, tok.word_id("a"), red, tok.word_id("circle"), tok.word_id(","),
                             red, tok.word_id("!"), 2]
  assert ids[1, 2] == red and mask[1].tolist() == [True] * 5 + [False] * 3
  assert len({tok.word_id(w) for w in ("red", "blue", "circle", "square", "left")}) == 5
  assert tok.num_tokens("a red circle bounces") == 6
  cut, _ = tok.encode("one two three four five", 4)   # words cut so that bos and eos fit
  assert tok.decode(cut) == ["one two"] and cut[0, -1] == 2
  assert WordTokenizer().word_id("red") == red   # CRC-32: the same id in every process
  words = tokenizer_for_text_config({"encoder": "bundled", "tokenizer": "words",
                                     "word_buckets": 100})
  assert isinstance(words, WordTokenizer) and words.vocab_size == 103
  with pytest.raises(ValueError, match="text.tokenizer"):
    tokenizer_for_text_config({"encoder": "bundled", "tokenizer": "bpe"})
