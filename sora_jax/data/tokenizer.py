"""Text -> token ids: the bundled encoder's byte-level or hashed-word tokenizer, or T5's
SentencePiece model from local files.

Byte ids: 0 = pad, 1 = bos, 2 = eos, and UTF-8 byte `b` is id `b + 3`, so `vocab_size` is 259.
Every encoded caption is `[bos, bytes..., eos, pad...]`; when a caption is too long its bytes are
cut so that bos and eos still fit, and the mask marks the non-pad positions.

SentencePiece (text.encoder='t5'): the `spiece.model` (or `tokenizer.model`) that sits next to the
T5 weights in `config.text.t5_path`. Like HF's T5Tokenizer: `[pieces..., eos, pad...]`, no bos,
pad id 0, pieces cut so that eos still fits. A frozen T5 must see its own vocabulary, so a T5 run
without that file is refused (`tokenizer_for_text_config`).

Neither tokenizer crashes on any text: `bytes` are taken as UTF-8, and a str holding lone
surrogates (how Python's `sys.argv` carries bytes of a command line that are not UTF-8) is encoded
back to those bytes (byte tokenizer) or to U+FFFD (SentencePiece). To refuse such a prompt with a
clear message instead, check it first: `sora_jax.data.prompts.check_prompt_text`.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence

import numpy as np


_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_ESCAPE = re.compile("[\ud800-\udc7f\udd00-\udfff]")   # surrogates surrogateescape never makes


def utf8_bytes(text: str | bytes) -> bytes:
  """The UTF-8 bytes of `text`, never raising: `bytes` pass through, surrogate escapes of a
  non-UTF-8 command line (U+DC80..U+DCFF) become their original bytes, other lone surrogates
  become U+FFFD."""
  if isinstance(text, (bytes, bytearray, memoryview)):
    return bytes(text)
  text = str(text)
  try:
    return text.encode("utf-8")
  except UnicodeEncodeError:
    return _NOT_ESCAPE.sub("\ufffd", text).encode("utf-8", "surrogateescape")


def as_text(text: str | bytes) -> str:
  """`text` as a str that encodes to UTF-8: undecodable bytes and lone surrogates become U+FFFD."""
  if isinstance(text, (bytes, bytearray, memoryview)):
    return bytes(text).decode("utf-8", "replace")
  text = str(text)
  return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _rows_before_eos(ids, eos_id: int) -> list[list[int]]:
  """Token rows ([L] or [N, L]) as lists, each cut at its first eos."""
  ids = np.asarray(ids)
  rows = (ids[None] if ids.ndim == 1 else ids).tolist()
  return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


def _batch(texts) -> list:
  return [texts] if isinstance(texts, (str, bytes, bytearray)) else list(texts)


class ByteTokenizer:
  """UTF-8 bytes shifted past three special ids."""

  pad_id = 0
  bos_id = 1
  eos_id = 2
  offset = 3
  vocab_size = 256 + offset

  def encode(self, texts: Sequence[str] | str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(ids int32 [N, max_len], mask bool [N, max_len])`; a str gives N = 1."""
    if max_len < 2:
      raise ValueError(f"max_len (data.text_len) must be >= 2 to hold bos and eos, got {max_len}")
    texts = _batch(texts)
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
      body = np.frombuffer(utf8_bytes(text)[: max_len - 2], np.uint8)
      n = len(body)
      ids[i, 0] = self.bos_id
      ids[i, 1:n + 1] = body.astype(np.int32) + self.offset
      ids[i, n + 1] = self.eos_id
    return ids, ids != self.pad_id

  def num_tokens(self, text: str | bytes) -> int:
    """Positions `text` needs, bos and eos included (`encode` cuts the bytes beyond max_len)."""
    return len(utf8_bytes(text)) + 2

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    """Inverse of `encode`: drops specials, stops at eos; a cut multi-byte char is dropped."""
    out = []
    for row in _rows_before_eos(ids, self.eos_id):
      data = bytes(i - self.offset for i in row if self.offset <= i < self.vocab_size)
      out.append(data.decode("utf-8", errors="ignore"))
    return out


