"""Text-to-video task: a DiT denoising spacetime patches of a frozen VAE's latents, conditioned
on text from a jointly trained encoder (or a frozen T5 loaded from local files).

Frozen parts (VAE encode, T5) run in `prepare`, outside the differentiated step, so the train
step only sees latents and text; that also makes latents cacheable.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data import pipeline
from sora_jax.data.tokenizer import get_tokenizer
from sora_jax.diffusion import samplers
from sora_jax.diffusion.objective import make_objective
from sora_jax.models import dit as dit_lib
from sora_jax.models import text_encoder as text_lib
from sora_jax.models import vae as vae_lib

log = logging.getLogger(__name__)


def load_vae(config) -> tuple[Any, Any, Any]:
  """(vae module, vae params, vae config) from config.vae_workdir's EMA params.

  Without a vae_workdir the VAE is freshly initialised from the seed: enough for the plumbing
  (tests, dry runs), useless for real samples — hence the warning.
  """
  from sora_jax.train import export as export_lib
  from sora_jax.train.loop import load_run_config
  from sora_jax.train.state import unbox
  from sora_jax.train.vae_task import VAETask
  vae_cfg = config.vae
  d = config.data
  dummy = {"video": jnp.zeros((1, d.frames, d.height, d.width, 3), jnp.float32)}
  if config.get("vae_workdir"):
    run_cfg = load_run_config(config.vae_workdir)
    vae_cfg = run_cfg.vae
    task = VAETask(run_cfg)
    abstract = unbox(jax.eval_shape(task.init, jax.random.key(0), dummy), apply_constraint=False)
    params = export_lib.load_params(config.vae_workdir, abstract)
    log.info("loaded VAE from %s", config.vae_workdir)
  else:
    log.warning("config.vae_workdir is empty: using an UNTRAINED VAE (plumbing only)")
    task = VAETask(config)
    # Jitted on a one-frame video (conv params do not depend on the input's size): an eager
    # init compiles hundreds of tiny ops, ~2x slower on CPU, and every T2VTask pays it.
    params = unbox(jax.jit(task.init)(jax.random.key(config.seed + 7),
                                      {"video": dummy["video"][:, :1]}))
  return vae_lib.vae_from_config(vae_cfg), params["vae"], vae_cfg


class T2VTask:

  def __init__(self, config):
    self.config = config
    d = config.data
    self.vae, self.vae_params, self.vae_cfg = load_vae(config)
    self.latent_shape = vae_lib.latent_shape(d.frames, d.height, d.width, self.vae_cfg)
    self.scale = self._latent_scale(config)
    self.tokenizer = get_tokenizer("byte")
    t = config.text
    self.frozen_text = t.encoder == "t5"
    if self.frozen_text:
      from sora_jax.models import t5
      self.text_encoder, self.text_params = t5.load_t5_encoder(t.t5_path)
      text_width = self.text_encoder.config.d_model
    else:
      self.text_encoder = text_lib.TextEncoder(
          vocab_size=self.tokenizer.vocab_size, width=t.width, depth=t.depth, heads=t.heads,
          max_len=t.max_len)
      text_width = t.width
    self.dit = dit_lib.dit_from_config(config.model, in_channels=self.latent_shape[-1],
                                       text_width=text_width)
    self.objective = make_objective(config.diffusion)
    self.num_tokens = int(np.prod(dit_lib_token_grid(self.latent_shape, config.model.patch)))
    self._encode = jax.jit(self._encode_impl)

  def _latent_scale(self, config) -> float:
    """Multiplier that gives the latents unit std, as rectified flow assumes (data against N(0,1)
    noise). diffusion.latent_scale=0 estimates it from one training batch at the start of a run
    and records it in the config, so samplers of that run use the same value."""
    scale = float(config.diffusion.get("latent_scale", 0.0) or 0.0)
    if scale > 0:
      return scale
    d = config.data
    batch = next(pipeline.make_iterator(d, d.split, seed=config.seed + 99, process_index=0,
                                        process_count=1))
    mean, _ = jax.jit(lambda p, v: self.vae.apply({"params": p}, v, method=self.vae.encode))(
        self.vae_params, batch["video"])
    scale = float(1.0 / max(float(jnp.std(mean)), 1e-6))
    with config.unlocked():
      config.diffusion.latent_scale = scale
    log.info("latent std %.4g -> diffusion.latent_scale=%.4g", 1.0 / scale, scale)
    return scale

  # ---- data → device ---------------------------------------------------------------------

  def _encode_impl(self, vae_params, video):
    mean, _ = self.vae.apply({"params": vae_params}, video, method=self.vae.encode)
    return mean * self.scale

  def prepare(self, host_batch: dict, mesh) -> dict:
    if "latents" in host_batch:  # from the latent cache: nothing left to encode
      return pipeline.to_global({k: host_batch[k] for k in ("latents", "tokens", "text_mask")},
                                mesh)
    g = pipeline.to_global({k: host_batch[k] for k in ("video", "tokens", "text_mask")}, mesh)
    out = {"latents": self._encode(self.vae_params, g["video"]),
           "tokens": g["tokens"], "text_mask": g["text_mask"]}
    return out

  def make_iterator(self, *, seed: int, process_index: int | None = None,
                    process_count: int | None = None):
    """Pixels through the VAE every step, or (data.cache_dir set) a cache of latents."""
    d = self.config.data
    if not d.cache_dir:
      return pipeline.make_iterator(d, d.split, seed=seed, process_index=process_index,
                                    process_count=process_count)
    from sora_jax.data import latent_cache
    description = {"vae": os.path.abspath(self.config.vae_workdir or "untrained"),
                   "vae_params": latent_cache.params_digest(self.vae_params),
                   "latent_scale": self.scale,
                   "vae_cfg": self.vae_cfg.to_dict(), "split": d.split, "n": d.cache_clips,
                   **{k: d[k] for k in ("name", "source", "folder", "frames", "height", "width",
                                        "fps", "caption", "text_len")}}
    path = latent_cache.cache_path(d.cache_dir, description)
    if not os.path.exists(path):
      encode = jax.jit(self._encode_impl)
      latent_cache.build(d, d.split, int(d.cache_clips),
                         lambda video: encode(self.vae_params, video), path, seed=seed)
    return iter(latent_cache.make_dataset(path, d.batch_size, seed=seed,
                                          process_index=process_index,
                                          process_count=process_count))

  # ---- model ------------------------------------------------------------------------------

  def _context(self, params, tokens, mask):
    if self.frozen_text:
      ctx = self.text_encoder.apply({"params": self.text_params}, tokens, mask)
      return jax.lax.stop_gradient(ctx)
    return self.text_encoder.apply({"params": params["text"]}, tokens, mask)

  def model_fn(self, params):
    def fn(x, t, cond):
      ctx, mask = cond
      return self.dit.apply({"params": params["dit"]}, x, t, context=ctx, context_mask=mask)
    return fn

  def init(self, rng, batch):
    r_text, r_dit = jax.random.split(rng)
    lat, tokens, mask = batch["latents"], batch["tokens"], batch["text_mask"]
    params = {}
    if self.frozen_text:
      ctx = self._context(None, tokens, mask)
    else:
      params["text"] = self.text_encoder.init(r_text, tokens, mask)["params"]
      ctx = self.text_encoder.apply({"params": params["text"]}, tokens, mask)
    t = jnp.zeros((lat.shape[0],), jnp.float32)
    params["dit"] = self.dit.init(r_dit, lat, t, context=ctx, context_mask=mask)["params"]
    return params

  def loss(self, params, batch, rng, step):
    del step
    r_drop, r_loss = jax.random.split(rng)
    tokens, mask = text_lib.drop_text(r_drop, batch["tokens"], batch["text_mask"],
                                      self.config.text.drop_prob)
    ctx = self._context(params, tokens, mask)
    loss, metrics = self.objective.loss(self.model_fn(params), batch["latents"], r_loss,
                                        (ctx, mask), self.num_tokens)
    return loss, {k: v for k, v in metrics.items() if jnp.ndim(v) == 0}

  # ---- sampling ---------------------------------------------------------------------------

  def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = self.tokenizer.encode(list(prompts), self.config.text.max_len)
    return np.asarray(ids, np.int32), np.asarray(mask, bool)

  def generate(self, params, tokens, mask, rng, *, latent_shape=None, num_steps=None,
               guidance_scale=None):
    """Latents → pixels for a batch of tokenised prompts; jittable (params are arguments)."""
    s = self.config.sample
    shape = tuple(latent_shape or self.latent_shape)
    b = tokens.shape[0]
    ctx = self._context(params, tokens, mask)
    null_tokens, null_mask = text_lib.null_text(b, tokens.shape[1])
    uctx = self._context(params, null_tokens, null_mask)
    noise = jax.random.normal(rng, (b, *shape), jnp.float32)
    num_tokens = int(np.prod(dit_lib_token_grid(shape, self.config.model.patch)))
    kw = self.objective.sample_kwargs(s, num_tokens)
    if num_steps is not None:
      kw["num_steps"] = int(num_steps)
    if guidance_scale is not None:
      kw["guidance_scale"] = guidance_scale
    latents = samplers.sample(self.model_fn(params), noise, cond=(ctx, mask),
                              uncond=(uctx, null_mask), **kw)
    video = self.vae.apply({"params": self.vae_params}, latents / self.scale,
                           method=self.vae.decode)
    return jnp.clip(video, -1.0, 1.0)

  def visualize(self, params, batch, rng) -> dict[str, np.ndarray]:
    prompts = list(self.config.sample.prompts)[:2]
    tokens, mask = self.encode_prompts(prompts)
    if not hasattr(self, "_generate_jit"):
      self._generate_jit = jax.jit(self.generate)
    video = np.asarray(jax.device_get(self._generate_jit(params, tokens, mask, rng)))
    frames = ((video + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return {"sample": np.concatenate(list(frames), axis=2)}  # prompts side by side


def dit_lib_token_grid(latent_shape, patch) -> tuple[int, int, int]:
  t, h, w = latent_shape[:3]
  return (t // patch[0], h // patch[1], w // patch[2])
