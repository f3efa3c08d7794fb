"""Counterfactual captions: a world caption with one attribute of its primary object changed.

The held-out flow loss under the changed caption, against the true one, says how much of the
loss the model hangs on that attribute's words. Adherence needs samples and a 64-prompt
evaluator; this needs neither, and it separates attributes that sampling mixes up: the session-11
demo model scored direction 0.58 with a colour swap costing +280 % loss at t = 0.5 and a
direction swap +0.1 %, i.e. its 'direction' came from motion verbs (falls, grows) and never from
the words left / right / up / down / clockwise (benchmarks/RESULTS.md, issue 13, session 13).
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data.world.captions import SHAPE_WORDS
from sora_jax.data.world.vocab import COLORS, SHAPES
from sora_jax.eval import worlds
from sora_jax.models import text_encoder as text_lib

# Noise levels of the held-out loss: the same for every eval, so its curve compares steps.
T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
ATTRIBUTES = ("color", "shape", "direction")
_PAIRS = (("right", "left"), ("rightward", "leftward"), ("rightwards", "leftwards"),
          ("up", "down"), ("upward", "downward"), ("upwards", "downwards"),
          ("clockwise", "counterclockwise"))
_OPPOSITE = {a: b for p in _PAIRS for a, b in (p, p[::-1])} | dict.fromkeys(
    ("anticlockwise", "anti-clockwise", "counter-clockwise"), "clockwise")
# Motions whose direction words are free choices; a fall's "down" and a grow's size follow from
# the verb, so swapping them would ask for clips the world never renders.
_DIRECTED = ("bounce", "cross", "rotate", "orbit")


def _next(items, item):
  items = list(items)
  return items[(items.index(item) + 1) % len(items)]


def _word_map(attribute: str) -> dict[str, str]:
  if attribute == "color":
    return {c: _next(COLORS, c) for c in COLORS}
  if attribute == "shape":
    return {w: _next(SHAPES, s) for s, ws in SHAPE_WORDS.items() for w in ws}
  if attribute == "direction":
    return _OPPOSITE
  raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")


def swap(caption: str, attribute: str) -> str:
  """`caption` with the primary object's `attribute` ('color' | 'shape' | 'direction') changed:
  the next palette colour, the next shape, the opposite direction. Only the first sentence (the
  primary object's) changes; a caption without that attribute comes back unchanged."""
  mapping = _word_map(attribute)
  if attribute == "direction" and worlds.parse_caption(caption)["motion"] not in _DIRECTED:
    return caption
  first, *rest = re.split(r"(?<=[.!?;])(?=\s)", caption, maxsplit=1)
  words = sorted(mapping, key=len, reverse=True)
  m = re.search(r"(?<![\w-])(" + "|".join(map(re.escape, words)) + r")(?![\w-])", first,
                flags=re.IGNORECASE)
  if not m:
    return caption
  new = mapping[m.group(1).lower()]
  if m.group(1)[0].isupper():
    new = new.capitalize()
  return first[:m.start()] + new + first[m.end():] + "".join(rest)


def captionings(system, captions: list[str], world: bool) -> tuple[list[str], np.ndarray,
                                                                     np.ndarray]:
  """Names, tokens [K, B, L] and masks [K, B, L] of K captionings of the same clips: the true
  captions, the null caption (how much the text helps) and, for procedural-world captions,
  each attribute swapped (how much its words do)."""
  true = system.encode_prompts(captions)
  rows = {"true": true, "null": tuple(map(np.asarray, text_lib.null_text(*true[0].shape)))}
  if world:
    for attr in ATTRIBUTES:
      rows[attr] = system.encode_prompts([swap(c, attr) for c in captions])
  return (list(rows), np.stack([r[0] for r in rows.values()]),
          np.stack([r[1] for r in rows.values()]))


def encode_in_chunks(encode, video: np.ndarray, chunk: int) -> np.ndarray:
  """Latents of clips [B, ...] by `encode` (a chunk of them -> its latents), `chunk` clips
  at a time, the last chunk padded: one compiled encoder, and a VAE's activations for a few
  clips at once, however many the loss report reads."""
  out = []
  for i in range(0, len(video), chunk):
    part = video[i:i + chunk]
    pad = chunk - len(part)
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
    out.append(np.asarray(encode(part))[:chunk - pad])
  return np.concatenate(out)


def held_out_losses(system, t_grid: tuple[float, ...] = T_GRID):
  """fn(params, latents [B, ...], tokens [K, B, L], masks, rng) -> per-clip losses [K, T, B] on
  `t_grid`, the same noise under every captioning (wrap it in jit / SyncedJit)."""
  def fn(params, latents, tokens, masks, rng):
    b, k, n_t = latents.shape[0], tokens.shape[0], len(t_grid)

    def one(args):
      tok, mask, t = args
      batch = {"latents": latents, "tokens": tok, "text_mask": mask}
      return system.loss(params, batch, rng, t=jnp.full((b,), t))[1]["loss_per_example"]
    # lax.map: one traced forward run K x T times (an unrolled grid compiled 25 of them).
    grid = (jnp.repeat(tokens, n_t, axis=0), jnp.repeat(masks, n_t, axis=0),
            jnp.tile(jnp.asarray(t_grid, jnp.float32), k))
    return jax.lax.map(one, grid).reshape(k, n_t, b)
  return fn


def loss_report(names: list[str], tokens: np.ndarray, losses: np.ndarray,
                t_grid: tuple[float, ...] = T_GRID) -> dict[str, float]:
  """flow_loss (and per t), text_gain_pct (the loss the captions remove, in % of the null
  caption's) and <attribute>_gain_pct (the loss a swapped word adds, in % of the true captions',
  over the clips whose caption has that attribute)."""
  true = np.asarray(losses[0])
  out = {f"flow_loss_t{t:g}": float(v) for t, v in zip(t_grid, true.mean(-1))}
  out["flow_loss"] = float(true.mean())
  out["text_gain_pct"] = float(100.0 * (losses[1] - true).mean() / losses[1].mean())
  for k, name in enumerate(names[2:], start=2):
    changed = (tokens[k] != tokens[0]).any(-1)
    if changed.any():
      out[f"{name}_gain_pct"] = float(100.0 * (losses[k] - true)[:, changed].mean()
                                      / true[:, changed].mean())
  return out


def evaluate(system, params, latents, captions: list[str], world: bool = True
             ) -> dict[str, float]:
  """loss_report of `system` on encoded held-out clips and their captions (one process)."""
  names, tokens, masks = captionings(system, captions, world)
  losses = jax.jit(held_out_losses(system))(params, jnp.asarray(latents), jnp.asarray(tokens),
                                            jnp.asarray(masks), jax.random.key(0))
  return loss_report(names, tokens, np.asarray(losses))


def _swapped_value(attribute: str, value: str) -> str:
  if attribute == "color":
    return _next(COLORS, value)
  if attribute == "shape":
    return _next(SHAPES, value)
  return _OPPOSITE[value]


def ideal_loss(latents: np.ndarray, captions: list[str], keys: tuple[str, ...]) -> float:
  """The flow loss at t = 1 of predicting each clip by the leave-one-out mean of the clips that
  agree with it on `keys` (parsed caption fields; () = the mean clip, no caption): an upper
  bound on the best model's t = 1 loss, in the units of `latents` (pass the scaled ones)."""
  x = np.asarray(latents, np.float64).reshape(len(latents), -1)
  groups: dict = {}
  for i, c in enumerate(captions):
    p = worlds.parse_caption(c)
    groups.setdefault(tuple(p[k] for k in keys), []).append(i)
  err, n = 0.0, 0
  for idx in groups.values():
    if len(idx) < 2:
      continue
    loo = (x[idx].sum(0) - x[idx]) / (len(idx) - 1)
    err += float(np.mean((x[idx] - loo) ** 2, axis=1).sum())
    n += len(idx)
  return err / max(n, 1)


def ideal_costs(latents: np.ndarray, captions: list[str], attribute: str,
                within: tuple[str, ...] = ("motion",)) -> dict[str, float]:
  """What `attribute`'s words are worth at t = 1 to a model that knows the data's statistics.

  At pure noise the best flow prediction is the caption group's mean clip, so the loss there is
  the clips' squared distance to it. Groups are clips that agree on `within` and the attribute
  (pooled over the rest, so the figures are lower bounds), means are leave-one-out. Returns
  gain_pct (loss removed by knowing the attribute, in % of the loss knowing it) and swap_pct
  (loss added by the swapped word's group mean instead of the true one, like `swap`), over the
  clips whose caption has the attribute and whose swapped group is not empty; clips = how many.
  The model's own swap cost at t = 1 (`held_out_losses`) reads against swap_pct."""
  x = np.asarray(latents, np.float64).reshape(len(latents), -1)
  parsed = [worlds.parse_caption(c) for c in captions]

  def groups(keys):
    out: dict = {}
    for i, k in enumerate(keys):
      out.setdefault(k, []).append(i)
    return {k: (x[v].sum(0), len(v)) for k, v in out.items()}

  base_keys = [tuple(p[k] for k in within) for p in parsed]
  keys = [b + (p[attribute],) for b, p in zip(base_keys, parsed)]
  full, base = groups(keys), groups(base_keys)
  err_true = err_base = err_swap = 0.0
  n = 0
  for i, p in enumerate(parsed):
    value = p[attribute]
    if value is None or (attribute == "direction" and p["motion"] not in _DIRECTED):
      continue
    other = full.get(base_keys[i] + (_swapped_value(attribute, value),))
    (s, m), (sb, mb) = full[keys[i]], base[base_keys[i]]
    if other is None or m < 2:
      continue
    err_true += np.mean((x[i] - (s - x[i]) / (m - 1)) ** 2)
    err_base += np.mean((x[i] - (sb - x[i]) / (mb - 1)) ** 2)
    err_swap += np.mean((x[i] - other[0] / other[1]) ** 2)
    n += 1
  if not n:
    return {"clips": 0, "gain_pct": float("nan"), "swap_pct": float("nan")}
  return {"clips": n, "gain_pct": float(100.0 * (err_base - err_true) / err_true),
          "swap_pct": float(100.0 * (err_swap - err_true) / err_true)}
