"""Rectified flow (the default objective).

Convention (SD3 / diffusers `FlowMatchEulerDiscreteScheduler`):

  x_t = (1 - t) * x0 + t * noise,      t in [0, 1], t = 1 is pure noise, t = 0 is data
  v   = dx_t/dt = noise - x0           (the regression target)

Sampling integrates dx/dt = v from t = 1 down to t = 0, so an Euler step is
`x_next = x + (t_next - t) * v`, which with `t_next < t` moves toward the data.

The denoiser is `model_fn(x, t, cond) -> v_pred` with x `[B, T, H, W, C]` and t float `[B]`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def time_shift(t, shift):
  """Shift t toward noise: `shift*t / (1 + (shift-1)*t)` (SD3 eq. 23; diffusers `shift`).

  shift = 1 is the identity; shift > 1 spends more of the schedule at high noise, which larger
  images / longer videos need because their many correlated tokens keep more signal at a given
  t (Esser et al. 2024, "Scaling Rectified Flow Transformers", §5.3.2). Works on floats,
  numpy and jax arrays.
  """
  return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(num_tokens, base_tokens: int = 256, base_shift: float = 1.0,
                     max_shift: float | None = None):
  """Timestep shift for a latent of `num_tokens` spacetime tokens (resolution x duration).

  SD3's resolution-dependent rule (Esser et al. 2024, §5.3.2): a latent with m tokens is
  noised like one with n tokens when its shift is sqrt(m / n); we count tokens over
  space *and* time, so longer clips shift too (Movie Gen / Open-Sora do the same).

    shift = base_shift * sqrt(num_tokens / base_tokens),  clipped to `max_shift` if given

  so `base_tokens` tokens get `base_shift` (1.0 = no shift). The alternative linear-in-mu
  rule of Flux (diffusers `calculate_shift`, shift = exp(mu)) was not chosen because its
  shift at the base size is exp(0.5), not 1, which makes small-config ablations harder to read.
  """
  if isinstance(num_tokens, (int, float, np.integer, np.floating)):
    if num_tokens <= 0 or base_tokens <= 0:
      raise ValueError(f"resolution_shift needs positive token counts, got num_tokens="
                       f"{num_tokens}, base_tokens={base_tokens}")
    s = float(base_shift) * float(np.sqrt(num_tokens / base_tokens))
    return min(s, max_shift) if max_shift is not None else s
  s = base_shift * jnp.sqrt(jnp.asarray(num_tokens, jnp.float32) / base_tokens)
  return jnp.minimum(s, max_shift) if max_shift is not None else s


def sample_t(rng: jax.Array, batch: int, *, sampling: str = "logit_normal", mean: float = 0.0,
             std: float = 1.0, shift=1.0) -> jax.Array:
  """Training timesteps `[batch]` in (0, 1).

  'logit_normal': t = sigmoid(mean + std * N(0, 1)) (SD3 §3.1, "lognorm(0.00, 1.00)" was their
  best); 'uniform': U(0, 1). Then `time_shift(t, shift)`, as SD3 does for high resolutions.
  """
  if sampling == "logit_normal":
    t = jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,), jnp.float32))
  elif sampling == "uniform":
    t = jax.random.uniform(rng, (batch,), jnp.float32)
  else:
    raise ValueError(f"diffusion.t_sampling={sampling!r} is not one of 'logit_normal', 'uniform'")
  return time_shift(t, shift)


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 - t) x0 + t noise, with t `[B]` broadcast over the remaining axes."""
  tb = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim)).astype(x0.dtype)
  return (1.0 - tb) * x0 + tb * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  return noise - x0


