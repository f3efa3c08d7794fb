"""Text -> token ids with a bundled byte-level tokenizer (no vocabulary file, no download).

Ids: 0 = pad, 1 = bos, 2 = eos, and UTF-8 byte `b` is id `b + 3`, so `vocab_size` is 259.
Every encoded caption is `[bos, bytes..., eos, pad...]`; when a caption is too long its bytes are
cut so that bos and eos still fit, and the mask marks the non-pad positions.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    if isinstance(texts, str):
      texts = [texts]
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
      body = np.frombuffer(str(text).encode("utf-8")[: max_len - 2], np.uint8)
      n = len(body)
      ids[i, 0] = self.bos_id
      ids[i, 1:n + 1] = body.astype(np.int32) + self.offset
      ids[i, n + 1] = self.eos_id
    return ids, ids != self.pad_id

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    """Inverse of `encode`: drops specials, stops at eos; a cut multi-byte char is dropped."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
      ids = ids[None]
    out = []
    for row in ids:
      row = row.tolist()
      if self.eos_id in row:
        row = row[: row.index(self.eos_id)]
      data = bytes(i - self.offset for i in row if self.offset <= i < self.vocab_size)
      out.append(data.decode("utf-8", errors="ignore"))
    return out


_TOKENIZERS = {"byte": ByteTokenizer}


def get_tokenizer(name: str = "byte") -> ByteTokenizer:
  """The tokenizer named by the config (only "byte" is bundled)."""
  if name not in _TOKENIZERS:
    raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(sorted(_TOKENIZERS))}")
  return _TOKENIZERS[name]()
