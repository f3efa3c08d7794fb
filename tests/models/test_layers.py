import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import layers as L
from sora_jax.models import patching


def _scores(q, k, positions_q, positions_k, head_dim):
  cq, sq = L.rope_3d(positions_q, head_dim)
  ck, sk = L.rope_3d(positions_k, head_dim)
  return jnp.einsum("bqhd,bkhd->bhqk", L.apply_rope(q, cq, sq), L.apply_rope(k, ck, sk))


def test_rope_3d_is_relative_and_any_grid():
  hd = 24
  assert L.rope_axes_dims(hd) == (8, 8, 8) and sum(L.rope_axes_dims(64)) == 64
  pos = patching.grid_positions((2, 3, 4))[None]
  r = np.random.RandomState(0)
  q = jnp.asarray(r.randn(1, 24, 2, hd), jnp.float32)
  k = jnp.asarray(r.randn(1, 24, 2, hd), jnp.float32)
  base = _scores(q, k, pos, pos, hd)
  shifted = _scores(q, k, pos + jnp.array([3, 5, 7]), pos + jnp.array([3, 5, 7]), hd)
  np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-4)
  # Each axis matters: moving only the width index of keys changes the scores.
  moved = _scores(q, k, pos, pos + jnp.array([0, 0, 1]), hd)
  assert float(jnp.abs(moved - base).max()) > 1e-2
  # Rotation keeps norms; a bigger grid just gives more rows.
  c, s = L.rope_3d(patching.grid_positions((6, 12, 16))[None], hd)
  assert c.shape == (1, 6 * 12 * 16, hd // 2)
  x = jnp.asarray(r.randn(1, 6 * 12 * 16, 2, hd), jnp.float32)
  np.testing.assert_allclose(jnp.linalg.norm(L.apply_rope(x, c, s), axis=-1),
                             jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  with pytest.raises(ValueError, match="even head dim"):
    L.rope_axes_dims(7)


def test_sincos_tables():
  t2 = L.sincos_2d(8, (2, 3))
  assert t2.shape == (6, 8)
  # Token (row 1, col 2): first half encodes the column, second half the row (DiT reference).
  omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
  want = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(omega), np.cos(omega)])
  np.testing.assert_allclose(t2[1 * 3 + 2], want, rtol=1e-6)
  t3 = L.sincos_3d(16, (3, 2, 2))
  assert t3.shape == (12, 16) and len(np.unique(t3.round(6), axis=0)) == 12
  np.testing.assert_array_equal(L.sincos_3d(8, (1, 2, 3)), t2)
  # The same table at any token's own (t, h, w): what packed clips of mixed sizes index.
  from sora_jax.models import patching
  pos = patching.grid_positions((3, 2, 2))
  np.testing.assert_allclose(L.sincos_positions(16, pos)[0], t3, atol=1e-6)
  np.testing.assert_allclose(L.sincos_positions(16, pos[5:7][None])[0], t3[5:7], atol=1e-6)


def test_attention_modules():
  r = np.random.RandomState(2)
  x = jnp.asarray(r.randn(2, 6, 16), jnp.float32)
  ctx = jnp.asarray(r.randn(2, 4, 12), jnp.float32)
  attn = L.Attention(heads=2, qk_norm=True)
  p = attn.init(jax.random.key(0), x)
  assert nn.unbox(p)["params"]["q_norm"]["scale"].shape == (8,)
  y = attn.apply(p, x)
  assert y.shape == x.shape
  # Self-attention without positions is permutation-equivariant.
  perm = np.array([3, 1, 0, 5, 2, 4])
  np.testing.assert_allclose(attn.apply(p, x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-5)

  xattn = L.CrossAttention(heads=2, zero_init_out=False)
  mask = jnp.asarray([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
  pc = xattn.init(jax.random.key(1), x, ctx, mask)
  assert nn.unbox(pc)["params"]["key"]["kernel"].shape == (12, 2, 8)
  out = xattn.apply(pc, x, ctx, mask)
  np.testing.assert_array_equal(out[1], 0.0 * out[1] + nn.unbox(pc)["params"]["out"]["bias"])
  out2 = xattn.apply(pc, x, ctx.at[0, 2:].set(50.0), mask)
  np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-5)
  zero = L.CrossAttention(heads=2)
  np.testing.assert_array_equal(zero.apply(zero.init(jax.random.key(1), x, ctx, mask),
                                           x, ctx, mask), 0.0)


def test_mlp_norms_modulation_timestep():
  x = jnp.asarray(np.random.RandomState(3).randn(2, 6, 12) * 3 + 1, jnp.float32)
  assert L.mlp_hidden(12, "gelu", 4.0) == 48 and L.mlp_hidden(64, "swiglu", 4.0) == 176
  for kind, names in (("swiglu", {"gate", "up", "fc2"}), ("gelu", {"fc1", "fc2"})):
    p = L.MLP(kind).init(jax.random.key(0), x)["params"]
    assert set(p) == names and L.MLP(kind).apply({"params": p}, x).shape == x.shape
  y = L.LayerNorm(affine=False).apply({}, x)
  np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(-1), 1.0, rtol=1e-3)
  # The closed-form LayerNorm backward equals autodiff through mean / var / rsqrt.
  def autodiff_ln(v):
    c = v - v.mean(-1, keepdims=True)
    return c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-6)
  w = jnp.cos(jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape))
  np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(L.standardize(v, 1e-6) * w))(x),
                             jax.grad(lambda v: jnp.sum(autodiff_ln(v) * w))(x),
                             rtol=1e-4, atol=1e-5)
  rms = L.RMSNorm().apply({"params": {"scale": jnp.ones(12)}}, x)
  np.testing.assert_allclose(jnp.mean(rms ** 2, -1), 1.0, rtol=1e-4)
  # Per-group modulation: group g of tokens gets row g.
  shift = jnp.arange(2 * 3 * 12, dtype=jnp.float32).reshape(2, 3, 12)
  m = L.modulate(jnp.zeros((2, 6, 12)), shift, jnp.zeros_like(shift))
  np.testing.assert_array_equal(m[:, 2:4], jnp.repeat(shift[:, 1:2], 2, 1))
  with pytest.raises(ValueError, match="cannot be split"):
    L.modulate(jnp.zeros((2, 6, 12)), shift[:, :1].repeat(4, 1), shift[:, :1].repeat(4, 1))
  emb = L.timestep_sinusoid(jnp.array([0.0, 500.0]), 8)
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])
  te = L.TimestepEmbedder(16)
  pt = te.init(jax.random.key(0), jnp.zeros((2,)))
  a, b = te.apply(pt, jnp.array([0.1, 0.1])), te.apply(pt, jnp.array([0.1, 0.2]))
  assert a.shape == (2, 16) and float(jnp.abs(a[1] - b[1]).max()) > 1e-4
  ada = L.AdaLNModulation(3)
  outs = ada.apply(ada.init(jax.random.key(0), a[:, None]), a[:, None])
  assert len(outs) == 3 and all(o.shape == (2, 1, 16) for o in outs)
  np.testing.assert_array_equal(outs[0], 0.0)
