"""Transformer building blocks: dense, norms, RoPE-3D, sin-cos positions, attention, MLP, adaLN.

The attention modules project and normalise; the op itself (XLA / cuDNN / context parallel) is
`sora_jax.models.attention.dot_product_attention`.

Every parameter carries logical axis names (nn.with_logical_partitioning) and the main activations
carry act_* names (nn.with_logical_constraint); both are no-ops outside a mesh/rules context.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.attention import dot_product_attention

Dtype = Any
Init = Callable[..., Any]

ACT_TOKENS = ("act_batch", "act_seq", "act_embed")
ACT_HEADS = ("act_batch", "act_seq", "act_heads", "act_kv")
ACT_MLP = ("act_batch", "act_seq", "act_mlp")


def constrain(x, names):
  return nn.with_logical_constraint(x, names)


def xavier_uniform(in_axis=-2, out_axis=-1):
  return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=in_axis,
                                          out_axis=out_axis)


class Dense(nn.Module):
  """x[..., *in] @ kernel[*in, *out] (+ bias), contracting the last `len(in_names)` axes of x.

  `names` are the kernel's logical axes: the input axes first, then the output axes.
  """
  features: int | Sequence[int]
  names: Sequence[str | None]
  use_bias: bool = True
  kernel_init: Init | None = None
  bias_init: Init = nn.initializers.zeros_init()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    n_in = len(self.names) - len(out)
    if n_in < 1:
      raise ValueError(f"Dense names {self.names} must cover input and output axes {out}")
    in_shape = x.shape[-n_in:]
    in_axes = tuple(range(n_in))
    out_axes = tuple(range(n_in, n_in + len(out)))
    init = self.kernel_init or xavier_uniform(in_axes, out_axes)
    kernel = self.param("kernel", nn.with_logical_partitioning(init, tuple(self.names)),
                        in_shape + out, self.param_dtype)
    x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
    y = jax.lax.dot_general(x, kernel, ((tuple(range(x.ndim - n_in, x.ndim)), in_axes), ((), ())))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(self.bias_init,
                                                             tuple(self.names[n_in:])),
                        out, self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return y


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  name_axis: str = "norm"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             (self.name_axis,)),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def standardize(x, eps: float):
  """(x - mean) / sqrt(var + eps) over the last axis."""
  return _standardize_fwd(x, eps)[0]


def _standardize_fwd(x, eps):
  xc = x - jnp.mean(x, -1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(xc), -1, keepdims=True) + eps)
  y = xc * rstd
  return y, (y, rstd)


def _standardize_bwd(eps, res, dy):
  # The closed form: autodiff's chain through mean, var and rsqrt fused into one wide
  # elementwise op on XLA:CPU that cost ~20 % more per LayerNorm at S/2 (benchmarks/RESULTS.md).
  del eps
  y, rstd = res
  return (rstd * (dy - jnp.mean(dy, -1, keepdims=True)
                  - y * jnp.mean(dy * y, -1, keepdims=True)),)


standardize.defvjp(_standardize_fwd, _standardize_bwd)


class LayerNorm(nn.Module):
  """LayerNorm in float32; `affine=False` is the adaLN pre-norm (modulation supplies scale/shift)."""
  eps: float = 1e-6
  affine: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = standardize(x.astype(jnp.float32), self.eps)
    if self.affine:
      d = x.shape[-1]
      scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                               ("norm",)), (d,), self.param_dtype)
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             ("norm",)), (d,), self.param_dtype)
      y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


# ----------------------------------------------------------------------------- positions


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
  """Split head_dim into (t, h, w) rotary dims, each even; h and w equal, t takes the rest."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head dim, got {head_dim} (width / heads)")
  pairs = head_dim // 2
  hw = pairs // 3
  return (2 * (pairs - 2 * hw), 2 * hw, 2 * hw)


