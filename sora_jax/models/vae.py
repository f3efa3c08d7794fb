"""Causal 3D-conv VAE that compresses video into spacetime latents.

Shapes: x [B, T, H, W, 3] in [-1, 1] with T = 1 + tc*k  ->  latents [B, 1 + k, H/s, W/s, zc].
The first frame is encoded on its own (every block is causal; see vae_blocks.py), so a still
image (T = 1) is a one-frame video and lands in the same latent space as the first frame of a
clip. The 1x8x8 image VAE, 4x8x8 and 4x16x16 are one module with different fields.

Level schedule: len(channel_mult) levels, with a x2 downsample between consecutive levels.
Spatial downsamples take the first log2(s) slots, temporal ones the first log2(tc) slots (time is
compressed early, where frames are largest, which is what makes video affordable on small
hardware). The decoder mirrors the encoder.

Chunked and tiled inference live in vae_chunked.py; they use the `cache` collection.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models.vae_blocks import (SHORTCUT_LAYOUTS, CausalConv3d, Downsample, FrameAttention,
                                        FrameGroupNorm, ResBlock, Upsample, constrain,
                                        depth_to_space, match_channels, space_to_depth)

Dtype = Any
TEMPORAL_COMPRESSIONS = (1, 2, 4)
SPATIAL_COMPRESSIONS = (4, 8, 16)
LOGVAR_RANGE = (-30.0, 20.0)


def _log2(n: int) -> int:
  return int(round(math.log2(n)))


def _schedule(n_levels: int, spatial_compression: int, temporal_compression: int):
  """(temporal, spatial) downsample flags for each of the n_levels - 1 slots."""
  ns, nt = _log2(spatial_compression), _log2(temporal_compression)
  slots = n_levels - 1
  if ns > slots or nt > slots:
    raise ValueError(f"channel_mult has {n_levels} levels ({slots} downsampling slots) but the "
                     f"compression needs {max(ns, nt)}")
  return [(i < nt, i < ns) for i in range(slots)]


class Encoder(nn.Module):
  temporal_compression: int
  spatial_compression: int
  latent_channels: int
  channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int
  mid_attention: bool = False
  patch_size: int = 1
  shortcut: bool = False
  shortcut_layout: str = "channel"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    sched = _schedule(len(self.channel_mult), self.spatial_compression // self.patch_size,
                      self.temporal_compression)
    x = space_to_depth(constrain(x), self.patch_size)
    h = CausalConv3d(self.channels, **kw, name="conv_in")(x)
    for level, mult in enumerate(self.channel_mult):
      for j in range(self.num_res_blocks):
        h = ResBlock(self.channels * mult, **kw, name=f"down{level}_res{j}")(h)
      if level < len(sched):
        t, s = sched[level]
        if t or s:
          h = Downsample(self.channels * mult, t, s, self.shortcut, self.shortcut_layout, **kw,
                         name=f"down{level}_sample")(h)
    width = self.channels * self.channel_mult[-1]
    h = ResBlock(width, **kw, name="mid_res0")(h)
    if self.mid_attention:
      h = FrameAttention(**kw, name="mid_attn")(h)
    h = ResBlock(width, **kw, name="mid_res1")(h)
    moments = CausalConv3d(2 * self.latent_channels, **kw, name="conv_out")(
        nn.silu(FrameGroupNorm(**kw, name="norm_out")(h)))
    if self.shortcut:  # DC-AE: the mean also gets the channel-averaged features (no
      # sub-positions at this point, so the same under either shortcut_layout)
      skip = match_channels(h, self.latent_channels)
      moments = moments + jnp.concatenate([skip, jnp.zeros_like(skip)], axis=-1)
    return constrain(moments.astype(jnp.float32))


class Decoder(nn.Module):
  temporal_compression: int
  spatial_compression: int
  channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int
  out_channels: int = 3
  mid_attention: bool = False
  patch_size: int = 1
  shortcut: bool = False
  shortcut_layout: str = "channel"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    sched = _schedule(len(self.channel_mult), self.spatial_compression // self.patch_size,
                      self.temporal_compression)
    width = self.channels * self.channel_mult[-1]
    z = constrain(z)
    h = CausalConv3d(width, **kw, name="conv_in")(z)
    if self.shortcut:  # DC-AE: the latent, channels repeated (repeat_interleave; no
      # sub-positions, so the same under either shortcut_layout), feeds the decoder directly too
      h = h + match_channels(z.astype(h.dtype), width)
    h = ResBlock(width, **kw, name="mid_res0")(h)
    if self.mid_attention:
      h = FrameAttention(**kw, name="mid_attn")(h)
    h = ResBlock(width, **kw, name="mid_res1")(h)
    for level in reversed(range(len(self.channel_mult))):
      feats = self.channels * self.channel_mult[level]
      for j in range(self.num_res_blocks + 1):
        h = ResBlock(feats, **kw, name=f"up{level}_res{j}")(h)
      if level > 0:
        t, s = sched[level - 1]
        if t or s:
          h = Upsample(feats, t, s, self.shortcut, self.shortcut_layout, **kw,
                       name=f"up{level}_sample")(h)
    h = nn.silu(FrameGroupNorm(**kw, name="norm_out")(h))
    p = self.patch_size
    h = CausalConv3d(self.out_channels * p * p, **kw, name="conv_out")(h)
    return constrain(depth_to_space(h.astype(jnp.float32), p))


class VAE(nn.Module):
  """Spacetime VAE with a diagonal-Gaussian posterior. See the module docstring for shapes."""
  temporal_compression: int = 4
  spatial_compression: int = 8
  latent_channels: int = 8
  channels: int = 64
  channel_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 1
  out_channels: int = 3
  mid_attention: bool = False
  patch_size: int = 1
  shortcut: bool = False
  shortcut_layout: str = "channel"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    common = dict(temporal_compression=self.temporal_compression,
                  spatial_compression=self.spatial_compression, channels=self.channels,
                  channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
                  mid_attention=self.mid_attention, patch_size=self.patch_size,
                  shortcut=self.shortcut, shortcut_layout=self.shortcut_layout, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    self.encoder = Encoder(latent_channels=self.latent_channels, **common)
    self.decoder = Decoder(out_channels=self.out_channels, **common)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, T, H, W, 3] in [-1, 1] -> (mean, logvar), each [B, 1+(T-1)//tc, H/s, W/s, zc]."""
    moments = self.encoder(x)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: jax.Array) -> jax.Array:
    """z [B, Tl, h, w, zc] -> x_hat [B, 1+(Tl-1)*tc, h*s, w*s, 3] (float32, unclipped)."""
    return self.decoder(z)

  def __call__(self, x: jax.Array, rng: jax.Array | None = None,
               sample_posterior: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (x_hat, mean, logvar). Samples z when sample_posterior and rng is given, else
    decodes the posterior mean."""
    mean, logvar = self.encode(x)
    z = mean
    if sample_posterior and rng is not None:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return self.decode(z), mean, logvar


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)), mean over all latent elements."""
  return 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def _dtype(name, key: str):
  if not isinstance(name, str):
    return name
  table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
  if name not in table:
    raise ValueError(f"{key}={name!r} is not a dtype; use 'float32' or 'bfloat16'")
  return table[name]


def vae_from_config(vae_cfg) -> VAE:
  """Builds the VAE from the `config.vae` section."""
  return VAE(
      temporal_compression=int(vae_cfg.temporal_compression),
      spatial_compression=int(vae_cfg.spatial_compression),
      latent_channels=int(vae_cfg.latent_channels),
      channels=int(vae_cfg.channels),
      channel_mult=tuple(int(m) for m in vae_cfg.channel_mult),
      num_res_blocks=int(vae_cfg.num_res_blocks),
      mid_attention=bool(vae_cfg.get("mid_attention", False)),
      patch_size=int(vae_cfg.get("patch_size", 1)),
      shortcut=bool(vae_cfg.get("shortcut", False)),
      shortcut_layout=str(vae_cfg.get("shortcut_layout", "channel")),
      dtype=_dtype(vae_cfg.get("dtype", "float32"), "vae.dtype"),
      param_dtype=_dtype(vae_cfg.get("param_dtype", "float32"), "vae.param_dtype"))


def latent_shape(frames: int, height: int, width: int, vae_cfg) -> tuple[int, int, int, int]:
  """(latent_frames, latent_height, latent_width, latent_channels) for a clip of this size."""
  tc, s = int(vae_cfg.temporal_compression), int(vae_cfg.spatial_compression)
  return (1 + (frames - 1) // tc, height // s, width // s, int(vae_cfg.latent_channels))


def validate_vae_config(vae_cfg, frames: int, height: int, width: int) -> None:
  """Raises ValueError naming the offending key, its value and the fix."""
  tc, s = vae_cfg.temporal_compression, vae_cfg.spatial_compression
  if tc not in TEMPORAL_COMPRESSIONS:
    raise ValueError(f"vae.temporal_compression={tc} is not supported; use one of "
                     f"{TEMPORAL_COMPRESSIONS}")
  if s not in SPATIAL_COMPRESSIONS:
    raise ValueError(f"vae.spatial_compression={s} is not supported; use one of "
                     f"{SPATIAL_COMPRESSIONS}")
  if vae_cfg.latent_channels <= 0:
    raise ValueError(f"vae.latent_channels={vae_cfg.latent_channels} must be > 0; use 4, 8 or 16")
  if vae_cfg.channels <= 0 or vae_cfg.num_res_blocks < 0:
    raise ValueError(f"vae.channels={vae_cfg.channels} must be > 0 and vae.num_res_blocks="
                     f"{vae_cfg.num_res_blocks} >= 0")
  mult = tuple(vae_cfg.channel_mult)
  p = int(vae_cfg.get("patch_size", 1))
  if p not in (1, 2, 4) or s % p:
    raise ValueError(f"vae.patch_size={p} must be 1, 2 or 4 and divide "
                     f"vae.spatial_compression={s}")
  ns, nt = _log2(s // p), _log2(tc)
  need = max(ns, nt)
  if len(mult) - 1 != need:
    suggestion = tuple(list(mult[:need + 1]) + [mult[-1]] * max(0, need + 1 - len(mult)))
    raise ValueError(
        f"vae.channel_mult={mult} has {len(mult) - 1} downsampling levels but "
        f"vae.spatial_compression={s} with vae.patch_size={p} needs log2({s}/{p}) = {ns} and "
        f"vae.temporal_compression={tc} needs {nt}; use {need + 1} entries, e.g. "
        f"vae.channel_mult={suggestion}")
  if vae_cfg.get("shortcut", False):
    widths = [int(vae_cfg.channels) * m for m in mult]
    pairs = [(w * 8, w) for w in widths] + [(widths[-1], int(vae_cfg.latent_channels))]
    for a, b in pairs:
      if max(a, b) % min(a, b):
        raise ValueError(
            f"vae.shortcut=True averages or repeats channels, so widths must divide each other, "
            f"but vae.channels={vae_cfg.channels}, vae.channel_mult={mult} and "
            f"vae.latent_channels={vae_cfg.latent_channels} give {a} vs {b}; use powers of two "
            f"or vae.shortcut=False")
  layout = vae_cfg.get("shortcut_layout", "channel")
  if layout not in SHORTCUT_LAYOUTS:
    raise ValueError(f"vae.shortcut_layout={layout!r}; use 'channel' (DC-AE, the default) or "
                     f"'subpixel' (only for weights trained before the layout fix)")
  if (frames - 1) % tc or frames < 1:
    ok = ", ".join(str(1 + tc * k) for k in range(5))
    raise ValueError(f"data.frames={frames} is not 1 + {tc}k for vae.temporal_compression={tc}; "
                     f"use {ok}, ...")
  for key, val in (("data.height", height), ("data.width", width)):
    if val % s:
      raise ValueError(f"{key}={val} is not divisible by vae.spatial_compression={s}; use "
                       f"{max(s, val // s * s)} or {(val // s + 1) * s}")
  for key in ("dtype", "param_dtype"):
    if key in vae_cfg:
      _dtype(vae_cfg[key], f"vae.{key}")
  if vae_cfg.get("recon_loss", "l1") not in ("l1", "l2"):
    raise ValueError(f"vae.recon_loss={vae_cfg.recon_loss!r}; use 'l1' or 'l2'")
  tile, overlap = int(vae_cfg.get("tile", 0)), int(vae_cfg.get("tile_overlap", 0))
  if tile and (tile % s or overlap % s or not 0 <= overlap < tile):
    raise ValueError(f"vae.tile={tile} and vae.tile_overlap={overlap} must be multiples of "
                     f"vae.spatial_compression={s} with 0 <= tile_overlap < tile")
  if int(vae_cfg.get("encode_chunk", 1)) < 0:
    raise ValueError(f"vae.encode_chunk={vae_cfg.encode_chunk} must be >= 0 (0 = one pass)")