def masked_mean_per_example(sq: jax.Array, loss_mask: jax.Array | None) -> jax.Array:
  """Mean over all non-batch axes; with `loss_mask` (broadcastable to sq) a weighted mean."""
  axes = tuple(range(1, sq.ndim))
  if loss_mask is None:
    return jnp.mean(sq, axis=axes)
  w = jnp.broadcast_to(loss_mask.astype(jnp.float32), sq.shape)
  return jnp.sum(sq * w, axis=axes) / jnp.maximum(jnp.sum(w, axis=axes), 1.0)


def object_weight_map(x0: jax.Array, weight: float) -> jax.Array:
  """Per-latent-pixel loss weights `[B, T, H, W, 1]` that favour what stands out of its frame.

  A small object is one or two latent pixels of 64 per frame at 8x compression, so a plain
  mean spends ~95 % of the loss on backdrop; its shape is a small share of what the model is
  asked to get right. Each pixel's distance (over channels) from its frame's per-channel median
  (the backdrop, whatever its colour) is normalised to mean 1 per clip, s, and the weight is
  1 + weight * s: a uniform clip keeps uniform weights, `weight` 0 is the plain mean. Used as
  the weighted `loss_mask` of `masked_mean_per_example`, which divides by the weights' sum.
  """
  x0 = jax.lax.stop_gradient(x0.astype(jnp.float32))
  backdrop = jnp.median(x0, axis=(2, 3), keepdims=True)
  dist = jnp.sqrt(jnp.sum(jnp.square(x0 - backdrop), axis=-1, keepdims=True))
  s = dist / (jnp.mean(dist, axis=(1, 2, 3, 4), keepdims=True) + 1e-6)
  return 1.0 + weight * s


