"""The attention op: one function, `dot_product_attention`, for every attention in the models.

Layout and scaling match `jax.nn.dot_product_attention`: [batch, seq, heads, head_dim], 1/sqrt(D).
`impl` picks the kernel:

* xla       `jax.nn.dot_product_attention(implementation=None)`; any mask, any device.
* cudnn     GPU flash attention (bf16/fp16); a key mask becomes key/value sequence lengths.
* ring      context (sequence) parallel over the mesh axis "context", exact: each device keeps its
            query block and passes K/V blocks around the ring with `ppermute`, folding each into an
            online (log-sum-exp) softmax. Memory per device O(N/c · N/c) scores + O(N/c) K/V;
            communication overlaps compute. A minute of 1080p video is ~10^5–10^6 tokens; the
            N x N score matrix of one layer does not fit one device.
* allgather context parallel, exact: each device gathers the full K/V (O(N) memory) and attends
            its local queries. Fewer, larger collectives; good when K/V are small relative to the
            scores (few heads per device, moderate N).

`segment_ids` ([B, N] ints) restricts attention to keys of the same segment, for packed sequences
of several clips (NaViT): in self-attention (`kv_segment_ids` defaults to `segment_ids`) and in
text cross-attention (`kv_segment_ids` names each caption token's clip). Every impl takes them:
xla as a boolean mask; cudnn, given `max_segments`, through cuDNN's packed (THD) layout — segment
lengths and offsets, no N x N mask (`sora_jax.models.cudnn_packing`; Hopper or newer) — else, or
before Hopper, as a dense mask (correct, not fast); ring and allgather without any N x N mask —
each K/V block carries its segment ids around the ring and the mask is formed per block. The
context-parallel impls take the mesh set by `jax.set_mesh` (abstract inside jit), never a
`sora_jax.parallel` import: models sit below parallel.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from sora_jax.models import cudnn_packing

IMPLS = ("xla", "cudnn", "ring", "allgather")
CONTEXT_IMPLS = ("ring", "allgather")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "xla",
                          mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
                          kv_segment_ids: jax.Array | None = None,
                          max_segments: int | None = None) -> jax.Array:
  """q [B, T, H, D], k/v [B, S, H, D] -> [B, T, H, D] in q's dtype.

  mask: None, a key mask [B, S] (True = attend; text cross-attention), or a boolean mask
    broadcastable to [B, H, T, S].
  segment_ids: per-query-token segment ids [B, T] of packed sequences: a token attends only to keys
    of its own segment (kv_segment_ids [B, S], default segment_ids). Give padding its own id.
  impl: one of IMPLS (see the module docstring). 'ring' / 'allgather' are self-attention over the
    mesh's context axis (segment ids allowed, no other mask); without a mesh or with context = 1
    they are plain XLA attention.
  max_segments: impl='cudnn' with segment ids (and at most a key mask): a static bound on the runs
    of equal query segment ids in a row, padding's run included (packed rows: caption slots + 1).
    Given, cuDNN's packed layout replaces the dense mask. It is exact for every query whose keys
    (same id, key mask) are one contiguous run: in the packer's rows every clip token, in self-
    and cross-attention, and padding in self-attention. Any other query outputs 0 (packed rows:
    padding whose row has no empty caption slot or two or more; never in a loss), and the
    queries past the bound's last run output NaN. None keeps the dense mask: the bound cannot
    default to T, as cuDNN keeps [B * max_segments, H, T] float32 softmax statistics.
  """
  if impl not in IMPLS:
    raise ValueError(f"attention_impl must be one of {', '.join(IMPLS)}; got {impl!r}")
  if segment_ids is None and kv_segment_ids is not None:
    raise ValueError("kv_segment_ids needs segment_ids (the queries' segments)")
  if impl in CONTEXT_IMPLS:
    if mask is not None or kv_segment_ids is not None:
      raise ValueError(f"attention_impl={impl!r} supports only self-attention (with optional "
                       "segment ids); cross-attention with a text mask must use 'xla' or 'cudnn'")
    return context_attention(q, k, v, impl=impl, segment_ids=segment_ids)
  if impl == "cudnn" and segment_ids is not None and max_segments is not None and (
      mask is None or mask.ndim == 2):
    _check_segments(q, k, segment_ids, kv_segment_ids)
    try:
      return cudnn_packing.cudnn_packed_attention(q, k, v, segment_ids, kv_segment_ids, mask,
                                                  max_segments=max_segments)
    except NotImplementedError:  # no packed layout before Hopper: the dense mask below
      pass
  kwargs = {}
  if mask is not None and mask.ndim == 2:
    if impl == "cudnn" and segment_ids is None:
      # cuDNN is slow with dense masks; a key mask of left-aligned valid tokens is a length.
      kwargs["key_value_seq_lengths"] = jnp.sum(mask, -1).astype(jnp.int32)
      mask = None
    else:
      mask = mask[:, None, None, :]
  if segment_ids is not None:
    mask = _and(mask, segment_mask(segment_ids, kv_segment_ids))
  if impl == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn", **kwargs)
  return xla_attention(q, k, v, mask)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
  """Softmax attention in plain XLA ops, heads-major inside: [B, T, H, D] in and out.

  Numerically `jax.nn.dot_product_attention(implementation=None)`, written out with its own
  backward because autodiff's does not run well on XLA:CPU: the vmapped [1, B, H, T, S] form of
  `jax.nn.dot_product_attention` and `jax.nn.softmax`'s backward compile to slow reductions, and
  even the written-out softmax differentiates into a row sum over the [T, S] scores where the
  flash-attention identity needs one over D (dS = P * (dP - rowsum(dO * O))). fwd+bwd of one S/2
  layer: 51 -> 36 ms on the 2-core box (benchmarks/RESULTS.md).
  Scores and softmax are float32 whatever the input dtype; a fully masked row averages v.
  """
  return _attention(q, k, v, mask)


def _attention_fwd(q, k, v, mask):
  qt, kt, vt = (a.transpose(0, 2, 1, 3) for a in (q, k, v))   # [B, H, N, D]
  s = jnp.einsum("bhqd,bhkd->bhqk", qt, kt, preferred_element_type=jnp.float32)
  s = s * (1.0 / math.sqrt(q.shape[-1]))
  if mask is not None:
    s = jnp.where(mask, s, jnp.finfo(jnp.float32).min)
  e = jnp.exp(s - s.max(-1, keepdims=True))
  p = (e * (1.0 / e.sum(-1, keepdims=True))).astype(v.dtype)
  ot = jnp.einsum("bhqk,bhkd->bhqd", p, vt)
  return ot.transpose(0, 2, 1, 3).astype(q.dtype), (qt, kt, vt, p, ot, mask)


def _attention_bwd(res, do):
  qt, kt, vt, p, ot, mask = res
  dot = do.transpose(0, 2, 1, 3).astype(vt.dtype)
  # dv and dk contract over queries: with P^T written out the batched matmul has the plain NN
  # form, which XLA:CPU hands to YNNPACK; the transposed-lhs form ran as a slower generic dot
  # (one S/2 layer fwd+bwd 28-31 -> 24-28 ms on the 2-core box; benchmarks/RESULTS.md).
  dv = jnp.einsum("bhkq,bhqd->bhkd", p.swapaxes(-1, -2), dot)
  dp = jnp.einsum("bhqd,bhkd->bhqk", dot, vt, preferred_element_type=jnp.float32)
  rows = jnp.sum(dot.astype(jnp.float32) * ot.astype(jnp.float32), -1, keepdims=True)
  ds = p.astype(jnp.float32) * (dp - rows) * (1.0 / math.sqrt(qt.shape[-1]))
  if mask is not None:   # masked scores are constants: no gradient (matters in fully masked rows)
    ds = jnp.where(mask, ds, 0.0)
  ds = ds.astype(qt.dtype)
  dq = jnp.einsum("bhqk,bhkd->bhqd", ds, kt)
  dk = jnp.einsum("bhkq,bhqd->bhkd", ds.swapaxes(-1, -2), qt)
  grads = tuple(g.transpose(0, 2, 1, 3).astype(a.dtype) for g, a in ((dq, qt), (dk, kt), (dv, vt)))
  return grads + (None,)


_attention = jax.custom_vjp(lambda q, k, v, mask: _attention_fwd(q, k, v, mask)[0])
_attention.defvjp(_attention_fwd, _attention_bwd)


def segment_mask(segment_ids: jax.Array, kv_segment_ids: jax.Array | None = None) -> jax.Array:
  """[B, T] (and [B, S]) segment ids -> boolean mask [B, 1, T, S]: True where the ids match."""
  kv = segment_ids if kv_segment_ids is None else kv_segment_ids
  if segment_ids.ndim != 2 or kv.ndim != 2 or kv.shape[0] != segment_ids.shape[0]:
    raise ValueError(f"segment ids must be [batch, seq]; got {segment_ids.shape} and {kv.shape}")
  return (segment_ids[:, :, None] == kv[:, None, :])[:, None]


def _check_segments(q, k, segment_ids, kv_segment_ids) -> None:
  kv = segment_ids if kv_segment_ids is None else kv_segment_ids
  if segment_ids.shape != q.shape[:2] or kv.shape != k.shape[:2]:
    raise ValueError(f"segment ids {segment_ids.shape} / {kv.shape} must be [batch, seq] of the "
                     f"queries {q.shape[:2]} / keys {k.shape[:2]}")


def _and(a: jax.Array | None, b: jax.Array) -> jax.Array:
  return b if a is None else jnp.logical_and(a, b)


# ----------------------------------------------------------------------------- context parallel


def _varying(x: Any) -> frozenset:
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, "vma", ()))


def _vary_like(x: jax.Array, *refs: jax.Array) -> jax.Array:
  """Marks `x` device-varying over every mesh axis any of `refs` varies over.

  A scan carry must keep one type; the online-softmax statistics start as constants but become
  varying over the context axis (and batch/head axes) once they absorb a K/V block.
  """
  missing = frozenset().union(*(_varying(r) for r in refs)) - _varying(x)
  if missing:
    x = jax.lax.pcast(x, tuple(sorted(missing)), to="varying")
  return x


def _block_scores(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  # [B, Nq, H, D] x [B, Nk, H, D] -> [B, H, Nq, Nk], accumulated in float32.
  return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale


def ring_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, axis_name: str = "context",
                   causal: bool = False, segment_ids: jax.Array | None = None) -> jax.Array:
  """Per-shard ring attention; call inside `jax.shard_map` with the sequence split on `axis_name`.

  q, k, v: this device's blocks [B, N_local, H, D] of a sequence laid out in device order along
  `axis_name`. Returns this device's output block [B, N_local, H, D] in q's dtype.
  segment_ids: this device's block [B, N_local] of packed segment ids; they travel with K/V.
  Each of the c ring steps is rematerialized in the backward pass, so the gradient keeps only
  the O(N_local) carries per step, never a score block.
  """
  n = jax.lax.axis_size(axis_name)
  idx = jax.lax.axis_index(axis_name)
  b, nl, h, d = q.shape
  scale = 1.0 / math.sqrt(d)
  neg = jnp.finfo(jnp.float32).min  # finite: no inf - inf = nan when a row sees only masked keys
  perm = [(i, (i + 1) % n) for i in range(n)]
  q_pos = idx * nl + jnp.arange(nl)

  def fold(carry, kv_blk, step):
    o, m, l = carry
    kb, vb = kv_blk[:2]
    s = _block_scores(q, kb, scale)
    keep = None
    if causal:
      src = (idx - step) % n  # after `step` hops this device holds the block of device idx-step
      k_pos = src * nl + jnp.arange(nl)
      keep = (q_pos[:, None] >= k_pos[None, :])[None, None]
    if segment_ids is not None:
      same = (segment_ids[:, :, None] == kv_blk[2][:, None, :])[:, None]
      keep = same if keep is None else jnp.logical_and(keep, same)
    if keep is not None:
      s = jnp.where(keep, s, neg)
    m_new = jnp.maximum(m, s.max(axis=-1))
    corr = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    if keep is not None:  # a block with no key of this row's segment adds nothing, not exp(0)
      p = jnp.where(keep, p, 0.0)
    l = l * corr + p.sum(axis=-1)
    pv = jnp.einsum("bhqk,bkhd->bqhd", p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
    o = o * jnp.swapaxes(corr, 1, 2)[..., None] + pv
    return o, m_new, l

  @jax.checkpoint
  def body(state, step):
    carry, kv_blk = state
    carry = fold(carry, kv_blk, step)
    kv_blk = jax.lax.ppermute(kv_blk, axis_name, perm)
    return (carry, kv_blk), None

  o0 = _vary_like(jnp.zeros((b, nl, h, d), jnp.float32), q, k, v)
  m0 = _vary_like(jnp.full((b, h, nl), neg, jnp.float32), q, k, v)
  l0 = _vary_like(jnp.zeros((b, h, nl), jnp.float32), q, k, v)
  state = ((o0, m0, l0), (k, v) if segment_ids is None else (k, v, segment_ids))
  if n > 1:  # c - 1 hops; the last block is folded without a (wasted) final hop
    state, _ = jax.lax.scan(body, state, jnp.arange(n - 1))
  carry, kv_blk = state
  o, _, l = jax.checkpoint(fold)(carry, kv_blk, n - 1)
  return (o / jnp.swapaxes(l, 1, 2)[..., None]).astype(q.dtype)


def allgather_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, axis_name: str = "context",
                        causal: bool = False, segment_ids: jax.Array | None = None) -> jax.Array:
  """Per-shard attention of local queries against K/V (and segment ids) all-gathered over
  `axis_name`."""
  k_all = jax.lax.all_gather(k, axis_name, axis=1, tiled=True)
  v_all = jax.lax.all_gather(v, axis_name, axis=1, tiled=True)
  mask = None
  if causal:
    nl = q.shape[1]
    q_pos = jax.lax.axis_index(axis_name) * nl + jnp.arange(nl)
    mask = (q_pos[:, None] >= jnp.arange(k_all.shape[1])[None, :])[None, None]
  if segment_ids is not None:
    seg_all = jax.lax.all_gather(segment_ids, axis_name, axis=1, tiled=True)
    mask = _and(mask, segment_mask(segment_ids, seg_all))
  return jax.nn.dot_product_attention(q, k_all, v_all, mask=mask)


def _fit_axes(axes: Sequence[str] | str | None, size: int, mesh_shape: dict[str, int]) -> Any:
  """The longest prefix of `axes` (present in the mesh) whose product divides `size`."""
  if axes is None:
    return None
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  axes = tuple(a for a in axes if a in mesh_shape)
  while axes and size % math.prod(mesh_shape[a] for a in axes):
    axes = axes[:-1]
  if not axes:
    return None
  return axes[0] if len(axes) == 1 else axes


def current_mesh(mesh: Any = None) -> Any:
  """`mesh` if given, else the one set by `jax.set_mesh` (abstract inside jit); None if unset."""
  if mesh is not None:
    return mesh
  am = jax.sharding.get_abstract_mesh()
  return None if am.empty else am


def context_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "ring",
                      mesh: Any = None, axis_name: str = "context",
                      batch_axes: Sequence[str] | None = ("data", "fsdp"),
                      head_axis: str | None = "tensor", causal: bool = False,
                      segment_ids: jax.Array | None = None) -> jax.Array:
  """Attention on GLOBAL [B, N, H, D] arrays, sequence-parallel over `axis_name` of the mesh.

  Batch is split over `batch_axes` and heads over `head_axis` inside the shard_map (each reduced
  to the axes that divide the dim, the rest replicated), so it composes with data/FSDP/tensor
  parallelism without resharding. Without a mesh, or with a context axis of size 1, this is
  exactly `jax.nn.dot_product_attention(q, k, v, is_causal=causal)` (masked by `segment_ids`
  [B, N], the packed clips, when given).
  """
  if impl not in CONTEXT_IMPLS:
    raise ValueError(f"context attention impl {impl!r} is not known; "
                     f"use one of {CONTEXT_IMPLS}")
  if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
    raise ValueError(f"context attention expects q, k, v of one shape [batch, seq, heads, "
                     f"head_dim]; got {q.shape}, {k.shape}, {v.shape}")
  mesh = current_mesh(mesh)
  shape = dict(mesh.shape) if mesh is not None else {}
  if shape.get(axis_name, 1) == 1:
    if segment_ids is not None:
      return xla_attention(q, k, v, segment_mask(segment_ids) if not causal else _and(
          jnp.tril(jnp.ones((q.shape[1], q.shape[1]), bool))[None, None],
          segment_mask(segment_ids)))
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  b, n, h, _ = q.shape
  c = shape[axis_name]
  if n % c:
    raise ValueError(f"sequence of {n} tokens does not divide over mesh.{axis_name}={c}; pick "
                     f"frames/resolution/patch so the token count is a multiple of {c}, or set "
                     f"mesh.{axis_name}=1")
  spec = P(_fit_axes(batch_axes, b, shape), axis_name, _fit_axes(head_axis, h, shape), None)
  fn = ring_attention if impl == "ring" else allgather_attention

  if segment_ids is None:
    def per_shard(q, k, v):
      return fn(q, k, v, axis_name=axis_name, causal=causal)
    return jax.shard_map(per_shard, mesh=mesh, in_specs=(spec, spec, spec),
                         out_specs=spec)(q, k, v)

  def per_shard_seg(q, k, v, seg):
    return fn(q, k, v, axis_name=axis_name, causal=causal, segment_ids=seg)
  seg_spec = P(spec[0], axis_name)
  return jax.shard_map(per_shard_seg, mesh=mesh, in_specs=(spec, spec, spec, seg_spec),
                       out_specs=spec)(q, k, v, segment_ids.astype(jnp.int32))
