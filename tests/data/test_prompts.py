"""Prompt checks: bad text gets a clear PromptError (never a tokenizer crash), long prompts are
refused or cut with a warning that says how much, and words the built-in world never uses are
listed."""
import io
import os
import warnings

import pytest
import sentencepiece as spm

from sora_jax.data import prompts, tokenizer, world

BYTE = tokenizer.ByteTokenizer()


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory):
  """A tiny T5-style SentencePiece model (pad 0, eos 1, no bos)."""
  model = io.BytesIO()
  corpus = [f"a {c} {s} moves left" for c in world.COLORS for s in world.SHAPES]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus), model_writer=model, vocab_size=48, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
      minloglevel=2)
  path = tmp_path_factory.mktemp("t5") / "spiece.model"
  path.write_bytes(model.getvalue())
  return tokenizer.SentencePieceTokenizer(path)


def test_non_utf8_prompts_are_refused_with_the_byte_offset():
  from_argv = os.fsdecode(b"a red caf\xe9 ball")      # how sys.argv carries a Latin-1 argument
  for bad, byte, offset in [(from_argv, "0xe9", 9), (b"a \xffball", "0xff", 2)]:
    with pytest.raises(prompts.PromptError,
                       match=f"not valid UTF-8: byte {byte} at byte offset {offset}"):
      prompts.check_prompt_text(bad, BYTE, 64)
  with pytest.raises(ValueError, match=r"lone surrogate U\+D800 .*at byte offset 4"):
    prompts.check_prompt_text("ab\u00e9\ud800", BYTE, 64)    # é is 2 bytes: offset 4
  with pytest.raises(prompts.PromptError, match="must be text.*int"):
    prompts.check_prompt_text(7, BYTE, 64)
  assert prompts.check_prompt_text("caf\u00e9".encode(), BYTE, 64) == "caf\u00e9"  # good bytes


def test_tokenizers_never_crash_on_undecodable_text(sp_tok):
  from_argv = os.fsdecode(b"a red caf\xe9 ball")
  ids, mask = BYTE.encode(from_argv, 32)                  # crashed with UnicodeEncodeError
  body = ids[0, 1:mask[0].sum() - 1] - BYTE.offset
  assert bytes(body.tolist()) == b"a red caf\xe9 ball"      # the command line's own bytes
  assert BYTE.encode([b"ab", "x\ud800"], 8)[0].shape == (2, 8)
  ids, mask = sp_tok.encode([from_argv, b"a \xff", "ok"], 16)   # crashed with a TypeError
  assert mask.sum(1).min() >= 2 and ids.max() < sp_tok.vocab_size


def test_empty_and_whitespace_prompts_are_refused():
  for bad, what in [("", "empty"), (b"", "empty"), ("  \t\n", "only whitespace")]:
    with pytest.raises(prompts.PromptError, match=f"prompt is {what}"):
      prompts.check_prompt_text(bad, BYTE, 64)
  assert prompts.check_prompt_text("  a red star\n", BYTE, 64) == "a red star"
  with pytest.raises(prompts.PromptError, match="prompt 1: prompt is empty"):
    prompts.check_prompts(["a red star", ""], BYTE, 64)


def test_long_prompts_error_or_warn_with_what_is_cut(sp_tok):
  text = "a red circle bounces to the right"            # 33 bytes -> 35 with bos and eos
  assert prompts.check_prompt_text(text, BYTE, 35) == text
  with pytest.raises(prompts.PromptError, match=r"needs 35 .* at most 34 .*by 1 tokens"):
    prompts.check_prompt_text(text, BYTE, 34)
  cut = r"last 10 tokens are cut.*sees 'a red circle bounces to'.*' the right' is dropped"
  with pytest.warns(prompts.PromptTooLongWarning, match=cut):
    assert prompts.check_prompt_text(text, BYTE, 25, on_long="warn") == text
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    prompts.check_prompt_text(text, BYTE, 35, on_long="warn")   # fits: no warning
  # T5 counts eos (no bos): n pieces need n + 1 positions.
  n = len(sp_tok.encode(text, 64)[1][0].nonzero()[0]) - 1
  assert sp_tok.num_tokens(text) == n + 1
  assert prompts.check_prompt_text(text, sp_tok, n + 1) == text
  with pytest.raises(prompts.PromptError, match=rf"needs {n + 1} tokens with eos.*at most {n}"):
    prompts.check_prompt_text(text, sp_tok, n)
  with pytest.raises(ValueError, match="on_long"):
    prompts.check_prompt_text(text, BYTE, 64, on_long="cut")


def test_unknown_words_against_the_world_vocabulary():
  vocab = prompts.world_vocabulary()
  for w in [*world.COLORS, *world.SHAPES, *world.MOTIONS, "ball", "box", "anticlockwise", "small",
            "video", "the", "pillar", "camera", "backdrop"]:
    assert w in vocab, w
  assert prompts.world_vocabulary() is vocab                       # cached
  scene = world.sample_scene(123456, "validation")                 # outside the scenes it read
  for style in world.STYLES:
    assert prompts.unknown_words(world.caption(scene, style, seed=7)) == []
  assert prompts.unknown_words("A purple Dog jumps over the red dog") == ["purple", "Dog", "jumps",
                                                                          "over"]
  assert prompts.vocabulary_notice("a red ball bounces to the right") is None
  note = prompts.vocabulary_notice("a purple dog")
  assert "'purple', 'dog'" in note and "\n" not in note and "magenta" in note
