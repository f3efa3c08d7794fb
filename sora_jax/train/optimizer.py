"""The optimizer from config: learning-rate schedule, gradient clipping, AdamW or Muon.

    tx, schedule = make_optimizer(config.optim, total_steps, abstract_boxed_params,
                                  players=("vae", "disc"))

Everything that depends on *which* parameter a leaf is (decay or not, Muon or AdamW, how a
kernel is read as a matrix) is decided ONCE here, from the logical axis names of the boxed
(nn.Partitioned / nn.LogicallyPartitioned) parameter tree, and baked into the transformation as
static pytrees. Deciding it from the arrays at update time would be wrong: the train step sees
unboxed arrays, and under `model.scan_layers=True` every block's bias or norm scale is stacked
into a 2-D [layers, d] array that looks like a matrix.

The static trees (`decay_mask`, `muon_dimension_numbers`) have the structure of the UNBOXED
params. optax maps them as a *prefix* of the tree it is given, so the same transformation serves
`tx.init(boxed_params)` (state.make_init_fn: moments inherit the boxes and their shardings) and
`tx.update(grads, opt_state, params)` on plain arrays (the train step) or on boxed trees.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

from sora_jax.train import muon as gram_muon

OPTIMIZERS = ("adamw", "muon")
# What makes a leaf a matrix (decayed; orthogonalised by Muon) rather than a vector or a table:
#  * stacked (scanned) 'layers' axes are a batch of matrices, never a row or column space;
#  * lookup tables ('vocab', 'classes' axes) are rows picked by an index, not a linear map;
#  * the parameter's own name: biases and norm scales of any shape (a q/k/v bias is [heads, kv])
#    and learned tables (nn.Embed's 'embedding', 'pos_embed', 'label_embed', T5's 'rel_bias').
BATCH_AXES = ("layers",)
TABLE_AXES = ("vocab", "classes")
NOT_A_MATRIX = re.compile(r"(^|_)(bias|scale|embed|embedding)$")


def lr_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  warmup = int(optim_cfg.warmup_steps)
  if optim_cfg.schedule == "constant":
    return optax.linear_schedule(0.0, optim_cfg.lr, max(warmup, 1)) if warmup else \
        optax.constant_schedule(optim_cfg.lr)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


# -- per-leaf decisions from logical names ----------------------------------------------------

def _is_box(x) -> bool:
  return isinstance(x, nn.meta.AxisMetadata)


def _shape_and_names(x) -> tuple[tuple[int, ...], tuple[Any, ...] | None]:
  value = x.unbox(apply_constraint=False) if _is_box(x) else x
  shape = tuple(getattr(value, "shape", ()))
  names = getattr(x, "names", None) if _is_box(x) else None
  return shape, (tuple(names) if names is not None else None)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _matrix_axes(path, x) -> tuple[int, ...] | None:
  """The axes that form a matrix (all but scanned-layer axes), or None when the leaf is not a
  matrix (see decay_mask for the rule)."""
  if path and NOT_A_MATRIX.search(_key_name(path[-1])):
    return None
  shape, names = _shape_and_names(x)
  if names is None:
    names = (None,) * len(shape)
  if any(n in TABLE_AXES for n in names):
    return None
  axes = tuple(i for i, n in enumerate(names) if n not in BATCH_AXES)
  return axes if len(axes) >= 2 else None


def _map_leaves(fn, params: Any) -> Any:
  """fn(path, leaf) on each (boxed or plain) leaf; the result has the UNBOXED tree structure."""
  return jax.tree_util.tree_map_with_path(fn, params, is_leaf=_is_box)


def decay_mask(params: Any) -> Any:
  """Static bool tree (unboxed structure): True where weight decay applies.

  Rule: a leaf is decayed iff it is a matrix: ignoring the scanned 'layers' axis it has at least
  two axes, none of them a lookup-table axis ('vocab', 'classes'), and its parameter name is not
  a bias, scale or embedding (`NOT_A_MATRIX`: 'bias', 'scale', 'embedding', '*_bias',
  '*_embed'). So dense kernels (multi-axis ones like [embed, heads, kv] too) and conv kernels
  [kt, kh, kw, cin, cout] are decayed; biases (also [heads, kv] ones), norm scales, token, class
  and position embeddings and relative-position tables are not, whether or not the blocks are
  scanned. Leaves without logical names count all their axes (`ndim > 1`, so pass the BOXED
  params: unboxed, a scanned [layers, d] bias not named 'bias' would look like a matrix). This is
  exactly the set Muon orthogonalises.
  """
  return _map_leaves(lambda path, x: _matrix_axes(path, x) is not None, params)


def muon_dimension_numbers(params: Any) -> Any:
  """Per-leaf MuonDimensionNumbers (None = AdamW), unboxed structure, from logical names.

  A kernel's last (non-layer) axis is its output; every other non-layer axis is reduced over (a
  conv kernel [kt, kh, kw, cin, cout] is the matrix [kt*kh*kw*cin, cout]); scanned-layer axes
  are batch axes, so each layer's matrix is orthogonalised on its own. Leaves that are not
  matrices by decay_mask's rule (biases, norm scales, embedding tables) get None.
  """
  def dims(path, x):
    axes = _matrix_axes(path, x)
    if axes is None:
      return None
    return MuonDimensionNumbers(reduction_axis=axes[:-1], output_axis=axes[-1])

  return _map_leaves(dims, params)


# -- clipping -----------------------------------------------------------------------------------

def clip_by_player_norm(max_norm: float,
                        players: Sequence[str]) -> optax.GradientTransformation:
  """Clips each listed top-level subtree (a 'player': the VAE, its critic) by its OWN global
  norm, exactly as optax.clip_by_global_norm would clip it alone; the top-level keys not listed
  are clipped together as one more group. One player's large gradients then never shrink
  another's updates. Stateless; only global norms and elementwise scaling (sharding-friendly).
  """
  players = tuple(players)
  clip = optax.clip_by_global_norm(max_norm)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    if not isinstance(updates, Mapping):
      raise TypeError(f"players={players} needs a dict of top-level params, got "
                      f"{type(updates).__name__}")
    missing = [k for k in players if k not in updates]
    if missing:
      raise KeyError(f"players {missing} are not top-level params keys {list(updates)}")
    groups = [(k,) for k in players] + [tuple(k for k in updates if k not in players)]
    out = {}
    for keys in groups:
      if keys:
        clipped, _ = clip.update({k: updates[k] for k in keys}, optax.EmptyState())
        out.update(clipped)
    out = {k: out[k] for k in updates}
    return (out if type(updates) is dict else type(updates)(out)), state

  return optax.GradientTransformation(init_fn, update_fn)


# -- the optimizer ------------------------------------------------------------------------------

def make_optimizer(optim_cfg, total_steps: int, params: Any,
                   players: Sequence[str] | None = None,
                   frozen: Sequence[tuple[str, ...]] = ()) -> tuple[optax.GradientTransformation,
                                                                    optax.Schedule]:
  """(tx, schedule) for `params`, the boxed parameter tree (abstract from jax.eval_shape is
  enough: only shapes and logical names are read).

  optim.name: 'adamw' (default) or 'muon' (Newton-Schulz orthogonalised momentum for every
  matrix and conv kernel at lr `optim.muon_lr`, AdamW at `optim.lr` for the rest). Both decay
  only the leaves of `decay_mask` (see there for the rule), by `optim.weight_decay`.

  Muon equalises the learning speed of all directions of a weight matrix; on the procedural
  world, whose pixels are dominated by one dark mean colour, that is the difference between a
  VAE stuck at the mean-colour plateau and one that learns texture (benchmarks/RESULTS.md).

  players: None clips all gradients by one global norm `optim.grad_clip`; a tuple of top-level
  param keys, e.g. ('vae', 'disc'), clips each of those subtrees by its own global norm (and the
  remaining top-level keys together), see clip_by_player_norm.

  frozen: key paths, e.g. (('vae', 'encoder'),), of subtrees that never move: their gradients
  are zeroed before clipping (so they do not shrink the others') and their updates, weight decay
  included, after the optimizer (see frozen_mask).
  """
  schedule = lr_schedule(optim_cfg, total_steps)
  if players is not None:
    players = tuple(players)
    if not isinstance(params, Mapping) or any(k not in params for k in players):
      keys = list(params) if isinstance(params, Mapping) else type(params).__name__
      raise ValueError(f"players={players} must be top-level keys of the params ({keys})")
  if optim_cfg.grad_clip <= 0:
    clip = optax.identity()
  elif players:
    clip = clip_by_player_norm(optim_cfg.grad_clip, players)
  else:
    clip = optax.clip_by_global_norm(optim_cfg.grad_clip)

  mask = decay_mask(params)
  name = optim_cfg.get("name", "adamw")
  if name == "adamw":
    opt = optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                      weight_decay=optim_cfg.weight_decay, mask=mask)
  elif name == "muon":
    opt = _muon(optim_cfg, schedule, params, mask)
  else:
    raise ValueError(f"optim.name={name!r}; use one of {OPTIMIZERS}")
  if frozen:
    zero = optax.masked(optax.set_to_zero(), frozen_mask(params, frozen))
    return optax.chain(zero, clip, opt, zero), schedule
  return optax.chain(clip, opt), schedule


def frozen_mask(params: Any, frozen: Sequence[tuple[str, ...]]) -> Any:
  """Static bool tree (unboxed structure): True under any of the `frozen` key paths. A path that
  names no parameter is an error (a typo would otherwise train everything silently)."""
  frozen = [tuple(f) for f in frozen]
  hit = set()

  def under(path, x):
    keys = tuple(_key_name(k) for k in path)
    found = [f for f in frozen if keys[:len(f)] == f]
    hit.update(found)
    return bool(found)

  mask = _map_leaves(under, params)
  missing = [f for f in frozen if f not in hit]
  if missing:
    raise ValueError(f"frozen parameter paths {['/'.join(f) for f in missing]} name no "
                     f"parameter; top-level keys: {list(params) if isinstance(params, Mapping) else '-'}")
  return mask


def _muon(optim_cfg, schedule, params, mask) -> optax.GradientTransformation:
  """optax.contrib.muon (as train/muon.py computes it: the same update and state, its
  Newton-Schulz on the Gram matrix) with static dimension numbers and `mask` for both parts.

  optax's `weight_decay_mask` only reaches Muon's matrix part; its AdamW part decays every leaf
  it owns by `adam_weight_decay`. So that part gets no decay of its own, and the leaves it owns
  that `mask` selects (none under the current rule, where decay = Muon's set) are decayed by an
  added masked decoupled decay at the AdamW rate, which is what AdamW's decay computes.
  """
  dims = muon_dimension_numbers(params)
  scale = float(optim_cfg.muon_lr) / float(optim_cfg.lr)
  wd = optim_cfg.weight_decay
  opt = gram_muon.muon(
      lambda step: schedule(step) * scale, schedule, dims,
      weight_decay=wd, weight_decay_mask=mask, adam_b1=optim_cfg.b1, adam_b2=optim_cfg.b2)
  adam_decay = jax.tree.map(lambda d, m: d is None and m, dims, mask,
                            is_leaf=gram_muon.is_dims_leaf)
  if not any(jax.tree.leaves(adam_decay)):
    return opt
  return optax.chain(opt, optax.masked(_decoupled_decay(wd, schedule), adam_decay))


def _decoupled_decay(weight_decay: float,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """Adds -schedule(count) * weight_decay * param to the incoming updates (AdamW's decay term,
  added alongside an update that already carries its own learning rate)."""

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("the decoupled weight decay needs params: tx.update(g, state, params)")
    lr = schedule(state.count)
    updates = jax.tree.map(lambda u, p: u - (lr * weight_decay * p).astype(u.dtype),
                           updates, params)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
