"""Checks on a user's prompt before it reaches a tokenizer, and the built-in world's vocabulary.

`check_prompt_text(prompt, tokenizer, max_len)` turns the ways a prompt can go wrong into one clear
`PromptError` (a ValueError): not text, not valid UTF-8 (a `bytes` prompt that does not decode, or
a str with lone surrogates — how `sys.argv` carries a command line's non-UTF-8 bytes), empty, or
longer than the text encoder takes (`max_len` = config.text.max_len, specials included: bos + eos
for the byte tokenizer, eos for T5). With `on_long='warn'` a long prompt passes with a
`PromptTooLongWarning` saying how much of it is cut.

`unknown_words(prompt)` lists the words the procedural world's captions never use, so that a
front end can tell the user, in one line, that a model trained on the built-in world will not know
them (`vocabulary_notice`). The vocabulary is collected once (cached) from `sora_jax.data.world`:
its colours, shapes, shape words, motions, directions and sizes, and the words of a few thousand
generated captions in both styles (which covers every template's function words).
"""
from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Sequence

from sora_jax.data import tokenizer as tokenizer_lib


class PromptError(ValueError):
  """A prompt that cannot be used as given; the message says why and what to do."""


class PromptTooLongWarning(UserWarning):
  """A prompt longer than the text encoder takes: its tail is cut."""


_EXAMPLE = "a red circle bounces to the right"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode_error(data: bytes, start: int, what: str) -> PromptError:
  before = data[max(0, start - 24):start].decode("utf-8", "replace")
  return PromptError(
      f"prompt is not valid UTF-8: {what} at byte offset {start} (after {before!r}). Pass the "
      "prompt as UTF-8 text: check the terminal's or the file's encoding (e.g. LANG=C.UTF-8, or "
      "re-save the file as UTF-8)")


def prompt_as_text(prompt) -> str:
  """`prompt` as a str, or PromptError when it is not text or not valid UTF-8 (with the byte
  offset of the first bad byte)."""
  if isinstance(prompt, (bytes, bytearray)):
    data = bytes(prompt)
    try:
      return data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise _decode_error(data, e.start, f"byte 0x{data[e.start]:02x}") from None
  if not isinstance(prompt, str):
    raise PromptError(f"prompt must be text (str), got {type(prompt).__name__}: {prompt!r:.80}")
  m = _SURROGATE.search(prompt)
  if m is None:
    return prompt
  data = prompt[:m.start()].encode("utf-8")      # the prefix holds no surrogate
  code = ord(m.group())
  if 0xDC80 <= code <= 0xDCFF:                   # surrogateescape: the original byte
    what = f"byte 0x{code - 0xDC00:02x}"
  else:
    what = f"lone surrogate U+{code:04X} (no UTF-8 form)"
  raise _decode_error(data, len(data), what)


def _num_tokens(tokenizer, text: str) -> int:
  if hasattr(tokenizer, "num_tokens"):
    return int(tokenizer.num_tokens(text))
  _, mask = tokenizer.encode([text], 1 << 16)      # any tokenizer with the encode contract
  return int(mask.sum())


def _specials(tokenizer) -> str:
  return "bos and eos" if getattr(tokenizer, "bos_id", None) is not None else "eos"


def check_prompt_text(prompt, tokenizer, max_len: int, *, on_long: str = "error") -> str:
  """The prompt as the model should get it (a str, surrounding whitespace stripped), or
  PromptError: not text / not valid UTF-8 (with the byte offset) / empty or whitespace only /
  needs more than `max_len` tokens (config.text.max_len, specials counted). With
  on_long='warn' a long prompt is returned with a PromptTooLongWarning saying what is cut."""
  if on_long not in ("error", "warn"):
    raise ValueError(f"on_long={on_long!r} is not 'error' or 'warn'")
  text = prompt_as_text(prompt).strip()
  if not text:
    raise PromptError(f"prompt is {'empty' if not prompt else 'only whitespace'}: describe the "
                      f"video, e.g. {_EXAMPLE!r}")
  needed = _num_tokens(tokenizer, text)
  if needed <= max_len:
    return text
  cut = needed - max_len
  unit = "tokens (UTF-8 bytes)" if isinstance(tokenizer, tokenizer_lib.ByteTokenizer) else "tokens"
  head = (f"prompt needs {needed} {unit} with {_specials(tokenizer)}, but the text encoder takes "
          f"at most {max_len} (config.text.max_len)")
  if on_long == "error":
    raise PromptError(f"{head}: shorten it by {cut} {unit.split()[0]}, or raise "
                      "config.text.max_len and retrain")
  ids, _ = tokenizer.encode([text], max_len)
  kept = tokenizer.decode(ids)[0]
  dropped = f": the model sees {kept!r}, and {text[len(kept):]!r} is dropped" if (
      kept and text.startswith(kept)) else f"; the model sees {kept!r}"
  warnings.warn(f"{head}; the last {cut} {unit.split()[0]} are cut{dropped}",
                PromptTooLongWarning, stacklevel=2)
  return text