T5_TOKENIZER_FILES = ("spiece.model", "tokenizer.model")   # HF T5 name first


class SentencePieceTokenizer:
  """A SentencePiece model encoded T5-style; picklable (grain workers copy it)."""

  pad_id = 0

  def __init__(self, model_file: str | os.PathLike):
    self.model_file = os.fspath(model_file)
    with open(self.model_file, "rb") as f:
      self._load(f.read())

  def _load(self, proto: bytes):
    try:
      import sentencepiece   # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("the T5 tokenizer needs the sentencepiece package: "
                        "pip install 'sentencepiece>=0.2'") from e
    self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    self.vocab_size = int(self._sp.get_piece_size())
    self.eos_id = int(self._sp.eos_id())
    if self.eos_id < 0:
      raise ValueError(f"SentencePiece model {self.model_file} defines no eos id; T5 appends "
                       "eos to every input (train it with eos_id=1 like T5's spiece.model)")

  def __getstate__(self):
    return {"model_file": self.model_file, "proto": self._sp.serialized_model_proto()}

  def __setstate__(self, state):
    self.model_file = state["model_file"]
    self._load(state["proto"])

  def encode(self, texts: Sequence[str] | str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(ids int32 [N, max_len], mask bool [N, max_len])`; a str gives N = 1."""
    if max_len < 1:
      raise ValueError(f"max_len (data.text_len) must be >= 1 to hold eos, got {max_len}")
    texts = _batch(texts)
    pieces = self._sp.encode([as_text(t) for t in texts], out_type=int)
    ids = np.full((len(texts), max_len), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_len), bool)
    for i, row in enumerate(pieces):
      row = list(row[: max_len - 1]) + [self.eos_id]
      ids[i, :len(row)] = row
      mask[i, :len(row)] = True      # by position: a real piece may share the pad id
    return ids, mask

  def num_tokens(self, text: str | bytes) -> int:
    """Positions `text` needs, eos included (`encode` cuts the pieces beyond max_len)."""
    return len(self._sp.encode(as_text(text), out_type=int)) + 1

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    """Inverse of `encode`: stops at eos, drops pad and other control pieces."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
      ids = ids[None]
    out = []
    for row in ids.tolist():
      if self.eos_id in row:
        row = row[: row.index(self.eos_id)]
      out.append(self._sp.decode([i for i in row if 0 <= i < self.vocab_size]))
    return out


def find_t5_tokenizer(path: str | os.PathLike) -> str:
  """The SentencePiece file in a T5 directory; FileNotFoundError naming config.text.t5_path."""
  path = os.fspath(path)
  for name in T5_TOKENIZER_FILES:
    if os.path.isfile(os.path.join(path, name)):
      return os.path.join(path, name)
  raise FileNotFoundError(
      f"config.text.t5_path={path!r} has no SentencePiece tokenizer: expected "
      f"{' or '.join(T5_TOKENIZER_FILES)} next to config.json and the weights (T5 must see its "
      "own vocabulary; the byte tokenizer's ids would be meaningless to it)")


def load_t5_tokenizer(path: str | os.PathLike) -> SentencePieceTokenizer:
  """SentencePiece tokenizer of the T5 directory `path`, checked against its config.json."""
  tok = SentencePieceTokenizer(find_t5_tokenizer(path))
  cfg_path = os.path.join(os.fspath(path), "config.json")
  if os.path.isfile(cfg_path):
    with open(cfg_path) as f:
      t5_vocab = json.load(f).get("vocab_size")
    if t5_vocab is not None and tok.vocab_size > int(t5_vocab):
      raise ValueError(
          f"config.text.t5_path={os.fspath(path)!r}: {os.path.basename(tok.model_file)} has "
          f"{tok.vocab_size} pieces but config.json vocab_size={t5_vocab}; the tokenizer does "
          "not belong to these weights")
  return tok


class WordTokenizer:
  """Lower-cased words and punctuation marks, each hashed (CRC-32) into one of `buckets` ids past
  the three special ids: `[bos, words..., eos, pad...]` like the byte tokenizer.

  For the bundled encoder trained from scratch: a word is one id with its own embedding from the
  first step, where bytes make the encoder learn to spell "red" before it can use it. Any text
  tokenizes (no vocabulary file; unseen words hash like seen ones); distinct words rarely share
  an id (the world's ~100 words in 8192 buckets: none do). Hashing is one-way, so `decode`
  gives back the words this tokenizer has encoded in this process, and `<id>` for others."""

  pad_id = 0
  bos_id = 1
  eos_id = 2
  offset = 3
  _WORD = re.compile(r"\w+|[^\w\s]")

  def __init__(self, buckets: int = 8192):
    if buckets < 1:
      raise ValueError(f"config.text.word_buckets={buckets} must be >= 1")
    self.buckets = int(buckets)
    self.vocab_size = self.buckets + self.offset
    self._seen: dict[int, str] = {}

  def words(self, text: str | bytes) -> list[str]:
    return self._WORD.findall(as_text(text).lower())

  def word_id(self, word: str) -> int:
    i = zlib.crc32(utf8_bytes(word)) % self.buckets + self.offset
    self._seen.setdefault(i, word)
    return i

  def encode(self, texts: Sequence[str] | str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(ids int32 [N, max_len], mask bool [N, max_len])`; words past max_len - 2 are
    cut so that bos and eos still fit."""
    if max_len < 2:
      raise ValueError(f"max_len (data.text_len) must be >= 2 to hold bos and eos, got {max_len}")
    texts = _batch(texts)
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
      body = [self.word_id(w) for w in self.words(text)[: max_len - 2]]
      ids[i, 0] = self.bos_id
      ids[i, 1:len(body) + 1] = body
      ids[i, len(body) + 1] = self.eos_id
    return ids, ids != self.pad_id

  def num_tokens(self, text: str | bytes) -> int:
    return len(self.words(text)) + 2

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    out = []
    for row in _rows_before_eos(ids, self.eos_id):
      out.append(" ".join(self._seen.get(i, f"<{i}>") for i in row if i >= self.offset))
    return out


Tokenizer = ByteTokenizer | WordTokenizer | SentencePieceTokenizer
_KINDS = {"byte": "byte", "bundled": "byte", "words": "words", "sentencepiece": "t5", "t5": "t5"}


def get_tokenizer(kind: str = "byte", path: str | os.PathLike | None = None) -> Tokenizer:
  """"byte"/"bundled": the byte tokenizer; "t5"/"sentencepiece": the model in directory `path`."""
  if kind not in _KINDS:
    raise ValueError(f"unknown tokenizer {kind!r}; known: {', '.join(sorted(_KINDS))}")
  if _KINDS[kind] == "byte":
    return ByteTokenizer()
  if _KINDS[kind] == "words":
    return WordTokenizer()
  if not path:
    raise ValueError(f"tokenizer {kind!r} needs the T5 directory (config.text.t5_path) holding "
                     f"{' or '.join(T5_TOKENIZER_FILES)}")
  return load_t5_tokenizer(path)


def tokenizer_for_text_config(text_cfg) -> Tokenizer:
  """The tokenizer for `config.text` (the whole config is accepted too): encoder='bundled' ->
  bytes; encoder='t5' -> SentencePiece from `text.t5_path` (raises when it has none)."""
  if "encoder" not in text_cfg and "text" in text_cfg:
    text_cfg = text_cfg["text"]
  encoder = text_cfg.get("encoder", "bundled")
  if encoder == "bundled":
    kind = text_cfg.get("tokenizer", "byte")
    if kind == "words":
      return WordTokenizer(int(text_cfg.get("word_buckets", 8192)))
    if kind != "byte":
      raise ValueError(f"config.text.tokenizer={kind!r} is not 'byte' or 'words'")
    return ByteTokenizer()
  if encoder == "t5":
    path = text_cfg.get("t5_path")
    if not path:
      raise ValueError("config.text.encoder='t5' needs config.text.t5_path: a local directory "
                       f"with config.json, model.safetensors and {T5_TOKENIZER_FILES[0]}")
    return load_t5_tokenizer(path)
  raise ValueError(f"config.text.encoder={encoder!r} is not 'bundled' or 't5'")
