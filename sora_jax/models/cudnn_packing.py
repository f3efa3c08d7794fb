"""Packed rows through cuDNN's packed ("THD", ragged) flash-attention layout: segment ids become
per-segment lengths and start offsets, so no N x N mask is ever built.

The kernel is `jax._src.cudnn.fused_attention_stablehlo.dot_product_attention` (private; added by
jax PR #25812, same signature in 0.10.2 and the 0.11.1 source): q, k, v [B, T|S, H, D] with
`q_seqlen`/`kv_seqlen` [B, M] (each segment's length) and `q_offsets`/`kv_offsets` [B, M + 1]
(each segment's first token, counted from the start of its row), M a static maximum of segments
per row. Query segment i attends keys [kv_offsets[b, i], kv_offsets[b, i] + kv_seqlen[b, i]) and
nothing else. What that API expects, from its docstring, its `_fix_seqlen_offsets` and jax's own
packed test (tests/fused_attention_stablehlo*_test.py, `test_sdpa_packed_layout`):

* unused entries are -1 in all four arrays, and the last offsets column is -1 too (no end
  offset): jax keeps the entries >= 0 of the whole batch, in order, as cuDNN's B*M + 1 cumulative
  offsets (rows shifted by b*T, times heads*head_dim; tail B*T) and B*M lengths (tail 0).
  A per-row end offset would shift every later segment by one.
* a gap between one segment's end and the next offset is allowed: its tokens belong to no
  segment and their output and dq/dk/dv rows are undefined (jax's test masks them out before
  comparing), so `cudnn_packed_attention` overwrites them.
* packed mode needs M > 1 (offsets of shape [B, 2] are dropped) and a Hopper or newer GPU
  (NotImplementedError before sm90) with cuDNN >= 9.6 (jax's test skips below); bf16/fp16 only,
  head_dim a multiple of 8 and <= 256 on Hopper; forward and backward (custom_vjp) both packed.
* cuDNN keeps float32 softmax statistics of shape [B*M, heads, T] for the backward, so M must be
  a tight bound, not T. Offsets are int32 elements: B*T*heads*head_dim must stay below 2**31.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class PackedSegments(NamedTuple):
  """cuDNN's packed-layout arguments for one batch of packed rows, and which tokens they cover."""
  q_seqlen: jax.Array     # [B, M] int32, -1 = unused
  kv_seqlen: jax.Array    # [B, M] int32, -1 = unused
  q_offsets: jax.Array    # [B, M + 1] int32, -1 = unused (the last column always)
  kv_offsets: jax.Array   # [B, M + 1] int32, -1 = unused (the last column always)
  q_covered: jax.Array    # [B, T] bool: the query is in a computed segment
  kv_covered: jax.Array   # [B, S] bool: the key is read by some computed segment
  overflow: jax.Array     # [B, T] bool: the query's run is past the max_segments-th


