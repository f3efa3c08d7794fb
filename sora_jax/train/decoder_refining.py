"""Training a VAE's decoder on a DiT's own latents (config.vae.refine_t2v).

A decoder trained only on its encoder's latents is asked, at sampling time, to render latents a
DiT made, which lie off the encoder's manifold. Fitted to pairs (latent the DiT made from a
noised training clip, the clip) it renders them better: under the unchanged shipped DiT, shape
on 64 held-out prompts rose 0.44 -> 0.48 (test) and 0.49 -> 0.53 (unseen combinations), circles
0.22 -> 0.31, at +0.5 dB on real clips (RESULTS.md, issue 13, session 32; OpenAI's consistency
decoder for Stable Diffusion is the precedent). The encoder stays frozen (validated), so the DiT
and any latents cached for it stay valid; part of each batch is decoded from the encoder's own
latents so the decoder still reconstructs real videos. The critic and the perceptual loss of
VAETraining apply unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.data import decoder_pairs, latent_cache
from sora_jax.eval import recon as recon_metrics
from sora_jax.parallel import process_sync
from sora_jax.parallel.process_sync import SyncedJit
from sora_jax.systems.vae import to_model_range, to_uint8
from sora_jax.train.vae_training import VAETraining

log = logging.getLogger(__name__)


class DecoderRefining(VAETraining):
  """Params as VAETraining's; batch {'video': f32 [-1, 1], 'latents': the DiT's, VAE scale}."""

  def generated_rows(self, batch: int) -> int:
    """Rows of a batch decoded from the DiT's latents (at least one); the rest from the
    encoder's latents of their clips."""
    return min(batch, max(1, round(float(self.config.vae.refine_share) * batch)))

  # ---- data -------------------------------------------------------------------------------

  @functools.cached_property
  def generator(self):
    """The TextToVideo of vae.refine_t2v, refused if it was trained on another encoder."""
    from sora_jax.pipeline import TextToVideo
    refine_t2v = self.config.vae.refine_t2v
    t2v = TextToVideo.from_workdir(refine_t2v, on_long="warn")
    source = self.config.train.init_from
    theirs = latent_cache.params_digest(t2v.system.vae_params["encoder"])
    ours = latent_cache.params_digest(runs.open_vae(source)[1]["encoder"])
    if theirs != ours:
      raise config_lib.ConfigError(
          f"config.vae.refine_t2v={refine_t2v!r} was trained on the latents of another "
          f"encoder than config.train.init_from={source!r} holds, so a decoder fitted to its "
          f"latents would not render it: set --config.train.init_from to that run's vae_workdir "
          f"({t2v.config.get('vae_workdir', '?')})")
    return t2v

  def pairs_description(self) -> dict:
    """Everything that shapes the pairs (their file name is its digest)."""
    t2v, d, v = self.generator, self.config.data, self.config.vae
    return {"t2v": os.path.abspath(v.refine_t2v),
            "t2v_params": latent_cache.params_digest(t2v.params),
            # The encoder alone: the pairs hold the DiT's latents and the source clips, so a
            # refined decoder bound to the same DiT must not invalidate them.
            "vae_encoder": latent_cache.params_digest(t2v.system.vae_params["encoder"]),
            "sample": t2v.config.sample.to_dict(), "clips": int(v.refine_clips),
            "strengths": [float(s) for s in v.refine_strengths], "split": d.split,
            "seed": int(self.config.seed),
            **{k: d[k] for k in ("name", "source", "folder", "world", "frames", "height",
                                 "width", "fps", "builder_config")}}

  def pairs_path(self) -> str:
    digest = hashlib.sha1(json.dumps(self.pairs_description(), sort_keys=True,
                                     default=str).encode()).hexdigest()[:12]
    return os.path.join(self.config.data.cache_dir, f"decoder_pairs_{digest}.npz")

  def make_iterator(self, *, seed: int, process_index=None, process_count=None):
    d = self.config.data
    path = self.pairs_path()
    if not os.path.exists(path):
      t2v = self.generator
      scale = float(t2v.system.scale)

      def generate(video, caption, strength, clip_seed):
        lat = t2v.generate(caption, edit=video, strength=strength, seed=clip_seed,
                           return_latents=True)
        return np.asarray(lat) / scale   # back to the VAE's own scale

      v = self.config.vae
      decoder_pairs.build(d, d.split, int(v.refine_clips), generate, path,
                          strengths=tuple(v.refine_strengths), seed=int(self.config.seed))
    return iter(decoder_pairs.make_dataset(path, d.batch_size, seed=seed,
                                           process_index=process_index,
                                           process_count=process_count))

  def prepare(self, host_batch, mesh):
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
    sharding = NamedSharding(mesh, P(axes))
    return {"video": jax.make_array_from_process_local_data(
                sharding, to_model_range(host_batch["video"])),
            "latents": jax.make_array_from_process_local_data(
                sharding, np.asarray(host_batch["latents"], np.float32))}

  # ---- loss -------------------------------------------------------------------------------

  def reconstruction(self, params, batch, rng):
    """The first `generated_rows` clips decoded from the DiT's latents, the rest from a
    posterior sample of the frozen encoder; one decoder pass for both."""
    vae, system = params["vae"], self.system
    x = batch["video"].astype(jnp.float32)
    k = self.generated_rows(x.shape[0])
    z = batch["latents"][:k]
    if k < x.shape[0]:
      z_enc, _, _ = system.posterior_sample(vae, x[k:], rng)
      z = jnp.concatenate([z.astype(z_enc.dtype), z_enc])
    x_hat = system.decode_raw(vae, z)
    recon = system.recon_loss(x, x_hat)
    shown = jnp.clip(jax.lax.stop_gradient(x_hat), -1, 1)
    metrics = {"recon": recon, "recon_generated": system.recon_loss(x[:k], x_hat[:k]),
               "psnr": recon_metrics.psnr(x, shown),
               "psnr_generated": recon_metrics.psnr(x[:k], shown[:k])}
    return x, x_hat, recon, metrics

  # ---- periodic outputs -------------------------------------------------------------------

  @functools.cached_property
  def _decode(self):
    return SyncedJit(self.system.decode, "decode")

  def visualize(self, params, batch, rng):
    """{'recon': uint8 [T, H, 3W, 3]}: clip | decoded from the DiT's latents | reconstruction."""
    shown = super().visualize(params, batch, rng)["recon"]
    x_gen = process_sync.fetch(self._decode(params["vae"], jnp.asarray(batch["latents"][:1])))
    w = shown.shape[2] // 2
    return {"recon": np.concatenate([shown[:, :, :w], to_uint8(x_gen[0]), shown[:, :, w:]],
                                    axis=2)}
