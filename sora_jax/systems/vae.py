"""The VAE as a pure system: module + config → init / loss / encode / decode / eval_metrics.

Cheap to construct (no weights, no data): training adds its own players on top (the
discriminator and perceptual loss live in `train/vae_training.py`), and sampling only needs
`encode`/`decode` with params handed in by the run directory.

Normalisation: `recon` is the mean absolute (l1) or squared (l2) error per pixel value; `kl` is
the mean per latent element (see models.vae.kl_divergence), so kl_weight ~1e-4..1e-6 is light.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.eval import recon as recon_metrics
from sora_jax.models import vae as vae_lib
from sora_jax.models import vae_chunked


def to_model_range(video) -> np.ndarray:
  """uint8 [0, 255] (or float already in [-1, 1]) → float32 [-1, 1]."""
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video.astype(np.float32) / 127.5 - 1.0
  return video.astype(np.float32)


def to_uint8(x) -> np.ndarray:
  return np.asarray(np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255),
                    np.uint8)


class VAESystem:
  """Pure functions of a `models.vae.VAE` on video f32 [B, T, H, W, 3] in [-1, 1].

  Params are the VAE's own tree (what a VAE run saves under params['vae']).
  """

  def __init__(self, config):
    self.config = config
    self.cfg = config.vae
    d = config.data
    vae_lib.validate_vae_config(self.cfg, d.frames, d.height, d.width)
    self.module = vae_lib.vae_from_config(self.cfg)

  # ---- shapes ----------------------------------------------------------------------------

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    return vae_lib.latent_shape(frames, height, width, self.cfg)

  def example_video(self, batch: int = 1, frames: int | None = None) -> jax.ShapeDtypeStruct:
    d = self.config.data
    return jax.ShapeDtypeStruct((batch, frames or d.frames, d.height, d.width, 3), jnp.float32)

  # ---- training ---------------------------------------------------------------------------

  def init(self, rng, video):
    """Boxed (nn.Partitioned) VAE params. Conv params do not depend on the clip's size."""
    return self.module.init({"params": rng}, jnp.asarray(video[:1], jnp.float32))["params"]

  def forward(self, params, video, rng):
    """(x_hat, mean, logvar) with a posterior sample (see `posterior_sample`)."""
    if not self.cfg.get("freeze_encoder", False):
      return self.module.apply({"params": params}, video, rng=rng, sample_posterior=True)
    z, mean, logvar = self.posterior_sample(params, video, rng)
    return self.decode_raw(params, z), mean, logvar

  def posterior_sample(self, params, video, rng):
    """(z, mean, logvar). With vae.freeze_encoder no gradient flows into the encoder (nor is
    its backward computed): the latent space stays the one a DiT was trained on, and only the
    decoder learns to render it."""
    mean, logvar = self.module.apply({"params": params}, video, method=self.module.encode)
    if self.cfg.get("freeze_encoder", False):
      mean, logvar = jax.lax.stop_gradient((mean, logvar))
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return z, mean, logvar

  def decode_raw(self, params, latents):
    """decode() without the clip to [-1, 1]: what the training losses see."""
    return self.module.apply({"params": params}, latents, method=self.module.decode)

  def recon_loss(self, x, x_hat):
    err = x - x_hat
    return jnp.mean(jnp.abs(err)) if self.cfg.recon_loss == "l1" else jnp.mean(err ** 2)

  def loss(self, params, video, rng):
    """Reconstruction + KL (the generator terms every VAE run has). Returns (loss, x_hat, metrics)."""
    x = video.astype(jnp.float32)
    x_hat, mean, logvar = self.forward(params, x, rng)
    recon = self.recon_loss(x, x_hat)
    kl = vae_lib.kl_divergence(mean, logvar)
    total = recon + float(self.cfg.kl_weight) * kl
    metrics = {"recon": recon, "kl": kl,
               "psnr": recon_metrics.psnr(x, jnp.clip(jax.lax.stop_gradient(x_hat), -1, 1))}
    return total, x_hat, metrics

  # ---- inference (jittable one-pass; *_long are host loops in flat memory) ---------------

  def encode(self, params, video):
    """Posterior mean of video [B, T, H, W, 3] → latents [B, t, h, w, c]."""
    mean, _ = self.module.apply({"params": params}, video, method=self.module.encode)
    return mean

  def decode(self, params, latents):
    return jnp.clip(self.decode_raw(params, latents), -1.0, 1.0)

  @property
  def chunked(self) -> bool:
    """Whether inference goes through the chunked/tiled path (vae.encode_chunk / vae.tile)."""
    return bool(int(self.cfg.encode_chunk) or int(self.cfg.tile))

  def encode_long(self, params, video):
    """encode() chunked in time / tiled in space as vae.encode_chunk, tile, tile_overlap say."""
    return vae_chunked.encode_with_config(self.module, params, video, self.cfg)[0]

  def decode_long(self, params, latents):
    """decode() chunked / tiled by config: peak memory depends on the chunk, not the length."""
    return jnp.clip(vae_chunked.decode_with_config(self.module, params, latents, self.cfg),
                    -1.0, 1.0)

  def decode_next(self, params, latents, cache=None):
    """(frames [B, n, H, W, 3] in [-1, 1], cache) of the next latent frames of a video, given
    the causal cache the frames before left (None: `latents` begin the video). Fed chunk by
    chunk, it gives the one-pass decode of their concatenation, so a video can be decoded while
    it is still being generated."""
    x, cache = vae_chunked.decode_step(self.module, params, cache, latents)
    return jnp.clip(x, -1.0, 1.0), cache

  def reconstruct(self, params, video):
    return jnp.clip(self.module.apply({"params": params}, video, sample_posterior=False)[0],
                    -1.0, 1.0)

  def eval_metrics(self, params, video) -> dict:
    """PSNR (dB), SSIM and L1 of the deterministic (posterior-mean) reconstruction; jittable."""
    x = video.astype(jnp.float32)
    x_hat = self.reconstruct(params, x)
    return {"psnr": recon_metrics.psnr(x, x_hat), "ssim": recon_metrics.ssim(x, x_hat),
            "l1": jnp.mean(jnp.abs(x - x_hat))}