def packed_segments(segment_ids: jax.Array, kv_segment_ids: jax.Array | None = None,
                    kv_mask: jax.Array | None = None, *, max_segments: int) -> PackedSegments:
  """Segment ids [B, T] (keys: `kv_segment_ids` [B, S], default the same; `kv_mask` [B, S] True =
  may attend) -> cuDNN packed-layout lengths and offsets with M = `max_segments`.

  Each maximal run of equal query ids is one cuDNN segment, in row order; it reads the keys with
  its id (and kv_mask). A run is computed only when those keys are one contiguous, non-empty run,
  so every computed segment is exact: a query attends exactly the keys `segment_mask` (and the key
  mask) give it, or (non-contiguous or no keys) nothing. Runs past the M-th are `overflow`.
  Pure, static-shaped and jit-friendly: O(B * (T + S) * M) work, no [T, S] array.
  """
  if max_segments < 1:
    raise ValueError(f"max_segments must be >= 1, got {max_segments}")
  ids = jnp.asarray(segment_ids)
  kv = ids if kv_segment_ids is None else jnp.asarray(kv_segment_ids)
  if ids.ndim != 2 or kv.ndim != 2 or kv.shape[0] != ids.shape[0]:
    raise ValueError(f"segment ids must be [batch, seq]; got {ids.shape} and {kv.shape}")
  if kv_mask is not None and jnp.shape(kv_mask) != kv.shape:
    raise ValueError(f"kv_mask {jnp.shape(kv_mask)} must match kv segment ids {kv.shape}")
  b, t = ids.shape
  s, m = kv.shape[1], int(max_segments)
  start = jnp.concatenate([jnp.ones((b, 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
  run = jnp.cumsum(start, axis=1, dtype=jnp.int32) - 1                    # [B, T]
  in_run = run[:, :, None] == jnp.arange(m, dtype=jnp.int32)              # [B, T, M]
  q_len = jnp.sum(in_run, axis=1, dtype=jnp.int32)                        # [B, M]
  exists = q_len > 0
  q_off = jnp.min(jnp.where(in_run, jnp.arange(t, dtype=jnp.int32)[:, None], t), axis=1)
  run_id = jnp.take_along_axis(ids, jnp.minimum(q_off, t - 1), axis=1)   # [B, M]

  reads = (kv[:, :, None] == run_id[:, None, :]) & exists[:, None, :]     # [B, S, M]
  if kv_mask is not None:
    reads = reads & jnp.asarray(kv_mask, bool)[:, :, None]
  pos = jnp.arange(s, dtype=jnp.int32)[:, None]
  kv_first = jnp.min(jnp.where(reads, pos, s), axis=1)
  kv_last = jnp.max(jnp.where(reads, pos, -1), axis=1)
  kv_len = jnp.sum(reads, axis=1, dtype=jnp.int32)
  # One contiguous key run or nothing: cuDNN can only read a range, and a range over a gap would
  # attend keys the mask forbids. A padding run that reads several empty caption slots lands here.
  keep = exists & (kv_len > 0) & (kv_last - kv_first + 1 == kv_len)

  unused = jnp.full((b, 1), -1, jnp.int32)
  within = run < m
  return PackedSegments(
      q_seqlen=jnp.where(keep, q_len, -1),
      kv_seqlen=jnp.where(keep, kv_len, -1),
      q_offsets=jnp.concatenate([jnp.where(keep, q_off, -1), unused], axis=1),
      kv_offsets=jnp.concatenate([jnp.where(keep, kv_first, -1), unused], axis=1),
      q_covered=within & jnp.take_along_axis(keep, jnp.minimum(run, m - 1), axis=1),
      kv_covered=jnp.any(reads & keep[:, None, :], axis=-1),
      overflow=~within)


def cudnn_packed_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
                           kv_segment_ids: jax.Array | None = None,
                           kv_mask: jax.Array | None = None, *,
                           max_segments: int) -> jax.Array:
  """q [B, T, H, D], k/v [B, S, H, D] (bf16/fp16) -> [B, T, H, D]: attention within segments
  (`packed_segments`) by cuDNN's packed layout, scaled 1/sqrt(D).

  A query in no computed segment gets 0 and zero gradient; a query past the `max_segments`-th run
  of its row gets NaN, so a bound that is too small fails loudly instead of silently. Raises
  NotImplementedError where cuDNN has no packed layout (before Hopper).
  """
  from jax._src.cudnn import fused_attention_stablehlo as fused  # private: no public packed API

  ps = packed_segments(segment_ids, kv_segment_ids, kv_mask, max_segments=max(2, max_segments))

  def only(x, keep):
    # A select, not a product: its transpose replaces (not scales) the rows of dq/dk/dv that
    # cuDNN leaves unwritten, which may hold NaN; 0 * NaN would still be NaN.
    return jnp.where(keep[:, :, None, None], x, jnp.zeros((), x.dtype))

  out = fused.dot_product_attention(
      only(q, ps.q_covered), only(k, ps.kv_covered), only(v, ps.kv_covered),
      q_seqlen=ps.q_seqlen, kv_seqlen=ps.kv_seqlen, q_offsets=ps.q_offsets,
      kv_offsets=ps.kv_offsets, scale=1.0 / math.sqrt(q.shape[-1]),
      mask_type=fused.MaskType.PADDING, qkv_layout="BTNH")
  fill = jnp.where(ps.overflow, jnp.nan, 0.0).astype(out.dtype)[:, :, None, None]
  return jnp.where(ps.q_covered[:, :, None, None], out, fill)
