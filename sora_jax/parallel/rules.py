"""Logical-axis rules and the shardings of train states, batches and parameter trees.

Models name their axes logically (CONTRIBUTING.md: `embed`, `mlp`, `act_batch`, ...); the tables
here map those names onto the mesh axes of `parallel/mesh.py`. One table per model family, so a
researcher changes the parallelism of a model in exactly one place.

Dims that a mesh axis does not divide are REPLICATED instead of failing at compile time (the
MaxText choice): tiny test models (3 RGB channels, 5 heads) still run on any mesh. For a tuple of
mesh axes the trailing axes are dropped until the rest divides (batch 2 on data=2,fsdp=2 → data).
`describe_shardings(..., rules=...)` lists each such fallback so it never goes unnoticed.
Unknown logical names raise: a typo would otherwise silently replicate a large weight.

Typical flow (train/state.py):
    abstract = jax.eval_shape(init_fn, rng, batch)          # boxed nn.LogicallyPartitioned leaves
    shardings = state_shardings(abstract, mesh, DIT_RULES)
    state = jax.jit(init_fn, out_shardings=shardings)(rng, batch)
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sora_jax.parallel.mesh import batch_axes

Rules = tuple[tuple[str, Any], ...]

_BATCH = ("data", "fsdp")

# DiT: FSDP shards the embed dim of every weight (and the batch); tensor parallelism splits heads
# and MLP hidden units Megatron-style; context parallelism splits the spacetime token sequence.
DIT_RULES: Rules = (
    # activations
    ("act_batch", _BATCH),
    ("act_seq", "context"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_embed", None),
    ("act_kv", None),
    ("act_frames", None),
    ("act_height", None),
    ("act_width", None),
    ("act_channels", None),
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("vocab", None),
    ("norm", None),
    ("patch", None),
    ("classes", None),
    ("conv_in", None),
    ("conv_out", None),
)

# VAE: convolutions over big frames, parallel over the batch (data x fsdp); `fsdp` also shards
# conv output channels (ZeRO-3 for every model), falling back to replication where it does not
# divide (3 RGB, odd latent channels). Space is not split: see act_height below.
VAE_RULES: Rules = (
    ("act_batch", _BATCH),
    ("act_frames", None),
    # Frames stay whole on every device: splitting rows over `context` or columns over `tensor`
    # while the batch is also split gave a wrong forward pass although each block alone was
    # exact (found by tests/parallel/test_sharded_steps.py; open: XLA SPMD or block composition).
    # The VAE therefore parallelises over the batch only.
    ("act_height", None),
    ("act_width", None),
    ("act_channels", None),
    ("act_seq", None),
    ("act_embed", None),
    ("act_heads", None),
    ("act_kv", None),
    ("act_mlp", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("embed", "fsdp"),
    ("mlp", None),
    ("heads", None),
    ("kv", None),
    ("layers", None),
    ("vocab", None),
    ("norm", None),
    ("patch", None),
    ("classes", None),
)

# Text encoder: like the DiT, but captions are short (~64 tokens), so the sequence stays whole.
TEXT_RULES: Rules = tuple(("act_seq", None) if name == "act_seq" else (name, ax)
                          for name, ax in DIT_RULES)

_TABLES = {"dit": DIT_RULES, "vae": VAE_RULES, "text": TEXT_RULES}


def unbox(tree: Any, apply_constraint: bool = True) -> Any:
  """Strips nn.Partitioned boxes. Pass apply_constraint=False for abstract (eval_shape) trees:
  the sharding constraint only makes sense on traced values."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  return jax.tree.map(lambda x: x.unbox(apply_constraint=apply_constraint) if is_box(x) else x,
                      tree, is_leaf=is_box)