def flow_loss(model_fn: ModelFn, x0: jax.Array, rng: jax.Array, cond: Any, *,
              t_sampling: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0,
              shift=1.0, loss_mask: jax.Array | None = None, t: jax.Array | None = None,
              noise: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Rectified-flow loss: mean over the batch of the per-example MSE between v_pred and noise-x0.

  `model_fn` closes over the parameters (differentiate the caller's closure). `loss_mask`
  (broadcastable to x0, e.g. `[B, T, 1, 1, 1]` for frames given as conditioning) restricts the
  error to the positions it marks. `t` / `noise` override the random draws (tests, eval at a
  fixed t). The arithmetic is float32 whatever the latent dtype.
  Returns (loss, metrics) with metrics {'loss', 't_mean', 'loss_per_example' [B]}.
  """
  b = x0.shape[0]
  rng_t, rng_n = jax.random.split(rng)
  x0 = x0.astype(jnp.float32)
  if t is None:
    t = sample_t(rng_t, b, sampling=t_sampling, mean=logit_mean, std=logit_std, shift=shift)
  if noise is None:
    noise = jax.random.normal(rng_n, x0.shape, jnp.float32)
  x_t = interpolate(x0, noise, t)
  pred = model_fn(x_t, t, cond).astype(jnp.float32)
  per_ex = masked_mean_per_example(jnp.square(pred - velocity_target(x0, noise)), loss_mask)
  loss = jnp.mean(per_ex)
  return loss, {"loss": loss, "t_mean": jnp.mean(t), "loss_per_example": per_ex}


def packed_flow_loss(model_fn: ModelFn, x0: jax.Array, segment_ids: jax.Array, rng: jax.Array,
                     cond: Any, *, max_segments: int, shift_fn: Callable[[jax.Array], Any],
                     t_sampling: str = "logit_normal", logit_mean: float = 0.0,
                     logit_std: float = 1.0, t: jax.Array | None = None,
                     noise: jax.Array | None = None, positions: jax.Array | None = None,
                     loss_mask: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Rectified-flow loss of packed rows: x0 [B, N, P] clean tokens of several clips per row,
  `segment_ids` [B, N] (clips 1..max_segments, 0 = padding).

  Every clip draws its own t (then shifted by `shift_fn(its token count)`, the resolution- and
  duration-dependent shift of the clip alone) and its own noise; the loss is each clip's mean
  token error, averaged over the clips of the batch — so a packed batch scores exactly the mean
  of its clips' losses, whatever sizes were packed together, and padding counts for nothing.
  `model_fn(x_t, t, cond)` with t per clip [B, S]; a given `t` may also be per clip and token
  frame [B, S, F] (frame conditioning; `positions` [B, N, 3] then name each token's frame), and
  `loss_mask` [B, N] (False = a known, conditioning token) leaves tokens out of their clip's mean.
  Returns (loss, {'loss', 't_mean', 'clips'}).
  """
  b = x0.shape[0]
  rng_t, rng_n = jax.random.split(rng)
  x0 = x0.astype(jnp.float32)
  onehot = (segment_ids[..., None] == jnp.arange(1, max_segments + 1)).astype(jnp.float32)
  counts = onehot.sum(1)                                            # [B, S] tokens per clip
  valid = (counts > 0).astype(jnp.float32)
  if t is None:
    t = sample_t(rng_t, b * max_segments, sampling=t_sampling, mean=logit_mean,
                 std=logit_std).reshape(b, max_segments)
    t = time_shift(t, shift_fn(jnp.maximum(counts, 1.0)))
  if t.ndim == 3:   # per (clip, token frame): each token reads its own frame's t
    f = t.shape[2]
    group = jnp.maximum(segment_ids - 1, 0) * f + jnp.minimum(positions[..., 0], f - 1)
    t_tok = jnp.take_along_axis(t.reshape(b, -1), group, 1) * (segment_ids > 0)
  else:
    t_tok = jnp.einsum("bns,bs->bn", onehot, t)                     # padding: t = 0
  if loss_mask is not None:
    onehot = onehot * loss_mask.astype(jnp.float32)[..., None]
    counts = onehot.sum(1)
    valid = (counts > 0).astype(jnp.float32)
  if noise is None:
    noise = jax.random.normal(rng_n, x0.shape, jnp.float32)
  x_t = interpolate(x0, noise, t_tok)
  pred = model_fn(x_t, t, cond).astype(jnp.float32)
  err = jnp.mean(jnp.square(pred - velocity_target(x0, noise)), -1)  # [B, N]
  per_clip = jnp.einsum("bns,bn->bs", onehot, err) / jnp.maximum(counts, 1.0)
  n_clips = jnp.maximum(valid.sum(), 1.0)
  loss = jnp.sum(per_clip * valid) / n_clips
  t_clip = t if t.ndim == 2 else t.mean(-1)
  return loss, {"loss": loss, "t_mean": jnp.sum(t_clip * valid) / n_clips, "clips": valid.sum(),
                "loss_per_clip": per_clip}


def flow_timesteps(num_steps: int, shift=1.0, num_train_timesteps: int | None = 1000) -> np.ndarray:
  """Sampling grid `[num_steps + 1]` of t from 1 down to 0 (float32 numpy).

  With `num_train_timesteps` set this reproduces diffusers `FlowMatchEulerDiscreteScheduler`
  (`use_dynamic_shifting=False`) `.sigmas` exactly: `linspace(1, sigma_min, num_steps)` where
  sigma_min is the scheduler's own shifted last training sigma `time_shift(1/N, shift)`, then
  shifted (again — diffusers does so too), then a final 0 appended. With
  `num_train_timesteps=None` the grid is the continuous `time_shift(linspace(1, 0, n+1), shift)`.
  """
  if num_steps < 1:
    raise ValueError(f"sample.steps={num_steps} must be >= 1")
  shift = float(shift)
  if num_train_timesteps is None:
    return time_shift(np.linspace(1.0, 0.0, num_steps + 1), shift).astype(np.float32)
  sigma_min = time_shift(1.0 / num_train_timesteps, shift)
  sig = np.linspace(1.0, sigma_min, num_steps)
  sig = time_shift(sig, shift)
  return np.concatenate([sig, [0.0]]).astype(np.float32)
