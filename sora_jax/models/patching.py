"""Spacetime patchify / unpatchify for any patch (pt, ph, pw).

Tokens are ordered frame-major: token index = (it * nh + ih) * nw + iw. The DiT relies on this
order to broadcast per-frame conditioning (timesteps) over contiguous groups of tokens.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

_AXES = ("frames", "height", "width")


def _check_patch(patch: Sequence[int]) -> tuple[int, int, int]:
  patch = tuple(int(p) for p in patch)
  if len(patch) != 3 or min(patch) < 1:
    raise ValueError(f"patch must be three positive ints (pt, ph, pw), got {patch}")
  return patch


def token_grid(t: int, h: int, w: int, patch: Sequence[int]) -> tuple[int, int, int]:
  """(nt, nh, nw) token grid of a latent grid (t, h, w); ValueError if the patch does not divide."""
  patch = _check_patch(patch)
  grid = (int(t), int(h), int(w))
  for name, size, p in zip(_AXES, grid, patch):
    if size % p:
      why = f"{name} {size} is odd" if p == 2 else f"{name} {size} is not a multiple of {p}"
      raise ValueError(
          f"patch {patch} does not divide latent grid {grid}: {why}; pick a resolution/frame "
          f"count whose latent {name} is a multiple of {p}, or a smaller patch")
  return tuple(s // p for s, p in zip(grid, patch))


def patchify(x, patch: Sequence[int]):
  """[B, T, H, W, C] -> (tokens [B, N, pt*ph*pw*C], grid (nt, nh, nw))."""
  if x.ndim != 5:
    raise ValueError(f"patchify expects latents [batch, frames, height, width, channels], "
                     f"got shape {tuple(x.shape)}")
  b, t, h, w, c = x.shape
  pt, ph, pw = _check_patch(patch)
  nt, nh, nw = token_grid(t, h, w, patch)
  x = x.reshape(b, nt, pt, nh, ph, nw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # b nt nh nw pt ph pw c
  return x.reshape(b, nt * nh * nw, pt * ph * pw * c), (nt, nh, nw)


def unpatchify(tokens, grid: Sequence[int], patch: Sequence[int], channels: int):
  """Inverse of `patchify`: tokens [B, N, pt*ph*pw*C] -> [B, T, H, W, C]."""
  pt, ph, pw = _check_patch(patch)
  nt, nh, nw = (int(g) for g in grid)
  b, n, d = tokens.shape
  if n != nt * nh * nw or d != pt * ph * pw * channels:
    raise ValueError(
        f"unpatchify: tokens {tuple(tokens.shape)} do not match grid {tuple(grid)} x patch "
        f"{(pt, ph, pw)} x {channels} channels (expected [{b}, {nt * nh * nw}, "
        f"{pt * ph * pw * channels}])")
  x = tokens.reshape(b, nt, nh, nw, pt, ph, pw, channels)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)  # b nt pt nh ph nw pw c
  return x.reshape(b, nt * pt, nh * ph, nw * pw, channels)


def grid_positions_np(grid: Sequence[int]) -> np.ndarray:
  """int32 [N, 3]: the (t, h, w) index of each token, in patchify's order (numpy)."""
  nt, nh, nw = (int(g) for g in grid)
  tt, hh, ww = np.meshgrid(np.arange(nt), np.arange(nh), np.arange(nw), indexing="ij")
  return np.stack([tt, hh, ww], -1).reshape(-1, 3).astype(np.int32)


def grid_positions(grid: Sequence[int]) -> jnp.ndarray:
  """int32 [N, 3]: the (t, h, w) index of each token, in patchify's order."""
  return jnp.asarray(grid_positions_np(grid), jnp.int32)


def patchify_clip(latents, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """One clip's latents [T, H, W, C] (numpy, on the host) -> (tokens [N, pt*ph*pw*C], positions
  int32 [N, 3]): what the packer (sora_jax.data.packing) lays side by side."""
  tokens, grid = patchify(np.asarray(latents)[None], patch)
  return tokens[0], grid_positions_np(grid)