def check_prompts(prompts: str | Sequence, tokenizer, max_len: int, *,
                  on_long: str = "error") -> list[str]:
  """`check_prompt_text` over a prompt or a list; errors on a list name the prompt's index."""
  if isinstance(prompts, (str, bytes, bytearray)):
    return [check_prompt_text(prompts, tokenizer, max_len, on_long=on_long)]
  out = []
  for i, p in enumerate(prompts):
    try:
      out.append(check_prompt_text(p, tokenizer, max_len, on_long=on_long))
    except PromptError as e:
      raise PromptError(f"prompt {i}: {e}") from None
  return out


# --------------------------------------------------------------------------- vocabulary

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W\d_]+)*")
_NUM_SCENES = 1500      # x 2 styles = 3000 captions; the vocabulary saturates after ~250 scenes


def words(text: str) -> list[str]:
  """The words of `text` (runs of letters/digits; "don't" is one word), as written."""
  return _WORD.findall(tokenizer_lib.as_text(text))


def _words_of(values: Iterable) -> set[str]:
  out: set[str] = set()
  for v in values:
    if isinstance(v, str):
      out.update(w.lower() for w in words(v.replace("{d}", " ")))
    elif isinstance(v, dict):
      out |= _words_of(v.keys()) | _words_of(v.values())
    elif isinstance(v, (tuple, list, set, frozenset)):
      out |= _words_of(v)
  return out


@functools.lru_cache(maxsize=None)
def world_vocabulary() -> frozenset[str]:
  """Every (lower-case) word the built-in world's captions use; computed once (~1-2 s)."""
  from sora_jax.data import world  # pylint: disable=g-import-not-at-top
  from sora_jax.data.world import captions as world_captions  # pylint: disable=g-import-not-at-top
  vocab = _words_of([world.COLORS, world.SHAPES, world.SHAPE_WORDS, world.MOTIONS,
                     world.DIRECTIONS, world.SIZES, world_captions.DIRECTION_WORDS,
                     world_captions.MOTION_PHRASES])
  for i in range(_NUM_SCENES):
    # Every 4th scene from test_compositional: its held-out combos use the same words. The
    # '_shots' world: the full world's scenes, half with a shot cut its captions describe.
    scene = world.sample_scene(i, "test_compositional" if i % 4 == 0 else "train", "full_shots")
    for style in world.STYLES:
      vocab |= _words_of([world.caption(scene, style, seed=i)])
  return frozenset(vocab)


def unknown_words(prompt) -> list[str]:
  """Words of `prompt` the world's captions never use, as written, first occurrence first."""
  vocab, seen, out = world_vocabulary(), set(), []
  for w in words(prompt):
    key = w.lower()
    if key not in vocab and key not in seen:
      seen.add(key)
      out.append(w)
  return out


def vocabulary_notice(prompt) -> str | None:
  """One line for a model trained on the built-in world when the prompt has words its captions
  never use (None when every word is known)."""
  unknown = unknown_words(prompt)
  if not unknown:
    return None
  from sora_jax.data import world  # pylint: disable=g-import-not-at-top
  shown = ", ".join(repr(w) for w in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
  return (f"note: the built-in world's captions never use {shown}; a model trained only on it "
          f"knows colours ({', '.join(world.COLORS)}), shapes ({', '.join(world.SHAPES)}) and "
          f"motions ({', '.join(world.MOTIONS)})")