def rules_for(name: str) -> Rules:
  """The rules table of a model family: 'dit' | 'vae' | 'text'."""
  try:
    return _TABLES[name]
  except KeyError:
    raise ValueError(f"no sharding rules for model {name!r}; known: {', '.join(_TABLES)}") from None


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int | None = None) -> NamedSharding:
  """Leading (batch) axis split over ("data", "fsdp"); the other `ndim - 1` axes whole."""
  axes = batch_axes(mesh)
  lead = axes if len(axes) != 1 else axes[0]
  if ndim is None:
    return NamedSharding(mesh, P(lead or None))
  if ndim < 1:
    raise ValueError(f"a batched array needs at least one dim, got ndim={ndim}")
  return NamedSharding(mesh, P(lead or None, *([None] * (ndim - 1))))


# ---------------------------------------------------------------------------------------------
# logical names → mesh PartitionSpec, shape-aware


def _known_names(rules: Rules) -> set[str]:
  return {name for name, _ in rules}


def _as_tuple(ax: Any) -> tuple[str, ...]:
  if ax is None:
    return ()
  return tuple(ax) if isinstance(ax, (tuple, list)) else (ax,)


def mesh_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules,
              where: str = "") -> tuple[P, list[str]]:
  """PartitionSpec for an array with logical `names` and `shape`, plus notes on fallbacks.

  Logical → mesh as flax does it (first rule whose mesh axes this array has not used yet); a name
  that is already a mesh axis passes through (for `nn.with_partitioning`-style boxes). Then each
  dim keeps the longest prefix of its mesh axes whose size product divides the dim.
  """
  names = tuple(names)
  if len(names) != len(shape):
    raise ValueError(f"{where or 'array'}: {len(names)} logical names {names} for an array of "
                     f"shape {tuple(shape)}")
  known = _known_names(rules)
  logical = []
  for n in names:
    if n is not None and n not in known and n not in mesh.axis_names:
      raise ValueError(f"{where or 'array'}: logical axis name {n!r} has no sharding rule; use "
                       f"one of {sorted(known)} (CONTRIBUTING.md) or add it to parallel/rules.py")
    logical.append(n if n in known else None)
  mapped = list(nn.logical_to_mesh_axes(logical, rules))
  mapped += [None] * (len(names) - len(mapped))
  for i, n in enumerate(names):  # mesh-axis names used directly
    if n is not None and n not in known:
      mapped[i] = n
  notes = []
  out = []
  for dim, (size, ax, n) in enumerate(zip(shape, mapped, names)):
    axes = _as_tuple(ax)
    kept = axes
    while kept and size % math.prod(mesh.shape[a] for a in kept):
      kept = kept[:-1]
    if kept != axes:
      dropped = axes[len(kept):]
      notes.append(f"dim {dim} ({n}={size}) not divisible by "
                   f"{'*'.join(f'{a}={mesh.shape[a]}' for a in dropped)}: replicated over "
                   f"{','.join(dropped)}")
    out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  while out and out[-1] is None:
    out.pop()
  return P(*out), notes


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.Partitioned)


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(getattr(x, "shape", np.shape(x)))


def _holds_array(box: Any) -> bool:
  """False for boxes around optax's MaskedNode (Muon's AdamW half masks the matrices out)."""
  return hasattr(box.value, "shape")


def _path_keys(path) -> tuple[str, ...]:
  return tuple(jax.tree_util.keystr((k,), simple=True) for k in path)


