"""Bundled text encoder, trained jointly with the DiT, plus caption dropout for CFG.

A small pre-LN transformer over byte-level token ids (sora_jax/data/tokenizer.py): learned
token + position embeddings, bidirectional self-attention with padded keys masked out, a final
LayerNorm. Outputs at padded positions are zeroed so they cannot leak through a consumer that
forgets the mask.

The empty ("null") caption used for the unconditional CFG branch is all pad ids with only
position 0 marked valid: the encoder then returns a learned embedding (pad-token embedding +
position 0) rather than an all-masked sequence, so no attention row, here or in the DiT's
cross-attention, ever has zero valid keys. `drop_text` (training) and `null_text` (sampling)
produce exactly the same null caption.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def null_text(batch: int, max_len: int, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """The empty caption for `batch` rows: (tokens int32 [B, L] all pad, mask bool [B, L])."""
  tokens = jnp.full((batch, max_len), pad_id, jnp.int32)
  mask = jnp.zeros((batch, max_len), bool).at[:, 0].set(True)
  return tokens, mask


def drop_text(rng: jax.Array, tokens: jax.Array, mask: jax.Array, prob: float,
              pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Replace each caption by the null caption with probability `prob` (CFG caption dropout)."""
  b, l = tokens.shape
  drop = jax.random.bernoulli(rng, prob, (b,))[:, None]
  nt, nm = null_text(b, l, pad_id)
  return (jnp.where(drop, nt, tokens).astype(tokens.dtype), jnp.where(drop, nm, mask))


class EncoderBlock(nn.Module):
  width: int
  heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    head_dim = self.width // self.heads
    kinit = nn.initializers.xavier_uniform()
    norm = lambda name: nn.LayerNorm(
        dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))
    # Plain Dense + reshape: DenseGeneral initialises a flattened kernel, which 3-axis logical
    # names (and so the mesh constraint applied at init) cannot describe.
    proj = lambda name: nn.Dense(
        self.width, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(kinit, ("embed", "heads")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)))
    split = lambda y: y.reshape(*y.shape[:-1], self.heads, head_dim)  # noqa: E731
    h = norm("attn_norm")(x)
    q, k, v = split(proj("query")(h)), split(proj("key")(h)), split(proj("value")(h))
    q = nn.with_logical_constraint(q, ("act_batch", "act_seq", "act_heads", "act_kv"))
    # Key-padding mask [B, 1, 1, L]: every query attends to the valid keys only.
    a = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
    a = nn.Dense(
        self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="out",
        kernel_init=nn.with_logical_partitioning(kinit, ("heads", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(
            a.reshape(*a.shape[:-2], self.width))
    x = x + a
    h = norm("mlp_norm")(x)
    h = nn.Dense(self.width * self.mlp_ratio, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="mlp_in",
                 kernel_init=nn.with_logical_partitioning(kinit, ("embed", "mlp")),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(h)
    h = nn.with_logical_constraint(nn.gelu(h), ("act_batch", "act_seq", "act_mlp"))
    h = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="mlp_out",
                 kernel_init=nn.with_logical_partitioning(kinit, ("mlp", "embed")),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(h)
    x = x + h
    return nn.with_logical_constraint(x, ("act_batch", "act_seq", "act_embed"))


class TextEncoder(nn.Module):
  """tokens int32 [B, L], mask bool [B, L] (True = real token) -> [B, L, width]."""
  vocab_size: int = 259
  width: int = 256
  depth: int = 4
  heads: int = 4
  max_len: int = 128
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    b, l = tokens.shape
    if l > self.max_len:
      raise ValueError(f"caption length {l} exceeds the text encoder's max_len={self.max_len}; "
                       "truncate in the tokenizer or raise the text encoder's max_len")
    if self.width % self.heads:
      raise ValueError(f"text encoder width={self.width} is not divisible by heads={self.heads}")
    emb = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="token_embed",
                   embedding_init=nn.with_logical_partitioning(
                       nn.initializers.normal(0.02), ("vocab", "embed")))
    pos = self.param("pos_embed", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (self.max_len, self.width),
        self.param_dtype)
    x = emb(tokens) + jnp.asarray(pos[:l], self.dtype)[None]
    x = nn.with_logical_constraint(x, ("act_batch", "act_seq", "act_embed"))
    mask = mask.astype(bool)
    for i in range(self.depth):
      x = EncoderBlock(self.width, self.heads, self.mlp_ratio, self.dtype, self.param_dtype,
                       name=f"block_{i}")(x, mask)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="final_norm",
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(x)
    return x * mask[..., None].astype(x.dtype)
