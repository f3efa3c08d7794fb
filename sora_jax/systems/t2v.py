"""Text-to-video as a pure system: a DiT denoising spacetime patches of a frozen VAE's latents,
conditioned on text from a jointly trained encoder (or a frozen T5 loaded from local files).

Everything the system needs is handed to its constructor — the VAE system and params, the
latent scale training resolved (config.diffusion.latent_scale), frozen text params and the
tokenizer — so it loads nothing, reads no data and never changes its config. `runs.py` builds
it from a workdir; the train loop and `inference.TextToVideo` only call its pure functions.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data.tokenizer import tokenizer_for_text_config
from sora_jax.diffusion import conditioning, flow, samplers
from sora_jax.diffusion.objective import make_objective
from sora_jax.models import dit as dit_lib
from sora_jax.models import text_encoder as text_lib
from sora_jax.systems.vae import VAESystem


def token_grid(latent_shape, patch) -> tuple[int, int, int]:
  t, h, w = latent_shape[:3]
  return (t // patch[0], h // patch[1], w // patch[2])


class T2VSystem:
  """init / loss / sample_latents / decode / generate for one t2v config.

  vae_params may be abstract (ShapeDtypeStructs) when only shapes are wanted (`sora-jax
  shardings`); latent_scale <= 0 (not resolved yet) is allowed then and refused by `encode`.
  """

  def __init__(self, config, vae: VAESystem, vae_params: Any, *, text_params: Any = None,
               text_encoder: Any = None, tokenizer: Any = None):
    self.config = config
    d = config.data
    self.vae, self.vae_params = vae, vae_params
    self.latent_shape = vae.latent_shape(d.frames, d.height, d.width)
    self.scale = float(config.diffusion.latent_scale)
    t = config.text
    self.frozen_text = t.encoder == "t5"
    if self.frozen_text:
      if text_encoder is None or tokenizer is None:
        raise ValueError("text.encoder='t5' needs the frozen encoder, its params and its "
                         "SentencePiece tokenizer (runs.load_text_encoder reads them from "
                         "config.text.t5_path)")
      self.text_encoder, self.text_params = text_encoder, text_params
      text_width = text_encoder.config.d_model
    else:
      tokenizer = tokenizer or tokenizer_for_text_config(t)
      self.text_encoder = text_lib.TextEncoder(
          vocab_size=tokenizer.vocab_size, width=t.width, depth=t.depth, heads=t.heads,
          max_len=t.max_len)
      self.text_params = None
      text_width = t.width
    self.tokenizer = tokenizer
    self.dit = dit_lib.dit_from_config(config.model, in_channels=self.latent_shape[-1],
                                       text_width=text_width)
    self.objective = make_objective(config.diffusion)

  # ---- shapes ----------------------------------------------------------------------------

  def num_tokens(self, latent_shape=None) -> int:
    return int(np.prod(token_grid(latent_shape or self.latent_shape, self.config.model.patch)))

  def example_batch(self, batch: int = 1) -> dict:
    """The batch the train step sees, as ShapeDtypeStructs."""
    L = int(self.config.text.max_len)
    return {"latents": jax.ShapeDtypeStruct((batch, *self.latent_shape), jnp.float32),
            "tokens": jax.ShapeDtypeStruct((batch, L), jnp.int32),
            "text_mask": jax.ShapeDtypeStruct((batch, L), jnp.bool_)}

  # ---- data → latents --------------------------------------------------------------------

  def encode(self, video):
    """Pixels [-1, 1] → scaled latents (what the DiT models); jittable."""
    if self.scale <= 0:
      raise ValueError("config.diffusion.latent_scale is not resolved (0): build the system "
                       "from a run directory, or let training estimate it first")
    return self.vae.encode(self.vae_params, video) * self.scale

  def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = self.tokenizer.encode(list(prompts), int(self.config.text.max_len))
    return np.asarray(ids, np.int32), np.asarray(mask, bool)

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

  def loss(self, params, batch, rng, step=None, t=None):
    """Caption dropout + the objective's loss. `t` [B] fixes the timesteps (held-out eval).

    With diffusion.frame_tasks each clip draws a conditioning task (diffusion/conditioning.py):
    its known latent frames are shown at t ~ 0 and left out of the loss."""
    del step
    fixed_t = t is not None
    r_drop, r_loss, r_task = jax.random.split(rng, 3)
    tokens, mask = batch["tokens"], batch["text_mask"]
    loss_mask = None
    if t is None:
      tokens, mask = text_lib.drop_text(r_drop, tokens, mask, self.config.text.drop_prob)
      if self._prior_only:
        lat = batch["latents"]
        return self._prior_only_loss(self._prior_mse(
            params, lat, jnp.zeros(lat.shape[:1], jnp.float32),
            dict(context=self._context(params, tokens, mask), context_mask=mask)))
      tasks = conditioning.parse_tasks(self.config.diffusion.get("frame_tasks", ""))
      lat = batch["latents"]
      if tasks and lat.shape[1] > 1:
        k_mask, k_t = jax.random.split(r_task)
        known, forcing = conditioning.frame_task_mask(k_mask, lat.shape[0], lat.shape[1], tasks)
        t = conditioning.frame_timesteps(
            k_t, known, forcing, lambda k, n: self.objective.sample_t(k, n, self.num_tokens()),
            float(self.config.diffusion.get("known_noise", 0.0)))
        loss_mask = ~known[:, :, None, None, None]
      object_weight = float(self.config.diffusion.get("object_weight", 0.0))
      if object_weight:
        w = flow.object_weight_map(lat, object_weight)
        loss_mask = w if loss_mask is None else w * loss_mask
    ctx = self._context(params, tokens, mask)
    loss, metrics = self.objective.loss(self.model_fn(params), batch["latents"], r_loss,
                                        (ctx, mask), self.num_tokens(), t=t, loss_mask=loss_mask)
    if not fixed_t:
      lat = batch["latents"]
      loss, metrics = self._add_layout_prior_loss(
          params, loss, metrics, lat, jnp.zeros(lat.shape[:1], jnp.float32),
          dict(context=ctx, context_mask=mask))
    # Held-out evaluation (fixed t) keeps 'loss_per_example'; training logs scalars only.
    return loss, {k: v for k, v in metrics.items() if fixed_t or jnp.ndim(v) == 0}

  @property
  def _prior_only(self) -> bool:
    return bool(self.config.diffusion.get("layout_prior_only", False))

  @staticmethod
  def _prior_only_loss(aux):
    """diffusion.layout_prior_only: the prior's MSE is the whole training loss."""
    return aux, {"loss": aux, "layout_prior_loss": aux}

  def _add_layout_prior_loss(self, params, loss, metrics, target, zeros_t, dit_kw, valid=None):
    """model.layout_prior: + weight x the MSE of the caption's predicted clean clip (over the
    `valid` tokens when packed). It is computed before the DiT's blocks, so it costs little."""
    if not self.config.model.get("layout_prior", False):
      return loss, metrics
    aux = self._prior_mse(params, target, zeros_t, dit_kw, valid)
    weight = float(self.config.diffusion.get("layout_prior_weight", 1.0))
    return loss + weight * aux, dict(metrics, layout_prior_loss=aux)

  def _prior_mse(self, params, target, zeros_t, dit_kw, valid=None):
    prior = self.dit.apply({"params": params["dit"]}, target, zeros_t, layout_prior_only=True,
                           **dit_kw)
    err = jnp.square(prior.astype(jnp.float32) - target.astype(jnp.float32))
    if valid is None:
      aux = jnp.mean(err)
    else:
      w = valid.astype(jnp.float32)[..., None]
      aux = jnp.sum(err * w) / jnp.maximum(jnp.sum(w) * err.shape[-1], 1.0)
    return aux

  # ---- packed rows (NaViT: clips of any size side by side; sora_jax.data.packing) ---------

  def _packed_context(self, params, tokens, mask):
    """Captions laid out slot by slot, [B, S*L] -> text embeddings [B, S*L, D] (each slot
    encoded on its own; an empty slot reads the null caption, never an all-masked row)."""
    b, sl = tokens.shape
    L = int(self.config.text.max_len)
    if sl % L:
      raise ValueError(f"packed captions of {sl} tokens are not whole slots of text.max_len={L}")
    tok, m = tokens.reshape(-1, L), mask.reshape(-1, L)
    m = m.at[:, 0].set(jnp.logical_or(m[:, 0], ~m.any(-1)))
    return self._context(params, tok, m).reshape(b, sl, -1), m.reshape(b, sl)

  def packed_model_fn(self, params, batch):
    def fn(x, t, cond):
      ctx, mask = cond
      return self.dit.apply({"params": params["dit"]}, x, t, context=ctx, context_mask=mask,
                            segment_ids=batch["segment_ids"], positions=batch["positions"],
                            context_segment_ids=batch["text_segment_ids"])
    return fn

  def packed_loss(self, params, batch, rng, t=None):
    """The loss of a packed batch: {'patches' [B, N, P], 'positions' [B, N, 3], 'segment_ids'
    [B, N], 'tokens' / 'text_mask' / 'text_segment_ids' [B, S*L]}. Caption dropout, t, noise and
    the timestep shift are per clip; the loss is the mean of the clips' losses. `t` [B, S]."""
    r_drop, r_loss = jax.random.split(rng)
    fixed_t = t is not None
    tokens, mask = batch["tokens"], batch["text_mask"]
    L = int(self.config.text.max_len)
    b, sl = tokens.shape
    if t is None:
      tokens, mask = text_lib.drop_text(r_drop, tokens.reshape(-1, L), mask.reshape(-1, L),
                                        self.config.text.drop_prob)
      tokens, mask = tokens.reshape(b, sl), mask.reshape(b, sl)
    ctx, mask = self._packed_context(params, tokens, mask)
    prior_kw = dict(context=ctx, context_mask=mask, segment_ids=batch["segment_ids"],
                    positions=batch["positions"], context_segment_ids=batch["text_segment_ids"])
    zeros_t = jnp.zeros((b, sl // L), jnp.float32)
    if not fixed_t and self._prior_only:
      return self._prior_only_loss(self._prior_mse(params, batch["patches"], zeros_t, prior_kw,
                                                   valid=batch["segment_ids"] > 0))
    loss_mask = None
    tasks = conditioning.parse_tasks(self.config.diffusion.get("frame_tasks", ""))
    if t is None and tasks:
      t, loss_mask = self._packed_frame_tasks(jax.random.fold_in(r_loss, 1), batch, sl // L,
                                              tasks)
    loss, metrics = self.objective.packed_loss(
        self.packed_model_fn(params, batch), batch["patches"], batch["segment_ids"], r_loss,
        (ctx, mask), sl // L, t=t, positions=batch["positions"], loss_mask=loss_mask)
    if not fixed_t:
      loss, metrics = self._add_layout_prior_loss(params, loss, metrics, batch["patches"],
                                                  zeros_t, prior_kw, valid=batch["segment_ids"] > 0)
    return loss, {k: v for k, v in metrics.items() if jnp.ndim(v) == 0}

  def packed_frames(self) -> int:
    """Token frames of the longest clip the data mix packs (static: t is [B, S, this])."""
    from sora_jax.config import parse_sizes
    d, pt = self.config.data, int(self.config.model.patch[0])
    sizes = parse_sizes(d.get("sizes") or f"{d.frames}x{d.height}x{d.width}")
    return max(self.vae.latent_shape(*z.shape)[0] // pt for z in sizes)

  def _packed_frame_tasks(self, rng, batch, slots: int, tasks):
    """Frame tasks for packed clips: t per (clip, token frame) [B, S, F], each clip shifted by
    its own token count, and the loss mask [B, N] of its unknown tokens."""
    seg, frame = batch["segment_ids"], batch["positions"][..., 0]
    b, f = seg.shape[0], self.packed_frames()
    onehot = seg[..., None] == jnp.arange(1, slots + 1)                   # [B, N, S]
    lengths = jnp.max(jnp.where(onehot, frame[..., None] + 1, 0), axis=1)  # [B, S]
    k_mask, k_t = jax.random.split(rng)
    known, forcing = conditioning.frame_task_mask(k_mask, b * slots, f, tasks,
                                                  lengths=lengths.reshape(-1))
    t = conditioning.frame_timesteps(k_t, known, forcing,
                                     lambda k, n: self.objective.sample_t(k, n, shift=1.0),
                                     float(self.config.diffusion.get("known_noise", 0.0)))
    shift = self.objective.shift_for(jnp.maximum(onehot.sum(1), 1).astype(jnp.float32))
    t = flow.time_shift(t.reshape(b, slots, f), jnp.asarray(shift)[..., None]
                        if jnp.ndim(shift) else shift)
    group = jnp.maximum(seg - 1, 0) * f + jnp.minimum(frame, f - 1)
    known_tok = jnp.take_along_axis(known.reshape(b, -1), group, 1) & (seg > 0)
    return t, ~known_tok

  # ---- sampling ---------------------------------------------------------------------------

  def sample_latents(self, params, tokens, mask, rng, *, latent_shape=None, num_steps=None,
                     guidance_scale=None, frames=None, init=None, strength=None, negative=None):
    """Scaled latents for a batch of tokenised prompts, CFG batched; jittable. `frames` (known
    latent frames), `init` + `strength` (editing): see samplers.sample. `negative`: (tokens,
    mask) of the captions CFG steers away from, in place of the null caption (a negative
    prompt; experiments/shape_guidance.py)."""
    shape = tuple(latent_shape or self.latent_shape)
    b = tokens.shape[0]
    ctx = self._context(params, tokens, mask)
    neg_tokens, neg_mask = negative or text_lib.null_text(b, tokens.shape[1])
    uctx = self._context(params, neg_tokens, neg_mask)
    noise = jax.random.normal(rng, (b, *shape), jnp.float32)
    prior_strength = float(self.config.sample.get("layout_prior_strength", 0.0))
    if init is None and frames is None and prior_strength:
      # The DiT barely reads the caption at t ~ 1 (experiments/direction_probe.py), so where the
      # object goes is left to the seed; the prior's expected clip puts the caption's layout
      # into the starting point and the DiT refines from there. Known frames (image-to-video,
      # extension, a long video's later windows) already say where the object is: no prior.
      init, strength = self._layout_prior(params, ctx, mask, shape), prior_strength
    kw = self.objective.sample_kwargs(self.config.sample, self.num_tokens(shape))
    if num_steps is not None:
      kw["num_steps"] = int(num_steps)
    if guidance_scale is not None:
      kw["guidance_scale"] = guidance_scale
    return samplers.sample(self.model_fn(params), noise, cond=(ctx, mask),
                           uncond=(uctx, neg_mask), frames=frames, init=init,
                           strength=strength, **kw)

  def layout_prior(self, params, tokens, mask, *, latent_shape=None):
    """model.layout_prior: the caption's expected clean clip (scaled latents), one pass before
    the DiT's blocks; jittable."""
    shape = tuple(latent_shape or self.latent_shape)
    return self._layout_prior(params, self._context(params, tokens, mask), mask, shape)

  def _layout_prior(self, params, ctx, mask, shape):
    x = jnp.zeros((ctx.shape[0], *shape), jnp.float32)   # shape only: the prior ignores x, t
    return self.dit.apply({"params": params["dit"]}, x, jnp.zeros((ctx.shape[0],)),
                          context=ctx, context_mask=mask, layout_prior_only=True)

  def decode(self, latents):
    """Scaled latents → pixels in [-1, 1], one pass; jittable."""
    return self.vae.decode(self.vae_params, latents / self.scale)

  def decode_long(self, latents):
    """decode() through the chunked/tiled VAE (vae.encode_chunk / tile): flat memory."""
    return self.vae.decode_long(self.vae_params, latents / self.scale)

  def generate(self, params, tokens, mask, rng, **kw):
    """Prompts → pixels [-1, 1] in one jittable function (sampling + one-pass decode)."""
    return self.decode(self.sample_latents(params, tokens, mask, rng, **kw))