def rope_3d(positions, head_dim: int, theta: float = 10000.0,
            axes_dims: Sequence[int] | None = None):
  """Rotary angles for (t, h, w) integer positions [B or 1, N, 3] -> (cos, sin) [B|1, N, hd/2].

  Frequencies depend only on each axis' dim, never on the grid size, so a model trained at one
  token grid runs at any other (longer videos, larger frames).
  """
  axes_dims = tuple(axes_dims) if axes_dims is not None else rope_axes_dims(head_dim)
  if sum(axes_dims) != head_dim or any(d % 2 for d in axes_dims):
    raise ValueError(f"rope axes_dims {axes_dims} must be even and sum to head_dim {head_dim}")
  positions = jnp.asarray(positions, jnp.float32)
  if positions.ndim == 2:
    positions = positions[None]
  angles = []
  for axis, d in enumerate(axes_dims):
    if d == 0:
      continue
    freqs = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float32) / d))
    angles.append(positions[..., axis:axis + 1] * jnp.asarray(freqs))
  angles = jnp.concatenate(angles, -1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
  """Rotate-half RoPE on x [B, N, H, D] with cos/sin [B|1, N, D/2] (computed in float32)."""
  d = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., :d], xf[..., d:]
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1).astype(x.dtype)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_hw: Sequence[int]) -> np.ndarray:
  """Fixed 2D sin-cos table [nh*nw, dim], identical to the DiT/MAE reference."""
  nh, nw = grid_hw
  if dim % 4:
    raise ValueError(f"2D sin-cos positions need width % 4 == 0, got {dim}")
  # The reference meshgrids (w, h): its first half encodes the column, the second the row.
  gw, gh = np.meshgrid(np.arange(nw, dtype=np.float32), np.arange(nh, dtype=np.float32))
  return np.concatenate([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], 1).astype(np.float32)


