"""Training text-to-video: the T2VSystem's loss on latents, fed by the pixel pipeline (frozen
VAE encode in `prepare`, outside the differentiated step) or by a cache of latents.

Periodic held-out evaluation: the flow loss at a fixed grid of noise levels with fixed noise
(comparable across steps and runs), and prompt adherence of EMA samples on held-out captions
scored by the world evaluator against chance (the same videos scored against other captions).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data import packing, pipeline
from sora_jax.eval import counterfactual
from sora_jax.eval import worlds as world_eval
from sora_jax.models import patching
from sora_jax.parallel import process_sync
from sora_jax.parallel.process_sync import SyncedJit
from sora_jax.systems.t2v import T2VSystem
from sora_jax.systems.vae import to_model_range, to_uint8



class T2VTraining:
  players = None

  def __init__(self, config, system: T2VSystem):
    self.config = config
    self.system = system

  # ---- data → device ---------------------------------------------------------------------

  def make_iterator(self, *, seed: int, process_index=None, process_count=None):
    """Pixels through the VAE every step, or (data.cache_dir set) a cache of latents."""
    d = self.config.data
    if not d.cache_dir:
      return pipeline.make_iterator(d, d.split, seed=seed, process_index=process_index,
                                    process_count=process_count, tokenizer=self.system.tokenizer)
    from sora_jax.data import latent_cache
    sys = self.system
    description = self.cache_description()
    if d.pack_tokens:
      return self._packed_iterator(description, seed, process_index, process_count)
    path = latent_cache.cache_path(d.cache_dir, description)
    same = None if os.path.exists(path) else latent_cache.find_same_latents(d.cache_dir,
                                                                              description)
    if same:   # only the text settings differ: no clip goes through the VAE again
      latent_cache.retokenize(same, path, sys.tokenizer, int(d.text_len))
    elif not os.path.exists(path):
      latent_cache.build(d, d.split, int(d.cache_clips), self._encode_host, path, seed=seed,
                         tokenizer=sys.tokenizer, key=latent_cache.latent_key(description))
    return iter(latent_cache.make_dataset(path, d.batch_size, seed=seed,
                                          process_index=process_index,
                                          process_count=process_count))

  def cache_description(self) -> dict:
    """Everything that shapes the latent cache's contents (its file name is their digest)."""
    from sora_jax.data import latent_cache
    d, sys = self.config.data, self.system
    description = {"vae": os.path.abspath(self.config.vae_workdir or "untrained"),
                   "vae_params": latent_cache.params_digest(sys.vae_params),
                   "latent_scale": sys.scale,
                   "vae_cfg": self.config.vae.to_dict(), "split": d.split, "n": d.cache_clips,
                   "text": [self.config.text.encoder, self.config.text.t5_path] + (
                       [] if self.config.text.get("tokenizer", "byte") == "byte" else
                       [self.config.text.tokenizer, self.config.text.word_buckets]),
                   **{k: d[k] for k in ("name", "source", "folder", "frames", "height", "width",
                                        "fps", "caption", "text_len")}}
    if d.world != "full":  # only then: caches built before worlds existed keep their names
      description["world"] = d.world
    if d.builder_config:   # rendered at another size, then cropped: other clips, same shape
      description["builder_config"] = d.builder_config
    return description

  def packing_layout(self) -> tuple[int, int]:
    """(token budget, caption slots) of a packed row: as many slots as the smallest size of the
    mix can fill."""
    d, sys = self.config.data, self.system
    sizes = packing.parse_sizes(d.sizes or f"{d.frames}x{d.height}x{d.width}")
    smallest = min(sys.num_tokens(sys.vae.latent_shape(*s.shape)) for s in sizes)
    slots = packing.caption_slots(d.pack_tokens, smallest)
    # Each slot costs text-encoder work and cross-attention keys in every row: cap it if asked.
    return int(d.pack_tokens), min(slots, int(d.pack_clips)) if d.pack_clips else slots

  def _packed_iterator(self, description, seed, process_index, process_count):
    from sora_jax.data import latent_cache
    d = self.config.data
    description = {**description, "sizes": d.sizes or f"{d.frames}x{d.height}x{d.width}"}
    path = latent_cache.cache_path(d.cache_dir, description)
    if not os.path.exists(path):
      cfg = d.copy_and_resolve_references()
      with cfg.unlocked():
        cfg.sizes = description["sizes"]
      latent_cache.build_mixed(cfg, d.split, int(d.cache_clips), self._encode_host, path,
                               seed=seed, tokenizer=self.system.tokenizer)
    budget, slots = self.packing_layout()
    patch = tuple(self.config.model.patch)
    return iter(packing.make_packed_dataset(
        latent_cache.MixedLatentSource(path), patchify=functools.partial(
            patching.patchify_clip, patch=patch), token_budget=budget, slots=slots,
        text_len=int(d.text_len), rows_per_batch=int(d.batch_size), seed=seed,
        process_index=process_index, process_count=process_count))

  @functools.cached_property
  def _encode(self):
    return SyncedJit(self.system.encode, "encode")

  def _encode_host(self, video):
    return self._encode(jnp.asarray(to_model_range(video)))

  def prepare(self, host_batch: dict, mesh) -> dict:
    if "segment_ids" in host_batch:  # packed rows of cached latents
      return pipeline.to_global({k: host_batch[k] for k in packing.ROW_KEYS}, mesh)
    if "latents" in host_batch:  # from the latent cache: nothing left to encode
      return pipeline.to_global({k: host_batch[k] for k in ("latents", "tokens", "text_mask")},
                                mesh)
    g = pipeline.to_global({k: host_batch[k] for k in ("video", "tokens", "text_mask")}, mesh)
    return {"latents": self._encode(g["video"]), "tokens": g["tokens"],
            "text_mask": g["text_mask"]}

  # ---- the differentiated part ------------------------------------------------------------

  def init(self, rng, batch):
    if "segment_ids" in batch:   # the parameters do not depend on the size: init unpacked
      batch = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), self.system.example_batch(1))
    return self.system.init(rng, batch)

  def loss(self, params, batch, rng, step):
    if "segment_ids" in batch:
      return self.system.packed_loss(params, batch, rng)
    return self.system.loss(params, batch, rng, step)

  # ---- periodic outputs -------------------------------------------------------------------

  @functools.cached_property
  def _generate(self):
    return SyncedJit(self.system.generate, "generate")

  @functools.cached_property
  def _held_out_loss(self):
    return SyncedJit(counterfactual.held_out_losses(self.system), "held_out_loss")

  def _videos(self, params, prompts: list[str], rng) -> np.ndarray:
    tokens, mask = self.system.encode_prompts(prompts)
    # fetch: under a mesh spanning processes the video may be sharded across them.
    return to_uint8(process_sync.fetch(self._generate(params, jnp.asarray(tokens),
                                                      jnp.asarray(mask), rng)))

  def visualize(self, params, batch, rng) -> dict[str, np.ndarray]:
    del batch
    n = max(1, int(self.config.train.eval_num))
    prompts = list(self.config.sample.prompts)[:2]
    # Padded to the eval batch: one compiled sampler serves samples and evaluations.
    padded = (prompts * n)[:max(n, len(prompts))]
    frames = self._videos(params, padded, rng)[:len(prompts)]
    return {"sample": np.concatenate(list(frames), axis=2)}  # prompts side by side

  def evaluate(self, params, held_out: dict) -> tuple[dict, dict]:
    """{'flow_loss', 'flow_loss_t0.1', ..., 'color', 'color_chance', ...}, {'samples': video}."""
    captions = [str(c) for c in held_out["caption"]]   # short captions: the evaluator's specs
    names, tokens, masks = counterfactual.captionings(
        self.system, captions, world=self.config.data.name == "shapes_world")
    losses = np.asarray(process_sync.fetch(self._held_out_loss(
        params, jnp.asarray(counterfactual.encode_in_chunks(
            lambda v: process_sync.fetch(self._encode(jnp.asarray(to_model_range(v)))),
            held_out["video"],
            max(1, int(self.config.train.eval_num)))), jnp.asarray(tokens),
        jnp.asarray(masks), jax.random.key(0))))
    # text_gain_pct near 0: the model ignores its text, whatever its samples look like (a
    # faster signal than adherence); <attribute>_gain_pct: which words it reads.
    out = counterfactual.loss_report(names, tokens, losses)
    out["loss_clips"] = float(len(captions))
    captions = captions[:max(1, int(self.config.train.eval_num))]   # train.eval_loss_num: more
    videos = {}
    if self.config.data.name == "shapes_world":  # adherence needs the world's ground truth
      frames = self._videos(params, captions, jax.random.key(1))
      scores = world_eval.score_videos(list(frames), captions, fps=self.config.data.fps)
      chance = world_eval.score_videos(list(frames), captions[1:] + captions[:1],
                                       fps=self.config.data.fps)
      for k in ("color", "shape", "direction", "permanence", "overall"):
        if k in scores:
          out[k], out[f"{k}_chance"] = float(scores[k]), float(chance[k])
      videos["samples"] = np.concatenate(list(frames[:4]), axis=2)
    return out, videos
