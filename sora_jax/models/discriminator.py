"""3D PatchGAN discriminator for the VAE's adversarial loss.

Input [B, T, H, W, 3] in [-1, 1]; output per-patch logits [B, T', H', W', 1]. Each layer halves
space (stride 2) and keeps time (kernel 3, symmetric padding: the critic may look both ways, it is
never used at inference). Normalisation is per-frame GroupNorm so the batch composition does not
change a sample's score.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models.vae_blocks import CONV_NAMES, FrameGroupNorm, conv_time_stacked


class TimeStackedConv(nn.Module):
  """nn.Conv's 3D 'SAME' convolution (same params, same values) as one 2D convolution over
  time-stacked taps (vae_blocks.conv_time_stacked): XLA:CPU runs 3D convolutions ~3x slower
  than 2D ones."""
  features: int
  kernel_size: tuple[int, int, int]
  strides: tuple[int, int]          # space only: the critic keeps time
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kt, kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, CONV_NAMES),
                        (kt, kh, kw, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                      (self.features,), self.param_dtype)
    lo = (kt - 1) // 2               # 'SAME' in time, as nn.Conv pads it
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (lo, kt - 1 - lo), (0, 0), (0, 0), (0, 0)))
    y = conv_time_stacked(x, kernel.astype(self.dtype), (1, *self.strides), space_padding="SAME")
    return y + bias.astype(self.dtype)


class PatchDiscriminator3D(nn.Module):
  channels: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _conv(self, features: int, strides, name: str):
    return TimeStackedConv(features, (3, 4, 4), strides, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.leaky_relu(self._conv(self.channels, (2, 2), "conv0")(x.astype(self.dtype)), 0.2)
    for i in range(1, self.num_layers):
      feats = self.channels * min(2 ** i, 8)
      h = self._conv(feats, (2, 2), f"conv{i}")(h)
      h = nn.leaky_relu(FrameGroupNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                                       name=f"norm{i}")(h), 0.2)
    return self._conv(1, (1, 1), "logits")(h).astype(jnp.float32)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  return 0.5 * (jnp.mean(nn.relu(1.0 - logits_real)) + jnp.mean(nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
  return -jnp.mean(logits_fake)
