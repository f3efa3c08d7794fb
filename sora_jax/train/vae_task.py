"""VAE training task: reconstruction + KL, optional 3D-PatchGAN hinge loss and perceptual loss.

One optax optimizer updates both players, so the single scalar this task returns must have the
right gradient for each:
  * generator terms (recon, KL, perceptual, adv_weight * g_adv) see the discriminator through
    `stop_gradient(params['disc'])`, so they never move the critic;
  * the critic term d_loss sees `stop_gradient(x_hat)`, so it never moves the VAE.
The adversarial part runs under `lax.cond(step >= adv_start_step, ...)`: one compiled function,
no critic compute before the switch, and exactly zero critic gradients until then.

Normalisation: `recon` is the mean absolute (l1) or squared (l2) error per pixel value; `kl` is
the mean per latent element (see models.vae.kl_divergence), so kl_weight ~1e-4..1e-6 is light.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sora_jax.eval import recon as recon_metrics
from sora_jax.models import discriminator as disc_lib
from sora_jax.models.vae import kl_divergence, validate_vae_config, vae_from_config


def _to_model_range(video) -> np.ndarray:
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video.astype(np.float32) / 127.5 - 1.0
  return video.astype(np.float32)


def _to_uint8(x) -> np.ndarray:
  return np.asarray(np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255),
                    np.uint8)


class VAETask:
  """Trains `models.vae.VAE` on `batch['video']` f32 [B, T, H, W, 3] in [-1, 1]."""

  def __init__(self, config):
    self.config = config
    self.cfg = config.vae
    data = config.data
    validate_vae_config(self.cfg, data.frames, data.height, data.width)
    self.vae = vae_from_config(self.cfg)
    self.adversarial = float(self.cfg.get("adv_weight", 0.0)) > 0
    self.disc = None
    if self.adversarial:
      self.disc = disc_lib.PatchDiscriminator3D(
          channels=int(self.cfg.get("disc_channels", 64)),
          num_layers=int(self.cfg.get("disc_layers", 3)),
          dtype=self.vae.dtype, param_dtype=self.vae.param_dtype)
    self.perceptual = None
    path = str(self.cfg.get("perceptual_path", "") or "")
    if path and float(self.cfg.get("perceptual_weight", 0.0)) > 0:
      from sora_jax.models import perceptual  # only when asked for: it reads local weights
      self.perceptual = perceptual.load_perceptual(path)

  # -- protocol -----------------------------------------------------------------------------

  def init(self, rng, batch):
    """Boxed (nn.Partitioned) params: {'vae': ...} plus {'disc': ...} when adversarial."""
    x = jnp.asarray(batch["video"][:1], jnp.float32)
    r_vae, r_disc = jax.random.split(rng)
    params = {"vae": self.vae.init({"params": r_vae}, x)["params"]}
    if self.disc is not None:
      params["disc"] = self.disc.init({"params": r_disc}, x)["params"]
    return params

  def prepare(self, host_batch, mesh):
    """Host batch -> {'video': f32 [-1, 1]} sharded over the mesh's batch axes."""
    video = _to_model_range(host_batch["video"])
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
    sharding = NamedSharding(mesh, P(axes))
    return {"video": jax.make_array_from_process_local_data(sharding, video)}

  def loss(self, params, batch, rng, step):
    cfg = self.cfg
    x = batch["video"].astype(jnp.float32)
    x_hat, mean, logvar = self.vae.apply({"params": params["vae"]}, x, rng=rng,
                                         sample_posterior=True)
    err = x - x_hat
    recon = jnp.mean(jnp.abs(err)) if cfg.get("recon_loss", "l1") == "l1" else jnp.mean(err ** 2)
    kl = kl_divergence(mean, logvar)
    total = recon + float(cfg.kl_weight) * kl
    metrics = {"recon": recon, "kl": kl,
               "psnr": recon_metrics.psnr(x, jnp.clip(jax.lax.stop_gradient(x_hat), -1, 1))}
    if self.perceptual is not None:
      from sora_jax.models import perceptual
      p = perceptual.perceptual_distance(self.perceptual, x, x_hat)
      total = total + float(cfg.perceptual_weight) * p
      metrics["perceptual"] = p
    if self.disc is not None:
      g_adv, d_loss = self._adversarial(params["disc"], x, x_hat, step)
      total = total + float(cfg.adv_weight) * g_adv + d_loss
      metrics.update(g_adv=g_adv, d_loss=d_loss)
    return total, metrics

  def _adversarial(self, disc_params, x, x_hat, step):
    def on(disc_params, x, x_hat):
      frozen = jax.lax.stop_gradient(disc_params)
      g_adv = disc_lib.hinge_g_loss(self.disc.apply({"params": frozen}, x_hat))
      both = jnp.concatenate([x, jax.lax.stop_gradient(x_hat)], axis=0)
      logits = self.disc.apply({"params": disc_params}, both)
      real, fake = jnp.split(logits, 2, axis=0)
      return g_adv, disc_lib.hinge_d_loss(real, fake)

    def off(disc_params, x, x_hat):
      del disc_params, x, x_hat
      return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

    start = int(self.cfg.get("adv_start_step", 0))
    return jax.lax.cond(jnp.asarray(step) >= start, on, off, disc_params, x, x_hat)

  @functools.cached_property
  def _reconstruct(self):
    return jax.jit(lambda p, x: self.vae.apply({"params": p}, x, sample_posterior=False)[0])

  def visualize(self, params, batch, rng):
    """{'recon': uint8 [T, H, 2W, 3]}: input | reconstruction (posterior mean) for clip 0."""
    del rng
    x = jnp.asarray(batch["video"][:1], jnp.float32)
    x_hat = self._reconstruct(params["vae"], x)
    side = np.concatenate([_to_uint8(x[0]), _to_uint8(x_hat[0])], axis=2)
    return {"recon": side}

  @functools.cached_property
  def _eval(self):
    def fn(p, x):
      x_hat = jnp.clip(self.vae.apply({"params": p}, x, sample_posterior=False)[0], -1, 1)
      return {"psnr": recon_metrics.psnr(x, x_hat), "ssim": recon_metrics.ssim(x, x_hat),
              "l1": jnp.mean(jnp.abs(x - x_hat))}
    return jax.jit(fn)

  def eval_metrics(self, params, batch):
    """PSNR (dB), SSIM and L1 of the deterministic (posterior-mean) reconstruction."""
    out = self._eval(params["vae"], jnp.asarray(batch["video"], jnp.float32))
    return {k: float(v) for k, v in out.items()}