def logical_to_sharding(tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedSharding for every leaf of a tree with boxed (nn.Partitioned) leaves.

  Concrete or abstract (`jax.eval_shape`) trees both work; the result has a NamedSharding where
  each box was, so it can be passed as `out_shardings` for a function returning the boxed tree
  or, equally, its `nn.meta.unbox`-ed version. Unboxed leaves are replicated.
  """
  def one(path, x):
    if _is_box(x) and not _holds_array(x):
      return x.value
    if _is_box(x):
      spec, _ = mesh_spec(x.names, _shape(x.value), mesh, rules, jax.tree_util.keystr(path))
      return NamedSharding(mesh, spec)
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(one, tree, is_leaf=_is_box)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a whole train state: boxed params, optimizer state, EMA, step, rng keys.

  Boxed leaves get their logical sharding. An unboxed array whose path ends like a boxed
  parameter's path and has its shape (optax `mu`/`nu`, an unboxed EMA copy: optax mirrors the
  param tree inside its own state) gets that parameter's sharding — the longest matching path
  suffix wins. Everything else (step counters, scalars, rng keys, schedule counts) is replicated.
  If optax state is built from boxed params it carries the boxes itself and matches directly.
  """
  sources: dict[tuple[str, ...], list[tuple[tuple[int, ...], NamedSharding]]] = {}
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_state, is_leaf=_is_box)

  def boxed_sharding(path, x):
    spec, _ = mesh_spec(x.names, _shape(x.value), mesh, rules, jax.tree_util.keystr(path))
    return NamedSharding(mesh, spec)

  out = [None] * len(flat)
  for i, (path, x) in enumerate(flat):
    if _is_box(x) and not _holds_array(x):
      out[i] = x.value  # a masked-out slot (optax MaskedNode): an empty subtree, kept as is
    elif _is_box(x):
      out[i] = boxed_sharding(path, x)
      keys = _path_keys(path)
      for k in range(len(keys)):
        sources.setdefault(keys[k:], []).append((_shape(x.value), out[i]))
  if not sources and any(_shape(x) for _, x in flat):
    logging.warning("state_shardings: no nn.Partitioned (logically boxed) leaves in the state, so "
                    "everything is replicated; build the abstract state from an init that keeps "
                    "flax's boxes (unbox after jax.eval_shape, not inside init)")
  for i, (path, x) in enumerate(flat):
    if out[i] is not None:
      continue
    shape = _shape(x)
    out[i] = replicated(mesh)
    if not shape:
      continue
    keys = _path_keys(path)
    for k in range(len(keys)):  # longest suffix first
      cands = {s for shp, s in sources.get(keys[k:], []) if shp == shape}
      if len(cands) == 1:
        out[i] = cands.pop()
        break
      if cands:  # ambiguous: same path tail and shape, different shardings
        break
  return jax.tree_util.tree_unflatten(treedef, out)


def describe_shardings(params_tree: Any, shardings_tree: Any, rules: Rules | None = None) -> str:
  """One line per leaf: `path  shape  dtype  PartitionSpec` (+ logical names, fallbacks).

  With `rules`, boxed leaves also show their logical names and any dim that was replicated
  because its mesh axis does not divide it. Used by `sora-jax shardings` and golden-file tests.
  """
  params = jax.tree_util.tree_flatten_with_path(params_tree, is_leaf=_is_box)[0]
  shards = jax.tree_util.tree_leaves(shardings_tree, is_leaf=lambda s: isinstance(s, NamedSharding))
  if len(params) != len(shards):
    raise ValueError(f"describe_shardings: {len(params)} parameter leaves but {len(shards)} "
                     f"shardings; pass the shardings computed from this same tree")
  rows = []
  for (path, x), s in zip(params, shards):
    value = x.value if _is_box(x) else x
    shape = _shape(value)
    dtype = str(getattr(value, "dtype", np.asarray(value).dtype))
    spec = s.spec if isinstance(s, NamedSharding) else s
    spec = f"P({', '.join(map(repr, spec))})"  # stable across jax versions' reprs
    extra = ""
    if _is_box(x):
      extra = f"  {tuple(x.names)}"
      if rules is not None and isinstance(s, NamedSharding):
        _, notes = mesh_spec(x.names, shape, s.mesh, rules, jax.tree_util.keystr(path))
        if notes:
          extra += "  [" + "; ".join(notes) + "]"
    rows.append((jax.tree_util.keystr(path, simple=True, separator="/"),
                 "x".join(map(str, shape)) or "()", dtype, spec, extra))
  if not rows:
    return ""
  w = [max(len(r[c]) for r in rows) for c in range(3)]
  return "\n".join(f"{p:<{w[0]}}  {sh:>{w[1]}}  {dt:<{w[2]}}  {sp}{ex}".rstrip()
                   for p, sh, dt, sp, ex in rows)
