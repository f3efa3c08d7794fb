"""Prompt policy and output hooks: refuse prompts, and generated frames, that break a policy.

`check_prompt(prompt, classifier)` raises `PromptRefused` when `classifier.classify(prompt)` says
no; any object with `classify(prompt) -> Verdict` is a `PromptClassifier`, and
`load_classifier(spec)` takes '' (the bundled policy), a policy JSON path or 'module:attr'. The
default `PolicyFilter` reads `categories` (a `reason`, blocked `terms`, regex `patterns`) and
`allow` phrases that are never blocked: a modest keyword baseline, not a content moderator.

Matching sees through simple evasions: NFKC, case, accents, Cyrillic/Greek homoglyphs, leetspeak
(k1ll, $ex), zero-width characters, letters spelt out (k.i.l.l, k i l l) and stretched (kiiill).
Terms match whole words (plus -s/-ed/-ing/-er), so 'therapist' never matches 'rapist'; only a run
of letters spelt out one by one is searched inside. Patterns search the normalised text (single
spaces, no punctuation) with each literal letter read as c+ (`stretchy`): 'teen' matches
'teeeen', never 'ten'. `run_frame_hooks` calls `FrameHook`s on the decoded uint8 frames before
they are written and raises `FramesRefused`. Both errors carry `exit_code` = `EXIT_REFUSED`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import json
import os
import pathlib
import re
import unicodedata
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

EXIT_REFUSED = 3
DEFAULT_POLICY = pathlib.Path(__file__).resolve().parent / "assets" / "safety" / "policy.json"


@dataclasses.dataclass(frozen=True)
class Verdict:
  allowed: bool
  reason: str = ""
  matched: str = ""
  category: str = ""


class PromptRefused(Exception):
  """The prompt breaks the policy: `reason`, `category`, and `matched` (the normalised policy
  term, or the normalised prompt text a policy pattern matched)."""
  exit_code = EXIT_REFUSED

  def __init__(self, reason: str, matched: str = "", category: str = ""):
    self.reason, self.matched, self.category = reason, matched, category
    super().__init__(f"refused ({category or 'policy'}): {reason}"
                     + (f" [matched {matched!r}]" if matched else ""))


class FramesRefused(PromptRefused):
  """A frame hook refused the generated video (same exit code as a refused prompt)."""


@runtime_checkable
class PromptClassifier(Protocol):
  def classify(self, prompt: str) -> Verdict: ...


@runtime_checkable
class FrameHook(Protocol):
  def __call__(self, frames: np.ndarray, prompt: str) -> Verdict: ...


# ---------------------------------------------------------------- normalisation
# Cyrillic and Greek letters that look Latin (lower case: text is case-folded first).
_CONFUSABLES = str.maketrans("авеёһніїјкӏмоԛгѕтухԝсԁьп" "αβεηικνορτυχγωμςϲϳ",
                             "abeehhiijklmoqrstyxwcdbn" "abenikvoptuxywuscj")
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
         "$": "s", "!": "i", "+": "t", "€": "e"}
_SYMBOLS = "@$!+|€"           # leet characters that are not alphanumeric
_REPEAT = re.compile(r"(.)\1+")
_SUFFIXES = ("", "s", "es", "d", "ed", "ing", "er", "ers")
_HOLE = "~"                    # stands in for allowed phrases in the normalised text


@functools.lru_cache(maxsize=1 << 16)
def _collapse(s: str) -> str:
  return _REPEAT.sub(r"\1", s)


def _fold(text: str) -> str:
  """NFKC, drop zero-width/format characters and accents, case-fold, map homoglyphs to Latin."""
  if text.isascii():
    return text.lower()
  text = unicodedata.normalize("NFKC", text)
  text = "".join(c for c in text if unicodedata.category(c) != "Cf").casefold()
  text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
  return unicodedata.normalize("NFC", text).translate(_CONFUSABLES)


_LEET_AS = {one: str.maketrans({**_LEET, "1": one, "|": one}) for one in "il"}
_ALPHA = re.compile(r"[^\W\d_]")
_WORD = {"sep": re.compile(r"[^\W_]+"), "sym": re.compile(r"(?:[^\W_]|[@$!+|€])+")}
_NOT_WORD = {"sep": re.compile(r"[\W_]+"), "sym": re.compile(r"(?:(?![@$!+|€])[\W_])+")}


@functools.lru_cache(maxsize=1 << 16)
def _leet(token: str, one: str) -> str:
  """Leetspeak to letters, in tokens that hold a letter: '1984' and '3' stay numbers."""
  return token.translate(_LEET_AS[one]) if _ALPHA.search(token) else token


def _views(prompt: str) -> list[list[tuple[str, bool]]]:
  """Token lists, one per reading of the prompt: (token, spelt_out) pairs.

  Readings: split on every separator or on whitespace only (squashing 'k.ill' to 'kill'); leet
  symbols read as letters, stripped at word edges or as separators; '1' and '|' as i or l.
  A run of >= 3 one-character tokens ('k i l l') is joined into one token flagged spelt_out.
  """
  text = _fold(prompt)
  views: dict[tuple, None] = {}
  ones = "il" if ("1" in text or "|" in text) else "i"
  for split, mode in itertools.product(("any", "space"), ("strip", "letter", "sep")):
    kind = "sep" if mode == "sep" else "sym"
    if split == "any":
      raw = _WORD[kind].findall(text)
    else:
      raw = [_NOT_WORD[kind].sub("", chunk) for chunk in text.split()]
    if mode == "strip":
      raw = [t.strip(_SYMBOLS) for t in raw]
    raw = [t for t in raw if t]
    for one in ones:
      toks: list[tuple[str, bool]] = []
      for single, group in itertools.groupby(raw, key=lambda t: len(t) == 1):
        group = list(group)
        if single and len(group) >= 3:
          toks.append((_leet("".join(group), one), True))
        else:
          toks.extend((_leet(t, one), False) for t in group)
      views[tuple(toks)] = None
  return [list(v) for v in views]


def normalize(prompt: str) -> str:
  """The canonical normalised reading of a prompt (for debugging a policy)."""
  return " ".join(t for t, _ in _views(prompt)[0]) if prompt.strip() else ""


# ---------------------------------------------------------------- the JSON policy filter
@functools.lru_cache(maxsize=1 << 16)
def _counts(word: str) -> tuple[int, ...]:
  return tuple(len(list(g)) for _, g in itertools.groupby(word))


def _stretched(token: str, form: str) -> bool:
  """Is `token` `form` with letters repeated, never fewer ('kiiill' is 'kill'; 'ten' is not
  'teen')? Both must have the same collapsed spelling."""
  return all(a >= b for a, b in zip(_counts(token), _counts(form)))


@functools.lru_cache(maxsize=1024)
def _stretch_re(form: str) -> re.Pattern:
  return re.compile("".join(f"{re.escape(c)}{{{len(list(g))},}}"
                            for c, g in itertools.groupby(form)))


_GROUP = re.compile(r"\(\?(P?<[A-Za-z_]\w*>|P=\w+\)|[=!:]|<[=!]|[aiLmsux-]*[:)]|#[^)]*\))")


def stretchy(pattern: str) -> str:
  """A policy regex with every literal letter c made c+ (unless it already has a quantifier)."""
  out, i, n = [], 0, len(pattern)
  while i < n:
    c = pattern[i]
    if c == "\\":
      j = i + 2
    elif c == "[":                                 # copy a character class verbatim
      j = i + 1 + (pattern[i + 1:i + 2] == "^")
      j += pattern[j:j + 1] == "]"
      while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
      j += 1
    elif c == "{":
      j = (pattern.find("}", i) + 1) or n
    elif (m := _GROUP.match(pattern, i)):
      j = m.end()
    else:
      quantified = pattern[i + 1:i + 2] in ("*", "+", "?", "{")
      out.append(c + "+" if c.isalpha() and not quantified else c)
      i += 1
      continue
    out.append(pattern[i:j])
    i = j
  return "".join(out)


class _Terms:
  """Whole-word phrase matcher (stretched letters and -s/-ed/-ing/-er endings allowed); each
  phrase carries a tag (its category) that `find` hands back."""

  def __init__(self, phrases: Iterable[tuple[str, str]]):
    self.forms: dict[str, list[tuple[str, str, str]]] = {}   # collapsed joined form -> ...
    self.multi: dict[str, list[tuple[list[str], list[str], str, str]]] = {}
    for phrase, tag in phrases:
      words = re.findall(r"[^\W\d_]+", _fold(phrase))
      if not words:
        raise ValueError(f"safety policy: term {phrase!r} has no letters")
      name, last = " ".join(words), words[-1]
      ends = sorted({last + s for s in _SUFFIXES} | (
          {last[:-1] + s for s in ("ed", "ing", "er", "ers")} if last.endswith("e") else set()))
      for e in ends:                               # also the joined spelling: 'childporn'
        joined = "".join(words[:-1]) + e
        self.forms.setdefault(_collapse(joined), []).append((joined, name, tag))
      if len(words) > 1:
        self.multi.setdefault(_collapse(words[0]), []).append((words[:-1], ends, name, tag))

  def find(self, toks: list[tuple[str, bool]], inside_spelt: bool = True
           ) -> tuple[str, str, int, int] | None:
    """(phrase, tag, start, stop) of the first match in a token list."""
    def same(tok, word):
      return _collapse(tok) == _collapse(word) and _stretched(tok, word)

    for i, (tok, spelt) in enumerate(toks):
      col = _collapse(tok)
      for form, name, tag in self.forms.get(col, ()):
        if _stretched(tok, form):
          return name, tag, i, i + 1
      if spelt and inside_spelt:                   # inside a spelt-out run: substrings count
        for key, entries in self.forms.items():
          for form, name, tag in entries if len(key) >= 3 and key in col else ():
            if _stretch_re(form).search(tok):
              return name, tag, i, i + 1
      for heads, ends, name, tag in self.multi.get(col, ()):
        k = len(heads)
        if (i + k < len(toks) and all(same(t, w) for w, (t, _) in zip(heads, toks[i:])) and
            any(same(toks[i + k][0], e) for e in ends)):
          return name, tag, i, i + k + 1
    return None


class PolicyFilter:
  """The default classifier: a JSON policy of blocked terms and patterns per category.

  Verdict.matched is the normalised policy term that matched, or for a pattern the normalised
  prompt text it matched.
  """

  def __init__(self, policy_path: str | os.PathLike | None = None, policy: dict | None = None):
    self.path = None if policy is not None else pathlib.Path(policy_path or DEFAULT_POLICY)
    if policy is None:
      try:
        policy = json.loads(self.path.read_text(encoding="utf-8"))
      except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"safety policy {self.path} could not be read: {e}") from e
    where = f"safety policy {self.path or '(dict)'}"
    unknown = set(policy) - {"version", "description", "allow", "categories"}
    if unknown or not isinstance(policy.get("categories"), dict):
      raise ValueError(f"{where}: needs a 'categories' object; unknown keys {sorted(unknown)}")
    self.reasons: dict[str, str] = {}
    self.patterns: list[tuple[str, re.Pattern]] = []
    terms = []
    for name, cat in policy["categories"].items():
      bad = set(cat) - {"reason", "terms", "patterns"}
      if bad:
        raise ValueError(f"{where}: category {name!r} has unknown keys {sorted(bad)}")
      self.reasons[name] = cat.get("reason", name.replace("_", " "))
      terms += [(t, name) for t in cat.get("terms", [])]
      for p in cat.get("patterns", []):
        try:
          self.patterns.append((name, re.compile(stretchy(p), re.IGNORECASE)))
        except re.error as e:
          raise ValueError(f"{where}: category {name!r} pattern {p!r}: {e}") from e
    self.terms = _Terms(terms)
    self.allow = _Terms((a, "allow") for a in policy.get("allow", []))

  @property
  def categories(self) -> tuple[str, ...]:
    return tuple(self.reasons)

  def classify(self, prompt: str) -> Verdict:
    if not isinstance(prompt, str):
      raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    texts = {}
    for toks in _views(prompt):
      while (hit := self.allow.find(toks, False)) is not None:   # allowed phrases are cut out
        toks = toks[:hit[2]] + [(_HOLE, False)] + toks[hit[3]:]
      if (hit := self.terms.find(toks)) is not None:
        return Verdict(False, self.reasons[hit[1]], hit[0], hit[1])
      texts[" ".join(t for t, _ in toks)] = None
    for name, rx in self.patterns:
      for text in texts:
        if (m := rx.search(text)) is not None:
          return Verdict(False, self.reasons[name], m.group(0), name)
    return Verdict(True)


@functools.lru_cache(maxsize=None)
def default_classifier() -> PolicyFilter:
  return PolicyFilter()


def check_prompt(prompt: str | Iterable[str], classifier: PromptClassifier | None = None
                 ) -> None:
  """Raise `PromptRefused` unless the classifier (default: the bundled policy) allows `prompt`
  (or every prompt of a list)."""
  for p in [prompt] if isinstance(prompt, str) else prompt:
    verdict = (classifier or default_classifier()).classify(p)
    if not verdict.allowed:
      raise PromptRefused(verdict.reason or "the prompt breaks the content policy",
                          verdict.matched, verdict.category)


def _import(spec: str) -> Any:
  module, _, attr = spec.partition(":")
  obj = importlib.import_module(module)
  for part in attr.split("."):
    obj = getattr(obj, part)
  return obj


_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_classifier(spec: str | None = "") -> PromptClassifier:
  """'' -> the bundled policy; a policy JSON path; or 'module:attr' naming a classifier class
  (called with no arguments), a factory, or an instance with `classify(prompt) -> Verdict`."""
  if not spec:
    return default_classifier()
  if os.path.exists(spec) or spec.endswith(".json"):
    return PolicyFilter(spec)
  if not _SPEC.match(spec):
    raise ValueError(f"safety classifier {spec!r}: expected '', a policy .json path or "
                     "'module:attr'")
  obj = _import(spec)
  if isinstance(obj, type) or (callable(obj) and not isinstance(obj, PromptClassifier)):
    obj = obj()                                    # a class or a factory
  if not isinstance(obj, PromptClassifier):
    raise TypeError(f"safety classifier {spec!r} has no classify(prompt) -> Verdict method")
  return obj


# ---------------------------------------------------------------- frame hooks
def load_frame_hook(spec: str) -> FrameHook:
  """'module:attr' naming a hook class (called with no arguments) or a hook callable."""
  if not _SPEC.match(spec or ""):
    raise ValueError(f"frame hook {spec!r}: expected 'module:attr'")
  obj = _import(spec)
  return obj() if isinstance(obj, type) else obj


def run_frame_hooks(frames: np.ndarray, prompt: str, hooks: Iterable[FrameHook]) -> None:
  """Call each hook on the decoded frames ([T, H, W, C] or [B, T, H, W, C]); the first refusal
  raises `FramesRefused`, naming the hook in `.matched` unless the hook named something."""
  for hook in hooks:
    verdict = hook(frames, prompt)
    if not verdict.allowed:
      name = getattr(hook, "__name__", type(hook).__name__)
      raise FramesRefused(verdict.reason or f"frame hook {name} refused the video",
                          verdict.matched or name, verdict.category or "frames")


@dataclasses.dataclass
class NonFiniteOrBlankHook:
  """Test/demo hook, not a content check: refuses a video whose every frame is one flat colour
  (the symptom of a broken or diverged model) or, for float frames, holds NaN/inf.

  `tolerance` is the largest per-channel spread, in uint8 levels, a frame may have and still
  count as flat (float frames are taken to be in [0, 1]).
  """
  tolerance: float = 2.0

  def __call__(self, frames: np.ndarray, prompt: str = "") -> Verdict:
    x = np.asarray(frames)
    if x.size == 0:
      return Verdict(False, "the video has no frames", "empty", "frames")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
      return Verdict(False, "the video holds NaN or inf values", "non-finite", "frames")
    x = x.reshape(-1, *x.shape[-3:]) if x.ndim >= 4 else x[None]   # [N, H, W, C]
    scale = 255.0 if x.dtype.kind == "f" else 1.0
    spread = float((x.max(axis=(1, 2)).astype(np.float64) - x.min(axis=(1, 2))).max()) * scale
    if spread <= self.tolerance:
      return Verdict(False, f"every frame is one flat colour (spread {spread:.1f} levels): the "
                     "model output looks broken", "blank", "frames")
    return Verdict(True)