def sincos_3d(dim: int, grid: Sequence[int]) -> np.ndarray:
  """Fixed sin-cos table [nt*nh*nw, dim]: 2D (DiT) for one frame, else t takes ~1/4 of dim."""
  nt, nh, nw = grid
  if nt == 1:
    return sincos_2d(dim, (nh, nw))
  dt = 2 * (dim // 8)
  dhw = dim - dt
  if dhw % 4:
    raise ValueError(f"3D sin-cos positions need width % 8 == 0, got {dim}")
  hw = sincos_2d(dhw, (nh, nw))
  tt = _sincos_1d(dt, np.arange(nt)).astype(np.float32)
  return np.concatenate([np.repeat(tt, nh * nw, 0), np.tile(hw, (nt, 1))], 1)


def sincos_positions(dim: int, positions) -> jax.Array:
  """sincos_3d's table at arbitrary integer (t, h, w) positions [B|1, N, 3] -> [B|1, N, dim]
  (packed clips of any size each index their own grid); sincos_3d on a grid of > 1 frame."""
  positions = jnp.asarray(positions, jnp.float32)
  if positions.ndim == 2:
    positions = positions[None]
  dt = 2 * (dim // 8)
  dhw = dim - dt
  if dhw % 4:
    raise ValueError(f"3D sin-cos positions need width % 8 == 0, got {dim}")

  def one(d, pos):
    omega = 1.0 / 10000 ** (jnp.arange(d // 2, dtype=jnp.float32) / (d / 2.0))
    out = pos[..., None] * omega
    return jnp.concatenate([jnp.sin(out), jnp.cos(out)], -1)
  # sincos_2d's order: the column's half first, then the row's.
  return jnp.concatenate([one(dt, positions[..., 0]), one(dhw // 2, positions[..., 2]),
                          one(dhw // 2, positions[..., 1])], -1)


# ----------------------------------------------------------------------------- attention


class Attention(nn.Module):
  """Multi-head self-attention with optional QK-norm and rotary positions."""
  heads: int
  qk_norm: bool = True
  use_bias: bool = True
  impl: str = "xla"
  max_segments: int | None = None   # see attention.dot_product_attention
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rope=None, segment_ids=None):
    d = x.shape[-1]
    if d % self.heads:
      raise ValueError(f"width {d} is not divisible by heads {self.heads}")
    hd = d // self.heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=self.use_bias)
    proj = lambda name: Dense((self.heads, hd), ("embed", "heads", "kv"), name=name, **kw)(x)
    q, k, v = (constrain(proj(n), ACT_HEADS) for n in ("query", "key", "value"))
    if self.qk_norm:
      nkw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
      q, k = RMSNorm(name="q_norm", **nkw)(q), RMSNorm(name="k_norm", **nkw)(k)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    o = dot_product_attention(q, k, v, impl=self.impl, segment_ids=segment_ids,
                              max_segments=self.max_segments)
    o = constrain(o, ACT_HEADS)
    return Dense(d, ("heads", "kv", "embed"), name="out", **kw)(o)


class CrossAttention(nn.Module):
  """Queries from tokens [B, N, D], keys/values from text [B, L, Dc] under a key mask [B, L].

  Packed rows: `segment_ids` [B, N] and `context_segment_ids` [B, L] (each caption token's clip)
  make every token read only its own clip's caption.
  """
  heads: int
  qk_norm: bool = True
  impl: str = "xla"
  zero_init_out: bool = True
  max_segments: int | None = None   # see attention.dot_product_attention
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context, context_mask=None, segment_ids=None, context_segment_ids=None):
    d = x.shape[-1]
    hd = d // self.heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q = Dense((self.heads, hd), ("embed", "heads", "kv"), name="query", **kw)(x)
    k = Dense((self.heads, hd), ("embed", "heads", "kv"), name="key", **kw)(context)
    v = Dense((self.heads, hd), ("embed", "heads", "kv"), name="value", **kw)(context)
    if self.qk_norm:
      q, k = RMSNorm(name="q_norm", **kw)(q), RMSNorm(name="k_norm", **kw)(k)
    impl = self.impl if self.impl in ("xla", "cudnn") else "xla"  # text is short: no ring
    o = dot_product_attention(q, k, v, mask=context_mask, impl=impl, segment_ids=segment_ids,
                              kv_segment_ids=context_segment_ids, max_segments=self.max_segments)
    if context_mask is not None:
      # A fully masked caption (the CFG null prompt) attends to nothing rather than to padding.
      o = o * jnp.any(context_mask, -1)[:, None, None, None].astype(o.dtype)
    out_init = nn.initializers.zeros_init() if self.zero_init_out else None
    return Dense(d, ("heads", "kv", "embed"), kernel_init=out_init, name="out", **kw)(o)


def mlp_hidden(width: int, mlp: str, mlp_ratio: float) -> int:
  """Hidden size: ratio*width for GELU; 2/3 of it (rounded up to 8) for SwiGLU at equal params."""
  if mlp == "gelu":
    return int(width * mlp_ratio)
  if mlp == "swiglu":
    return int(math.ceil(width * mlp_ratio * 2 / 3 / 8) * 8)
  raise ValueError(f"model.mlp must be 'swiglu' or 'gelu', got {mlp!r}")


class MLP(nn.Module):
  kind: str = "swiglu"
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    hidden = mlp_hidden(d, self.kind, self.mlp_ratio)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.kind == "gelu":
      h = nn.gelu(Dense(hidden, ("embed", "mlp"), name="fc1", **kw)(x), approximate=True)
    else:
      gate = Dense(hidden, ("embed", "mlp"), use_bias=False, name="gate", **kw)(x)
      up = Dense(hidden, ("embed", "mlp"), use_bias=False, name="up", **kw)(x)
      h = nn.silu(gate) * up
    h = constrain(h, ACT_MLP)
    return Dense(d, ("mlp", "embed"), use_bias=self.kind == "gelu", name="fc2", **kw)(h)


# ----------------------------------------------------------------------------- adaLN / timestep


def grouped(fn, x, *mods):
  """Apply fn(x_group, *mod_group) with per-group modulation: x [B, N, D], mods [B, G, D].

  Tokens are frame-major, so G = 1 is one vector per sample and G = frames is one per frame.
  """
  b, n, d = x.shape
  g = mods[0].shape[1]
  if n % g:
    raise ValueError(f"{n} tokens cannot be split into {g} conditioning groups")
  # 3-D [B*G, N/G, D], not 4-D [B, G, N/G, D]: the backward's token sums over the 4-D form
  # with G = 1 ran ~10x slower on XLA:CPU (9 ms vs 0.8 ms per modulate at S/2, batch 8).
  y = fn(x.reshape(b * g, n // g, d), *(m.reshape(b * g, 1, d) for m in mods))
  return y.reshape(b, n, d)


def modulate(x, shift, scale):
  """adaLN: x * (1 + scale) + shift, with shift/scale [B, G, D] over G token groups."""
  return grouped(lambda xx, sh, sc: xx * (1 + sc) + sh, x, shift, scale)


def gate(x, g):
  return grouped(lambda xx, gg: xx * gg, x, g)


class AdaLNModulation(nn.Module):
  """SiLU -> Dense(n * width), zero-initialised (adaLN-zero): returns n chunks [B, G, width]."""
  n: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, c):
    d = c.shape[-1]
    zeros = nn.initializers.zeros_init()
    y = Dense(self.n * d, ("embed", "mlp"), kernel_init=zeros, dtype=self.dtype,
              param_dtype=self.param_dtype, name="proj")(nn.silu(c))
    return jnp.split(y, self.n, axis=-1)


def timestep_sinusoid(t, dim: int = 256, max_period: float = 10000.0):
  """DiT's sinusoid: [cos, sin] of t * 10000^(-i/half); t any shape -> t.shape + (dim,)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[..., :1])], -1)
  return emb


class TimestepEmbedder(nn.Module):
  """t in [0, 1] (any shape) -> [..., width]: sinusoid of 1000 t, then Dense-SiLU-Dense."""
  width: int
  freq_dim: int = 256
  scale: float = 1000.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=nn.initializers.normal(0.02))
    h = timestep_sinusoid(jnp.asarray(t, jnp.float32) * self.scale, self.freq_dim)
    h = nn.silu(Dense(self.width, (None, "embed"), name="fc1", **kw)(h))
    return Dense(self.width, ("mlp", "embed"), name="fc2", **kw)(h)
