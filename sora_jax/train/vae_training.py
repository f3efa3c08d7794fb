"""Training a VAE: the VAESystem's reconstruction + KL, plus the trainer-only players — an
optional 3D-PatchGAN hinge loss and a perceptual loss — which sampling never builds.

One optax optimizer updates both players (each clipped by its own gradient norm: `players`), so
the single scalar returned here must have the right gradient for each:
  * generator terms (recon, KL, perceptual, adv_weight * g_adv) see the discriminator through
    `stop_gradient(params['disc'])`, so they never move the critic;
  * the critic term d_loss sees `stop_gradient(x_hat)`, so it never moves the VAE.
The adversarial part runs under `lax.cond(step >= adv_start_step, ...)`: one compiled function,
no critic compute before the switch, and exactly zero critic gradients until then.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sora_jax.data import pipeline
from sora_jax.models import discriminator as disc_lib
from sora_jax.parallel import process_sync
from sora_jax.parallel.process_sync import SyncedJit
from sora_jax.systems.vae import VAESystem, to_model_range, to_uint8


class VAETraining:
  """Params {'vae': ..., 'disc': ... (adversarial only)}; batch {'video': f32 [-1, 1]}."""

  def __init__(self, config, system: VAESystem | None = None):
    self.config = config
    self.system = system or VAESystem(config)
    self.cfg = cfg = config.vae
    self.disc = None
    if float(cfg.adv_weight) > 0:
      self.disc = disc_lib.PatchDiscriminator3D(
          channels=int(cfg.disc_channels), num_layers=int(cfg.disc_layers),
          dtype=self.system.module.dtype, param_dtype=self.system.module.param_dtype)
    self.perceptual = None
    if cfg.perceptual_path and float(cfg.perceptual_weight) > 0:
      from sora_jax.models import perceptual  # only when asked for: it reads local weights
      self.perceptual = perceptual.load_perceptual(cfg.perceptual_path)
    # Each player's gradients are clipped by their own norm: the critic's must not shrink the
    # VAE's updates.
    self.players = ("vae", "disc") if self.disc is not None else None

  def make_iterator(self, *, seed: int, process_index=None, process_count=None):
    d = self.config.data
    return pipeline.make_iterator(d, d.split, seed=seed, process_index=process_index,
                                  process_count=process_count)

  def init(self, rng, batch):
    x = jnp.asarray(batch["video"][:1], jnp.float32)
    r_vae, r_disc = jax.random.split(rng)
    params = {"vae": self.system.init(r_vae, x)}
    if self.disc is not None:
      params["disc"] = self.disc.init({"params": r_disc}, x)["params"]
    return params

  def prepare(self, host_batch, mesh):
    """Host batch -> {'video': f32 [-1, 1]} sharded over the mesh's batch axes."""
    video = to_model_range(host_batch["video"])
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
    sharding = NamedSharding(mesh, P(axes))
    return {"video": jax.make_array_from_process_local_data(sharding, video)}

  def loss(self, params, batch, rng, step):
    cfg = self.cfg
    x = batch["video"].astype(jnp.float32)
    total, x_hat, metrics = self.system.loss(params["vae"], x, rng)
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

    start = int(self.cfg.adv_start_step)
    return jax.lax.cond(jnp.asarray(step) >= start, on, off, disc_params, x, x_hat)

  # ---- periodic outputs -------------------------------------------------------------------

  @functools.cached_property
  def _reconstruct(self):
    return SyncedJit(self.system.reconstruct, "reconstruct")

  @functools.cached_property
  def _metrics(self):
    return SyncedJit(self.system.eval_metrics, "eval_metrics")

  def visualize(self, params, batch, rng):
    """{'recon': uint8 [T, H, 2W, 3]}: input | reconstruction (posterior mean) for clip 0."""
    del rng
    x = jnp.asarray(batch["video"][:1], jnp.float32)
    x_hat = process_sync.fetch(self._reconstruct(params["vae"], x))  # may span processes
    return {"recon": np.concatenate([to_uint8(x[0]), to_uint8(x_hat[0])], axis=2)}

  def evaluate(self, params, held_out: dict) -> tuple[dict, dict]:
    """Held-out PSNR / SSIM / L1 of the posterior-mean reconstruction (no videos)."""
    video = jnp.asarray(to_model_range(held_out["video"]))
    out = process_sync.fetch(self._metrics(params["vae"], video))
    return {k: float(v) for k, v in out.items()}, {}
