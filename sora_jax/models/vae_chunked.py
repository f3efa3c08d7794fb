"""Chunked (in time) and tiled (in space) VAE inference for clips that do not fit in one pass.

Chunks: every causal conv keeps the input frames its next window still needs in the `cache`
collection (see vae_blocks.py), so encoding or decoding chunk by chunk gives the one-pass result
to float tolerance while peak activation memory depends on the chunk, not on the clip's length.
A chunk is counted in LATENT frames: the first chunk holds latent frames [0, n) (input frames
[0, 1 + tc(n-1))), every later chunk n latent frames (tc*n input frames); the last may be short.
Each distinct chunk shape compiles once (first chunk, steady chunk, tail).

Tiles: overlapping spatial tiles blended with linear ramps over the overlap. Not exact (each tile
sees zero padding at its own border and per-tile GroupNorm statistics), but seams stay smooth;
use it only when a frame does not fit. Tiles compose with chunks (each tile is chunked).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.vae import VAE


@functools.partial(jax.jit, static_argnums=0)
def _encode_step(vae: VAE, params, cache, x):
  variables = {"params": params} if cache is None else {"params": params, "cache": cache}
  (mean, logvar), mut = vae.apply(variables, x, method=VAE.encode, mutable=["cache"])
  return mean, logvar, mut["cache"]


@functools.partial(jax.jit, static_argnums=0)
def decode_step(vae: VAE, params, cache, z):
  variables = {"params": params} if cache is None else {"params": params, "cache": cache}
  x, mut = vae.apply(variables, z, method=VAE.decode, mutable=["cache"])
  return x, mut["cache"]


def _check_chunk(chunk: int, what: str) -> int:
  if int(chunk) < 1:
    raise ValueError(f"{what} must be >= 1 latent frame, got {chunk}")
  return int(chunk)


def encode_chunked(vae: VAE, params, x: jax.Array, chunk_latent_frames: int):
  """Encodes x [B, 1 + tc*k, H, W, 3] in chunks of latent frames; returns (mean, logvar)."""
  n = _check_chunk(chunk_latent_frames, "encode chunk")
  tc = vae.temporal_compression
  frames = x.shape[1]
  if (frames - 1) % tc:
    raise ValueError(f"clip has {frames} frames, not 1 + {tc}k for temporal_compression={tc}")
  bounds = [0, min(frames, 1 + tc * (n - 1))]
  while bounds[-1] < frames:
    bounds.append(min(frames, bounds[-1] + tc * n))
  cache, means, logvars = None, [], []
  for a, b in zip(bounds[:-1], bounds[1:]):
    mean, logvar, cache = _encode_step(vae, params, cache, x[:, a:b])
    means.append(mean)
    logvars.append(logvar)
  return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)


def iter_decode_chunks(vae: VAE, params, z: jax.Array, chunk_latent_frames: int
                       ) -> Iterator[jax.Array]:
  """Yields decoded frames chunk by chunk (frame 0 first), e.g. to stream a long clip to disk."""
  n = _check_chunk(chunk_latent_frames, "decode chunk")
  cache = None
  for a in range(0, z.shape[1], n):
    x, cache = decode_step(vae, params, cache, z[:, a:a + n])
    yield x


def decode_chunked(vae: VAE, params, z: jax.Array, chunk_latent_frames: int) -> jax.Array:
  """Decodes z [B, Tl, h, w, zc] in chunks of latent frames -> [B, 1 + (Tl-1)*tc, H, W, 3]."""
  return jnp.concatenate(list(iter_decode_chunks(vae, params, z, chunk_latent_frames)), axis=1)


# -- spatial tiling -------------------------------------------------------------------------------

def _starts(size: int, tile: int, overlap: int) -> list[int]:
  if tile >= size:
    return [0]
  starts = list(range(0, size - tile + 1, tile - overlap))
  if starts[-1] + tile < size:
    starts.append(size - tile)
  return starts


def _ramp(n: int, overlap: int) -> np.ndarray:
  """1 in the middle, linear ramps of `overlap` samples at both ends (never 0)."""
  i = np.arange(n, dtype=np.float32)
  r = np.minimum((i + 1) / (overlap + 1), (n - i) / (overlap + 1))
  return np.minimum(r, 1.0)


def _tiled(fn: Callable, x: jax.Array, tile_in: int, overlap_in: int, scale_num: int,
           scale_den: int):
  """Runs fn on overlapping spatial tiles of x and blends; fn's outputs are scaled by num/den."""
  h, w = x.shape[2], x.shape[3]
  sy, sx = _starts(h, tile_in, overlap_in), _starts(w, tile_in, overlap_in)
  acc, weight = None, None
  for y0 in sy:
    for x0 in sx:
      outs = fn(x[:, :, y0:y0 + tile_in, x0:x0 + tile_in])
      outs = outs if isinstance(outs, tuple) else (outs,)
      th, tw = outs[0].shape[2], outs[0].shape[3]
      ov = overlap_in * scale_num // scale_den
      wgt = jnp.asarray(_ramp(th, ov)[:, None] * _ramp(tw, ov)[None, :])[None, None, :, :, None]
      oy, ox = y0 * scale_num // scale_den, x0 * scale_num // scale_den
      if acc is None:
        full = (outs[0].shape[0], outs[0].shape[1], h * scale_num // scale_den,
                w * scale_num // scale_den)
        acc = [jnp.zeros(full + (o.shape[-1],), jnp.float32) for o in outs]
        weight = jnp.zeros(full + (1,), jnp.float32)
      acc = [a.at[:, :, oy:oy + th, ox:ox + tw].add(o * wgt) for a, o in zip(acc, outs)]
      weight = weight.at[:, :, oy:oy + th, ox:ox + tw].add(jnp.broadcast_to(
          wgt, weight[:, :, oy:oy + th, ox:ox + tw].shape))
  out = tuple(a / weight for a in acc)
  return out if len(out) > 1 else out[0]


def _check_tile(vae: VAE, tile: int, overlap: int) -> None:
  s = vae.spatial_compression
  if tile % s or overlap % s or not 0 <= overlap < tile:
    raise ValueError(f"vae.tile={tile} and vae.tile_overlap={overlap} must be multiples of "
                     f"spatial_compression={s} with 0 <= tile_overlap < tile")


def encode(vae: VAE, params, x: jax.Array, chunk: int = 0, tile: int = 0, overlap: int = 0):
  """(mean, logvar) of x, chunked in time when chunk > 0 (latent frames), tiled in space when
  tile > 0 (pixels, with `overlap` pixels of blending)."""
  def one(xt):
    if chunk:
      return encode_chunked(vae, params, xt, chunk)
    mean, logvar, _ = _encode_step(vae, params, None, xt)
    return mean, logvar

  if not tile or (tile >= x.shape[2] and tile >= x.shape[3]):
    return one(x)
  _check_tile(vae, tile, overlap)
  return _tiled(one, x, tile, overlap, 1, vae.spatial_compression)


def decode(vae: VAE, params, z: jax.Array, chunk: int = 0, tile: int = 0,
           overlap: int = 0) -> jax.Array:
  """Pixels of z; chunk in latent frames, tile and overlap in PIXELS (as in the config)."""
  def one(zt):
    if chunk:
      return decode_chunked(vae, params, zt, chunk)
    return decode_step(vae, params, None, zt)[0]

  s = vae.spatial_compression
  if not tile or (tile >= z.shape[2] * s and tile >= z.shape[3] * s):
    return one(z)
  _check_tile(vae, tile, overlap)
  return _tiled(one, z, tile // s, overlap // s, s, 1)


def encode_with_config(vae: VAE, params, x: jax.Array, vae_cfg):
  """encode() with chunk/tile/overlap from config.vae (encode_chunk, tile, tile_overlap)."""
  return encode(vae, params, x, int(vae_cfg.get("encode_chunk", 0)), int(vae_cfg.get("tile", 0)),
                int(vae_cfg.get("tile_overlap", 0)))


def decode_with_config(vae: VAE, params, z: jax.Array, vae_cfg) -> jax.Array:
  return decode(vae, params, z, int(vae_cfg.get("encode_chunk", 0)), int(vae_cfg.get("tile", 0)),
                int(vae_cfg.get("tile_overlap", 0)))
