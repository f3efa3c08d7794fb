"""Training a VAE: the VAESystem's reconstruction + KL, plus the trainer-only players — an
optional 3D-PatchGAN hinge loss and a perceptual loss — which sampling never builds.

One optax optimizer updates both players (each clipped by its own gradient norm: `players`), so
the single scalar returned here must have the right gradient for each:
  * generator terms (recon, KL, perceptual, adv_weight * g_adv) see the discriminator through
    `stop_gradient(params['disc'])`, so they never move the critic;
  * the critic term d_loss sees `stop_gradient(x_hat)`, so it never moves the VAE.
The adversarial part is gated by step >= adv_start_step (a 0/1 factor, not lax.cond, which
XLA:CPU differentiates into a step 8x slower): one compiled function, and exactly zero critic
gradients until the switch.
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
    # vae.freeze_encoder: the decoder alone learns (the loss stops gradients at the latents and
    # the optimizer holds the encoder still), so latents cached or learnt by a DiT stay valid.
    self.frozen = (("vae", "encoder"),) if cfg.get("freeze_encoder", False) else ()

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

  def reconstruction(self, params, batch, rng):
    """(target x, its reconstruction x_hat, recon + KL loss, metrics): the generator's own
    terms, before the critic and the perceptual loss."""
    x = batch["video"].astype(jnp.float32)
    total, x_hat, metrics = self.system.loss(params["vae"], x, rng)
    return x, x_hat, total, metrics

  def loss(self, params, batch, rng, step):
    cfg = self.cfg
    x, x_hat, total, metrics = self.reconstruction(params, batch, rng)
    if self.perceptual is not None:
      from sora_jax.models import perceptual
      p = perceptual.perceptual_distance(self.perceptual, x, x_hat)
      total = total + float(cfg.perceptual_weight) * p
      metrics["perceptual"] = p
    if self.disc is not None:
      g_term, d_loss, adv_metrics = self._adversarial(params["disc"], x, x_hat, step)
      total = total + g_term + d_loss
      metrics.update(adv_metrics)
    return total, metrics

  def _adversarial(self, disc_params, x, x_hat, step):
    """(generator term, critic loss, metrics); the generator term carries adv_weight (times the
    adaptive balance when vae.adv_adaptive)."""
    cfg = self.cfg
    frozen = jax.lax.stop_gradient(disc_params)
    xh = jax.lax.stop_gradient(x_hat)
    g_adv, g_vjp = jax.vjp(
        lambda v: disc_lib.hinge_g_loss(self.disc.apply({"params": frozen}, v)), xh)
    (g_grad,) = g_vjp(jnp.ones_like(g_adv))
    # Its gradient w.r.t. x_hat is exactly g_grad, its value g_adv: one critic pass serves the
    # generator's gradient and the adaptive balance below.
    linear = jnp.sum(g_grad * x_hat)
    g_term = g_adv + linear - jax.lax.stop_gradient(linear)
    metrics = {"g_adv": g_adv}
    weight = float(cfg.adv_weight)
    if cfg.adv_adaptive:
      # VQGAN's balance (Esser et al. 2021): scale the critic's push to the reconstruction's, here
      # measured at the decoder's output rather than its last layer. A fixed weight let the critic
      # win within 50 fine-tuning steps of the demo VAE (PSNR 26 -> 15 dB by step 150).
      rec_grad = jax.grad(lambda v: self.system.recon_loss(x, v))(xh)
      lam = jnp.clip(jnp.linalg.norm(rec_grad) / (jnp.linalg.norm(g_grad) + 1e-8), 0.0, 1e4)
      metrics["adv_lambda"] = lam
      weight = weight * lam
    both = jnp.concatenate([x, xh], axis=0)
    real, fake = jnp.split(self.disc.apply({"params": disc_params}, both), 2, axis=0)
    d_loss = disc_lib.hinge_d_loss(real, fake)
    start = int(cfg.adv_start_step)
    if start <= 0:
      return weight * g_term, d_loss, {**metrics, "d_loss": d_loss}
    # A 0/1 gate, not lax.cond: on XLA:CPU the differentiated cond made the whole VAE step 8x
    # slower (16 vs 2.5 s at batch 4, 9x64x64); the gate costs the critic's forward/backward
    # (~12 %) before the switch and gives exactly zero critic gradients there.
    on = (jnp.asarray(step) >= start).astype(jnp.float32)
    return on * weight * g_term, on * d_loss, {**metrics, "d_loss": on * d_loss}

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
