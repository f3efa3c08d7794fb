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

from sora_jax.models.vae_blocks import CONV_NAMES, FrameGroupNorm


class PatchDiscriminator3D(nn.Module):
  channels: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _conv(self, features: int, strides, name: str):
    return nn.Conv(features, kernel_size=(3, 4, 4), strides=strides, padding="SAME",
                   dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                            CONV_NAMES),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.leaky_relu(self._conv(self.channels, (1, 2, 2), "conv0")(x.astype(self.dtype)), 0.2)
    for i in range(1, self.num_layers):
      feats = self.channels * min(2 ** i, 8)
      h = self._conv(feats, (1, 2, 2), f"conv{i}")(h)
      h = nn.leaky_relu(FrameGroupNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                                       name=f"norm{i}")(h), 0.2)
    return self._conv(1, (1, 1, 1), "logits")(h).astype(jnp.float32)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  return 0.5 * (jnp.mean(nn.relu(1.0 - logits_real)) + jnp.mean(nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
  return -jnp.mean(logits_fake)
