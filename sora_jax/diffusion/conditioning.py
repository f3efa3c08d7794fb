"""Conditioning by frames: one model, one sampler, every Sora mode.

A condition is a set of KNOWN latent frames (`mask` [B, T] True where known, their values
`known` [B, T, H, W, C]); the DiT takes one t per latent frame, so known frames are shown clean
(t = 0, or lightly noised as an augmentation) while the others are denoised around them.

Training (`frame_task_mask`, `frame_timesteps`) draws a task per clip from
`diffusion.frame_tasks`, e.g. "none:0.5,first:0.2,last:0.1,first_last:0.05,keyframes:0.05,
retake:0.05,forcing:0.05":
  none        text-to-video: nothing known
  first/last  the first / last k frames known (image-to-video, extension forwards / backwards)
  first_last  the first and the last frame (connecting two clips, loops)
  keyframes   a random subset of frames known
  retake      everything known but one random span
  forcing     nothing known, an independent t per frame (diffusion forcing: causal continuation)
The loss counts unknown frames only.

Sampling (`samplers.sample(..., frames=FrameCondition)`) holds the known frames at their values
in every step of the one compiled loop; the modes differ only in the mask they build
(`place`): text-to-image (one frame), image-to-video, extend forwards / backwards, loop (first and
last latent frames tied), connect, keyframes, retake, and SDEdit editing (`strength`: start from
the input noised to that t).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import FRAME_TASKS as TASKS, parse_tasks  # noqa: F401 (re-exported)


def frame_task_mask(rng: jax.Array, batch: int, frames: int,
                    tasks: tuple[tuple[str, float], ...],
                    lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(known mask [B, T] bool, diffusion-forcing flag [B] bool): one task per clip, drawn by
  weight. `lengths` [B] (packed clips of several durations) gives each clip its own number of
  frames <= T; frames past it are never known. A clip of one frame (an image) is always
  text-to-image, and every clip keeps at least one unknown frame to learn from."""
  if not tasks or frames < 2:
    return jnp.zeros((batch, frames), bool), jnp.zeros((batch,), bool)
  names = [n for n, _ in tasks]
  p = jnp.asarray([w for _, w in tasks], jnp.float32)
  k_task, k_len, k_key, k_a, k_b = jax.random.split(rng, 5)
  task = jax.random.choice(k_task, len(names), (batch,), p=p / p.sum())
  idx = jnp.arange(frames)[None]
  n = (jnp.full((batch, 1), frames, jnp.int32) if lengths is None
       else jnp.asarray(lengths, jnp.int32).reshape(batch, 1))
  inside = idx < n
  u = jax.random.uniform(k_len, (batch, 1))
  k = 1 + jnp.floor(u * jnp.maximum(n // 2, 1)).astype(jnp.int32)          # 1..n/2 frames
  start = jnp.floor(jax.random.uniform(k_a, (batch, 1)) * n).astype(jnp.int32)
  length = 1 + jnp.floor(jax.random.uniform(k_b, (batch, 1)) * (n - start)).astype(jnp.int32)
  span = (idx >= start) & (idx < start + length)
  first_last = (idx == 0) | (idx == n - 1)
  masks = {
      "none": jnp.zeros((batch, frames), bool),
      "first": idx < k,
      "last": (idx >= n - k) & inside,
      "first_last": jnp.where(n >= 3, first_last, idx < k),   # two frames: the first only
      # never every frame: the clip's drawn span stays unknown
      "keyframes": jax.random.bernoulli(k_key, 0.3, (batch, frames)) & ~span & inside,
      "retake": ~span & inside,
      "forcing": jnp.zeros((batch, frames), bool),
  }
  mask = jnp.zeros((batch, frames), bool)
  for i, name in enumerate(names):
    mask = jnp.where((task == i)[:, None], masks[name], mask)
  mask = mask & (n >= 2)
  forcing = (task == names.index("forcing")) if "forcing" in names else jnp.zeros((batch,), bool)
  return mask, forcing


def frame_timesteps(rng: jax.Array, mask: jax.Array, forcing: jax.Array,
                    sample_t: Callable[[jax.Array, int], jax.Array],
                    known_noise: float = 0.0) -> jax.Array:
  """t per latent frame [B, T]: the clip's t everywhere (or, diffusion forcing, one per frame),
  and on known frames 0 — or U(0, known_noise), an augmentation against exposure bias."""
  b, n = mask.shape
  k_clip, k_frame, k_known = jax.random.split(rng, 3)
  t = jnp.where(forcing[:, None], sample_t(k_frame, b * n).reshape(b, n),
                sample_t(k_clip, b)[:, None])
  t_known = known_noise * jax.random.uniform(k_known, (b, n), jnp.float32)
  return jnp.where(mask, t_known, t)


@dataclasses.dataclass(frozen=True)
class FrameCondition:
  """Known latent frames for the sampler: `known` [B, T, H, W, C] (scaled latents, any values
  where not known), `mask` [B, T] bool; `loop` ties the last latent frame to the first."""
  known: Any
  mask: Any
  loop: bool = False


jax.tree_util.register_dataclass(FrameCondition, data_fields=["known", "mask"],
                                 meta_fields=["loop"])


def _bcast(mask, x):
  return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def conditioned(fn: Callable, cond: FrameCondition | None) -> Callable:
  """(x, t [B]) -> prediction with the known frames shown at t = 0 and held still (zero
  velocity / no update there); identity when `cond` is None."""
  if cond is None:
    return fn

  def f(x, t):
    m = _bcast(cond.mask, x)
    x_in = jnp.where(m, cond.known.astype(x.dtype), x)
    t_frames = jnp.where(cond.mask, 0.0, jnp.broadcast_to(t[:, None], cond.mask.shape))
    return fn(x_in, t_frames)

  return f


def hold(x: jax.Array, cond: FrameCondition | None) -> jax.Array:
  """After each sampler step: known frames back to their values; a loop's first and last latent
  frames to their mean (so they end equal)."""
  if cond is None:
    return x
  x = jnp.where(_bcast(cond.mask, x), cond.known.astype(x.dtype), x)
  if cond.loop:
    tied = 0.5 * (x[:, :1] + x[:, -1:])
    x = x.at[:, :1].set(tied).at[:, -1:].set(tied)
  return x


def place(frames: int, latent: tuple[int, ...], batch: int = 1, *,
          at: dict[int, np.ndarray] | None = None, loop: bool = False) -> FrameCondition:
  """A FrameCondition on a canvas of `frames` latent frames of shape `latent` [H, W, C]:
  `at` maps a latent frame index (negative counts from the end) to latents [n, H, W, C] placed
  from there on (a clip of n latent frames), shared by the batch, or [batch, n, H, W, C], one
  clip per batch row (windows of several long videos at once)."""
  known = np.zeros((batch, frames, *latent), np.float32)
  mask = np.zeros((batch, frames), bool)
  for start, lat in (at or {}).items():
    lat = np.asarray(lat, np.float32)
    if lat.ndim == 3:
      lat = lat[None]
    if lat.ndim == 5 and len(lat) != batch:
      raise ValueError(f"given latents for {len(lat)} batch rows, but the batch is {batch}")
    start = start + frames if start < 0 else start
    n = lat.shape[-4]
    if lat.shape[-3:] != tuple(latent):
      raise ValueError(f"given latents {lat.shape[-3:]} do not match the canvas's "
                       f"{tuple(latent)}: encode inputs at the size being generated")
    if not 0 <= start <= frames - n:
      raise ValueError(f"{n} given latent frames from frame {start} do not fit in "
                       f"{frames} latent frames; generate a longer video or give fewer frames")
    known[:, start:start + n] = lat
    mask[:, start:start + n] = True
  return FrameCondition(jnp.asarray(known), jnp.asarray(mask), loop)
