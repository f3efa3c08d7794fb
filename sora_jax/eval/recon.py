"""Reconstruction metrics: PSNR and SSIM on videos or images.

Inputs are uint8 (0..255) or float in [-1, 1] (the model path's range), shaped [..., H, W, C]
(e.g. [B, T, H, W, 3]). Both are scored on a [0, 1] scale, per frame, then averaged over every
leading axis. Pure jnp, so they jit and run on numpy inputs alike.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_unit(x) -> jax.Array:
  """uint8 [0, 255] or float [-1, 1] -> float32 [0, 1]."""
  if np.dtype(getattr(x, "dtype", np.float32)) == np.uint8:
    return jnp.asarray(x, jnp.float32) / 255.0
  return jnp.clip((jnp.asarray(x, jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


def psnr(a, b, max_db: float = 100.0) -> jax.Array:
  """Mean over frames of 10 log10(1 / MSE) on [0, 1] pixels (capped at max_db for equal frames)."""
  a, b = to_unit(a), to_unit(b)
  mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
  return jnp.mean(jnp.minimum(-10.0 * jnp.log10(jnp.maximum(mse, 1e-20)), max_db))


def _gaussian(size: int, sigma: float) -> jax.Array:
  r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  g = jnp.exp(-0.5 * jnp.square(r / sigma))
  return g / g.sum()


def _blur(x: jax.Array, g: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filter over H, W of x [N, H, W, C]."""
  k = g.shape[0]
  h = sum(g[i] * x[:, i:x.shape[1] - k + 1 + i] for i in range(k))
  return sum(g[i] * h[:, :, i:h.shape[2] - k + 1 + i] for i in range(k))


def ssim(a, b, window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Mean SSIM (Wang et al. 2004, Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03).

  Computed per channel on [0, 1] pixels and averaged over channels, positions and frames.
  Frames smaller than the window use a window of the frame's size.
  """
  a, b = to_unit(a), to_unit(b)
  h, w, c = a.shape[-3:]
  a, b = a.reshape(-1, h, w, c), b.reshape(-1, h, w, c)
  g = _gaussian(min(window, h, w), sigma)
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mu_a, mu_b = _blur(a, g), _blur(b, g)
  var_a = _blur(a * a, g) - mu_a ** 2
  var_b = _blur(b * b, g) - mu_b ** 2
  cov = _blur(a * b, g) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
      (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return jnp.mean(s)
